"""Machine instructions counted by valgrind's callgrind: a figure that does not drift with
the machine's load, for the benchmarks' --callgrind modes (Debian package valgrind)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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


FROM_HERE = "VMSIM_COUNT_FROM_HERE"


def count(argv: list[str], cwd: Path, from_here: bool = False) -> int:
    """Machine instructions of `python argv` under callgrind (that process's own). With
    from_here, only those after the process called from_here(): what comes before (the
    imports, assembling the guest) runs uninstrumented, several times faster, and is in
    neither count of a difference anyway."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    late = []
    if from_here:
        env[FROM_HERE] = "1"
        late = ["--instr-atstart=no"]
    p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *late,
                        sys.executable, *argv], env=env, cwd=cwd, capture_output=True,
                       text=True, check=False)
    m = re.search(r"Collected : (\d+)", p.stderr)
    # (A whole `vmsim run` exits with its guest's status; a from_here child, a benchmark's
    # --one run, with 0 unless it went wrong, and then its count means nothing.)
    if m is None or (from_here and p.returncode != 0):
        sys.exit(f"callgrind did not count {' '.join(argv)}: {p.stderr[-500:]}")
    return int(m.group(1))


def from_here() -> None:
    """In a process count(from_here=True) runs: instrument and count from here on
    (callgrind_control asks the running callgrind, through vgdb, before this returns).
    Elsewhere nothing. vgdb reaches a process waiting in a system call by ptrace; where
    ptrace is refused (Yama's ptrace_scope 1 and not root), it fails here after a while
    rather than hang."""
    if os.environ.get(FROM_HERE) != "1":
        return
    try:
        subprocess.run(["callgrind_control", "--instr=on", str(os.getpid())],
                       capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        sys.exit(f"callgrind_control could not turn instrumentation on ({e}): vgdb needs "
                 "ptrace (/proc/sys/kernel/yama/ptrace_scope 0, or root)")


def count_all(argvs: Sequence[list[str]], cwd: Path, from_here: bool = False) -> list[int]:
    """count() of each of `argvs`, as many at a time as there are CPUs: a count does not
    depend on what else runs, so the figures are those of one at a time, sooner."""
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda argv: count(argv, cwd, from_here), argvs))


def reference_cost(script: str, cwd: Path) -> float:
    """Machine instructions per iteration of benchmarks/reference.py's loop, counted in two
    `python script --one reference N` runs (a tenth of its iterations, and none): the
    figure beside each count, comparable across machines."""
    import reference

    n = reference.ITERATIONS // 10

    some, none = count_all([[script, "--one", "reference", str(k)] for k in (n, 0)], cwd,
                           from_here=True)
    return (some - none) / n
