"""Machine instructions counted by valgrind's callgrind: a figure that does not drift with
the machine's load, for the benchmarks' --callgrind modes (Debian package valgrind)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def require_valgrind() -> None:
    if shutil.which("valgrind") is None:
        sys.exit("--callgrind needs valgrind (apt-get install valgrind)")


def write_bytecode(argv: list[str], cwd: Path) -> None:
    """Run `python argv` once outside callgrind with the bytecode cache written (even where
    PYTHONDONTWRITEBYTECODE is set): else every counted run compiles the modules it
    imports, and that is counted."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, *argv], env=env, cwd=cwd, capture_output=True, check=False)


def count(argv: list[str], cwd: Path) -> int:
    """Machine instructions of `python argv` under callgrind (that process's own)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                        sys.executable, *argv], env=env, cwd=cwd, capture_output=True,
                       text=True, check=False)
    m = re.search(r"Collected : (\d+)", p.stderr)
    if m is None:
        sys.exit(f"callgrind did not count {' '.join(argv)}: {p.stderr[-500:]}")
    return int(m.group(1))


def reference_cost(script: str, cwd: Path) -> float:
    """Machine instructions per iteration of benchmarks/reference.py's loop, counted in two
    `python script --one reference N` runs (a tenth of its iterations, and none): the
    figure beside each count, comparable across machines."""
    import reference

    n = reference.ITERATIONS // 10

    def one(k: int) -> int:
        return count([script, "--one", "reference", str(k)], cwd)
    return (one(n) - one(0)) / n
