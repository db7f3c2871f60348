"""EventStream.count: events numbered and counted as a listener would hear them, without
being built; the session's history counts the VM-level events this way."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from vmsim.events import Event, EventStream
from vmsim.history import HISTORY_KINDS
from vmsim.session import Session

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["kvm_pio", "kvm_exit", "bql", "kvm_mmio"]


def _pio(events: EventStream) -> None:
    events.emit("kvm_pio", "vcpu0", rw=1, port=0x3F8, size=1, count=1, val=0x41)


def test_counted_kinds_are_numbered_as_if_heard() -> None:
    events = EventStream()
    assert not events.wants("kvm_pio")
    _pio(events)
    assert (events.seq, events.counted) == (0, 0)  # nobody listens: no number
    uncount = events.count(["kvm_pio"])
    assert events.wants("kvm_pio") and not events.wants("kvm_mmio")
    _pio(events)
    _pio(events)
    assert (events.seq, events.counted) == (2, 2)
    heard: list[Event] = []
    events.subscribe(heard.append, ["kvm_pio"])
    _pio(events)
    assert (events.seq, events.counted) == (3, 3) and [e.seq for e in heard] == [3]
    uncount()
    _pio(events)
    assert (events.seq, events.counted) == (4, 3)


def test_mute_silences_counting_unless_kept() -> None:
    events = EventStream()
    events.count(["kvm_pio"])
    heard: list[Event] = []
    events.subscribe(heard.append, ["kvm_pio"])
    saved = events.mute()
    _pio(events)
    assert (events.seq, events.counted, heard) == (0, 0, [])
    events.unmute(saved)
    saved = events.mute(keep_counted=True)
    _pio(events)
    assert (events.seq, events.counted, heard) == (1, 1, [])
    events.unmute(saved)
    _pio(events)
    assert [e.seq for e in heard] == [2]


def test_history_numbers_events_as_a_listener_of_its_kinds_did() -> None:
    """The history used to hear every event of HISTORY_KINDS: the numbers a front end
    sees, the history's event counts and a step back's replay check must be as then."""
    guest = str(ROOT / "sample_guests" / "hello.asm")

    def run(history: bool) -> list[tuple]:
        events = EventStream()
        if not history:
            events.subscribe(lambda ev: None, HISTORY_KINDS)  # the old history's listening
        seen: list[tuple] = []
        events.subscribe(lambda ev: seen.append((ev.seq, ev.time, ev.kind, ev.source)),
                         ["kvm_exit", "kvm_entry", "kvm_pio", "bql"])
        s = Session(guest, events=events, history=history)
        s.run_for(None, instructions=300)
        if history:
            h = s.history
            assert h.nev == h.evc[h.pos] and h.nev > 0
            assert len(h.exit_pos) == sum(1 for e in seen if e[2] == "kvm_exit")
            s.step_back_vmexit()  # a replay, checking every step's event count
        return seen

    with_history = run(True)
    assert with_history and with_history == run(False)[:len(with_history)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["sub", "sub_all", "unsub", "count", "uncount",
                                           "mute", "mute_counted", "unmute"]),
                          st.lists(st.sampled_from(KINDS), min_size=1, max_size=3)),
                max_size=25))
def test_wants_is_what_the_listeners_and_counts_say(ops) -> None:
    """wants() (kept as a set) against its definition, after any sequence of changes."""
    events = EventStream()
    undo: list = []
    muted: list = []
    for op, kinds in ops:
        if op == "sub":
            undo.append(events.subscribe(lambda ev: None, kinds))
        elif op == "sub_all":
            undo.append(events.subscribe(lambda ev: None))
        elif op == "count":
            undo.append(events.count(kinds))
        elif op in ("unsub", "uncount") and undo:
            undo.pop(len(kinds) % len(undo))()
        elif op == "mute":
            muted.append(events.mute())
        elif op == "mute_counted":
            muted.append(events.mute(keep_counted=True))
        elif op == "unmute" and muted:
            events.unmute(muted.pop())
        for k in KINDS:
            expected = bool(events._all) or bool(events._listeners.get(k)) or k in events._counted
            assert events.wants(k) == expected, (op, k)
