"""Every guest a lesson ships (its start, its other guests, its reference solutions) is a
real guest: on qemu-system-i386 (TCG) it prints what it prints in the lesson's own vmsim
machine and ends with the same status. A student may take any of them to real QEMU."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stack.test_qemu import run_qemu
from vmsim.asm import assemble
from vmsim.lessons import all_lessons

LESSONS = Path(__file__).resolve().parents[2] / "lessons"
# Lines that differ for a stated reason: (lesson directory, line on vmsim, line on QEMU).
DEPARTURES = [
    # CPUID leaf 0x40000000: TCG has its own signature ("TCGTCGTCGTCG"), not "KVMKVMKVM".
    ("05-kernel-vs-userspace", "KVM", "not KVM"),
]


def _guests() -> list:
    if not LESSONS.is_dir():
        return []
    out = []
    for lesson in all_lessons([LESSONS]):
        for guest in sorted(lesson.directory.glob("*.asm")):
            out.append(pytest.param(lesson, guest, id=f"{lesson.directory.name}/{guest.name}"))
    return out


@pytest.mark.parametrize(("lesson", "guest"), _guests())
def test_lesson_guest_runs_the_same_on_qemu(lesson, guest: Path, tmp_path: Path) -> None:
    m = lesson.machine
    if m.get("smp", 1) > 1:
        pytest.skip("QEMU's pc machine holds its other CPUs until INIT-SIPI-SIPI (vmsim starts them all)")
    if m.get("disk"):
        pytest.skip("virtio-mmio is on QEMU's microvm machine, not pc")
    image = assemble(guest.read_text(), str(guest))
    qemu_out, qemu_status = run_qemu(image.data, tmp_path)
    s = lesson.session(source=guest.read_text(), source_name=str(guest), history=False)
    outcome = s.run()
    assert outcome.exit_status is not None, f"{guest.name} did not end in vmsim: {outcome.reason}"
    assert qemu_status == outcome.exit_status, (qemu_status, outcome.exit_status, qemu_out)
    sim_lines = bytes(s.serial).decode(errors="replace").splitlines()
    for where, vm_line, qemu_line in DEPARTURES:
        if where == lesson.directory.name:
            assert vm_line in sim_lines, f"vmsim no longer prints {vm_line!r}"
            sim_lines[sim_lines.index(vm_line)] = qemu_line
    assert qemu_out.decode(errors="replace").splitlines() == sim_lines
