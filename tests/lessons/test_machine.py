"""A lesson's machine: a disk is a private copy (the lesson's file never written), a
snapshot to start from, and suspend/resume actions."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.lessons.conftest import EVERYTHING, HEAD, ROOT
from vmsim.lessons import load_lesson
from vmsim.lessons.run import LessonRun, verify_lesson

DO_RUN = """
[[steps]]
id = "s"
kind = "do"
title = {{ en = "A", zh-CN = "A" }}
solution = [ {{ do = "run" }} ]
checks = [ {checks} ]
"""


def test_a_disk_is_copied_for_every_session(make_lesson) -> None:
    """virtio_blk.asm writes a pattern to sector 5 (its header says so): the write reaches
    the session's copy, not the lesson's disk.img."""
    image = bytes(range(256)) * 64  # 16 KiB: 32 sectors
    head = HEAD.replace("max_instructions = 20000", 'max_instructions = 2000000\ndisk = "disk.img"')
    les = make_lesson(DO_RUN.format(checks='{ type = "events", kind = "virtio_blk_handle_write", '
                                           'min = 1 }, { type = "outcome", exit_status = 1 }'),
                      head=head, guest=(ROOT / "sample_guests" / "virtio_blk.asm").read_text(),
                      files={"disk.img": image.decode("latin-1")})
    disk = les.directory / "disk.img"
    disk.write_bytes(image)
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    run = LessonRun(les)
    s = run.new_session("s", history=False)
    assert s.machine.config.disk != str(disk)
    s.run()
    assert run.check("s").passed
    assert Path(s.machine.config.disk).read_bytes() != image  # the copy was written
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before


def test_a_lesson_can_start_from_a_snapshot(tmp_path: Path, make_lesson) -> None:
    """A snapshot taken after the first OUT: the lesson's session resumes there ("h" already
    on COM1) and runs to the end."""
    from vmsim.session import Session

    snap_dir = tmp_path / "snap"
    snap_dir.mkdir()
    s = Session(str(EVERYTHING / "guest.asm"), serial_out=lambda b: None)
    s.step_userspace_exit()
    s.save_snapshot(str(snap_dir / "start.vmsnap"))
    head = HEAD.replace('guest = "guest.asm"\n', "").replace(
        "[machine]\n", '[machine]\nsnapshot = "start.vmsnap"\n')
    les = make_lesson(DO_RUN.format(checks='{ type = "serial", equals = "hi\\n" }, '
                                           '{ type = "events", kind = "kvm_userspace_exit", count = 3 }'),
                      head=head, files={"start.vmsnap": ""})
    (les.directory / "start.vmsnap").write_bytes((snap_dir / "start.vmsnap").read_bytes())
    fresh = les.session("s")
    assert bytes(fresh.serial) == b"h" and fresh.instructions > 0
    assert [v.ok for v in verify_lesson(les)] == [True]


def test_suspend_and_resume_actions_record_both_sessions() -> None:
    les = load_lesson(EVERYTHING)
    run = LessonRun(les)
    res = run.run_actions(les.step("run-to-end"), les.step("run-to-end").solution)
    assert res.passed  # serial "hi\n" whole across the two sessions, KVM_GET_REGS once
