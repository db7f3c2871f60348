"""Every guest the project has, under EPT and under shadow paging, against bare metal.

The guest cannot tell the modes apart: serial output and exit status must equal those of
the same guest on the bare CPU (which tests/guests checks against the SDM and QEMU).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmsim.asm import AsmError, assemble
from vmsim.asm.image import GuestImage
from vmsim.session import Session

ROOT = Path(__file__).resolve().parents[2]
GUESTS = sorted([*(ROOT / "sample_guests").glob("*.asm"),
                 *(ROOT / "tests" / "data" / "guests").glob("*.asm")])
HYPERVISOR_AWARE = {"cpuid", "hypercall"}
# Guests that wait for interrupts from the PIC and PIT or the local APIC, which the bare
# CPU does not have (nothing interrupts its HLT): the two paging modes are compared instead.
NEEDS_IRQCHIP = {"timer", "apic"}
LIMIT = 400_000  # every guest here ends well before this


def _run(image, backend: str, paging: str = "ept") -> tuple[bytes, object, str]:
    s = Session(image, backend, paging=paging, max_instructions=LIMIT)
    outcome = s.run()
    return bytes(s.serial), outcome.exit_status, outcome.reason


@pytest.mark.parametrize("path", GUESTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("paging", ["ept", "shadow"])
def test_guest_cannot_tell_the_paging_mode(path: Path, paging: str, tmp_path: Path) -> None:
    try:
        image = assemble(path.read_text(), str(path))
    except AsmError:
        # Some test guests use NASM's macro preprocessor (%include, %macro), which vmsim's
        # assembler does not have: build those with nasm itself.
        image = GuestImage(_nasm(path, tmp_path), origin=0x100000)
    if path.stem in HYPERVISOR_AWARE or path.stem in NEEDS_IRQCHIP:
        # These guests look for the hypervisor (CPUID's KVM leaves, VMCALL) or need its
        # interrupt controllers, so bare metal differs by design; the two paging modes
        # must still agree with each other.
        if paging == "ept":
            pytest.skip(f"{path.name} sees the hypervisor: compared between the modes only")
        bare_out, bare_status, bare_reason = _run(image, "sim", "ept")
    else:
        bare_out, bare_status, bare_reason = _run(image, "bare")
    out, status, reason = _run(image, "sim", paging)
    assert out == bare_out
    assert status == bare_status
    if bare_status is None:  # both shut down or halted the same way
        assert ("triple fault" in reason) == ("triple fault" in bare_reason or
                                             "shutdown" in bare_reason)


def _nasm(path: Path, tmp_path: Path) -> bytes:
    import shutil
    import subprocess

    exe = shutil.which("nasm")
    if exe is None:
        pytest.skip(f"{path.name} needs nasm (Debian package nasm)")
    out = tmp_path / "g.bin"
    subprocess.run([exe, "-f", "bin", "-i", f"{path.parent}/", "-o", str(out), str(path)],
                   check=True, capture_output=True)
    return out.read_bytes()
