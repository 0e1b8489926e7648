"""Compiler helpers of the build tests (nvcc objects, the CUDA glue, the emulator, portability)."""
import os
import shutil
import subprocess


def host_cxx() -> str | None:
    """The host C++ compiler ($CXX, else g++, else c++), or None."""
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


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
