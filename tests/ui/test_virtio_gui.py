"""Issue 11 in the GUI: `vmsim gui --disk`, File > Attach disk image, the Device queues
panel against Session.virtio_queues() (the oracle: the session's own view of the rings in
guest memory), the diagram's disk, virtio-blk and iothread boxes, and the virtqueue-kick
and request-completed breakpoints. sample_guests/virtio_blk.asm drives it, on an image
made here; runs go to breakpoints and to their end, never timed (qtbot.waitUntil only
bounds a hang)."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys

import pytest

from tests.ui.conftest import HELLO, ROOT

GUEST = ROOT / "sample_guests" / "virtio_blk.asm"
WAIT = 120_000  # ms: a bound on a hang, not a timing
SECTORS = 64


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(random.Random(11).randbytes(SECTORS * 512))
    return path


def _run_until_stopped(b, qtbot) -> None:
    b.run()
    qtbot.waitUntil(lambda: not b.running, timeout=WAIT)


def _show_queues(win) -> None:
    win.raise_panel("", "virtio")
    win.refresh()


def _numbers(text: str) -> list[int]:
    return [int(t, 0) for t in re.findall(r"\b(?:0x[0-9a-fA-F]+|\d+)\b", text)]


def _blk(win) -> dict:
    views = [v for v in win.bridge.session.virtio_queues() if v["device_id"]]
    assert len(views) == 1 and views[0]["device_id"] == 2
    return views[0]


def _check_panel(win) -> dict:
    """Every number the Device queues panel shows equals the session's view; returns it."""
    from ui import text as T
    from ui.queues import feature_names

    _show_queues(win)
    p = win.queues
    v = _blk(win)
    assert p.view == v
    cells = p.cells
    lines = p.summary.text().splitlines()
    assert _numbers(lines[0]) == [v["transport"], v["base"], v["irq"], v["irq_level"]]
    assert _numbers(lines[1])[0] == v["status"]
    assert lines[1].split(": ", 1)[1].split() == (v["status_names"] or ["0"])
    assert _numbers(lines[2])[:2] == [v["device_features"], v["driver_features"]]
    negotiated = feature_names(v["device_features"] & v["driver_features"])
    assert lines[2].split("negotiated: ")[1].split() == (negotiated or ["none"])
    q = v["queues"][0]
    qline = next(line for line in lines if line.startswith("queue 0"))
    assert _numbers(qline) == [0, q["size"], q["desc_addr"], q["avail_addr"], q["used_addr"],
                               q["inuse"]]
    assert qline.split(",")[1].split(";")[0].strip() == (T.READY if q["ready"] else T.NOT_READY)
    # The descriptor table: address, length, flags (value and names), next.
    rows = cells(p.desc)
    assert len(rows) == len(q["descriptors"])
    for i, (row, d) in enumerate(zip(rows, q["descriptors"], strict=True)):
        assert [int(row[0]), int(row[1], 16), int(row[2]), int(row[3].split()[0], 16), int(row[4])] \
            == [i, d["addr"], d["len"], d["flags"], d["next"]]
        names = row[3].split()[1:]
        assert ("NEXT" in names, "WRITE" in names, "INDIRECT" in names) == \
            (bool(d["flags"] & 1), bool(d["flags"] & 2), bool(d["flags"] & 4))
    # The rings: their indices, the device's position, each slot.
    if q["avail"] is None:
        assert p.avail_label.text() == p.used_label.text() == T.NO_RING
        assert cells(p.avail) == cells(p.used) == []
    else:
        assert _numbers(p.avail_label.text()) == [q["avail"]["idx"], q["last_avail_idx"],
                                                  q["avail"]["flags"]]
        assert [[int(r[0]), int(r[1])] for r in cells(p.avail)] == \
            [[s, h] for s, h in enumerate(q["avail"]["ring"])]
        assert _numbers(p.used_label.text()) == [q["used"]["idx"], q["used"]["flags"]]
        assert [[int(r[0]), int(r[1]), int(r[2])] for r in cells(p.used)] == \
            [[s, e["id"], e["len"]] for s, e in enumerate(q["used"]["ring"])]
    # The requests and their progress.
    reqs = cells(p.requests)
    assert len(reqs) == len(v["requests"])
    for row, r in zip(reqs, v["requests"], strict=True):
        assert row[:4] == [str(r["head"]), r["type"], "" if r["sector"] is None else str(r["sector"]),
                           str(r["nsectors"])]
        assert row[4].split() == [str(d) for d in r["descs"]]
        assert row[5] == (r["status"] or "")
        assert row[6].split(" > ") == r["progress"]
    # The disk's sectors.
    assert [[int(r[0]), r[1]] for r in cells(p.disk)] == \
        [[s, T.ACCESS_NAMES[how]] for s, how in v["sectors_touched"].items()]
    assert _numbers(p.disk_label.text().split(": ", 1)[1]) == \
        [v["capacity"], v["sectors_read"], v["sectors_written"], len(v["sectors_touched"])]
    return v


def _detail(win, box: str) -> str:
    return win.diagram.boxes[box].detail.text().replace("\n", " ")


# -- the whole run ------------------------------------------------------------------------------
@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_queues_panel_and_disk_box_equal_the_session_through_a_run(make_window, qtbot, disk,
                                                                    irqchip) -> None:
    win = make_window(GUEST, disk=str(disk), irqchip=irqchip)
    b = win.bridge
    assert b.session.machine.config.disk == str(disk)
    assert "disk.img" in win.windowTitle()
    # Stop at each completion on the way (the rings are live then), then run to the end.
    win.event_bp_actions["virtio_blk_req_complete"].trigger()
    seen = 0
    while True:
        _run_until_stopped(b, qtbot)
        if b.finished:
            break
        seen += 1
        v = _check_panel(win)
        assert v["queues"][0]["ready"] and v["status_names"][-1] == "DRIVER_OK"
    assert seen >= 8  # reads, a write, a read back, FLUSH, GET_ID, the failing ones
    assert b.outcome.exit_status == 1, win.devices.console.toPlainText()
    v = _check_panel(win)  # after the guest's reset: no rings, the requests and sectors stay
    assert v["status"] == 0 and v["queues"][0]["avail"] is None
    assert v["sectors_touched"] == {0: "r", 1: "r", 5: "rw", SECTORS - 1: "r"}
    # The disk box: the image, its size, what the session counted.
    text = _detail(win, "hw.disk")
    assert text.startswith("disk.img: 32 KiB (64 sectors)")
    assert _numbers(text.split("sectors)")[1]) == [v["sectors_read"], v["sectors_written"],
                                                   len(v["sectors_touched"])]
    assert (v["sectors_read"], v["sectors_written"]) == (5, 1)


# -- breakpoints ------------------------------------------------------------------------------------
@pytest.mark.parametrize("ioeventfd", [True, False])
def test_kick_breakpoint_stops_at_the_first_queue_notify(make_window, qtbot, disk, ioeventfd) -> None:
    from ui import text as T

    win = make_window(GUEST, disk=str(disk), ioeventfd=ioeventfd)
    b = win.bridge
    win.event_bp_actions[T.KICK].trigger()  # Breakpoints > Break on virtqueue kick
    assert b.session.breakpoints.events == set(T.KICK.split("|"))
    _run_until_stopped(b, qtbot)
    assert not b.finished
    ev = b.break_event
    assert ev is not None and ev.source == ("vcpu0" if ioeventfd else "virtio-mmio.7")
    hist = list(b.history)
    # The guest's first QueueNotify write: before it, no request reached the device.
    assert ev.kind == ("ioeventfd_write" if ioeventfd else "virtio_mmio_write_offset")
    if ev.kind == "ioeventfd_write":
        assert ev["addr"] == _blk(win)["base"] + 0x50
    else:
        assert ev["register"] == "QUEUE_NOTIFY"
    assert not [e for e in hist[:hist.index(ev)] if e.kind.startswith("virtio_blk_handle")]
    assert "virtqueue kick" in win.status.text()
    # The driver has published one chain; the panel says what the device did with it,
    # as the session does (not popped yet, when an iothread will).
    v = _check_panel(win)
    q = v["queues"][0]
    assert q["avail"]["idx"] == 1
    head = q["avail"]["ring"][0]
    state = win.queues.cells(win.queues.avail)[0][2]
    if q["last_avail_idx"] == 0:
        assert state == T.RING_WAITING and v["requests"] == []
    else:
        assert state == T.RING_POPPED
        assert v["requests"][0]["head"] == head
        assert v["requests"][0]["progress"][:2] == ["queued", "popped"]
    # The chain: header (device-readable, NEXT), data (WRITE for a read, NEXT), status (WRITE).
    d = q["descriptors"]
    assert d[head]["len"] == 16 and d[head]["flags"] & 1
    # The diagram draws the kick from the vCPU into the device's side.
    assert win.diagram.last_path[0] == "guest.vcpu0"
    assert win.diagram.last_path[-1] in ("qemu.iothread", "qemu.virtio_blk", "qemu.main_loop")


def test_completion_breakpoint_stops_after_the_used_ring_advanced(make_window, qtbot, disk) -> None:
    from ui import text as T

    win = make_window(GUEST, disk=str(disk))
    b = win.bridge
    win.event_bp_actions[T.COMPLETED].trigger()
    _run_until_stopped(b, qtbot)
    ev = b.break_event
    assert ev is not None and ev.kind == "virtio_blk_req_complete"
    assert "request completed" in win.status.text()
    v = _check_panel(win)
    q = v["queues"][0]
    completed = sum(1 for e in b.history if e.kind == "virtio_blk_req_complete")
    assert completed == 1
    assert q["used"]["idx"] == q["used_idx"] == 1  # the used ring advanced
    assert q["used"]["ring"][0]["id"] == ev["req"] == v["requests"][0]["head"]
    assert q["used"]["ring"][0]["len"] == 513  # 512 bytes read and the status byte
    assert v["requests"][0]["progress"][:4] == ["queued", "popped", "in flight", "completed"]
    assert v["requests"][0]["status"] == "OK"
    assert win.queues.cells(win.queues.used)[0][3]  # the slot written last is marked
    # The first request read sector 0: the disk box says so.
    assert v["sectors_touched"] == {0: "r"} and v["sectors_read"] == 1
    assert "sectors read 1, written 0; 1 touched" in _detail(win, "hw.disk")
    # Clear all: the run goes to its end.
    win._bp_clear()
    assert b.session.breakpoints.events == set()
    b.run()
    qtbot.waitUntil(lambda: b.finished, timeout=WAIT)
    assert b.outcome.exit_status == 1


# -- the diagram ------------------------------------------------------------------------------------
@pytest.mark.parametrize("ioeventfd", [True, False])
def test_diagram_tells_kick_disk_and_interrupt_and_the_iothread_box(make_window, qtbot, disk,
                                                                     ioeventfd) -> None:
    from ui import text as T

    win = make_window(GUEST, disk=str(disk), ioeventfd=ioeventfd)
    b = win.bridge
    shown: list[tuple[str | None, tuple[str, ...]]] = []
    highlight = win.diagram.highlight

    def record(box, path=(), caption=""):
        shown.append((box, tuple(path)))
        highlight(box, path, caption)

    win.diagram.highlight = record
    win.event_bp_actions[T.KICK].trigger()
    _run_until_stopped(b, qtbot)
    win.event_bp_actions[T.KICK].trigger()
    lit_disk = "hw.disk" in win.diagram.lit  # without an iothread, the kick's step did the I/O
    for _ in range(400):  # step to the first completion interrupt
        win.registers.mark_step()
        b.step_event()
        lit_disk |= "hw.disk" in win.diagram.lit
        if any(e.kind in ("virtio_notify", "virtio_notify_irqfd") for e in b.history):
            break
    paths = [p for _box, p in shown]
    kick = [p for p in paths if p and p[0] == "guest.vcpu0"
            and p[-1] in ("qemu.iothread", "qemu.virtio_blk")]
    assert kick, paths
    # With ioeventfd, kvm.ko completes the write and wakes the iothread; without, the
    # write exits to the vCPU thread, which runs the device.
    assert kick[0] == (("guest.vcpu0", "kvm.emulator", "qemu.iothread") if ioeventfd else
                       ("guest.vcpu0", "kvm.emulator", "qemu.vcpu_thread0", "qemu.virtio_blk"))
    assert ("qemu.virtio_blk", "hw.disk") in paths  # the I/O reaches the disk
    assert any(p[0] == "qemu.virtio_blk" and p[-1] == "guest.vcpu0" for p in paths if p)
    assert lit_disk
    # The iothread box: what the session says of it (or that there is none).
    threads = [t for t in b.session.threads()["threads"] if t["name"].startswith("iothread")]
    text = _detail(win, "qemu.iothread")
    if threads:
        assert text.startswith(threads[0]["name"])
        assert ("qemu.iothread" in win.lit_boxes()) == (not threads[0]["waiting"]
                                                        and not threads[0]["done"])
    else:
        assert text == T.IOTHREAD_NONE and "qemu.iothread" not in win.lit_boxes()
    v = _blk(win)
    assert f"transport {v['transport']}" in _detail(win, "qemu.virtio_blk")


# -- without a disk, attaching one, bad paths ------------------------------------------------------
def test_without_a_disk_the_disk_is_none_and_the_panel_empty(make_window, qtbot) -> None:
    from ui import text as T

    win = make_window(GUEST)
    b = win.bridge
    b.run()
    qtbot.waitUntil(lambda: b.finished, timeout=WAIT)
    assert b.outcome.exit_status == 3  # the guest found no block device
    _show_queues(win)
    assert _detail(win, "hw.disk") == T.NO_DISK
    p = win.queues
    assert p.summary.text() == T.QUEUES_NONE and p.transport_box.count() == 0
    for t in (p.desc, p.avail, p.used, p.requests, p.disk):
        assert t.rowCount() == 0
    assert "disk" not in win.windowTitle()


def test_attach_disk_restarts_with_it_and_a_bad_path_is_one_line(make_window, qtbot, disk,
                                                                 tmp_path) -> None:
    from ui import text as T

    win = make_window(HELLO)
    b = win.bridge
    old = b.session
    assert not win.attach_disk(str(tmp_path / "missing.img"))
    msg = win.status.text()
    assert msg.startswith("cannot attach the disk: ") and "missing.img" in msg and "\n" not in msg
    assert b.session is old and b.disk is None
    assert not win.attach_disk(str(tmp_path))  # a directory
    assert "not a regular file" in win.status.text() or "directory" in win.status.text()
    assert win.attach_disk(str(disk), readonly=True)
    assert b.session is not old
    assert (b.session.machine.config.disk, b.session.machine.config.disk_readonly) == (str(disk), True)
    assert "read-only" in win.windowTitle()
    _show_queues(win)
    assert win.queues.transport_box.count() == 1
    assert _detail(win, "hw.disk").startswith("disk.img, read-only: 32 KiB (64 sectors)")
    assert win.attach_disk(None)
    assert b.session.machine.config.disk is None
    _show_queues(win)
    assert _detail(win, "hw.disk") == T.NO_DISK and win.queues.transport_box.count() == 0


@pytest.mark.parametrize("spec", ["missing.img", "missing.img,readonly", "."])
def test_gui_bad_disk_is_one_line_and_status_2(tmp_path, spec) -> None:
    out = tmp_path / "shot.png"
    arg = str(tmp_path / spec) if spec != "." else str(tmp_path)
    p = subprocess.run([sys.executable, "-m", "vmsim", "gui", str(GUEST), "--disk", arg,
                        "--screenshot", str(out)], capture_output=True, timeout=120, cwd=ROOT,
                       env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("vmsim gui: --disk ") and str(tmp_path) in err
    assert not out.exists()


def test_gui_screenshot_with_disk(tmp_path, disk) -> None:
    out = tmp_path / "shot.png"
    p = subprocess.run([sys.executable, "-m", "vmsim", "gui", str(GUEST), "--disk", f"{disk},readonly",
                        "--screenshot", str(out), "--steps", "300", "--size", "1200x800"],
                       capture_output=True, timeout=300, cwd=ROOT,
                       env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
