"""Run a guest through the whole stack (vmsim's VMM over a KVM) and keep what userspace saw.

A run gives the COM1 output, the isa-debug-exit status and the `kvm_userspace_exit`
trace events (struct kvm_run's fields for each exit to userspace; for an IN or an MMIO
read, the data the devices then answered, from the `device_access` events that follow).
The simulated kvm.ko runs in this process; the host's /dev/kvm runs through the `vmsim`
command in a subprocess, with a timeout, because a KVM_RUN that never returns (seen on the
host's software KVM for VMCALL) cannot be interrupted from Python.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_guests"
KVM_TIMEOUT = 30.0  # seconds; every guest here needs well under one
SIM_LIMIT = 5_000_000  # instructions; every guest here needs well under one million
# Fields that depend on the backend's clock or on unrelated events, not on the exit itself.
VOLATILE = ("seq", "time")


@dataclass
class StackRun:
    serial: bytes
    status: int | None  # the isa-debug-exit status, (v << 1) | 1
    exits: list[dict]  # the kvm_userspace_exit events, in order, without seq/time
    detail: str = ""  # why the run ended, when it did not end with a debug exit


def sample_guests() -> list[Path]:
    return sorted(SAMPLES.glob("*.asm"))


def kvm_exits(trace_lines: list[str]) -> list[dict]:
    out: list[dict] = []
    answers: bytearray | None = None  # device reads after an IN / MMIO read exit
    for line in trace_lines:
        ev = json.loads(line)
        kind = ev.get("kind")
        if kind == "kvm_userspace_exit":
            for k in VOLATILE:
                ev.pop(k, None)
            out.append(ev)
            answers = bytearray() if "data" in ev and ev["data"] is None else None
        elif kind == "device_access" and answers is not None and not ev["is_write"]:
            answers += ev["value"].to_bytes(ev["size"], "little")
            out[-1]["data"] = answers.hex()
        elif kind == "kvm_vcpu_ioctl":
            answers = None
    return out


def run_sim(guest: str | Path, paging: str = "ept", coalesced: bool = True) -> StackRun:
    """vmsim's VMM on the simulated kvm.ko, in process, traced as `vmsim run --trace` does
    (`coalesced` False: as with --no-coalesced-mmio)."""
    from vmsim.events import EventStream
    from vmsim.session import Session
    from vmsim.trace import TraceWriter
    from vmsim.vmm.machine import MachineConfig

    events = EventStream()
    buf = io.StringIO()
    trace = TraceWriter(events, buf, "vm")
    s = Session(str(guest), "sim", MachineConfig(coalesced_mmio=coalesced), paging=paging,
                max_instructions=SIM_LIMIT, events=events)
    outcome = s.run()
    trace.close()
    return StackRun(bytes(s.serial), outcome.exit_status,
                    kvm_exits(buf.getvalue().splitlines()), outcome.reason)


def guest_sees(text: str, backend: str, paging: str,
               reads: tuple[tuple[int, int], ...]) -> tuple:
    """Run the guest `text` on `backend` ("bare", "sim" with `paging`, or "kvm", the host's)
    and give what a guest that stores what it sees leaves: its isa-debug-exit status,
    whether it shut down (a triple fault), and the bytes at each (address, length) of
    `reads` (linear: the guests page nothing). The words of a stop's reason differ by
    backend; the status, or a shutdown, is what counts."""
    from vmsim.asm import assemble
    from vmsim.session import Session

    image = assemble(text, "<guest>")
    s = Session(image, backend, paging=paging) if backend == "sim" else Session(image, backend)
    outcome = s.run()
    return (outcome.exit_status, "triple fault" in outcome.reason,
            *(s.read_linear(at, n) for at, n in reads))


def run_cli(args: list[str], timeout: float = KVM_TIMEOUT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "vmsim", *args], capture_output=True,
                          timeout=timeout, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)


def run_kvm(guest: str | Path, tmp: Path, coalesced: bool = True) -> StackRun:
    """The same VMM on the host's /dev/kvm (`vmsim run --backend kvm --trace`, with
    --no-coalesced-mmio where `coalesced` is False)."""
    trace = tmp / (Path(guest).stem + ".kvm.jsonl")
    p = run_cli(["run", "--backend", "kvm", *([] if coalesced else ["--no-coalesced-mmio"]),
                 "--trace", str(trace), str(guest)])
    status = p.returncode if p.returncode & 1 else None
    lines = trace.read_text().splitlines() if trace.exists() else []
    return StackRun(p.stdout, status, kvm_exits(lines), p.stderr.decode(errors="replace").strip())


@cache
def host_kvm_problem() -> str | None:
    """None when the host's /dev/kvm can run a VM, else why not (the reason to skip)."""
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm on this host"
    from vmsim.hostkvm import HostKvmError, open_kvm

    try:
        k = open_kvm()
    except (HostKvmError, OSError) as e:
        return f"/dev/kvm cannot be used: {e}"
    k.close()
    return None


def serial_of(exits: list[dict], port: int = 0x3F8) -> bytes:
    """What the guest wrote to a port, as the exits to userspace carried it."""
    out = bytearray()
    for e in exits:
        if e.get("reason") == "KVM_EXIT_IO" and e["direction"] == "out" and e["port"] == port:
            out += bytes.fromhex(e["data"])
    return bytes(out)


def cut_after_line(exits: list[dict], line_start: bytes) -> list[dict]:
    """The exits up to the one that wrote the newline ending the COM1 line that starts with
    `line_start` (everything the guest did before a point the host KVM cannot pass)."""
    out = bytearray()
    for i, e in enumerate(exits):
        if e.get("reason") == "KVM_EXIT_IO" and e["direction"] == "out" and e["port"] == 0x3F8:
            out += bytes.fromhex(e["data"])
            lines = bytes(out).split(b"\n")
            if any(ln.startswith(line_start) for ln in lines[:-1]):
                return exits[:i + 1]
    raise AssertionError(f"the guest never finished a line starting {line_start!r}")


def first_difference(a: list[dict], b: list[dict], names: tuple[str, str] = ("sim", "kvm")) -> str:
    """'' when equal, else a report of the first exit that differs, with the one before it."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            before = f"\n  previous exit: {a[i - 1]}" if i else ""
            fields = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
            return (f"exit #{i} differs in {', '.join(fields)}:{before}\n"
                    f"  {names[0]}: {x}\n  {names[1]}: {y}")
    if len(a) != len(b):
        short, n = (names[0], len(a)) if len(a) < len(b) else (names[1], len(b))
        longer = b if len(a) < len(b) else a
        return (f"{short} stops after {n} exits ({len(a)} vs {len(b)}); the next one: "
                f"{longer[n]}")
    return ""


def printed_lines(guest: Path, way: str) -> tuple[int | None, list[str]]:
    """The exit status and the whitespace-separated words `guest` (a .asm source, or a flat
    binary loaded at 0x100000) printed on COM1, run on `way`: "bare", "sim-ept",
    "sim-shadow", or "kvm" (the host's; skipped where there is none)."""
    if way == "kvm":
        import pytest

        if (why := host_kvm_problem()) is not None:
            pytest.skip(why)
        p = run_cli(["run", "--backend", "kvm", str(guest)])
        return p.returncode, p.stdout.decode().split()
    from vmsim.asm import assemble
    from vmsim.asm.image import GuestImage
    from vmsim.session import Session

    backend, _, paging = way.partition("-")
    out = bytearray()
    kw = {"paging": paging} if paging else {}
    image = assemble(guest.read_text(), str(guest)) if guest.suffix == ".asm" \
        else GuestImage(guest.read_bytes(), 0x100000, source_file=str(guest))
    s = Session(image, backend, serial_out=out.extend, **kw)
    status = s.run().exit_status
    return status, out.decode().split()
