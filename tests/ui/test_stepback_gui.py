"""The GUI's steps backwards, timeline and snapshots (issue 12): after each back button,
shortcut, seek or reopened snapshot, every view shows the state a forward run had at that
point (the forward run recorded in the same test is the oracle)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ui.conftest import HELLO, ROOT

TIMER = ROOT / "sample_guests" / "timer.asm"
RUN_LIMIT_MS = 60_000  # a hang bound, never a timing assertion


def _table(t) -> list[list[str]]:
    return [[t.item(r, c).text() if t.item(r, c) else "" for c in range(t.columnCount())]
            for r in range(t.rowCount())]


def state(win) -> dict:
    """What the session and every view say now."""
    b = win.bridge
    s = b.session
    return {
        "registers": [s.registers(n) for n in range(len(s.cpus))],
        "virtual_time": s.virtual_time,
        "instructions": s.instructions,
        "serial": bytes(s.serial),
        "log": [(ev.seq, ev.kind) for ev in win.events.events],
        "log_rows": win.events.table.rowCount(),
        "console": win.devices.console.toPlainText(),
        "access_log": win.devices.log.toPlainText(),
        "stats": b.stats.as_dict(),
        "stats_table": _table(win.stats.table),
        "panel_eip": win.registers.value_text("EIP"),
        "panel_eax": win.registers.value_text("EAX"),
        "finished": b.finished,
    }


def _differences(a: dict, b: dict) -> list[str]:
    return [k for k in a if a[k] != b[k]]


PAIRS = [("a_step_insn", "a_back_insn", 12), ("a_step_event", "a_back_event", 40),
         ("a_step_exit", "a_back_exit", 25), ("a_step_user", "a_back_user", 25)]


@pytest.mark.parametrize(("forward", "back", "steps"), PAIRS, ids=[p[1] for p in PAIRS])
def test_each_back_button_returns_to_the_forward_runs_state(window, forward, back, steps) -> None:
    states = [state(window)]
    for _ in range(steps):
        getattr(window, forward).trigger()
        states.append(state(window))
    assert states[-1]["virtual_time"] > states[0]["virtual_time"]
    for k in range(steps - 1, -1, -1):
        assert getattr(window, back).isEnabled(), k
        getattr(window, back).trigger()
        now = state(window)
        assert not _differences(now, states[k]), (k, _differences(now, states[k]))
        assert window.registers.value_text("EIP") == f"{window.bridge.session.registers()['EIP']:08X}"
        # The diagram lights the box of the last event that still happened.
        d = window.diagram
        last = next((ev for ev in reversed(window.events.events)
                     if d.route(ev.kind, ev.source, ev.fields) is not None), None)
        assert d.active_box == (None if last is None else d.route(last.kind, last.source, last.fields).box)
    # Back at the start: nothing earlier, so the back buttons are off and say why.
    assert not getattr(window, back).isEnabled()
    assert "start of the run" in getattr(window, back).toolTip()
    # And forward again: the same run (the same events with the same numbers).
    getattr(window, forward).trigger()
    assert not _differences(state(window), states[1])


def test_serial_console_and_statistics_follow_a_step_back_from_the_end(window, qtbot) -> None:
    b = window.bridge
    user = [state(window)]
    while not b.finished:
        window.a_step_user.trigger()
        user.append(state(window))
    assert "Hello from a vmsim guest!" in window.devices.console.toPlainText()
    # From the finished run back over the exits to userspace that sent the text.
    with_text = [k for k, st in enumerate(user) if st["console"]]
    assert with_text and with_text[0] > 1
    for k in range(len(user) - 2, with_text[0] - 3, -1):
        window.a_back_user.trigger()
        now = state(window)
        assert not _differences(now, user[k]), (k, _differences(now, user[k]))
        assert now["console"] == now["serial"].decode("latin-1")
    assert not b.finished and b.outcome is None


@pytest.mark.parametrize("shown", [True, False], ids=["log-in-view", "log-behind"])
def test_access_log_past_its_line_limit_follows_steps_back(make_window, monkeypatch, shown) -> None:
    """A step back takes out of the access log only the lines that went (in view, or still
    unwritten behind its tab), also once the log is full: its text is the forward run's at
    that point, less the oldest lines the full log had dropped (it keeps LOG_KEEP lines;
    one taken out by going forward does not come back)."""
    from PySide6.QtWidgets import QApplication

    from ui.panels import DevicesPanel

    monkeypatch.setattr(DevicesPanel, "LOG_KEEP", 15)  # hello.asm makes ~60 accesses
    win = make_window(HELLO)
    d = win.devices
    d.tabs.setCurrentWidget(d.log if shown else d.tabs.widget(0))
    texts = []
    while not win.bridge.finished:
        win.a_step_user.trigger()
        texts.append(d.log.toPlainText())  # (written here if it was behind)
        QApplication.processEvents()  # (as between a user's clicks)
    assert len(d.log_lines) == 15 and d.log.document().blockCount() == 15
    assert len({t.splitlines()[0] for t in texts if t}) > 10  # the window moved on
    compared = 0
    for k in range(len(texts) - 2, len(texts) - 30, -1):
        QApplication.processEvents()
        win.a_back_user.trigger()
        if shown or k % 3 == 0:  # behind its tab, the log is read only now and then
            now = d.log.toPlainText().splitlines()
            if not now:
                break  # (every line it kept went)
            assert now == texts[k].splitlines()[-len(now):], k
            assert d.log.document().blockCount() == len(now) == len(d.log_lines)
            if shown:  # the log was at its end: the last access left is in view
                QApplication.processEvents()
                assert d.log.verticalScrollBar().value() == d.log.verticalScrollBar().maximum()
            compared += 1
    assert compared >= 3


def test_a_line_typed_into_the_console_is_replayed_by_a_step_back(window) -> None:
    """The console's input goes through the session, whose history feeds it again when a
    step back replays past it: the state is the forward run's, complete dumps compared."""
    for _ in range(3):
        window.a_step_user.trigger()
    window.devices.input.setText("hi")
    window.devices.input.returnPressed.emit()
    dumps = []
    for _ in range(3):
        window.a_step_user.trigger()
        dumps.append(window.bridge.session.state_dump())
    for k in (1, 0):
        window.a_back_user.trigger()
        assert window.bridge.session.state_dump() == dumps[k]


def test_shortcuts_pair_each_forward_key_with_shift(window, qtbot) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QKeySequence

    w = window
    pairs = [(w.a_step_insn, w.a_back_insn), (w.a_step_event, w.a_back_event),
             (w.a_step_exit, w.a_back_exit), (w.a_step_user, w.a_back_user), (w.a_run, w.a_reverse)]
    keys = set()
    for fwd, back in pairs:
        assert back.shortcut() == QKeySequence("Shift+" + fwd.shortcut().toString())
        keys |= {fwd.shortcut().toString(), back.shortcut().toString()}
    assert len(keys) == 2 * len(pairs)  # no key does two things
    # Pressing them: F11 three times, Shift+F11 once.
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow, timeout=5000)
    for _ in range(3):
        qtbot.keyClick(w, Qt.Key.Key_F11)
    assert w.bridge.session.instructions == 3
    qtbot.keyClick(w, Qt.Key.Key_F11, Qt.KeyboardModifier.ShiftModifier)
    assert w.bridge.session.instructions == 2


def test_back_actions_are_off_without_history_and_say_why(window, make_window) -> None:
    from ui import text as T

    for a in window.back_actions:
        assert not a.isEnabled() and T.NO_BACK_START in a.toolTip()
    window.a_step_event.trigger()
    for a in window.back_actions:
        assert a.isEnabled() and T.NO_BACK_START not in a.toolTip()
    bare = make_window(HELLO, backend="bare")
    bare.a_step_insn.trigger()
    for a in bare.back_actions:
        assert not a.isEnabled() and T.NO_BACK_BARE in a.toolTip()
    assert bare.timeline.unavailable == T.NO_BACK_BARE


def test_on_the_hosts_kvm_the_back_actions_say_why_they_are_off(make_window) -> None:
    import os

    from ui import text as T
    from vmsim.hostkvm import HostKvmError

    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm on this host")
    try:
        win = make_window(HELLO, backend="kvm")
    except HostKvmError as e:
        pytest.skip(str(e))
    win.a_step_user.trigger()
    for a in win.back_actions:
        assert not a.isEnabled() and T.NO_BACK_KVM in a.toolTip()
    assert win.timeline.unavailable == T.NO_BACK_KVM
    # Asked anyway (the bridge's own call): refused with the reason, nothing raises.
    assert win.bridge.step_back_userspace_exit() is None
    assert win.statusBar().currentMessage() == T.NO_BACK_KVM


def _line_of(path: Path, needle: str) -> int:
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(needle)


def test_reverse_continue_goes_back_to_each_earlier_breakpoint_hit(window, qtbot) -> None:
    b = window.bridge
    line = _line_of(HELLO, "call putc")  # in the loop that writes each character
    window.toggle_breakpoint(line)
    hits = []
    while not b.finished:
        b.run()
        qtbot.waitUntil(lambda: not b.running, timeout=RUN_LIMIT_MS)
        if not b.finished:
            assert b.session.cpus[0].eip == b.address_of_line(line)
            hits.append(state(window))
    assert len(hits) >= 3
    for k in range(len(hits) - 1, len(hits) - 4, -1):
        window.a_reverse.trigger()
        now = state(window)
        assert not _differences(now, hits[k]), (k, _differences(now, hits[k]))
        assert window.source.editor.current_line == line
        assert "reverse continue: breakpoint" in window.statusBar().currentMessage()
    # Without breakpoints, reverse continue goes to the start of the run.
    window._bp_clear()
    window.a_reverse.trigger()
    assert b.session.virtual_time == 0 and b.session.instructions == 0
    assert window.events.events == [] or all(ev.seq <= b.last_seq for ev in window.events.events)
    assert not window.a_back_insn.isEnabled()


def _exit_times(session) -> tuple[list[int], list[int]]:
    exits: list[int] = []
    user: list[int] = []
    session.events.subscribe(lambda ev: (exits if ev.kind == "kvm_exit" else user).append(ev.time),
                             ["kvm_exit", "kvm_userspace_exit"])
    return exits, user


def test_timeline_ticks_are_the_sessions_exits_and_it_grows_cheaply(make_window, qtbot) -> None:
    win = make_window(TIMER)
    b = win.bridge
    exits, user = _exit_times(b.session)
    for _ in range(5):
        win.a_step_exit.trigger()
    assert win.timeline.exits.times == sorted(exits) and len(exits) == 5
    assert win.timeline.data["now"] == b.session.virtual_time
    calls = []
    real = b.timeline
    b.timeline = lambda: calls.append(1) or real()
    b.run()
    qtbot.waitUntil(lambda: b.finished, timeout=RUN_LIMIT_MS)
    d = b.session.timeline()
    assert d["exits"] == exits and d["userspace_exits"] == user  # the oracle: the events
    tl = win.timeline
    assert tl.exits.times == sorted(exits) and tl.user.times == sorted(user)
    assert tl.data["end"] == d["end"] >= max(exits) and tl.data["now"] == b.session.virtual_time
    # Cheap while running: one timeline per repaint, not one per event.
    assert len(calls) <= b.frames + 3 < len(exits) + len(user)
    # Each tick in the pixel column of its time; columns without one stay empty.
    tl.resize(1200, tl.height())
    w = int(tl.track().width())
    cols_exit, cols_user = tl.columns()
    assert cols_exit == sorted({min(w - 1, t * w // d["end"]) for t in exits})
    assert cols_user == sorted({min(w - 1, t * w // d["end"]) for t in user})
    assert len(cols_exit) <= w


def test_clicking_the_timeline_seeks_and_every_view_follows(make_window, qtbot) -> None:
    from PySide6.QtCore import QPoint, Qt

    win = make_window(TIMER)
    b = win.bridge
    # The oracle: the forward run, event by event, recorded in a plain session.
    from vmsim.events import EventStream
    from vmsim.session import Session
    from vmsim.stats import ExitStats
    from vmsim.vmm.machine import MachineConfig

    events = EventStream()
    stats = ExitStats()
    stats.attach(events)
    ref = Session(str(TIMER), "sim", MachineConfig(), events=events)
    forward = {}
    while ref.outcome is None:
        out = ref.step_event()
        if out.finished:
            break
        now = copy.deepcopy(stats)  # as `vmsim run --stats` had the run ended here
        now.finish(ref.instructions, ref.virtual_time)
        forward[(ref.events.seq, ref.virtual_time)] = (ref.registers(), bytes(ref.serial),
                                                       now.as_dict())
    b.run()
    qtbot.waitUntil(lambda: b.finished, timeout=RUN_LIMIT_MS)
    end = b.session.virtual_time
    tl = win.timeline
    tr = tl.track()
    x = int(tr.left() + tr.width() * 0.4)
    want = tl.time_at(x)
    assert 0 < want < end
    with qtbot.waitSignal(tl.seekRequested, timeout=5000) as sig:
        qtbot.mouseClick(tl, Qt.MouseButton.LeftButton, pos=QPoint(x, int(tr.center().y())))
    assert sig.args == [want]
    s = b.session
    assert s.virtual_time <= want and not b.finished
    key = (b.last_seq, s.virtual_time)
    assert key in forward, key
    regs, serial, exits = forward[key]
    assert s.registers() == regs and bytes(s.serial) == serial
    assert b.stats.as_dict() == exits
    assert win.devices.console.toPlainText() == serial.decode("latin-1")
    assert win.registers.value_text("EIP") == f"{regs['EIP']:08X}"
    assert all(ev.seq <= b.last_seq for ev in win.events.events)
    assert tl.data["now"] == s.virtual_time and tl.data["end"] == s.timeline()["end"] > want
    # A drag: pressed at one point, released at another; only the release seeks.
    x2 = int(tr.left() + tr.width() * 0.8)
    qtbot.mousePress(tl, Qt.MouseButton.LeftButton, pos=QPoint(x, int(tr.center().y())))
    assert b.session.virtual_time == s.virtual_time
    with qtbot.waitSignal(tl.seekRequested, timeout=5000) as sig:
        qtbot.mouseRelease(tl, Qt.MouseButton.LeftButton, pos=QPoint(x2, int(tr.center().y())))
    assert sig.args == [tl.time_at(x2)]
    s = b.session
    assert want < s.virtual_time <= tl.time_at(x2)
    # Forward through the recorded run (the session replays it without events): the views
    # still show the forward run's state there.
    regs, serial, exits = forward[(s.events.seq, s.virtual_time)]
    assert s.registers() == regs and bytes(s.serial) == serial
    assert b.last_seq == s.events.seq
    assert b.stats.as_dict() == exits
    assert win.devices.console.toPlainText() == serial.decode("latin-1")
    assert _table(win.stats.table) and win.stats.table.item(0, 2).text() == str(exits["vm_exits"][0]["count"])


def test_vmcs_panel_says_where_the_state_is_while_the_vcpu_is_out(window) -> None:
    note = window.vmcs.out_note
    window.docks["vmcs"].raise_()
    window.a_step_user.trigger()  # KVM_RUN returned: QEMU handles the exit
    window.refresh()
    assert not note.isHidden()
    assert "KVM_GET_REGS" in note.text() and "VMCS" in note.text()
    for _ in range(400):  # into the guest again, where the note is not true
        window.a_step_insn.trigger()
        window.refresh()
        if window.bridge.in_guest:
            break
    assert window.bridge.in_guest and note.isHidden()


def test_save_then_open_snapshot_gives_the_same_session(make_window, tmp_path) -> None:
    a = make_window(HELLO, smp=2)
    for _ in range(30):
        a.a_step_user.trigger()
    path = tmp_path / "hello.vmsnap"
    assert a.save_snapshot(str(path)), a.status.text()
    assert path.exists() and "snapshot saved" in a.status.text()
    saved = state(a)
    b = make_window(TIMER)
    assert b.open_snapshot(str(path)), b.status.text()
    opened = state(b)
    for k in ("registers", "virtual_time", "instructions", "serial", "console", "panel_eip"):
        assert opened[k] == saved[k], k
    assert opened["console"] == saved["serial"].decode("latin-1")
    assert b.source.editor.toPlainText() == HELLO.read_text()
    assert b.smp_box.value() == 2 and b.bridge.smp == 2
    assert "hello" in b.windowTitle()
    # Both go on as one run.
    a.a_step_user.trigger()
    b.a_step_user.trigger()
    assert state(b)["registers"] == state(a)["registers"]


@pytest.mark.parametrize("content", [b"not a snapshot", b"PK\x03\x04" + bytes(64), None],
                         ids=["garbage", "truncated-zip", "missing"])
def test_a_bad_snapshot_is_one_line_and_leaves_the_session(window, tmp_path, monkeypatch, content) -> None:
    import ui.mainwindow as mw

    shown = []
    monkeypatch.setattr(mw.QMessageBox, "warning", lambda parent, title, text: shown.append(text))
    path = tmp_path / "bad.vmsnap"
    if content is not None:
        path.write_bytes(content)
    window.a_step_event.trigger()
    before = (window.bridge.session, state(window))
    assert not window.open_snapshot(str(path))
    assert len(shown) == 1 and "\n" not in shown[0] and shown[0].startswith("cannot open the snapshot:")
    assert "Traceback" not in shown[0]
    assert window.statusBar().currentMessage() == shown[0]
    assert (window.bridge.session, state(window)) == before


def test_gui_load_option(tmp_path) -> None:
    bad = tmp_path / "bad.vmsnap"
    bad.write_bytes(b"junk")
    out = tmp_path / "x.png"
    p = subprocess.run([sys.executable, "-m", "vmsim", "gui", "--load", str(bad), "--screenshot", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and not out.exists()
    assert len(p.stderr.strip().splitlines()) == 1 and "cannot open the snapshot" in p.stderr
    p = subprocess.run([sys.executable, "-m", "vmsim", "gui", str(HELLO), "--load", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "drop GUEST" in p.stderr
    # A good one opens, the guest's own window title and all.
    from vmsim.session import Session

    s = Session(str(TIMER))
    for _ in range(20):
        s.step_userspace_exit()
    good = tmp_path / "timer.vmsnap"
    s.save_snapshot(str(good))
    p = subprocess.run([sys.executable, "-m", "vmsim", "gui", "--load", str(good), "--screenshot", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p = subprocess.run([sys.executable, "-m", "vmsim", "gui", "--load", str(good), "--screenshot", str(good)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "will not overwrite" in p.stderr
