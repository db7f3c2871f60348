"""What the window does in batches while a guest runs (issue 15) gives what it did one
event at a time: the exit statistics counted per batch, the port / MMIO access log written
only when it is seen or read, the diagram following a pause's events."""

from __future__ import annotations

import copy
from itertools import pairwise

from tests.ui.conftest import HELLO


def _hello_events(kinds) -> tuple[list, object]:
    from vmsim.session import Session

    s = Session(str(HELLO))
    evs: list = []
    s.events.subscribe(evs.append, list(kinds))
    s.run()
    return evs, s


def test_statistics_counted_in_batches_equal_the_events_counted_one_by_one() -> None:
    from ui.bridge import STATS_CHECKPOINT, StatsHistory
    from vmsim.stats import ExitStats

    evs, s = _hello_events(ExitStats.KINDS)
    assert {e.kind for e in evs} == set(ExitStats.KINDS)
    one = ExitStats()
    for e in evs:
        one._on_event(e)
    records: list = []
    batched = ExitStats()
    batched.count(evs[:7], records)
    batched.count(evs[7:], records)
    replayed = ExitStats()
    for rec in records:
        replayed.count_record(rec)
    copied = one.copy()
    assert copied == copy.deepcopy(one) and copied.vmexits is not one.vmexits
    for st in (one, batched, replayed, copied):
        st.finish(s.instructions, s.virtual_time)
    want = one.as_dict()
    assert want["vm_exits_total"] > 10 and want["userspace_exits"]
    assert batched.as_dict() == want and replayed.as_dict() == want and copied.as_dict() == want
    # The history of the statistics, fed in uneven batches: after any event, what counting
    # the events up to it gives.
    h = StatsHistory()
    for i in range(0, len(evs), 5):
        h.pending.extend(evs[i:i + 5])
        h.flush()
    assert len(h.copies) == len(evs) // STATS_CHECKPOINT + 1
    for n in (0, 1, len(evs) // 2, len(evs) - 1):
        prefix = ExitStats()
        for e in evs[:n + 1]:
            prefix._on_event(e)
        assert h.at(evs[n].seq) == prefix


def test_the_access_log_is_written_when_read_or_shown(window, qtbot) -> None:
    d = window.devices
    assert d.tabs.currentWidget() is not d.log  # behind the console while the guest runs
    b = window.bridge
    b.run()
    qtbot.waitUntil(lambda: b.finished, timeout=10000)
    accesses = [ev for ev in b.history if ev.kind == "device_access"]
    assert accesses and d._unwritten  # taken, not yet written: nobody saw the log
    text = d.log.toPlainText().splitlines()
    assert len(text) == len(accesses) and not d._unwritten
    for line, ev in zip(text, accesses, strict=True):
        assert line.split()[:3] == [str(ev.seq), ev.source, ev["space"]]
    d.reset()
    assert d.log.toPlainText() == ""


def _diagram_state(win) -> dict:
    d = win.diagram
    return {"irq_from": d.irq_from, "last_vcpu": d.last_vcpu, "kick_path": d.kick_path,
            "mmio_exit": d._mmio_exit, "virtio_irqs": set(d.virtio_irqs), "box": d.active_box,
            "path": d.last_path, "caption": d.caption.text(), "story": list(d._story),
            "seen": set(win.seen_kinds)}


def test_a_pause_shows_what_following_each_event_shows(make_window, monkeypatch, tmp_path) -> None:
    """A pause hands the diagram every event since the last repaint of the run (thousands):
    it follows the last ones one by one and the rest as a whole, to the state and the
    picture (the box, the path, the caption, a virtio request's story) that following
    each of them one by one gives."""
    import random

    import ui.mainwindow as mw
    from vmsim.history import HISTORY_KINDS
    from vmsim.session import Session
    from vmsim.vmm.machine import MachineConfig

    disk = tmp_path / "disk.img"
    disk.write_bytes(random.Random(11).randbytes(64 * 512))
    guest = HELLO.parent / "virtio_blk.asm"
    s = Session(str(guest), "sim", MachineConfig(disk=str(disk)))
    evs: list = []
    s.events.subscribe(evs.append, HISTORY_KINDS)
    s.run_for(None, instructions=40_000)  # the guest's requests, each kick to interrupt
    kinds = [e.kind for e in evs]
    told = [i for i, k in enumerate(kinds) if k in mw.STORY_KINDS]
    assert len(told) > 12 and "kvm_set_irq" in kinds
    # Cut where the batch ends in a story, and where its last story lies further back
    # than the events followed one by one (and all of them).
    tail = mw.FOLLOWED_ONE_BY_ONE
    after = [i + tail + 50 for i, j in pairwise(told) if j - i > tail + 60]
    assert after
    for cut in (told[-1] + 1, told[5] + 1, *after[:2], len(evs)):
        shown = []
        for one_by_one in (tail, len(evs) + 1):
            monkeypatch.setattr(mw, "FOLLOWED_ONE_BY_ONE", one_by_one)
            win = make_window(guest, disk=str(disk))
            win.on_events_shown(evs[:cut])
            shown.append(_diagram_state(win))
            win.close()
        assert shown[0] == shown[1], cut
        assert shown[0]["box"] is not None


def test_a_run_counts_its_statistics_as_it_goes_and_hands_its_events_over_whole(window, monkeypatch
                                                                                 ) -> None:
    """While a guest runs, each batch's exit statistics are counted with the batch, so a
    pause has only its own events left to count (an exits-heavy guest can go seconds
    without a repaint: thousands of events). The views get the bridge's list of events
    itself: a Qt list signal would convert each event to a QVariant and back."""
    import ui.bridge
    from vmsim.stats import ExitStats

    # Slices of a few steps each, so that this short guest takes many ticks.
    monkeypatch.setattr(ui.bridge, "BATCH_S", 1e-9)
    monkeypatch.setattr(ui.bridge, "BATCH_QUIET_S", 1e-9)
    b = window.bridge
    got: list = []
    b.eventsArrived.connect(got.append)
    b.run()
    b._timer.stop()  # the ticks, one by one, here
    ticks = delivered = 0
    while b.running:
        handed = b._pending
        b._tick()
        ticks += 1
        assert not b.stats_history.pending, ticks
        if got and got[-1] is handed:
            delivered += 1
    assert b.finished and ticks > 1 and delivered >= 1
    assert all(type(evs) is list for evs in got)
    seqs = [ev.seq for evs in got for ev in evs]
    assert seqs == sorted(set(seqs)) and seqs == [ev.seq for ev in b.history][-len(seqs):]
    one = ExitStats()
    for ev in b.history:
        if ev.kind in ExitStats.KINDS:
            one._on_event(ev)
    assert b.stats_history.full == one and one.vmentries > 10


def test_batches_while_running_find_the_main_loops_last_event(window) -> None:
    """The diagram's main-loop box glows from the main loop's last event: its own kinds, or
    the BQL taken or dropped on its thread. Taken in batches while running, where the
    vCPU's thread takes the BQL twice an exit, the bridge finds that last one."""
    from ui.bridge import COARSE_KINDS, MAIN_LOOP_KINDS, MAIN_LOOP_THREAD

    b = window.bridge
    evs, _ = _hello_events(COARSE_KINDS)  # the window's run's events (the same seqs)
    evs = [ev for ev in evs if ev.seq > b.last_seq]
    last_wait = max(i for i, ev in enumerate(evs) if ev.kind in MAIN_LOOP_KINDS)
    unlock = evs[last_wait + 1]
    assert unlock.kind == "bql" and unlock.source == MAIN_LOOP_THREAD
    assert unlock.time > evs[last_wait].time
    mid = len(evs) // 2
    first = next(i for i in range(mid, len(evs)) if evs[i].source == MAIN_LOOP_THREAD)
    vcpu_bql = [ev for ev in evs[mid:first] if ev.kind == "bql"]
    assert len(vcpu_bql) > 20 and all(ev.source != MAIN_LOOP_THREAD for ev in vcpu_bql)
    b._raw.extend(evs[:mid])
    b._drain()
    was = b.main_loop_last
    b._raw.extend(evs[mid:first])  # the vCPU's BQL only: not the main loop
    b._drain()
    assert b.main_loop_last == was
    b._raw.extend(evs[first:last_wait + 1])
    b._drain()
    assert b.main_loop_last == evs[last_wait].time
    b._raw.append(unlock)  # the main loop's BQL alone in a batch
    b._drain()
    assert b.main_loop_last == unlock.time
