"""Builds the CUDA emulator: csrc/cuda/<kernel>.cu compiled as host C++ with emu.h, linked with
emu_runtime.cpp and a driver, in one of three variants:

* ``plain``: -O1, with UBSan's alignment check (a misaligned 16-byte vector store is an error);
* ``asan``: AddressSanitizer + UndefinedBehaviorSanitizer, every finding fatal;
* ``tsan``: ThreadSanitizer (the kernels' threads are fibers that TSan sees as threads: a data race
  between threads of a block is a missing ``__syncthreads``, between blocks a wrong stride).

The .cu source is rewritten only where host C++ cannot take it: each ``kernel<<<cfg>>>(args);``
becomes ``::emu::launch("kernel", __PRETTY_FUNCTION__, kernel, ::emu::LaunchConfig{cfg}, args);``,
each ``__shared__ T name[dims];`` a per-block variable of the runtime (``extern __shared__ T name[];`` the
block's dynamic shared memory), cooperative launches and grid syncs (``SE_LAUNCH_COOPERATIVE``,
``SE_GRID_SYNC``: csrc/cuda/common.cuh) the runtime's, every ``__global__``
function's body starts with ``::emu::kernel_entry(__PRETTY_FUNCTION__, <its __launch_bounds__>)``,
and cub's radix sort is replaced by a stable sort (cub_shim.h). The launch limits are lowered
(grid.y at most 2, grid-stride kernels at most 3 blocks) so that the loops over them run more
than once. Used by the emulator tests (through emu_testing.py: tests/ops/test_<family>.py,
tests/kernels/test_cuda_emulator.py and test_cuda_sanitizers.py) and by planted_bugs.py; objects
are cached by content, so a rebuild after a one-file change compiles that file only.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

from cuda_emu.build_util import cuda_home, host_cxx, run_all  # tests/ is on the path (pytest, planted_bugs.py)

ROOT = Path(__file__).resolve().parents[2]
CUDA_DIR = ROOT / "csrc" / "cuda"
EMU_DIR = Path(__file__).resolve().parent

LAUNCH = re.compile(r"(\b\w+_kernel(?:<[^<>]*>)?)\s*<<<(.*?)>>>\((.*?)\);", re.S)
EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?(?P<type>[\w:]+)\s+(?P<name>\w+)\s*\[\s*\]\s*;")
SHARED = re.compile(r"__shared__\s+(?P<type>[\w:]+(?:<[^;{}]*?>)?)\s+(?P<name>\w+)(?P<dims>(?:\s*\[[^\]]+\])*)\s*;")
GLOBAL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\((?P<bounds>(?:[^()]|\([^()]*\))*)\)\s*)?(?P<name>\w+)\s*\(")
CUB = "#include <cub/device/device_radix_sort.cuh>"

# The launch limits the emulator checks (and the launchers respect): grid.y / grid.z and the
# grid-stride kernels' block cap (csrc/cuda/common.cuh), lowered so their loops run more than once.
MAX_GRID_Y = 2
MAX_STRIDE_BLOCKS = 3

VARIANTS = {
    # kernel and driver flags, runtime flags, link flags
    "plain": (["-O1", "-fsanitize=alignment", "-fno-sanitize-recover=all"], ["-O2"],
              ["-fsanitize=alignment"]),
    "asan": (["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
             ["-O1", "-g", "-fsanitize=address,undefined"], ["-fsanitize=address,undefined"]),
    "tsan": (["-O1", "-g", "-fsanitize=thread"], ["-O2", "-DEMU_TSAN=1"], ["-fsanitize=thread"]),
}
# Sanitizer settings for running the asan and tsan variants.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1:exitcode=87",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=88",
    "TSAN_OPTIONS": "halt_on_error=1:exitcode=89:report_signal_unsafe=0",
}


class Unavailable(Exception):
    """The toolchain cannot build the emulator here (no CUDA headers, no C++ compiler, no sanitizer)."""


def rewrite(source: str, name: str) -> str:
    """csrc/cuda/<name>.cu as host C++ for emu.h (see the module docstring)."""
    host, n = LAUNCH.subn(r'::emu::launch("\1", __PRETTY_FUNCTION__, \1, ::emu::LaunchConfig{\2}, \3);', source)
    if n == 0 and "SE_LAUNCH_COOPERATIVE(" not in source:
        raise ValueError(f"no kernel launch found in {name}.cu")
    host = EXTERN_SHARED.sub(lambda m: f"{m['type']}* {m['name']} = static_cast<{m['type']}*>(::emu::dynamic_shared());",
                             host)
    host = SHARED.sub(lambda m: f"static char {m['name']}_emu_tag; auto& {m['name']} = "
                                f"::emu::shared<{m['type']}{m['dims']}>(&{m['name']}_emu_tag);", host)
    if "__shared__" in host:
        raise ValueError(f"a __shared__ declaration in {name}.cu that emu_build.py cannot rewrite")
    out, pos = [], 0
    for m in GLOBAL.finditer(host):
        depth, i = 1, m.end()  # the end of the parameter list, then the body's brace
        while depth:
            depth += {"(": 1, ")": -1}.get(host[i], 0)
            i += 1
        brace = host.index("{", i) + 1
        out.append(host[pos:brace])
        out.append(f" ::emu::kernel_entry(__PRETTY_FUNCTION__, {m['bounds'] or '0'});")
        pos = brace
    out.append(host[pos:])
    host = "".join(out)
    if CUB in host:  # cub has no host version: a stable sort stands in for it
        host = host.replace(CUB, '#include "cub_shim.h"')
    return f'#include "emu.h"\n#line 1 "{name}.cu"\n' + host  # messages cite the .cu file's own lines


def _compile(cxx: str, flags: list[str], src: Path, obj_dir: Path, stem: str,
             headers: str) -> tuple[Path, list[str] | None]:
    """(object path, command or None when the cached object is current: same source, headers, flags)."""
    portable = [f for f in flags if not f.startswith("-I")]  # the headers' content stands for their directories
    key = hashlib.sha1((src.read_text() + "\0" + headers + "\0" + " ".join(portable)).encode()).hexdigest()[:16]
    obj = obj_dir / f"{stem}-{key}.o"
    return obj, None if obj.exists() else [cxx, *flags, "-c", str(src), "-o", str(obj)]


def build(out: Path, kernels: list[str], driver: str | None, variant: str = "plain", cuda_dir: Path = CUDA_DIR,
          obj_dir: Path | None = None, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compiles csrc/cuda/<kernel>.cu (from ``cuda_dir``) for each kernel, emu_runtime.cpp and
    tests/cuda_emu/<driver>.cpp (None: a kernel file has main()), links them into
    ``out/<driver or first kernel>_<variant>`` and returns its path. Raises Unavailable where the
    toolchain is missing and RuntimeError when a compile fails."""
    home, cxx = cuda_home(), host_cxx()
    if home is None or cxx is None:
        raise Unavailable("needs CUDA toolkit headers (cuda_runtime.h, for the vector and half types) and a C++ compiler")
    kflags, rflags, lflags = VARIANTS[variant]
    common = ["-std=c++17", "-w", f"-I{home / 'include'}", f"-I{cuda_dir}", f"-I{EMU_DIR}",
              f"-DSPARSE_ENGINE_MAX_GRID_Y={MAX_GRID_Y}", f"-DSPARSE_ENGINE_MAX_STRIDE_BLOCKS={MAX_STRIDE_BLOCKS}",
              f"-DEMU_STACK_KIB={256 if variant != 'plain' else 64}", *extra_flags]
    out.mkdir(parents=True, exist_ok=True)
    obj_dir = obj_dir or out
    obj_dir.mkdir(parents=True, exist_ok=True)
    sources = []  # (source, flags, stem)
    for name in kernels:
        tu = out / f"{name}_emu.cpp"
        text = rewrite((cuda_dir / f"{name}.cu").read_text(), name)
        if not tu.exists() or tu.read_text() != text:
            tu.write_text(text)
        sources.append((tu, common + kflags, f"{name}_{variant}"))
    sources.append((EMU_DIR / "emu_runtime.cpp", common + rflags, f"emu_runtime_{variant}"))
    if driver:
        sources.append((EMU_DIR / f"{driver}.cpp", common + kflags, f"{driver}_{variant}"))
    headers = "".join(p.read_text() for d in (cuda_dir, EMU_DIR, ROOT / "csrc")
                      for p in sorted([*d.glob("*.h"), *d.glob("*.cuh")]))
    objs, todo = [], {}
    for src, flags, stem in sources:
        obj, cmd = _compile(cxx, flags, src, obj_dir, stem, headers)
        objs.append(obj)
        if cmd:
            todo[obj] = cmd
    failed = [f"{' '.join(todo[obj][-3:])}:\n{text[-4000:]}" for obj, (rc, text) in run_all(todo, timeout=1800).items() if rc]
    if failed:
        for obj in todo:
            obj.unlink(missing_ok=True)
        raise RuntimeError("emulator compile failed:\n" + "\n".join(failed))
    exe = out / f"{driver or kernels[0]}_{variant}"
    link = subprocess.run([cxx, *map(str, objs), "-o", str(exe), "-pthread", *lflags], capture_output=True, text=True)
    if link.returncode:
        if variant != "plain" and "cannot find" in link.stderr:
            raise Unavailable(f"{cxx} has no {variant} runtime: {link.stderr.strip()[-300:]}")
        raise RuntimeError(f"emulator link failed:\n{link.stderr[-4000:]}")
    return exe


def run(exe: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Runs an emulator build (sanitizer settings for the asan/tsan variants)."""
    env = {**os.environ, **SANITIZER_ENV}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, env=env)
