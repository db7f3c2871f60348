"""Build the self-checking guests in tests/data/guests and run them on vmsim and on QEMU.

A guest is a NASM source that includes common.inc: it prints what it observes as text
lines on COM1 and ends with a write to isa-debug-exit (or a triple fault, on purpose).
Both runners give the same record, so a test can compare them field by field.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from vmsim.asm.image import GuestImage
from vmsim.bare import BareMetal
from vmsim.hw.cpu import StopReason
from vmsim.vmm.machine import Machine, MachineConfig

GUESTS = Path(__file__).resolve().parents[1] / "data" / "guests"
QEMU = "qemu-system-i386"
QEMU_TIMEOUT = 20.0  # seconds; a guest needs well under one
VMSIM_BUDGET = 20_000_000  # instructions; a guest needs well under one million

_BUILD = Path(tempfile.mkdtemp(prefix="vmsim-guests-"))
atexit.register(shutil.rmtree, _BUILD, ignore_errors=True)


@dataclass(frozen=True)
class Outcome:
    serial: bytes
    exit_status: int | None  # (v << 1) | 1 after the guest wrote v to 0x501
    shutdown: bool  # triple fault (QEMU -no-reboot: exit status 0 without a debug exit)
    detail: str = ""


def guest_names() -> list[str]:
    return sorted(p.stem for p in GUESTS.glob("*.asm"))


def nasm_path() -> str | None:
    return shutil.which("nasm")


def qemu_path() -> str | None:
    return shutil.which(QEMU)


@cache
def build(name: str) -> Path:
    """Assemble tests/data/guests/<name>.asm with nasm (the encoding oracle)."""
    exe = nasm_path()
    if exe is None:
        raise FileNotFoundError("nasm")
    out = _BUILD / f"{name}.bin"
    p = subprocess.run([exe, "-f", "bin", "-I", f"{GUESTS}/", "-o", str(out),
                        str(GUESTS / f"{name}.asm")], capture_output=True, timeout=60)
    if p.returncode:
        raise RuntimeError(f"nasm failed on {name}.asm:\n{p.stderr.decode()}")
    return out


def run_vmsim(name: str, budget: int = VMSIM_BUDGET) -> Outcome:
    out = bytearray()
    m = Machine(MachineConfig(memory_mib=16), serial_out=out.extend)
    m.load_image(GuestImage(data=build(name).read_bytes(), origin=0x100000))
    res = BareMetal(m).run(max_instructions=budget)
    shutdown = res.reason is StopReason.SHUTDOWN
    if res.reason not in (StopReason.HLT, StopReason.REQUESTED, StopReason.SHUTDOWN):
        return Outcome(bytes(out), res.exit_status, shutdown, f"{res.reason}: {res.message}")
    return Outcome(bytes(out), res.exit_status, shutdown)


def run_qemu(name: str) -> Outcome:
    exe = qemu_path()
    if exe is None:
        raise FileNotFoundError(QEMU)
    cmd = [exe, "-M", "pc", "-m", "16", "-display", "none", "-nodefaults", "-device", "VGA",
           "-serial", "stdio", "-device", "isa-debug-exit,iobase=0x501,iosize=1",
           "-kernel", str(build(name)), "-no-reboot"]
    env = dict(os.environ, QEMU_AUDIO_DRV="none")
    p = subprocess.run(cmd, capture_output=True, timeout=QEMU_TIMEOUT, env=env,
                       stdin=subprocess.DEVNULL)
    # -no-reboot turns a triple fault into a clean exit (status 0); a debug exit is odd.
    shutdown = p.returncode == 0
    return Outcome(p.stdout, None if shutdown else p.returncode, shutdown,
                   p.stderr.decode(errors="replace"))
