"""Compiler helpers of the build tests (nvcc objects, the CUDA glue, the emulator, portability):
emu_build.py uses them, and the tests get them as the fixtures host_cxx, cuda_home and run_all of
tests/kernels/conftest.py."""
import os
import shutil
import subprocess


def host_cxx() -> str | None:
    """The host C++ compiler ($CXX, else g++, else c++), or None."""
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


def cuda_home():
    """The CUDA toolkit's root (a pathlib.Path whose include/ has cuda_runtime.h), or None:
    $CUDA_HOME, $CUDA_PATH, /usr/local/cuda, then the toolkit of the nvcc on PATH."""
    from pathlib import Path

    for cand in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if cand and (Path(cand) / "include" / "cuda_runtime.h").exists():
            return Path(cand)
    nvcc = shutil.which("nvcc")
    if nvcc and (Path(nvcc).resolve().parents[1] / "include" / "cuda_runtime.h").exists():
        return Path(nvcc).resolve().parents[1]
    return None


def run_all(commands: dict, timeout: float = 600) -> dict:
    """Runs the commands (independent compiles) at once, both cores busy, and returns
    {key: (returncode, stdout and stderr)}."""
    procs = {key: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for key, cmd in commands.items()}
    results = {}
    for key, proc in procs.items():
        text, _ = proc.communicate(timeout=timeout)
        results[key] = (proc.returncode, text)
    return results
