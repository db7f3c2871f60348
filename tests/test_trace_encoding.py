"""The insn_run encoder against the folding it replaced (docs/trace-format.md: the text is a
public contract): on random EIP sequences with loops, nested loops, data-dependent
branches, `jmp $`, long jumps and EIPs on either side of 2**31, vmsim.trace.encode_run
writes exactly what the list-based encoder wrote, kept here as the oracle."""

from __future__ import annotations

import io
import json
from array import array
from itertools import pairwise
from operator import sub

from hypothesis import given, settings
from hypothesis import strategies as st

import vmsim.trace
from vmsim.trace import FOLD_MIN, LINE_INSNS, encode_lanes, encode_run, unfold

# The scan's two parameters are the encoder's (how far it looks ahead after bodies that
# did not repeat, read from vmsim.trace when the oracle runs, and what a fold must save);
# the algorithm below is the oracle.


def _oracle_repeats(d: list[int], pos: int, seg: list[int]) -> int:
    p, n = len(seg), len(d)
    k = 0
    while pos + (k + 1) * p <= n and d[pos + k * p:pos + (k + 1) * p] == seg:
        k += 1
    return k


def _oracle_fold(d: list[int]) -> list:
    """fold_loops as first written (one element at a time, no caches)."""
    out: list = []
    flags = [x <= 0 for x in d]
    n = len(d)

    def find(start: int) -> int:
        return next((i for i in range(start, n) if flags[i]), -1)

    plain = start = skip = 0
    b = find(0)
    while b >= 0:
        nxt = b + 1
        p = nxt - start
        seg = d[start:nxt]
        k = _oracle_repeats(d, nxt, seg)
        if k * p >= FOLD_MIN:
            out.extend(d[plain:start])
            out.append([k + 1, seg])
            start = plain = nxt + k * p
            skip = 0
            b = find(start)
            continue
        skip = min(2 * skip + 1, vmsim.trace.SKIP_MAX)
        b = find(nxt + skip)
        prev = max((i for i in range(nxt, b) if flags[i]), default=-1) if b >= 0 else -1
        start = prev + 1 if prev >= 0 else nxt
    out.extend(d[plain:])
    return out


def _oracle_encode(source: str, n: int, eips: list[int]) -> str:
    lines = []
    for at in range(0, len(eips), LINE_INSNS):
        piece = eips[at:at + LINE_INSNS]
        d = list(map(sub, piece[1:], piece))
        line = {"kind": "insn_run", "source": source, "n": n + at, "count": len(piece),
                "eip": piece[0], "d": _oracle_fold(d)}
        lines.append(json.dumps(line, separators=(",", ":")) + "\n")
    return "".join(lines)


# A block of code: a few instruction lengths, a backward jump at the end (a loop's body).
_lengths = st.lists(st.sampled_from([1, 2, 2, 3, 5, 7, 15]), min_size=0, max_size=6)


@st.composite
def _programs(draw) -> list[int]:
    """EIPs of a run: straight code, loops run a few or many times, loops whose body
    varies (a data-dependent branch), `jmp $`, far jumps."""
    base = draw(st.sampled_from([0x100000, 0x7FFFFF00, 0x80000000, 0xFFFFFF00, 0]))
    eips = [base]
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["straight", "loop", "branchy", "spin", "far", "nested"]))
        if kind == "straight":
            for x in draw(_lengths):
                eips.append(eips[-1] + x)
        elif kind == "far":
            eips.append(draw(st.sampled_from([0x1000, 0x7FFFFFF0, 0x80000010, 0x100400,
                                              0xFFFFFFF0])))
        elif kind == "spin":
            eips += [eips[-1]] * draw(st.integers(1, 40))
        else:
            head = eips[-1]
            bodies = [draw(_lengths) for _ in range(draw(st.integers(1, 3)))]
            for _ in range(draw(st.integers(1, 30))):
                body = bodies[0] if kind != "branchy" else draw(st.sampled_from(bodies))
                for x in body:
                    eips.append(eips[-1] + x)
                if kind == "nested":
                    for _ in range(draw(st.integers(0, 3))):
                        eips.append(eips[-1] + 2)
                        eips.append(eips[-1] - 2)
                eips.append(head)  # the backward (or zero) jump to the loop's head
            eips.append(head + sum(bodies[0]) + 2)
    return [e & 0xFFFFFFFF for e in eips]


@settings(max_examples=300, deadline=None)
@given(_programs(), st.integers(1, 1 << 40), st.sampled_from([3, 63, vmsim.trace.SKIP_MAX]))
def test_encoder_writes_what_the_list_folding_wrote(eips: list[int], n: int,
                                                    skip_max: int) -> None:
    # Smaller look-aheads than the encoder's reach its longest-skip loop in short runs.
    # (The texts of short lines are kept by their EIPs: made with another look-ahead,
    # they would be another text.)
    saved = vmsim.trace.SKIP_MAX
    vmsim.trace.SKIP_MAX = skip_max
    vmsim.trace._SHORT_LINES.clear()
    try:
        text = encode_run("vcpu0", n, array("I", eips))
        assert text == _oracle_encode("vcpu0", n, eips)
    finally:
        vmsim.trace.SKIP_MAX = saved
        vmsim.trace._SHORT_LINES.clear()
    assert unfold(json.loads(text)) == eips


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 0xFFFFFFFF), min_size=1, max_size=60))
def test_encoder_on_arbitrary_eips(eips: list[int]) -> None:
    assert encode_run("cpu0", 1, array("I", eips)) == _oracle_encode("cpu0", 1, eips)


@settings(max_examples=200, deadline=None)
@given(_programs(), st.data())
def test_recorded_groups_are_written_as_their_eips(eips: list[int], data) -> None:
    """The column as the CPU fills it (groups holding the lanes from the group before
    them, or marked open), drained at events: the same lines as the EIPs give."""
    from vmsim.events import EventStream
    from vmsim.hw.blocks import RecordedGroup
    from vmsim.trace import InstructionColumn, TraceWriter

    stream = EventStream()
    out = io.StringIO()
    writer = TraceWriter(stream, out, "insn")
    col = InstructionColumn("vcpu0")
    writer.add_column(col)
    tokens = col.tokens
    want = []
    i = start = 0
    prev = None
    while i < len(eips):
        g = eips[i:i + data.draw(st.integers(1, 5))]
        closed = prev is not None and data.draw(st.booleans())
        group = RecordedGroup.make(g, prev if closed else None)
        if not closed or not group.ok:  # (blocks._record_groups marks those)
            tokens.opens.append(len(tokens))
        tokens.append(group)
        prev = g[-1]
        i += len(g)
        if i == len(eips) or data.draw(st.integers(0, 3)) == 0:
            stream.emit("kvm_handler", "vcpu0", handler="handle_io", outcome="x")
            want.append(encode_run("vcpu0", start + 1, array("I", eips[start:i])))
            start = i
    writer.close()
    runs = [line + "\n" for line in out.getvalue().splitlines() if '"insn_run"' in line]
    assert "".join(runs) == "".join(want)


def test_long_runs_split_into_lines_as_before() -> None:
    # More than one line's worth: a loop, data-dependent stretches, then `jmp $`.
    eips = [0x100000]
    for i in range(30000):
        eips += [0x100002, 0x100004 if i % 3 else 0x100007, 0x100000]
    eips += [0x100010] * 5000
    assert len(eips) > LINE_INSNS
    text = encode_run("vcpu0", 7, array("I", eips))
    assert text == _oracle_encode("vcpu0", 7, eips)
    assert text.count("\n") == 2
    # The same from lanes (InstructionColumn.take_lanes), the first lane unused.
    bias = (1 << 31) - 1
    lanes = array("I", [bias] + [bias + b - a for a, b in pairwise(eips)]).tobytes()
    assert encode_lanes("vcpu0", 7, eips[0], lanes) == text


# -- Event lines -------------------------------------------------------------------------------

_values = st.one_of(
    st.integers(-(1 << 70), 1 << 70), st.booleans(), st.none(), st.text(max_size=8),
    st.sampled_from(["", "a\"b", "\\", "\n", "é", "\U0001f600", "{}", ","]),
    st.floats(allow_nan=True),
    st.lists(st.one_of(st.integers(0, 3), st.booleans(), st.none(), st.text(max_size=3),
                       st.floats(allow_nan=True), st.lists(st.integers(0, 3), max_size=2)),
             max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2))
_names = st.one_of(st.sampled_from(["vcpu_id", "rip", "data", "seq", "time", "layer", "kind",
                                    "source", "x\"y", "é"]), st.text(min_size=1, max_size=6))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["kvm_exit", "bql", "kvm_pio"]),
                          st.sampled_from(["vcpu0", "main-loop", "a\"b", "é"]),
                          st.dictionaries(_names, _values, max_size=5)),
                min_size=1, max_size=12),
       st.sampled_from([0, 1, 7, 1 << 40]), st.sampled_from([0, 3, True, 2.5]),
       st.sampled_from([1, 2, 64]))
def test_event_lines_are_what_json_dumps_writes(events: list, seq0: int, time: object,
                                                 compile_after: int) -> None:
    """Each event's line is json.dumps(ev.to_dict(), separators=(",", ":")), whatever its
    fields hold (the same kind and source again with other values or other types, a field
    named like a common key, strings that need escaping, floats, lists), made by the text
    functions mapped over the values or by the function made from source that replaces
    them (after `compile_after` lines of the same value types)."""
    import io
    from types import MappingProxyType

    from vmsim import trace
    from vmsim.events import CATALOGUE, Event, EventStream
    from vmsim.trace import TraceWriter

    saved = trace._COMPILE_AFTER, dict(trace._TAILS)
    trace._COMPILE_AFTER = compile_after
    trace._TAILS.clear()
    try:
        stream = EventStream()
        out = io.StringIO()
        writer = TraceWriter(stream, out, "vm")
        expected = []
        for i, (kind, source, fields) in enumerate(events * 2):  # twice: the cached texts too
            ev = Event(seq0 + i, time, CATALOGUE[kind].layer, source, kind,
                       MappingProxyType(dict(fields)))
            writer._write(ev)
            expected.append(json.dumps(ev.to_dict(), separators=(",", ":")) + "\n")
        writer.close()
    finally:
        trace._COMPILE_AFTER = saved[0]
        trace._TAILS.clear()
        trace._TAILS.update(saved[1])
    assert out.getvalue() == "".join(expected)


def test_remembered_event_texts_are_bounded_and_stay_right(monkeypatch) -> None:
    """The texts of events seen before are kept over all kinds and sources up to a budget
    (trace._KNOWN_LINES), then dropped: a loop whose values come round again after more
    than the budget is still written exactly, and no more texts than the budget are kept.
    Values that compare equal but are written differently (True and 1, 1 and 1.0) never
    share a text."""
    import io
    from types import MappingProxyType

    from vmsim import trace
    from vmsim.events import CATALOGUE, Event, EventStream
    from vmsim.trace import TraceWriter

    monkeypatch.setattr(trace, "_KNOWN_LINES", 5)
    out = io.StringIO()
    writer = TraceWriter(EventStream(), out, "vm")
    expected = []
    values = [0, 1, True, 1.0, 2, False, None, "1", 3]
    for i in range(60):
        kind = ("kvm_pio", "bql")[i % 2]
        ev = Event(i + 1, 10 * i, CATALOGUE[kind].layer, "vcpu0", kind,
                   MappingProxyType({"val": values[i % len(values)], "port": 0x3F8}))
        writer._write(ev)
        expected.append(json.dumps(ev.to_dict(), separators=(",", ":")) + "\n")
        kept = sum(len(f.known) for f in writer._formats.values() if f and f.known)
        assert kept <= 5
    writer.close()
    assert out.getvalue() == "".join(expected)


def test_lines_are_written_in_order_and_all_of_them_by_close() -> None:
    """Event lines are queued and written a few dozen at a time: each still follows the
    instructions run before it, and close() writes the rest; a write that fails is an
    OutputError naming the file, during the run."""
    import errno
    import io

    import pytest

    from vmsim.events import EventStream
    from vmsim.files import OutputError
    from vmsim.trace import InstructionColumn, TraceWriter

    stream = EventStream()
    out = io.StringIO()
    writer = TraceWriter(stream, out, "insn")
    col = InstructionColumn("vcpu0")
    writer.add_column(col)
    for i in range(300):
        col.eips.extend([0x100000, 0x100002 + i % 3])
        stream.emit("kvm_handler", "vcpu0", handler="handle_io", outcome=str(i))
    stream.emit("kvm_handler", "vcpu0", handler="handle_io", outcome="last")
    assert out.getvalue().count("\n") < 602  # not all written yet: queued
    writer.close()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 601
    for i in range(300):
        run, ev = lines[2 * i], lines[2 * i + 1]
        assert (run["kind"], run["n"], unfold(run)) == ("insn_run", 2 * i + 1,
                                                         [0x100000, 0x100002 + i % 3])
        assert (ev["kind"], ev["outcome"], ev["seq"]) == ("kvm_handler", str(i), i + 1)
    assert lines[-1]["outcome"] == "last"

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    writer = TraceWriter(stream, Full(), "vm", path="t.jsonl")
    with pytest.raises(OutputError, match=r"t\.jsonl: cannot write: No space left"):
        for _ in range(100):
            stream.emit("kvm_handler", "vcpu0", handler="handle_io", outcome="resume")
