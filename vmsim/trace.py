"""The JSON Lines trace (`vmsim run --trace FILE`): one record per line, written as the
run goes.

A public contract (docs/trace-format.md): each event line is a JSON object with "seq",
"time", "layer", "source", "kind" and the event's fields. At level "insn" the executed
instructions are interleaved as compact `insn_run` lines (a first EIP, then deltas, with
loops folded into repeat groups), each written before the next event, so the file is
always in the order things happened and nothing waits in memory for the end of the run.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterable
from itertools import repeat
from operator import ge, sub
from typing import IO, Any

from vmsim.events import CATALOGUE, Event, EventStream
from vmsim.files import GuardedOutput

# High-rate hardware events: in the trace only at level "all" (they slow the run down).
HIGH_RATE = {"tlb_hit", "tlb_miss", "walk_step"}
LEVELS = ("vm", "insn", "all")
# Instructions kept in memory before they are written: the column is written out at every
# event and, at the latest, when the CPU next starts a batch with this many waiting (a
# batch is 20 000 instructions under kvm.ko, 1 Mi on --backend bare), so it stays a few
# MB at most however long the run.
FLUSH_AT = 16_384
SKIP_MAX = 63  # see fold_loops
FOLD_MIN = 8  # instructions a repeat group must save to be worth its brackets
LINE_INSNS = 65_536  # instructions per insn_run line at most (before loops are folded)


def _compact_dumps() -> Callable[[Any], str]:
    """json.dumps(obj, separators=(",", ":")), the same text, with the encoder made once:
    json.dumps builds a JSONEncoder and then a C encoder for every call (microseconds per
    event). Records are plain trees, never circular: no check for cycles is needed."""
    from json import encoder

    make = encoder.c_make_encoder
    if make is None:  # no C accelerator: what json.dumps does
        return json.JSONEncoder(separators=(",", ":")).encode
    enc = make(None, json.JSONEncoder().default, encoder.encode_basestring_ascii, None,
               ":", ",", False, False, True)
    join = "".join
    return lambda obj: join(enc(obj, 0))


_dumps = _compact_dumps()


class InstructionColumn:
    """One CPU's executed instructions as a compact column: 4 bytes (the EIP) each.

    Give the column itself to the CPU (`Cpu.recorder`): its loop appends to `eips`
    through `append`, which the CPU looks up once per batch; that look-up is where a full
    column is handed to `on_full` (the trace writer) before the batch starts, so the hot
    loop itself pays nothing for the bound.
    """

    def __init__(self, source: str):
        self.source = source
        self.eips = array("I")
        self.count = 0  # instructions already written out
        self.on_full: Callable[[], None] | None = None

    @property
    def append(self) -> Callable[[int], None]:
        if self.on_full is not None and len(self.eips) >= FLUSH_AT:
            self.on_full()
        return self.eips.append


def _repeats(d: list[int], pos: int, seg: list[int]) -> int:
    """How many copies of `seg` follow at d[pos:] (galloping, so a loop run millions of
    times costs a few dozen list compares, all done in C)."""
    p = len(seg)
    n = len(d)
    k, step = 0, 1
    while pos + (k + step) * p <= n and d[pos + k * p:pos + (k + step) * p] == seg * step:
        k += step
        step *= 2
    while step > 1:
        step //= 2
        end = pos + (k + step) * p
        if end <= n and d[pos + k * p:end] == seg * step:
            k += step
    return k


def _fold_spans(d: list[int]) -> list[tuple[int, int, Any]]:
    """fold_loops' result as spans, one Python tuple per stretch rather than per delta:
    (start, end, None) for d[start:end] as it is, (times, 0, body) for a repeat group."""
    n = len(d)
    flags = bytes(map(ge, repeat(0), d))  # 1 where a delta is <= 0: a backward jump
    find, rfind = flags.find, flags.rfind
    out: list[tuple[int, int, Any]] = []
    plain = start = 0  # d[plain:start] is waiting to be copied out as it is
    skip = 0
    b = find(1)
    while b >= 0:
        nxt = b + 1
        p = nxt - start
        # Cheap test first: the next body would end with the same jump.
        if nxt + p <= n and d[nxt + p - 1] == d[b] and d[nxt] == d[start]:
            seg = d[start:nxt]
            k = _repeats(d, nxt, seg)
            if k * p >= FOLD_MIN:
                if start > plain:
                    out.append((plain, start, None))
                out.append((k + 1, 0, seg))
                start = plain = nxt + k * p
                skip = 0
                b = find(1, start)
                continue
        skip = min(2 * skip + 1, SKIP_MAX)
        b = find(1, nxt + skip)
        prev = rfind(1, nxt, b) if b >= 0 else -1
        start = prev + 1 if prev >= 0 else nxt
    if n > plain:
        out.append((plain, n, None))
    return out


def fold_loops(d: list[int]) -> list[Any]:
    """EIP deltas with repeated loop bodies folded into [times, [deltas...]] groups.

    A loop iteration ends with a backward (or zero) jump: the deltas up to and including
    such a jump are one iteration's body, and equal bodies in a row become one group.
    The scan for those jumps and the compares run in C (bytes.find, list ==), and after
    bodies that did not repeat the next look is further on (up to SKIP_MAX
    instructions), so code whose branches differ each time (data-dependent loops) costs
    little Python work while a loop that runs many times is still folded.
    """
    out: list[Any] = []
    for a, b, body in _fold_spans(d):
        if body is None:
            out.extend(d[a:b])
        else:
            out.append([a, body])
    return out


class _Texts(dict):
    """str(n) of the deltas seen (a few dozen distinct values in most code): a dict
    look-up per delta, done in C by map, instead of formatting each number again."""

    def __missing__(self, k: int) -> str:
        if len(self) > 1 << 16:
            self.clear()
        v = self[k] = str(k)
        return v


_TEXT = _Texts().__getitem__


def _deltas_json(d: list[int]) -> str:
    """json.dumps(fold_loops(d), separators=(",", ":")), the same text, made from the
    spans: numbers through _TEXT, joined in C."""
    join = ",".join
    parts = []
    for a, b, body in _fold_spans(d):
        if body is None:
            parts.append(join(map(_TEXT, d[a:b])))
        else:
            parts.append(f"[{a},[{join(map(_TEXT, body))}]]")
    return f"[{join(parts)}]"


def unfold(line: dict[str, Any]) -> list[int]:
    """The EIPs an `insn_run` line stands for (the decoder docs/trace-format.md gives)."""
    eip = line["eip"]
    out = [eip]
    for item in line["d"]:
        if isinstance(item, list):
            times, body = item
            for _ in range(times):
                for x in body:
                    eip = (eip + x) & 0xFFFFFFFF
                    out.append(eip)
        else:
            eip = (eip + item) & 0xFFFFFFFF
            out.append(eip)
    return out


def encode_run(source: str, n: int, eips: array) -> str:
    """`insn_run` lines for `eips`, the instructions numbered n, n+1, ... of `source`."""
    lines = []
    for at in range(0, len(eips), LINE_INSNS):
        piece = eips[at:at + LINE_INSNS]
        t = piece.tolist()  # each EIP made an int once (two array slices make it twice)
        d = list(map(sub, t[1:], t))
        # As _dumps({"kind": "insn_run", "source": ..., "d": fold_loops(d)}) writes it.
        lines.append(f'{{"kind":"insn_run","source":{_dumps(source)},"n":{n + at},'
                     f'"count":{len(piece)},"eip":{piece[0]},"d":{_deltas_json(d)}}}')
        lines.append("\n")
    return "".join(lines)


class TraceWriter(GuardedOutput):
    """Writes events (and, at level "insn", instruction records) as JSON Lines, as they
    happen. A failed write raises OutputError naming `path`; a signal waits for the
    record being written (GuardedOutput), so no instruction is written twice or lost.
    """

    def __init__(self, events: EventStream, out: IO[str], level: str = "vm",
                 columns: Iterable[InstructionColumn] = (), path: str = "<trace>"):
        super().__init__(out, path)
        self.columns: list[InstructionColumn] = []
        self._level = level
        for col in columns:
            self.add_column(col)
        kinds = None if level == "all" else [k for k in CATALOGUE if k not in HIGH_RATE]
        self._unsubscribe: Callable[[], None] | None = events.subscribe(self._write, kinds)

    def add_column(self, col: InstructionColumn) -> None:
        if self._level in ("insn", "all"):
            col.on_full = self.flush_instructions
            self.columns.append(col)

    def _drain(self) -> None:
        write = self.out.write
        for col in self.columns:
            eips = col.eips
            k = len(eips)
            if not k:
                continue
            write(encode_run(col.source, col.count + 1, eips))
            self.lines += -(-k // LINE_INSNS)
            col.count += k
            del eips[:k]

    def flush_instructions(self) -> None:
        """Write out the instructions waiting in the columns."""
        self._guarded(self._drain)

    def _write(self, ev: Event) -> None:
        def both() -> None:
            if self.columns:
                self._drain()
            self.out.write(_dumps(ev.to_dict()) + "\n")
            self.lines += 1

        self._guarded(both)

    def close(self) -> None:
        """Write what is left and flush; stop listening. Safe to call twice."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for col in self.columns:
            col.on_full = None

        def finish() -> None:
            self._drain()
            self.out.flush()

        self._guarded(finish)
