"""Tracepoints (vmsim.events.Tracepoint) emit exactly what emit() emits: the same events to
every listener, the same numbering, and, where the JSON Lines trace alone hears them and
their values go to its line function without an Event, the same lines byte for byte."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmsim import events as events_mod
from vmsim.asm import assemble
from vmsim.events import CATALOGUE, SHAPES, Event, EventStream
from vmsim.kvm.kvm_main import SimKvm
from vmsim.session import STEP_KINDS, Session
from vmsim.trace import TraceWriter
from vmsim.vmm.machine import Machine
from vmsim.vmm.vm import VirtualMachine

ROOT = Path(__file__).resolve().parents[1]

# Values that compare equal but are written differently (1, True, 1.0; -0.0 and 0.0; [1]
# and [True]), and every type a line function checks or passes on.
_EQUALS = st.sampled_from([0, 1, True, False, 1.0, 0.0, -0.0, "1", None, [], ["a"], [1], [True]])
_VALUES = st.one_of(
    _EQUALS,
    st.sampled_from(["", "a\"b\\", "\u4e2d", ["a", "b"], [None], (1,), 1 << 70, float("inf"),
                     {"k": [True]}]),
    st.integers(-3, 3), st.text(max_size=3), st.lists(st.text(max_size=2), max_size=2))
_SOURCES = st.sampled_from(["vcpu0", "vcpu1", "main-loop", "x\"y"])
_SHAPES = st.sampled_from(["kvm_entry", "kvm_pio", "bql", "kvm_signal_check",
                           "kvm_userspace_exit_io", "kvm_exit"])


def _names(shape: str) -> tuple[str, ...]:
    return SHAPES[shape][1] if shape in SHAPES else CATALOGUE[shape].fields


def _fired(calls: list[tuple[str, str, int, tuple]], by_tracepoint: bool,
           listeners: int = 0, counted: bool = False,
           after: int = 0) -> tuple[str, list[Event], int, int, int]:
    """The trace text of `calls` ((shape, source, time, values)), made through tracepoints
    (their first `after` fires through emit) or through emit(**fields), the events
    `listeners` extra listeners heard, the stream's last number and count (`counted`: every
    kind is counted too) and the writer's line count."""
    with _compile_after(after):
        stream = EventStream()
        for shape in SHAPES.keys() | CATALOGUE.keys():
            stream.tp[shape]  # (made now: each takes COMPILE_AFTER as it is made)
        out = io.StringIO()
        writer = TraceWriter(stream, out)  # (and the writer's line functions)
    if counted:
        stream.count(CATALOGUE)
    heard: list[Event] = []
    for _ in range(listeners):
        stream.subscribe(heard.append)
    for shape, source, time, values in calls:
        stream.time = time
        kind = SHAPES[shape][0] if shape in SHAPES else shape
        if by_tracepoint:
            stream.tp[shape].fire(source, *values)
        else:
            stream.emit(kind, source, **dict(zip(_names(shape), values, strict=True)))
    writer.close()
    return out.getvalue(), heard, stream.seq, stream.counted, writer.lines


def _calls(draw_shape: str, source: str, time: int, values: list) -> tuple[str, str, int, tuple]:
    n = len(_names(draw_shape))
    return (draw_shape, source, time, tuple((values * n)[:n]) if values else (0,) * n)


_CALLS = st.lists(st.builds(_calls, _SHAPES, _SOURCES, st.integers(0, 3),
                            st.lists(_VALUES, min_size=1, max_size=12)), max_size=40)
# Few shapes, sources and values: the same values come round with their equals in place.
_EQUAL_CALLS = st.lists(st.builds(_calls, st.sampled_from(["kvm_handler", "kvm_entry"]),
                                  st.sampled_from(["vcpu0", "vcpu1"]), st.just(0),
                                  st.lists(_EQUALS, min_size=1, max_size=3)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_CALLS, _EQUAL_CALLS), st.booleans(), st.sampled_from([0, 0, 2]))
def test_a_trace_written_through_tracepoints_is_the_one_emit_writes(calls, counted,
                                                                   after) -> None:
    # Each call list is also run twice over: the second time every line is found known.
    # (after 2: each tracepoint's first two fires go through emit, then its own function.)
    calls = calls + calls
    direct = _fired(calls, True, counted=counted, after=after)
    assert direct == _fired(calls, False, counted=counted)
    for line in direct[0].splitlines():
        json.loads(line)


def test_equal_values_of_other_types_get_their_own_lines() -> None:
    # A line function is made for the types of its first event's values: every later value
    # that equals an earlier one but is of another type (True after 1, [True] after [1])
    # must still get its own line, whatever the first was, in any position.
    pool = _EQUALS.wrapped_strategy.elements if hasattr(_EQUALS, "wrapped_strategy") \
        else _EQUALS.elements
    pairs = [(a, b) for a in pool for b in pool if a == b and repr(a) != repr(b)]
    assert len(pairs) >= 10
    for first in pool:  # (what the line function is made for)
        for a, b in pairs:
            for at in range(3):
                calls = [("kvm_entry", "vcpu0", 0, tuple(x if i == at else 7 for i in range(3)))
                         for x in (first, a, b, a, b)]
                assert _fired(calls, True) == _fired(calls, False), (first, a, b, at)


@settings(max_examples=100, deadline=None)
@given(_CALLS, st.sampled_from([0, 2]), st.booleans())
def test_listeners_hear_the_events_emit_makes(calls, after, counted) -> None:
    text, heard, *numbers = _fired(calls, True, listeners=2, after=after, counted=counted)
    text_e, heard_e, *numbers_e = _fired(calls, False, listeners=2, counted=counted)
    assert (text, numbers) == (text_e, numbers_e)
    assert [(*tuple(ev)[:5], list(ev.fields.items())) for ev in heard] == \
        [(*tuple(ev)[:5], list(ev.fields.items())) for ev in heard_e]


def test_a_tracepoint_follows_who_hears_its_kind() -> None:
    with _compile_after(0):
        stream = EventStream()
        stream.tp["kvm_entry"]
        out = io.StringIO()
        writer = TraceWriter(stream, out)
    tp = stream.tp["kvm_entry"]
    tp.fire("vcpu0", 0, 0x1000, True)  # the writer alone: its line function
    heard: list[Event] = []
    stop = stream.subscribe(heard.append, ["kvm_entry"])
    tp.fire("vcpu0", 0, 0x1004, False)  # an Event for both
    stop()
    tp.fire("vcpu0", 0, 0x1008, False)
    counted = stream.count(["kvm_entry"])
    writer.close()
    tp.fire("vcpu0", 0, 0x100C, False)  # counted only: numbered, not built
    counted()
    tp.fire("vcpu0", 0, 0x1010, False)  # nobody: nothing
    assert [json.loads(x)["rip"] for x in out.getvalue().splitlines()] == [0x1000, 0x1004, 0x1008]
    assert [(ev.seq, ev["rip"]) for ev in heard] == [(2, 0x1004)]
    assert (stream.seq, stream.counted) == (4, 1)


def test_a_wrapped_emit_sees_what_tracepoints_fire() -> None:
    # Session's step by event wraps emit (_PartialStep): tracepoints go through it then.
    with _compile_after(0):
        stream = EventStream()
        stream.tp["kvm_handler"]
    TraceWriter(stream, io.StringIO())
    seen: list[str] = []
    inner = stream.emit

    def emit(kind: str, source: str, **fields: Any) -> None:
        seen.append(kind)
        inner(kind, source, **fields)

    stream.emit = emit  # type: ignore[method-assign]
    stream.rearm()
    stream.tp["kvm_handler"].fire("vcpu0", "handle_io", "resume")
    del stream.emit
    stream.rearm()
    stream.tp["kvm_handler"].fire("vcpu0", "handle_io", "resume")
    assert seen == ["kvm_handler"] and stream.seq == 2


def test_a_tracepoint_takes_its_own_function_after_its_first_fires(monkeypatch) -> None:
    # Its first COMPILE_AFTER events are written as _write writes them; the rest by the
    # line function made for them.
    calls: list[str] = []
    inner = TraceWriter._write_values

    def write(self: TraceWriter, *args: Any) -> None:
        calls.append(args[4])
        inner(self, *args)

    monkeypatch.setattr(TraceWriter, "_write_values", write)
    with _compile_after(3):
        stream = EventStream()
        out = io.StringIO()
        writer = TraceWriter(stream, out)
        for i in range(10):
            stream.tp["kvm_handler"].fire("vcpu0", "handle_io", str(i % 2))
    writer.close()
    assert calls == ["kvm_handler"] * 3
    assert [json.loads(x)["outcome"] for x in out.getvalue().splitlines()] == \
        [str(i % 2) for i in range(10)]


def test_events_alike_but_for_their_field_names_get_their_own_lines() -> None:
    stream = EventStream()
    out = io.StringIO()
    writer = TraceWriter(stream, out)
    heard: list[Event] = []
    stream.subscribe(heard.append)
    for _ in range(2):
        stream.emit("kvm_handler", "vcpu0", handler="a", outcome="b")
        stream.emit("kvm_handler", "vcpu0", outcome="a", handler="b")
        stream.emit("kvm_handler", "vcpu0", x="a", y="b")
    writer.close()
    assert out.getvalue().splitlines() == \
        [json.dumps(ev.to_dict(), separators=(",", ":")) for ev in heard]


def test_unknown_names_are_refused() -> None:
    with pytest.raises(KeyError):
        EventStream().tp["no_such_event"]


@contextmanager
def _setting(name: str, value: object) -> Iterator[None]:
    """vmsim.events' `name` (DIRECT, COMPILE_AFTER) set to `value` for a while."""
    was = getattr(events_mod, name)
    setattr(events_mod, name, value)
    try:
        yield
    finally:
        setattr(events_mod, name, was)


def _direct(on: bool) -> Any:
    return _setting("DIRECT", on)


def _compile_after(n: int) -> Any:
    return _setting("COMPILE_AFTER", n)


def _guest(name: str, count: int) -> Any:
    path = ROOT / "benchmarks" / "guests" / f"{name}.asm"
    text = re.sub(r"^(COUNT\s+equ\s+)\d+", lambda m: f"{m.group(1)}{count}", path.read_text(),
                  flags=re.M)
    return assemble(text, str(path))


def _stack_trace(image: Any, level: str, paging: str) -> str:
    stream = EventStream()
    out = io.StringIO()
    writer = TraceWriter(stream, out, level)
    machine = Machine(events=stream, serial_out=lambda b: None)
    machine.load_image(image)
    VirtualMachine(machine, SimKvm(stream, paging)).run()
    writer.close()
    return out.getvalue()


@pytest.mark.parametrize("guest", ["out_loop", "mmio_loop"])
@pytest.mark.parametrize(("level", "paging"), [("vm", "ept"), ("insn", "shadow")])
def test_whole_runs_trace_the_same_through_either_path(guest: str, level: str,
                                                       paging: str) -> None:
    image = _guest(guest, 300)  # (a loop longer than its 256 values: lines known again)
    with _direct(True):
        direct = _stack_trace(image, level, paging)
    with _direct(False):
        via_emit = _stack_trace(image, level, paging)
    assert direct == via_emit
    kinds = {json.loads(x).get("kind") for x in direct.splitlines()}
    assert {"kvm_exit", "kvm_entry", "kvm_userspace_exit", "bql", "device_access"} <= kinds


def test_a_session_steps_event_by_event_through_tracepoints() -> None:
    # Stepping one event at a time (emit wrapped) stops at every event of STEP_KINDS the
    # run makes, and writes the trace a whole run writes through the line functions (up
    # to where the instruction limit ends the stepping; the whole run ends its last step).
    hello = str(ROOT / "sample_guests" / "hello.asm")
    traces = []
    stops: list[int] = []
    for stepped in (False, True):
        s = Session(hello, history=False, max_instructions=4000)
        out = io.StringIO()
        writer = TraceWriter(s.events, out)
        if stepped:
            while not (o := s.step_event()).finished:
                stops.append(o.events[0].seq)
        else:
            s.run()
        writer.close()
        traces.append(out.getvalue())
    assert traces[0].startswith(traces[1])
    lines = [json.loads(x) for x in traces[1].splitlines()]
    assert [x["seq"] for x in lines if x["kind"] in STEP_KINDS] == stops
    assert len(stops) > 100
