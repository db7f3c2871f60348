"""A lesson step's machine as a Session: the guest (or a student's source), the [machine]
settings with the step's overrides, a private copy of any disk (a lesson's files are
never written), or the snapshot to start from."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

from vmsim.lessons.model import Lesson, Step


def machine_settings(lesson: Lesson, step: Step | None, overrides: dict | None = None) -> dict:
    m = dict(step.machine if step is not None else lesson.machine)
    m.update(overrides or {})
    return m


def make_session(lesson: Lesson, step: Step | None, source: str | None = None, *,
                 machine: dict | None = None, source_name: str | None = None, **kw):
    """See Lesson.session. Raises vmsim.asm.AsmError for a source that does not assemble,
    GuestLoadError or ValueError for a guest or setting vmsim refuses."""
    from vmsim.session import Session
    from vmsim.vmm.machine import MachineConfig

    m = machine_settings(lesson, step, machine)
    kw.setdefault("max_instructions", m.get("max_instructions", lesson.max_instructions))
    snapshot = m.get("snapshot")
    if snapshot is not None and source is None:
        return Session.load_snapshot(str(lesson.directory / snapshot), **kw)
    tmp = None
    disk = None
    if m.get("disk"):
        tmp = tempfile.mkdtemp(prefix="vmsim-lesson-")
        disk = str(Path(tmp) / Path(m["disk"]).name)
        shutil.copyfile(lesson.directory / m["disk"], disk)
    config = MachineConfig(
        memory_mib=m.get("memory_mib", 16),
        serial_in=m.get("serial_in", "").encode("utf-8"),
        smp=m.get("smp", 1),
        irqchip=m.get("irqchip", "kernel"),
        disk=disk,
        disk_readonly=m.get("disk_readonly", False),
        ioeventfd=m.get("ioeventfd", True),
        coalesced_mmio=m.get("coalesced_mmio", True),
    )
    try:
        if source is not None:
            from vmsim.asm import assemble

            guest = assemble(source, source_name or "submission.asm")
        else:
            g = step.guest if step is not None else lesson.guest
            if g is None:
                raise ValueError(f"lesson {lesson.id}: no guest (and no snapshot) to start from")
            guest = str(g)
        s = Session(guest, backend=m.get("backend", "sim"), config=config,
                    paging=m.get("paging", "ept"), **kw)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if tmp is not None:
        weakref.finalize(s, shutil.rmtree, tmp, True)
    return s
