"""csrc/constants.h and sparse_engine/kernels/constants.py hold the same values.

The header is read as text (a regex per constant) and compared with the Python module; the
comparison is also run on altered copies of either side, so a check that could never fail is
itself a failure. Where a compiler is at hand, the header is compiled too (host C++ without
torch, and nvcc), with static_asserts written from the Python values, so the values the kernels
actually see are checked, not only the text. (The compilers come from the fixtures host_cxx and
run_all of tests/kernels/conftest.py.)
"""
from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sparse_engine.kernels import constants

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "csrc" / "constants.h"


def _expr(text: str) -> int:
    """An integer constant expression of the header: digits, shifts, +, * and int64_t(...) casts."""
    plain = re.sub(r"int64_t\((\d+)\)", r"\1", text).strip()
    assert re.fullmatch(r"[\d\s()<+*]+", plain), f"unexpected constant expression: {text!r}"
    return int(eval(plain, {"__builtins__": {}}))  # only digits and operators, checked above


def _table(text: str, name: str) -> list[str]:
    match = re.search(rf"\b{name}\[kNumCellModes\]\s*=\s*\{{(.*?)\}};", text, re.S)
    assert match, f"{name}[kNumCellModes] = {{...}}; not found in {HEADER.name}"
    return [item.strip() for item in match.group(1).split(",")]


def header_values(text: str) -> dict:
    """The constants of csrc/constants.h, in the shape of sparse_engine/kernels/constants.py."""
    work = re.search(r"\bkParallelWork\s*=\s*([^;]+);", text)
    scatter = re.search(r"\bkScatterFromBytes\s*=\s*([^;]+);", text)
    unpadded = re.search(r"\bkUnpaddedBelow\s*=\s*([^;]+);", text)
    enum = re.search(r"enum\s+class\s+CellMode\s*:\s*int\s*\{([^}]*)\}", text)
    count = re.search(r"\bkNumCellModes\s*=\s*(\d+)\s*;", text)
    assert work and scatter and unpadded and enum and count, (
        f"kParallelWork, kScatterFromBytes, kUnpaddedBelow, enum class CellMode or kNumCellModes not found in "
        f"{HEADER.name}")
    mode_ids = {name: int(value) for name, value in re.findall(r"(\w+)\s*=\s*(\d+)", enum.group(1))}
    n = int(count.group(1))
    names = [s.strip('"') for s in _table(text, "kCellModeNames")]
    gate_names = [s.strip('"') for s in _table(text, "kCellGateNames")]
    gates = [int(s) for s in _table(text, "kCellGates")]
    saved = [int(s) for s in _table(text, "kCellSavedActs")]
    for table in (names, gate_names, gates, saved):
        assert len(table) == n, f"a per-mode table of {HEADER.name} has {len(table)} entries, not kNumCellModes={n}"
    # the tables are indexed by the mode id: their names must be the enum's, in id order
    assert sorted(mode_ids.values()) == list(range(n)), mode_ids
    assert names == sorted(mode_ids, key=mode_ids.get), (names, mode_ids)
    return {
        "PARALLEL_WORK": _expr(work.group(1)),
        "SCATTER_FROM_BYTES": _expr(scatter.group(1)),
        "UNPADDED_BELOW": _expr(unpadded.group(1)),
        "MODE_IDS": mode_ids,
        "GATE_NAMES": {mode: tuple(gate_names[i]) for mode, i in mode_ids.items()},
        "GATES": {mode: gates[i] for mode, i in mode_ids.items()},
        "SAVED_ACTS": {mode: saved[i] for mode, i in mode_ids.items()},
    }


def python_values(module=constants) -> dict:
    return {key: copy.deepcopy(getattr(module, key)) for key in ("PARALLEL_WORK", "SCATTER_FROM_BYTES", "UNPADDED_BELOW",
                                                                 "MODE_IDS", "GATE_NAMES", "GATES", "SAVED_ACTS")}


def mismatches(header: dict, python: dict) -> list[str]:
    return [f"{key}: csrc/constants.h {header[key]!r} != sparse_engine/kernels/constants.py {python[key]!r}"
            for key in python if header.get(key) != python[key]]


def test_header_matches_python():
    assert not mismatches(header_values(HEADER.read_text()), python_values())


def test_python_gates_follow_the_gate_names():
    assert constants.GATES == {mode: len(names) for mode, names in constants.GATE_NAMES.items()}
    assert set(constants.MODE_IDS) == set(constants.GATE_NAMES) == set(constants.SAVED_ACTS)


# Edits of the header text that must each be reported (or make the header unreadable).
HEADER_EDITS = {
    "parallel work": ("int64_t(1) << 15", "int64_t(1) << 14"),
    "scatter from": ("int64_t(4) << 20", "int64_t(2) << 20"),
    "unpadded below": ("kUnpaddedBelow = 192", "kUnpaddedBelow = 256"),
    "mode id": ("GRU = 1, RNN_TANH = 2", "GRU = 2, RNN_TANH = 1"),
    "mode name": ('"RNN_RELU", "CTRNN"}', '"RNN_RELU", "CT_RNN"}'),
    "gate order": ('{"ifgo", "rzn"', '{"igfo", "rzn"'),
    "gates": ("{4, 3, 1, 1, 1}", "{4, 3, 1, 1, 2}"),
    "saved acts": ("{4, 4, 0, 0, 1}", "{4, 3, 0, 0, 1}"),
}


@pytest.mark.parametrize("edit", HEADER_EDITS, ids=str)
def test_a_changed_header_is_caught(edit):
    old, new = HEADER_EDITS[edit]
    text = HEADER.read_text()
    assert text.count(old) == 1, f"the edit {edit!r} no longer applies to {HEADER.name}: update HEADER_EDITS"
    try:
        found = mismatches(header_values(text.replace(old, new)), python_values())
    except AssertionError:  # the altered header no longer reads as a consistent table
        return
    assert found, f"changing {old!r} to {new!r} in {HEADER.name} went unnoticed"


def _edit_python(values: dict, edit: str) -> None:
    if edit == "parallel work":
        values["PARALLEL_WORK"] *= 2
    elif edit == "scatter from":
        values["SCATTER_FROM_BYTES"] //= 2
    elif edit == "unpadded below":
        values["UNPADDED_BELOW"] += 64
    elif edit == "mode id":
        values["MODE_IDS"]["GRU"], values["MODE_IDS"]["LSTM"] = values["MODE_IDS"]["LSTM"], values["MODE_IDS"]["GRU"]
    elif edit == "new mode":
        values["MODE_IDS"]["RNN_GELU"] = len(values["MODE_IDS"])
    elif edit == "gate order":
        values["GATE_NAMES"]["GRU"] = ("z", "r", "n")
    elif edit == "gates":
        values["GATES"]["GRU"] = 4
    elif edit == "saved acts":
        values["SAVED_ACTS"]["CTRNN"] = 0


@pytest.mark.parametrize("edit", ["parallel work", "scatter from", "unpadded below", "mode id", "new mode", "gate order",
                                  "gates", "saved acts"])
def test_a_changed_python_constant_is_caught(edit):
    changed = python_values()
    _edit_python(changed, edit)
    assert changed != python_values()
    assert mismatches(header_values(HEADER.read_text()), changed)


def _static_asserts() -> str:
    lines = ['#include "constants.h"', "using namespace sparse_engine;",
             f"static_assert(kParallelWork == {constants.PARALLEL_WORK});",
             f"static_assert(kScatterFromBytes == {constants.SCATTER_FROM_BYTES});",
             f"static_assert(kUnpaddedBelow == {constants.UNPADDED_BELOW});",
             f"static_assert(kNumCellModes == {len(constants.MODE_IDS)});"]
    for mode, mode_id in constants.MODE_IDS.items():
        m = f"CellMode::{mode}"
        lines += [f"static_assert(static_cast<int>({m}) == {mode_id});",
                  f"static_assert(cell_gates({m}) == {constants.GATES[mode]});",
                  f"static_assert(cell_saved_acts({m}) == {constants.SAVED_ACTS[mode]});"]
    return "\n".join(lines) + "\n"


def test_header_compiles_alone_with_the_python_values(tmp_path, host_cxx, run_all):
    """constants.h compiles without torch, as host C++17 (the CPU kernels, the emulator) and with
    nvcc (the .cu files), and the compiled values are the Python ones."""
    cxx, nvcc = host_cxx(), shutil.which("nvcc")
    if cxx is None and nvcc is None:
        pytest.skip("no host C++ compiler and no nvcc")
    (tmp_path / "check.cpp").write_text(_static_asserts())
    kernel = "__global__ void k(int* out) { *out = kParallelWork > 0; }\n"  # a device use, for nvcc
    (tmp_path / "check.cu").write_text(_static_asserts() + kernel)
    commands = {}
    if cxx:
        commands["c++"] = [cxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Werror", f"-I{ROOT / 'csrc'}",
                           str(tmp_path / "check.cpp")]
    if nvcc:
        commands["nvcc"] = [nvcc, "-std=c++17", "-c", f"-I{ROOT / 'csrc'}", str(tmp_path / "check.cu"), "-o",
                            str(tmp_path / "check.o")]
    failures = [f"{key}:\n{out[-3000:]}" for key, (rc, out) in run_all(commands, timeout=300).items() if rc]
    assert not failures, "\n".join(failures)


def test_a_wrong_python_value_fails_to_compile(tmp_path, host_cxx):
    """The static_assert check above can fail: a TU asserting a changed value is rejected."""
    cxx = host_cxx()
    if cxx is None:
        pytest.skip("no host C++ compiler")
    wrong = _static_asserts().replace(f"kParallelWork == {constants.PARALLEL_WORK}",
                                      f"kParallelWork == {constants.PARALLEL_WORK + 1}")
    (tmp_path / "wrong.cpp").write_text(wrong)
    proc = subprocess.run([cxx, "-std=c++17", "-fsyntax-only", f"-I{ROOT / 'csrc'}", str(tmp_path / "wrong.cpp")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "static assert" in proc.stderr.lower().replace("_", " ")
