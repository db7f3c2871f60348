"""(b) Every sample guest on qemu-system-i386 (TCG, no KVM) prints what it prints on vmsim.

Where a guest looks at the hypervisor itself, QEMU's TCG legitimately answers otherwise;
those lines are listed here with what QEMU prints instead, and everything else must match.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.stack.stackrun import run_sim, sample_guests
from vmsim.asm import assemble

QEMU = "qemu-system-i386"
TIMEOUT = 20.0


def run_qemu(image: bytes, tmp_path: Path) -> tuple[bytes, int]:
    exe = shutil.which(QEMU)
    if exe is None:
        pytest.skip(f"{QEMU} is not installed (Debian package qemu-system-x86)")
    binary = tmp_path / "guest.bin"
    binary.write_bytes(image)
    cmd = [exe, "-M", "pc", "-m", "16", "-display", "none", "-nodefaults", "-device", "VGA",
           "-serial", "stdio", "-device", "isa-debug-exit,iobase=0x501,iosize=1",
           "-kernel", str(binary), "-no-reboot"]
    p = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
                       env=dict(os.environ, QEMU_AUDIO_DRV="none"))
    return p.stdout, p.returncode


def _cpuid(sim: list[str], qemu: list[str]) -> None:
    # TCG is not KVM: its own signature ("TCGTCGTCGTCG"), other leaf counts, and the
    # hypervisor bit set. The vendor is the same and the guest must see it is not on KVM.
    assert qemu[0].split(", vendor ")[1] == sim[0].split(", vendor ")[1]
    assert re.fullmatch(r'cpuid 0x40000000: max hypervisor leaf 0x[0-9a-f]{8}, signature ".*"',
                        qemu[2])
    assert qemu[-1] == "no KVM signature: not running on KVM"
    assert sim[-1] == "running on KVM"


# Guest -> (line on vmsim, line on QEMU) pairs that differ for a stated reason.
DEPARTURES = {
    # KVM injects #GP(0) for an x2APIC MSR with no x2APIC; TCG's RDMSR just answers.
    "exceptions": [("rdmsr 0x802: vector 0x0d error 0x00000000 eip 0x00100185 (the faulting "
                    "instruction) cs 0x08", "rdmsr 0x802: no exception")],
    # No KVM signature on TCG: the guest does not try VMCALL (it would be #UD there).
    "hypercall": None,
}


@pytest.mark.parametrize("guest", sample_guests(), ids=lambda p: p.stem)
def test_sample_guest_on_qemu(guest: Path, tmp_path: Path) -> None:
    image = assemble(guest.read_text(), str(guest))
    qemu_out, qemu_status = run_qemu(image.data, tmp_path)
    sim = run_sim(guest)
    assert qemu_status == sim.status, (qemu_status, sim.status, qemu_out)
    sim_lines = sim.serial.decode().splitlines()
    qemu_lines = qemu_out.decode(errors="replace").splitlines()
    if guest.stem == "cpuid":
        _cpuid(sim_lines, qemu_lines)
        return
    if guest.stem == "hypercall":
        assert qemu_lines == ["no KVM signature: no hypercalls tried"]
        assert sim_lines[0] == "KVM signature found: trying hypercalls"
        return
    for vm_line, qemu_line in DEPARTURES.get(guest.stem) or []:
        assert vm_line in sim_lines, f"vmsim no longer prints {vm_line!r}"
        sim_lines[sim_lines.index(vm_line)] = qemu_line
    assert sim_lines == qemu_lines
