"""The window while nobody steps, and Python's cycle collector: while the user steps a
paused guest, a full collection scans only what the steps made (the window's heap is
frozen out of its sight, gc.freeze); once the window has settled, the collector sees
everything once and frees what the steps left (each step back replaces the VM); closing
the window leaves nothing frozen. Left alone, the window prepares the first step back."""

from __future__ import annotations

import gc
import weakref

import pytest

from tests.ui.conftest import HELLO

SETTLE_WAIT_MS = 20_000  # a hang bound, never a timing assertion


def _settle(qtbot, win) -> None:
    with qtbot.waitSignal(win.bridge.settled, timeout=SETTLE_WAIT_MS):
        pass


def test_a_settled_window_is_out_of_the_collectors_sight(make_window, qtbot) -> None:
    win = make_window(HELLO)
    win.a_step_user.trigger()
    _settle(qtbot, win)
    assert gc.get_freeze_count() > len(gc.get_objects())  # a collection now scans few
    win.a_step_user.trigger()  # stepping leaves it frozen
    assert gc.get_freeze_count() > len(gc.get_objects())


def test_a_vm_a_step_back_replaced_is_freed_once_the_window_settles(make_window, qtbot) -> None:
    win = make_window(HELLO)
    for _ in range(4):
        win.a_step_user.trigger()
    _settle(qtbot, win)  # the VM is frozen with the rest
    old = weakref.ref(win.bridge.session.vm)
    win.a_back_user.trigger()
    assert win.bridge.session.vm is not old()  # rebuilt from a checkpoint
    gc.collect()  # (a collection before the window settles does not see it)
    assert old() is not None
    _settle(qtbot, win)
    assert old() is None


def test_a_run_and_its_pause_leave_the_window_to_settle(make_window, qtbot) -> None:
    win = make_window(HELLO)
    b = win.bridge
    b.run()
    assert gc.get_freeze_count() > 0
    qtbot.waitUntil(lambda: b.finished, timeout=SETTLE_WAIT_MS)
    assert not b.running
    _settle(qtbot, win)
    assert gc.get_freeze_count() > len(gc.get_objects())


def test_closing_the_window_leaves_nothing_frozen(make_window, qtbot) -> None:
    win = make_window(HELLO)
    win.a_step_user.trigger()
    _settle(qtbot, win)
    assert gc.get_freeze_count() > 0
    win.close()
    assert gc.get_freeze_count() == 0


def test_a_run_collects_young_objects_less_often_and_its_end_restores_the_collector(
        make_window, qtbot) -> None:
    from ui.bridge import RUN_GC_YOUNG

    before = gc.get_threshold()
    assert before[0] != RUN_GC_YOUNG
    win = make_window(HELLO)
    b = win.bridge
    b.run()
    assert gc.get_threshold() == (RUN_GC_YOUNG, *before[1:])
    qtbot.waitUntil(lambda: b.finished, timeout=SETTLE_WAIT_MS)
    assert gc.get_threshold() == before
    win2 = make_window(HELLO)
    win2.bridge.run()
    assert gc.get_threshold()[0] == RUN_GC_YOUNG
    win2.close()  # closed while running: the collector as it was
    assert gc.get_threshold() == before


@pytest.mark.parametrize("finished", [False, True], ids=["paused", "finished"])
def test_a_window_left_alone_has_its_first_step_back_prepared(make_window, qtbot, tmp_path,
                                                              monkeypatch, finished) -> None:
    """Paused in the middle of a long run, or at its end, the window prepares the first
    step back while nobody steps (Session.prepare_step_back): once it did, the history
    has a checkpoint within history.REPLAY_WINDOW steps of the present, and the present
    is what it was: the session's whole state, and what every view shows."""
    import re

    from tests.ui.conftest import ROOT
    from tests.ui.test_stepback_gui import state
    from ui import bridge
    from vmsim import history

    text = (ROOT / "benchmarks" / "guests" / "out_loop.asm").read_text()
    guest = tmp_path / "out_loop.asm"
    count = 3_000 if finished else 10_000
    guest.write_text(re.sub(r"^(COUNT\s+equ\s+)\d+", rf"\g<1>{count}", text, flags=re.M))
    # (Not before the state is taken below, however slow a busy machine makes the run's
    # end: the timer the pause starts is started again, at once, once it is.)
    monkeypatch.setattr(bridge, "PREPARE_MS", SETTLE_WAIT_MS * 10)
    win = make_window(guest)
    b = win.bridge
    s = b.session
    if finished:
        b.run()
        qtbot.waitUntil(lambda: b.finished, timeout=SETTLE_WAIT_MS)
    else:
        s.run_for(None, instructions=12_000)  # as the window's run stops mid-way
        b._deliver(force=True)
    h = s.history
    assert (s.outcome is not None) == finished
    assert h.pos - h.checkpoints[-1].pos > history.REPLAY_WINDOW
    before, shown = s.state_dump(), state(win)
    assert b._prepare_timer.isActive()  # started by the pause
    b._prepare_timer.start(0)
    with qtbot.waitSignal(b.prepared, timeout=SETTLE_WAIT_MS):
        pass
    assert h.pos - h.checkpoints[-1].pos <= history.REPLAY_WINDOW
    assert s.state_dump() == before
    b._deliver(force=True)  # the views repainted from the session
    assert state(win) == shown
