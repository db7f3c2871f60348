"""EventStream.count: events numbered and counted as a listener would hear them, without
being built; the session's history counts the VM-level events this way."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmsim.events import CATALOGUE, Event, EventStream
from vmsim.history import HISTORY_KINDS
from vmsim.session import Session
from vmsim.vmm.machine import MachineConfig

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


# Guests whose events go through EventStream.build's counting (the history counts every
# VM-level kind, builds none but the exits): serial I/O, the emulator on MMIO, CR3 loads
# and page faults under shadow paging, QEMU's timers and main loop, kicks between vCPUs.
NUMBERING = {  # name: (guest, machine options, paging, instructions run)
    "hello": ("sample_guests/hello.asm", {}, "ept", 3000),
    "mmio_loop": ("benchmarks/guests/mmio_loop.asm", {}, "ept", 3000),
    "address_spaces-shadow": ("sample_guests/address_spaces.asm", {}, "shadow", 3000),
    "smp4": ("sample_guests/smp.asm", {"smp": 4}, "ept", 3000),
    "paging-shadow": ("sample_guests/paging.asm", {}, "shadow", 3000),
    # Injection, halts and wake-ups, host timers, QEMU's PIC and IRQ lines, interrupt
    # windows; exceptions and MSRs; CPUID; hypercalls.
    "timer-kernel": ("sample_guests/timer.asm", {}, "ept", 20_000),
    "timer-userspace": ("sample_guests/timer.asm", {"irqchip": "userspace"}, "ept", 20_000),
    "apic2": ("sample_guests/apic.asm", {"smp": 2}, "ept", 20_000),
    "exceptions-shadow": ("sample_guests/exceptions.asm", {}, "shadow", 20_000),
    "cpuid": ("sample_guests/cpuid.asm", {}, "ept", 3000),
    "hypercall": ("sample_guests/hypercall.asm", {}, "ept", 3000),
}


@pytest.mark.parametrize("case", sorted(NUMBERING))
def test_history_numbers_events_as_a_listener_of_its_kinds_did(case: str) -> None:
    """The history used to hear every event of HISTORY_KINDS: the numbers a front end
    sees, the history's event counts and a step back's replay check must be as then."""
    guest, opts, paging, instructions = NUMBERING[case]

    def run(history: bool) -> tuple[list[tuple], int]:
        events = EventStream()
        heard = [0]
        if not history:
            def old_history(ev: Event) -> None:  # the old history's listening
                heard[0] += 1
            events.subscribe(old_history, HISTORY_KINDS)
        seen: list[tuple] = []
        events.subscribe(lambda ev: seen.append((ev.seq, ev.time, ev.kind, ev.source)),
                         ["kvm_exit"])
        s = Session(str(ROOT / guest), config=MachineConfig(**opts), paging=paging,
                    events=events, history=history)
        s.run_for(None, instructions=instructions)
        if history:
            h = s.history
            assert h.nev > 0
            if s.outcome is None:  # (a finished run counts the threads' ends after it)
                assert h.nev == h.evc[h.pos]
            assert len(h.exit_pos) == sum(1 for e in seen if e[2] == "kvm_exit")
            heard[0] = h.nev
            s.step_back_vmexit()  # a replay, checking every step's event count
        s.machine.close()
        return seen, heard[0]

    with_history, counted = run(True)
    heard, n = run(False)
    assert with_history and with_history == heard[:len(with_history)]
    assert counted == n


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["sub", "sub_all", "unsub", "count", "uncount",
                                           "mute", "mute_counted", "unmute"]),
                          st.lists(st.sampled_from(KINDS), min_size=1, max_size=3)),
                max_size=25))
def test_wants_is_what_the_listeners_and_counts_say(ops) -> None:
    """wants() (kept as a set) against its definition, after any sequence of changes; and
    emit delivers to the listeners of every kind, then to those of its kind, each in the
    order they subscribed, numbered as heard; an unknown kind is an error only where every
    kind is heard (the listeners of all kinds would be given it)."""
    events = EventStream()
    undo: list = []
    muted: list = []
    log: list = []

    def listener(name: int):
        def hear(ev: Event) -> None:
            log.append((name, ev.kind, ev.seq, ev.layer))
        hear.name = name  # type: ignore[attr-defined]
        return hear

    for n, (op, kinds) in enumerate(ops):
        if op == "sub":
            undo.append(events.subscribe(listener(n), kinds))
        elif op == "sub_all":
            undo.append(events.subscribe(listener(n)))
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
            heard = bool(events._all) or bool(events._listeners.get(k))
            expected = heard or k in events._counted
            assert events.wants(k) == expected, (op, k)
            # build(): True where it is heard; numbers it as emit would either way.
            before = events.seq, events.counted
            log.clear()
            if events.build(k):
                assert heard, (op, k)
                events.emit(k, "test")
            else:
                assert not heard, (op, k)
            assert (events.seq, events.counted) == (before[0] + expected,
                                                    before[1] + (k in events._counted)), (op, k)
            order = [*events._all, *events._listeners.get(k, ())]
            names = [fn.name for fn in order]
            assert log == [(name, k, events.seq, CATALOGUE[k].layer) for name in names]
        seq = events.seq
        if events._all:
            with pytest.raises(KeyError):
                events.emit("no_such_kind", "test")
        else:
            events.emit("no_such_kind", "test")
        assert events.seq == seq
