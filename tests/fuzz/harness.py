"""Run one fuzz input and say whether it ended the documented way.

Two ways to run a guest:
- `run_guest`: in this process, through `vmsim.session.Session` (fast), with an
  instruction budget, a CPU-time watchdog and a memory cap;
- `run_cli`: the real `vmsim` command in a subprocess, with a hard timeout and a memory
  cap, so a hang or a crash of the interpreter itself is seen as one.

Each returns a `Result`: what happened (`outcome`, in the words of the README's "Exit
status of vmsim run") and, when it was not a documented outcome, a `finding` whose
`symptom` is a short signature the minimizer keeps constant ("hang", "exception
InterceptExit", "traceback MemoryError", "status 3" ...).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tests.fuzz.budget import CHILD_CPU_SECONDS, Hang, limit_child, memory_cap, watchdog

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_guests"
KVM_PRESENT = os.access("/dev/kvm", os.R_OK | os.W_OK)



def _documented_run_statuses() -> frozenset[int]:
    """The README's "Exit status of vmsim run", as vmsim.cli defines it (EXIT_* constants:
    0 halted or shut down, 65 does not assemble, 2 bad usage or input, 70 not modelled,
    124 --max-instructions ran out, ...), plus 128 + SIGINT/SIGTERM; (v << 1) | 1 after
    isa-debug-exit, i.e. any odd status, is allowed separately."""
    import vmsim.cli

    codes = {v for k, v in vars(vmsim.cli).items() if k.startswith("EXIT_") and isinstance(v, int)}
    return frozenset(codes | {130, 143})


RUN_STATUSES = _documented_run_statuses()
# `vmsim asm` (vmsim.asm.cli.ASM_STATUSES): 0, 2 usage or unreadable source, 65 does not
# assemble, 74 an output cannot be written.
ASM_STATUSES = frozenset({0, 2, 65, 74})

# CPU seconds one in-process guest may take (wall-clock: 4 times that). CPU time, so a
# loaded machine does not turn a slow guest into a "hang": a guest whose every
# instruction is an MMIO access emulated by kvm.ko runs at ~0.3 ms an instruction.
CPU_BASE = 5.0
CPU_PER_INSTRUCTION = 1e-3


def cpu_bound(max_instructions: int) -> float:
    return CPU_BASE + max_instructions * CPU_PER_INSTRUCTION


@dataclass(frozen=True)
class Config:
    """Where a guest runs: a backend and, for the simulated kvm.ko, a paging mode."""

    backend: str = "sim"
    paging: str = "ept"
    memory: int = 16  # MiB
    # The VGA window coalesced, as the machine has it by default (False: --no-coalesced-mmio;
    # the bare CPU has no kvm.ko either way).
    coalesced: bool = True

    @property
    def name(self) -> str:
        name = self.backend if self.backend != "sim" else f"sim+{self.paging}"
        return name + "+no-coalesced" if not self.coalesced and self.backend != "bare" else name

    def cli_args(self) -> list[str]:
        args = ["--backend", self.backend, "--memory", str(self.memory)]
        if self.backend == "sim":
            args += ["--paging", self.paging]
        if not self.coalesced and self.backend != "bare":
            args.append("--no-coalesced-mmio")
        return args


# Every backend and paging mode the in-process runner covers (kvm runs only in a
# subprocess: a KVM_RUN that never returns cannot be interrupted from Python).
INPROCESS_CONFIGS = (Config("sim", "ept"), Config("sim", "shadow"), Config("bare"))


@dataclass(frozen=True)
class Finding:
    symptom: str  # short and stable: what the minimizer keeps
    detail: str = ""  # the message, the last traceback lines, stderr

    def __str__(self) -> str:
        return f"{self.symptom}: {self.detail}" if self.detail else self.symptom


@dataclass
class Result:
    outcome: str
    finding: Finding | None = None
    status: int | None = None  # the exit status vmsim run would give
    stderr: str = ""
    extra: dict = field(default_factory=dict)


@cache
def sample_images() -> tuple[bytes, ...]:
    """The sample guests, assembled by vmsim: the seeds the mutators start from."""
    from vmsim.asm import assemble

    return tuple(assemble(p.read_text(), str(p)).data for p in sorted(SAMPLES.glob("*.asm")))


def _short_traceback(e: BaseException) -> str:
    frames = traceback.extract_tb(e.__traceback__)[-3:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
    return f"{type(e).__name__}: {str(e)[:200]} [{where}]"


def run_guest(data: bytes, cfg: Config, max_instructions: int = 20_000,
              seconds: float | None = None) -> Result:
    """Run a flat binary in process through the session API, as `vmsim run` would."""
    from vmsim.asm.image import GuestImage
    from vmsim.events import EventStream
    from vmsim.hw.exceptions import Unsupported
    from vmsim.session import Session
    from vmsim.vmm.machine import LOAD_ADDRESS, GuestLoadError, MachineConfig

    seconds = seconds if seconds is not None else cpu_bound(max_instructions)
    image = GuestImage(data=data, origin=LOAD_ADDRESS, source_file="fuzz.bin")
    # Instructions vmsim runs as #UD because they are outside its subset (x87, SSE ...):
    # where they were met, the host's KVM runs the guest on differently.
    outside: list[str] = []
    # Writes to a guest page table that is in use (seen by shadow paging's write
    # protection): after one, a stale TLB entry may legitimately be used or not.
    pte_writes = [0]
    events = EventStream()
    events.subscribe(lambda ev: outside.append(ev.fields.get("text", "")), ["not_in_subset"])
    events.subscribe(lambda ev: pte_writes.__setitem__(0, pte_writes[0] + 1), ["pte_write"])
    try:
        with memory_cap(), watchdog(seconds):
            try:
                s = Session(image, cfg.backend,
                            MachineConfig(cfg.memory, coalesced_mmio=cfg.coalesced),
                            paging=cfg.paging,
                            max_instructions=max_instructions, events=events)
            except (GuestLoadError, ValueError) as e:
                return Result(f"bad input: {e}", status=2)
            try:
                o = s.run()
            except Unsupported as e:
                return Result(f"not modelled: {e}", status=70)
            ran = s.instructions
    except Hang:
        return Result("hang", Finding("hang", f"{cfg.name}: no end within {seconds:g} s of CPU "
                                              f"time (budget {max_instructions} instructions)"))
    except MemoryError as e:
        return Result("memory", Finding("MemoryError", f"{cfg.name}: more than 1 GiB "
                                                       f"({_short_traceback(e)})"))
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        return Result("exception", Finding(f"exception {type(e).__name__}",
                                           f"{cfg.name}: {_short_traceback(e)}"))
    if o.exit_status is not None:
        if not (o.exit_status & 1):
            return Result("exit", Finding("even debug-exit status", str(o.exit_status)))
        return Result(f"debug exit {o.exit_status}", status=o.exit_status,
                      extra={"outside_subset": outside, "serial": bytes(s.serial),
                             "pte_writes": pte_writes[0], "screen": _screen(s)})
    if o.limit_reached:
        # Instructions are counted in batches; a run may overshoot by one batch at most.
        if ran > max_instructions + 20_000:
            return Result("limit", Finding("budget overshoot", f"{ran} > {max_instructions}"))
        return Result("instruction limit", status=124)
    if not o.finished:
        return Result("unfinished", Finding("run returned unfinished", o.reason))
    if s.cpus and s.cpus[0].stop_message:
        return Result(f"not modelled: {s.cpus[0].stop_message}", status=70)
    regs = s.registers() if s.cpus else {}
    return Result(o.reason or "ended", status=0,
                  extra={"outside_subset": outside, "serial": bytes(s.serial),
                         "pte_writes": pte_writes[0], "screen": _screen(s),
                         "regs": {k: regs.get(k) for k in ("EIP", "ESP", "EAX")}})


def _screen(s) -> bytes | None:
    """The VGA text screen as a display refresh draws it (None on the bare CPU)."""
    return s.machine.vga_display() if s.vm is not None else None


@dataclass
class Cli:
    status: int | None  # None: killed by the timeout
    stdout: bytes
    stderr: str


def run_cli(args: list[str], timeout: float, stdin: bytes | None = None,
            cwd: Path | None = None, close_stdout: bool = False) -> Cli:
    """`python -m vmsim ARGS` with a hard timeout, a CPU-time limit and a memory cap
    (budget.limit_child). `close_stdout`: the
    reader of stdout goes away at once (`vmsim run G | head -c 0`)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-m", "vmsim", *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         cwd=cwd or ROOT, preexec_fn=limit_child)
    if close_stdout:
        p.stdout.close()
        p.stdout = None
    try:
        out, err = p.communicate(stdin or b"", timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return Cli(None, out or b"", (err or b"").decode(errors="replace"))
    return Cli(p.returncode, out or b"", err.decode(errors="replace"))


def _usage_error(lines: list[str]) -> bool:
    """argparse's own format: `usage: ...` lines, then one `vmsim ...: error: ...`."""
    return bool(lines) and lines[0].startswith("usage:") and ": error: " in lines[-1]


def check_cli(res: Cli, statuses: frozenset[int], timeout: float,
              one_line: bool = True) -> Finding | None:
    """None when the command ended the documented way; else what was wrong."""
    if res.status is None:
        return Finding("hang", f"no end within {timeout:g} s; stderr: {res.stderr[-300:]!r}")
    err = res.stderr
    if "Traceback" in err:
        last = err.strip().splitlines()[-1] if err.strip() else ""
        return Finding(f"traceback {last.split(':')[0][:60]}", last[:300])
    if res.status == -signal.SIGXCPU:
        return Finding("hang", f"used {CHILD_CPU_SECONDS} s of CPU; stderr: {err[-300:]!r}")
    if res.status < 0:
        return Finding(f"signal {-res.status}", err[-300:])
    odd_ok = statuses is RUN_STATUSES
    if res.status not in statuses and not (odd_ok and res.status & 1):
        return Finding(f"status {res.status}", err[-300:])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if one_line and len(lines) > 1 and not _usage_error(lines):
        return Finding("stderr not one line", err[-400:])
    return None
