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
import struct
import sys
from array import array
from collections.abc import Callable, Iterable
from itertools import repeat
from json.encoder import encode_basestring_ascii
from operator import attrgetter, call, ge, index, sub
from typing import IO, Any, NamedTuple

from vmsim import events as events_mod
from vmsim.events import CATALOGUE, Event, EventStream
from vmsim.files import GuardedOutput, OutputError

# High-rate hardware events: in the trace only at level "all" (they slow the run down).
HIGH_RATE = {"tlb_hit", "tlb_miss", "walk_step"}
LEVELS = ("vm", "insn", "all")
# Instructions kept in memory before they are written: the column is written out at every
# event and, at the latest, when the CPU next starts a batch with this many waiting (a
# batch is 20 000 instructions under kvm.ko, 1 Mi on --backend bare), so it stays a few
# MB at most however long the run.
FLUSH_AT = 16_384
SKIP_MAX = 1023  # see fold_loops (63 took 2.4x the encoding time on crc32 for traces 2% smaller)
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


class _OneGroups(dict):
    """The group of one instruction run on its own, by its EIP (blocks.RecordedGroup,
    open: Cpu.run marks it)."""

    def __missing__(self, eip: int) -> Any:
        from vmsim.hw.blocks import RecordedGroup

        if len(self) >= 1 << 16:
            self.clear()
        v = self[eip] = RecordedGroup.make([eip], None)
        return v


class _Tokens(list):
    """InstructionColumn.tokens: the groups the CPU records, in order. `opens` holds the
    indices of those recorded where what ran before them was not known (marked by
    Cpu.run and the blocks' recording variants, ascending); `one` makes the group of an
    instruction run on its own."""

    one = staticmethod(_OneGroups().__getitem__)

    def __init__(self) -> None:
        super().__init__()
        self.opens: list[int] = []


_EIPS_OF = attrgetter("eips")
_LANE_BYTES = struct.Struct("=I").pack  # a lane's 4 bytes, as array("I") holds them


class InstructionColumn:
    """One CPU's executed instructions as a compact column.

    Give the column itself to the CPU (`Cpu.recorder`). Its loop records through
    `append`, looked up once per batch, into `tokens`: a translated block's groups of
    instructions, one item per group (vmsim.hw.blocks.RecordedGroup: the lanes of the
    deltas into its instructions, made when the block was), and single instructions as
    groups of one. A group whose predecessor was known when it was made holds the delta
    from it, so the lanes of a run of them are one C join; for the few recorded open
    (`tokens.opens`) the delta is worked out here. The waiting instructions are kept as
    those lanes and the first EIP, which is what the trace writes (encode_lanes).

    Reading `eips` gives them as EIPs instead (an array the caller may extend), in
    order, so an event (the writer reads the column before its line) finds exactly the
    instructions run before it. The look-up of `append` is where a full column is handed
    to `on_full` (the trace writer) before the batch starts, so the hot loop itself pays
    nothing for the bound.
    """

    def __init__(self, source: str):
        self.source = source
        self.tokens = _Tokens()
        self.count = 0  # instructions already written out
        # The waiting instructions: as EIPs (`_eips`, when written there or when a delta
        # does not fit a lane), or else as the first's EIP and the lanes of all (the first
        # lane not used), in pieces (`_pieces`, text as RecordedGroup holds lanes, joined
        # once when they are taken): never both.
        self._eips = array("I")
        self._first = 0
        self._pieces: list[str] = []
        self._last = 0  # the EIP of the last instruction taken from the tokens
        self.on_full: Callable[[], None] | None = None
        # Runs _collect at a batch's start where a signal waits for it (the writer's
        # _guarded): cut in the middle, it would write instructions twice or lose them.
        self.guard: Callable[[Callable[[], None]], None] | None = None

    @property
    def eips(self) -> array:
        """The EIPs recorded and not yet written out, in order."""
        self._collect()
        if self._pieces:
            self._lanes_to_eips()
        return self._eips

    def waiting(self) -> int:
        """How many instructions are recorded and not yet written out."""
        self._collect()
        return len(self._eips) + (sum(map(len, self._pieces)) >> 2)

    def _lanes_to_eips(self) -> None:
        if not self._pieces:
            return
        e = self._first
        out = [e]
        lanes = "".join(self._pieces).encode("latin-1")
        for lane in memoryview(lanes[4:]).cast("I"):
            e += lane - _BIAS
            out.append(e)
        self._eips.extend(out)
        self._pieces.clear()

    def _collect(self) -> None:
        """Take the recorded groups into the waiting instructions."""
        tokens = self.tokens
        n = len(tokens)
        if not n:
            return
        opens = tokens.opens
        out = self._pieces
        put = out.append
        at = 0  # tokens[:at] taken as lanes, the rest as EIPs
        # A line that starts with open groups as often as not (a guest that exits every
        # few instructions, mostly run one at a time) is kept as EIPs: less work here.
        if not self._eips and (out or 2 * len(opens) < n):
            if not out:
                self._first = tokens[0].first
            last = self._last
            for j in opens:
                if j >= n:
                    break
                if j < at:
                    continue
                if j > at:
                    put("".join(tokens[at:j]))
                    last = tokens[j - 1].last
                t = tokens[j]
                if out:
                    lane = _BIAS + t.first - last
                    if not t.ok or not 0 <= lane <= 0xFFFFFFFF:  # (a delta past a lane)
                        self._lanes_to_eips()
                        at = j
                        break
                    put(_LANE_BYTES(lane).decode("latin-1"))
                    put(t[4:])
                elif not t.ok:
                    at = j
                    break
                else:
                    put(t)
                last = t.last
                at = j + 1
            else:
                j = n
            if j >= n:
                if at < n:
                    put("".join(tokens[at:]) if at else "".join(tokens))
                at = n
        if at < n:
            self._eips.frombytes(b"".join(map(_EIPS_OF, tokens[at:] if at else tokens)))
        self._last = tokens[-1].last
        tokens.clear()
        # Marks past the last group are for the next ones (none recorded yet): index 0.
        opens[:] = [0] if opens and opens[-1] >= n else ()

    def take_lanes(self) -> tuple[int, bytes] | None:
        """The first EIP and the lanes of the waiting instructions, which are no longer
        waiting (None when they are kept as EIPs, or none wait)."""
        self._collect()
        pieces = self._pieces
        if self._eips or not pieces:
            return None
        lanes = (pieces[0] if len(pieces) == 1 else "".join(pieces)).encode("latin-1")
        pieces.clear()
        return self._first, lanes

    def _record_one(self, eip: int) -> None:
        tokens = self.tokens
        tokens.opens.append(len(tokens))
        tokens.append(tokens.one(eip))

    @property
    def append(self) -> Callable[[int], None]:
        """Records one instruction by its EIP (a TF step, the loop without blocks);
        Cpu.run takes `tokens` from it for the rest."""
        if self.on_full is not None:
            if self.tokens and self.guard is not None:
                self.guard(self._collect)
            if self.waiting() >= FLUSH_AT:
                self.on_full()
        return self._record_one


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


# -- The packed encoder ---------------------------------------------------------------------
# The same text as _deltas_json, with the per-instruction work done by C on bytes: the deltas
# of a whole line come from three big-integer operations (each 32-bit lane of
# F = EIPs[1:] + (2**31 - 1) - EIPs[:-1] is 2**31 - 1 + delta, never borrowing from its
# neighbour while every EIP is below 2**31), the backward jumps are one bytes.translate of
# the lanes' top bytes, loop bodies are compared as byte strings, and the text of straight
# stretches is looked up by 32-delta windows of those bytes (a loop that does not fold, such
# as one with data-dependent branches, repeats a few hundred windows). _fold_spans' scan
# (which bodies it tries, the skip after a miss) is followed step by step, so the repeat
# groups are the same. A line with an EIP at or above 2**31 goes the list way.
_LITTLE = sys.byteorder == "little"
_TOP = 3 if _LITTLE else 0  # the most significant byte of a 32-bit lane
_BIAS = (1 << 31) - 1
_PACKED = array("I").itemsize == 4
_BIASES = int.from_bytes(_BIAS.to_bytes(4, sys.byteorder) * LINE_INSNS, sys.byteorder)
_BACKWARD = bytes(1 if b < 0x80 else 0 for b in range(256))  # top byte of a lane: delta <= 0
_WINDOW = 4 * 32  # bytes of lanes per cached window of text
# Copies of a body of p < FOLD_MIN deltas needed after the first for a fold, less one.
_MORE = [0] + [-(-FOLD_MIN // p) - 1 for p in range(1, FOLD_MIN)]


class _LaneTexts(dict):
    """The text of one delta, by its lane (2**31 - 1 + delta)."""

    def __missing__(self, lane: int) -> str:
        if len(self) > 1 << 16:
            self.clear()
        v = self[lane] = str(lane - _BIAS)
        return v


_LANE_TEXT = _LaneTexts().__getitem__


class _PackedTexts(dict):
    """The text of a run of deltas ("2,5,1,-10"), by their lanes' bytes."""

    def __missing__(self, lanes: bytes) -> str:
        if len(self) > 1 << 13:
            self.clear()
        v = ",".join(map(_LANE_TEXT, memoryview(lanes).cast("I")))
        if len(lanes) <= 4 * 128:  # a long loop body is not kept (a few MB at most)
            self[lanes] = v
        return v


_PACKED_TEXT = _PackedTexts().__getitem__


_LANE_BIASES: dict[int, int] = {}  # by n: what _lanes adds (a line is most often a batch)


def _lanes(raw: bytes, n: int) -> bytes:
    """The lanes of the n - 1 deltas of the n EIPs in `raw` (all below 2**31)."""
    order = sys.byteorder
    e = int.from_bytes(raw, order)
    m = 32 * (n - 1)
    if _LITTLE:
        # EIPs[1:] - EIPs[:-1] + biases, without masking off the last EIP: 2**32 in the
        # lane above the deltas keeps the whole sum positive, and that lane is cut off.
        b = _LANE_BIASES.get(n)
        if b is None:
            if len(_LANE_BIASES) >= 64:
                _LANE_BIASES.clear()
            b = _LANE_BIASES[n] = (_BIASES & ((1 << m) - 1)) + (1 << (m + 32))
        return ((e >> 32) + b - e).to_bytes(4 * n + 1, order)[:m >> 3]
    mask = (1 << m) - 1
    f = (e & mask) + (_BIASES & mask) - (e >> 32)
    return f.to_bytes(m // 8, order)


def _copies(lanes: bytes, seg: bytes, pos: int) -> int:
    """How many copies of `seg` follow at lanes[pos:], knowing that one does (galloping,
    as _repeats)."""
    size = len(seg)
    end = len(lanes)
    startswith = lanes.startswith
    k, step = 1, 1
    while pos + (k + step) * size <= end and startswith(seg * step, pos + k * size):
        k += step
        step *= 2
    while step > 1:
        step //= 2
        if pos + (k + step) * size <= end and startswith(seg * step, pos + k * size):
            k += step
    return k


def _plain_text(lanes: bytes, a: int, b: int) -> str:
    """The text of deltas a..b-1, as it is, through the window cache."""
    lo, hi = a << 2, b << 2
    if hi - lo <= _WINDOW:
        return _PACKED_TEXT(lanes[lo:hi])
    k = (hi - lo) // _WINDOW
    text = ",".join(map(_PACKED_TEXT, _windows(k).unpack_from(lanes, lo)))
    full = lo + k * _WINDOW
    return f"{text},{_PACKED_TEXT(lanes[full:hi])}" if full < hi else text


class _Windows(dict):
    """struct.Struct splitting k windows of lanes, by k: one C call makes all k pieces (a
    slice per window cost most of the text of a plain stretch)."""

    def __missing__(self, k: int) -> struct.Struct:
        if len(self) >= 256:
            self.clear()
        v = self[k] = struct.Struct(f"{_WINDOW}s" * k)
        return v


_windows = _Windows().__getitem__


def _packed_json(lanes: bytes) -> str:
    """_deltas_json of the deltas whose lanes these are: the same scan as _fold_spans."""
    n = len(lanes) >> 2
    flags = lanes[_TOP::4].translate(_BACKWARD)
    find, rfind = flags.find, flags.rfind
    startswith = lanes.startswith
    parts: list[str] = []
    put = parts.append
    plain = start = 0
    skip = 0
    b = find(1)
    while b >= 0:
        nxt = b + 1
        p = nxt - start
        # The body d[start:nxt] ends at its only backward jump, so a copy of it that
        # follows ends with one p deltas on: that test first, then the bytes.
        # A short body must repeat ceil(FOLD_MIN / p) times: those copies are checked
        # before counting them all.
        if (a := nxt + p - 1) < n and flags[a] \
                and startswith(seg := lanes[start << 2:nxt << 2], nxt << 2) \
                and (p >= FOLD_MIN or startswith(seg * _MORE[p], (nxt + p) << 2)) \
                and (k := _copies(lanes, seg, nxt << 2)) * p >= FOLD_MIN:
            if start > plain:
                put(_plain_text(lanes, plain, start))
            put(f"[{k + 1},[{_PACKED_TEXT(seg)}]]")
            start = plain = nxt + k * p
            skip = 0
            b = find(1, start)
            continue
        if skip < SKIP_MAX:
            skip = 2 * skip + 1  # 1, 3 ... SKIP_MAX: min(2 * skip + 1, SKIP_MAX)
            q = nxt + skip
            b = find(1, q)
            # The body after the last backward jump before q (flags[nxt - 1] is one).
            start = rfind(1, nxt - 1, q) + 1
            continue
        # The skip at its most, as it stays until a fold: the same steps, in a tighter
        # loop, up to the first body whose next body has its length (a fold needs that).
        while True:
            q = nxt + SKIP_MAX
            b = find(1, q)
            if b < 0:
                break
            start = rfind(1, nxt - 1, q) + 1
            nxt = b + 1
            if (a := b + nxt - start) < n and flags[a]:
                break
    if n > plain:
        put(_plain_text(lanes, plain, n))
    return f"[{','.join(parts)}]"


_PREFIXES: dict[str, str] = {}
# The "d" text of short lines, by their EIPs' bytes: a guest that exits every few
# instructions runs the same few paths between its exits.
_SHORT_LINES: dict[bytes, str] = {}
_SHORT = 64


def _d_text(piece: array) -> str:
    """The "d" of an insn_run line for the EIPs `piece` (at most LINE_INSNS)."""
    raw = piece.tobytes()
    k = len(piece)
    if k <= _SHORT:
        d = _SHORT_LINES.get(raw)
        if d is not None:
            return d
    if k > 1 and _PACKED and raw[_TOP::4].isascii():  # (every EIP below 2**31)
        d = _packed_json(_lanes(raw, k))
    else:
        t = piece.tolist()  # each EIP made an int once (two array slices make it twice)
        d = _deltas_json(list(map(sub, t[1:], t)))
    if k <= _SHORT:
        if len(_SHORT_LINES) >= 4096:
            _SHORT_LINES.clear()
        _SHORT_LINES[raw] = d
    return d


# The "d" text of short lines, by their lanes (see _SHORT_LINES).
_SHORT_LANES: dict[bytes, str] = {}


def _lanes_text(lanes: bytes) -> str:
    """The "d" of an insn_run line whose deltas these lanes hold (all of them fit)."""
    if len(lanes) <= 4 * _SHORT:
        d = _SHORT_LANES.get(lanes)
        if d is None:
            if len(_SHORT_LANES) >= 4096:
                _SHORT_LANES.clear()
            d = _SHORT_LANES[lanes] = _packed_json(lanes) if lanes else "[]"
        return d
    return _packed_json(lanes)


def encode_lanes(source: str, n: int, first: int, lanes: bytes) -> str:
    """encode_run(source, n, eips) for the EIPs that start at `first` and whose deltas
    these lanes hold (InstructionColumn.take_lanes: lanes[4:], one per instruction after
    the first; every delta fits its lane)."""
    head = _PREFIXES.get(source)
    if head is None:
        head = _PREFIXES[source] = f'{{"kind":"insn_run","source":{_dumps(source)},"n":'
    k = len(lanes) >> 2
    if k <= LINE_INSNS:
        return f'{head}{n},"count":{k},"eip":{first},"d":{_lanes_text(lanes[4:])}}}\n'
    lines = []
    e = first
    for at in range(0, k, LINE_INSNS):
        size = min(LINE_INSNS, k - at)
        piece = lanes[4 * at + 4:4 * (at + size)]  # the deltas inside the piece
        lines.append(f'{head}{n + at},"count":{size},"eip":{e},"d":{_lanes_text(piece)}}}\n')
        into = lanes[4 * at + 4:4 * (at + size) + 4]  # and the one into the next piece
        e += sum(memoryview(into).cast("I")) - _BIAS * (len(into) >> 2)
    return "".join(lines)


def encode_run(source: str, n: int, eips: array) -> str:
    """`insn_run` lines for `eips`, the instructions numbered n, n+1, ... of `source`."""
    head = _PREFIXES.get(source)
    if head is None:
        head = _PREFIXES[source] = f'{{"kind":"insn_run","source":{_dumps(source)},"n":'
    # As _dumps({"kind": "insn_run", "source": ..., "d": fold_loops(d)}) writes them.
    if 0 < len(eips) <= LINE_INSNS:  # (one line: the usual case)
        return f'{head}{n},"count":{len(eips)},"eip":{eips[0]},"d":{_d_text(eips)}}}\n'
    lines = []
    for at in range(0, len(eips), LINE_INSNS):
        piece = eips[at:at + LINE_INSNS]
        lines.append(f'{head}{n + at},"count":{len(piece)},"eip":{piece[0]},'
                     f'"d":{_d_text(piece)}}}\n')
    return "".join(lines)


_RESERVED = frozenset(("seq", "time", "layer", "source", "kind"))  # to_dict: fields replace these
_NEW = object()  # (a key not seen yet)


# The text of a value of each type a _LineFormat writes, as the JSON encoder writes it (an
# int goes to its %d as it is: the same digits as int.__repr__).
_TEXT_OF: dict[type, Callable[[Any], Any]] = {
    int: index, str: encode_basestring_ascii, bool: {False: "false", True: "true"}.__getitem__,
    type(None): {None: "null"}.__getitem__,
    list: _dumps}  # (the same encoder: as it writes a list inside the line)
_COMPILE_AFTER = 64  # lines of one value types before their function is made from source


class _Tail:
    """How the values of these types become fmt % their texts (_TEXT_OF): while `fn` is
    None the text functions are mapped over the values, `left` more lines; then `fn` is a
    function of (fmt, values) made from source that formats the line in one call (mapping
    a text function per value cost about as much as the rest of the line, and making a
    function from source as much as a few dozen lines: a short run does not pay for types
    it seldom writes). One per value types, shared by the formats."""

    __slots__ = ("fn", "left", "texts", "types")

    def __init__(self, types: tuple[type, ...]):
        self.fn: Callable[[str, tuple], str] | None = None
        self.texts = tuple(_TEXT_OF[t] for t in types)
        self.left = _COMPILE_AFTER
        self.types = types


def _tail_of(types: tuple[type, ...]) -> _Tail:
    tail = _TAILS.get(types)
    if tail is None:
        tail = _TAILS[types] = _Tail(types)
    return tail


def _compiled_tail(types: tuple[type, ...]) -> Callable[[str, tuple], str]:
    names = [f"v{i}" for i in range(len(types))]
    args = [n if t is int else f"enc({n})" if t is str
            else f"('true' if {n} else 'false')" if t is bool
            else "'null'" if t is type(None) else f"dumps({n})"
            for n, t in zip(names, types, strict=True)]
    unpack = f"    ({', '.join(names)},) = v\n" if names else ""
    src = f"def tail(fmt, v):\n{unpack}    return fmt % ({''.join(a + ', ' for a in args)})\n"
    ns = {"enc": encode_basestring_ascii, "dumps": _dumps}
    exec(compile(src, "<trace line>", "exec"), ns)  # generated from the types alone
    return ns["tail"]


_TAILS: dict[tuple[type, ...], _Tail] = {}


class _LineFormat(NamedTuple):
    """How to write the line of an event of one kind and source whose fields have these
    names and value types: fmt % the values' texts (`tail`) is all of _dumps(ev.to_dict())
    after "time", and `known` keeps that text for values seen before (a loop's exits repeat
    theirs); None where a value is a list (not hashable: such lines are made anew)."""

    fmt: str
    tail: _Tail
    known: dict[tuple, str] | None


def _line_format(layer: str, source: str, kind: str, int_times: bool, keys: tuple[str, ...],
                 types: tuple[type, ...]) -> _LineFormat | None:
    """The _LineFormat of such events; None for anything else (a float, a tuple, a
    subclass, a field named like a common key), which the encoder writes whole."""
    if not int_times or any(t not in _TEXT_OF for t in types) \
            or not _RESERVED.isdisjoint(keys):
        return None
    fmt = f',"layer":{_dumps(layer)},"source":{_dumps(source)},"kind":{_dumps(kind)}'
    fmt = fmt.replace("%", "%%") + "".join(
        f",{_dumps(k)}:".replace("%", "%%") + ("%d" if t is int else "%s")
        for k, t in zip(keys, types, strict=True)) + "}\n"
    return _LineFormat(fmt, _tail_of(types), None if list in types else {})


def _tail_text(form: _LineFormat, v: tuple) -> str:
    """The line after its "time" of an event whose values `v` have `form`."""
    tail = form.tail
    if tail.fn is not None:
        return tail.fn(form.fmt, v)
    t = form.fmt % tuple(map(call, tail.texts, v))
    tail.left -= 1
    if tail.left <= 0:
        tail.fn = _compiled_tail(tail.types)
    return t


# Event texts kept for values seen before, over all kinds (about 10 MB at most): a loop's
# exits repeat a few hundred (a byte written, a character printed), where a kind's own
# limit of 128 was met before its values came round again.
_KNOWN_LINES = 16_384
_BATCH = 64  # event lines queued before they are written in one write
_LONG = 1 << 12  # an insn_run text this long is written at once (and the queue before it)


def _value_class(x: Any) -> str:
    """How a tracepoint's line function checks a value of this type before it looks its
    line up by value (_tp_line_source)."""
    t = type(x)
    if t is int:
        return "i"
    if t is bool:
        return "b"
    if t is str or x is None:
        return "t"
    if t is list and _all_str(x):
        return "l"
    return "x"


def _all_str(values: list) -> bool:
    return all(type(x) is str for x in values)


# Each class's check, and its part of the look-up key: values of different types that
# compare equal (1, True and 1.0; [1] and [True]) have different lines, so a line is found
# by value only among values of one type. A str, None and an int never equal each other:
# one check serves the three where the first was a str or None (a guest physical address
# is None for an I/O exit and an int for an EPT one), and the line made for each says which.
_CHECKS = {"i": "type({v}) is int", "b": "type({v}) is bool",
           "t": "({v} is None or type({v}) is str or type({v}) is int)",
           "l": "(type({v}) is list and (not {v} or allstr({v})))", "x": "False"}


def _tp_line_source(classes: tuple[str, ...], counted: bool) -> str:
    """The source of a tracepoint's line function for values of these classes
    (_value_class): it numbers the event as emit would, and where every value passes its
    class's check, the line is found by (source, values), and made once by `learn`;
    otherwise the event is built and written by _write."""
    vs = [f"v{i}" for i in range(len(classes))]
    args = "".join(f", {v}" for v in vs)
    values = "(" + "".join(f"{v}, " for v in vs) + ")"
    checks = "".join(" and " + _CHECKS[c].format(v=v) for c, v in zip(classes, vs, strict=True))
    key = "(source, " + "".join(f"tuple({v}), " if c == "l" else f"{v}, "
                                for c, v in zip(classes, vs, strict=True)) + ")"
    return (
        f"def line(source{args}):\n"
        + ("    stream.counted += 1\n" if counted else "")
        + "    stream.seq = seq = stream.seq + 1\n"
        "    time = stream.time\n"
        f"    if not (type(time) is int and type(source) is str{checks}):\n"
        f"        write(event(seq, time, source, {values}))\n"
        "        return\n"
        "    w.busy = True\n"
        "    try:\n"
        "        long = columns and drain()\n"
        f"        k = {key}\n"
        "        t = known.get(k)\n"
        "        pending.append(f'{{\"seq\":{seq},\"time\":{time}{t}' if t is not None\n"
        f"                       else learn(seq, time, source, {values}, k))\n"
        "        w.lines += 1\n"
        "        if long or len(pending) >= BATCH:\n"
        "            flush()\n"
        "    except OSError as e:\n"
        "        raise OutputError(w.path, e) from None\n"
        "    finally:\n"
        "        w.busy = False\n"
        "    if w.deferred is not None:\n"
        "        w.raise_deferred()\n")


class TraceWriter(GuardedOutput):
    """Writes events (and, at level "insn", instruction records) as JSON Lines, as they
    happen: in order, a few dozen lines to a write at most, all of them by close(). A
    failed write raises OutputError naming `path`; a signal waits for the record being
    made or written (GuardedOutput), so no instruction is written twice or lost.
    """

    def __init__(self, events: EventStream, out: IO[str], level: str = "vm",
                 columns: Iterable[InstructionColumn] = (), path: str = "<trace>"):
        super().__init__(out, path)
        self.columns: list[InstructionColumn] = []
        self._level = level
        self._formats: dict[tuple, _LineFormat | None] = {}  # see _event_json
        self._known_left = _KNOWN_LINES  # texts the formats' `known` may take before a clear
        self._pending: list[str] = []  # lines not yet written, in order
        for col in columns:
            self.add_column(col)
        kinds = None if level == "all" else [k for k in CATALOGUE if k not in HIGH_RATE]
        self._events = events
        # Tracepoints' line functions by (kind, field names, counted), the value classes
        # they are made for and their texts known, by (kind, field names).
        self._tp_lines: dict[tuple[str, tuple[str, ...], bool], Callable[..., None]] = {}
        self._tp_classes: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        self._tp_left: dict[tuple[str, tuple[str, ...]], list[int]] = {}  # events until made
        self._tp_known: dict[tuple[str, tuple[str, ...]], dict[tuple, str]] = {}
        self._unsubscribe: Callable[[], None] | None = events.subscribe(
            self._write, kinds, lines=self._line_fn)

    def add_column(self, col: InstructionColumn) -> None:
        if self._level in ("insn", "all"):
            col.on_full = self.flush_instructions
            col.guard = self._guarded
            self.columns.append(col)

    def _drain(self) -> bool:
        """Queue the instructions waiting in the columns as insn_run lines; True if their
        text is long enough to be written at once."""
        long = False
        for col in self.columns:
            # (Most events find nothing waiting: that is looked at first, inline.)
            run = col.take_lanes() if col.tokens or col._pieces else None
            if run is not None:
                k = len(run[1]) >> 2
                text = encode_lanes(col.source, col.count + 1, *run)
            else:
                eips = col._eips
                if not eips:
                    continue
                k = len(eips)
                text = encode_run(col.source, col.count + 1, eips)
                del eips[:k]
            self._pending.append(text)
            self.lines += -(-k // LINE_INSNS)
            col.count += k
            long = long or len(text) >= _LONG
        return long

    def _flush(self) -> None:
        """Write the queued lines in one write (a failed one loses them, as a failed
        write of one line lost it)."""
        pending = self._pending
        if pending:
            text = "".join(pending)
            pending.clear()
            self.out.write(text)

    def flush_instructions(self) -> None:
        """Write out the instructions waiting in the columns (and the lines before them)."""
        def both() -> None:
            self._drain()
            self._flush()

        self._guarded(both)

    def _event_json(self, ev: Event, v: tuple, key: tuple) -> str:
        """The line of event `ev` whose values are `v` and whose _LineFormat is looked up
        by `key` (as _write_values makes them), where _write_values's look-up did not give
        it: exactly _dumps(ev.to_dict()) + "\\n" (see _LineFormat)."""
        seq, time, layer, source, kind, names, _ = ev
        form = self._formats.get(key, _NEW)
        if form is _NEW:
            if len(self._formats) >= 1024:
                self._formats.clear()
                self._known_left = _KNOWN_LINES
            form = self._formats[key] = _line_format(
                layer, source, kind, type(seq) is int and type(time) is int, names,
                tuple(map(type, v)))
        if form is None:
            return _dumps(ev.to_dict()) + "\n"
        t = _tail_text(form, v)
        known = form.known
        if known is not None:
            if self._known_left <= 0:
                self._forget_known()
            self._known_left -= 1
            known[v] = t
        return f'{{"seq":{seq},"time":{time}{t}'

    def _forget_known(self) -> None:
        for form in self._formats.values():
            if form is not None and form.known:
                form.known.clear()
        for known in self._tp_known.values():
            known.clear()
        self._known_left = _KNOWN_LINES

    def _write(self, ev: Event) -> None:
        self._write_values(*ev, ev)

    def _write_values(self, seq: int, time: int, layer: str, source: str, kind: str,
                      names: tuple[str, ...], v: tuple, ev: Event | None = None) -> None:
        """Queue the line of the event these are (`ev`, if it was built)."""
        # GuardedOutput._guarded written out (no closure per event); the line is queued,
        # after the instructions run before the event, and the queue written every
        # _BATCH lines (a write per line cost more than making most lines).
        self.busy = True
        try:
            long = self.columns and self._drain()
            # The line of an event whose kind, source, fields' names and types and values
            # were seen before: its remembered text (_event_json makes the others).
            key = (kind, source, layer, type(seq), type(time), *names, *map(type, v))
            form = self._formats.get(key)
            known = form.known if form is not None else None
            t = known.get(v) if known is not None else None
            if t is None and ev is None:
                ev = Event(seq, time, layer, source, kind, names, v)
            pending = self._pending
            pending.append(f'{{"seq":{seq},"time":{time}{t}' if t is not None
                           else self._event_json(ev, v, key))  # type: ignore[arg-type]
            self.lines += 1
            if long or len(pending) >= _BATCH:
                self._flush()
        except OSError as e:
            raise OutputError(self.path, e) from None
        finally:
            self.busy = False
        if self.deferred is not None:
            self.raise_deferred()

    # -- tracepoints (vmsim.events.Tracepoint) ------------------------------------------------
    def _line_fn(self, stream: EventStream, kind: str, layer: str, names: tuple[str, ...],
                 counted: bool) -> Callable[..., None] | None:
        """The `fire` of a tracepoint of `kind` with fields `names` where this writer alone
        hears it (EventStream.subscribe's `lines`): it numbers the event and queues its
        line as _write would, with no Event made."""
        if not _RESERVED.isdisjoint(names):
            return None
        fn = self._tp_lines.get((kind, names, counted))
        if fn is not None:
            return fn
        classes = self._tp_classes.get((kind, names))
        if classes is None:
            left = self._tp_left.setdefault((kind, names), [events_mod.COMPILE_AFTER])

            def plain(source: str, *values: Any) -> None:
                # Written as _write writes an Event, without one, until the line function
                # is made from source for the value types of the last of these events
                # (_tp_line_source); the tracepoint is re-armed to call it from then on.
                if counted:
                    stream.counted += 1
                stream.seq = seq = stream.seq + 1
                self._write_values(seq, stream.time, layer, source, kind, names, values)
                left[0] -= 1
                if left[0] <= 0:
                    self._tp_classes[(kind, names)] = tuple(map(_value_class, values))
                    stream.rearm()
            return plain
        fn = self._tp_lines[(kind, names, counted)] = self._tp_line(
            stream, kind, layer, names, classes, counted)
        return fn

    def _tp_line(self, stream: EventStream, kind: str, layer: str, names: tuple[str, ...],
                 classes: tuple[str, ...], counted: bool) -> Callable[..., None]:
        known = self._tp_known.get((kind, names))
        if known is None:
            known = self._tp_known[(kind, names)] = {}

        event = events_mod.event_maker(kind, layer, names)
        forms: dict[tuple, _LineFormat | None] = {}  # by (source, value types)

        def learn(seq: int, time: int, source: str, values: tuple, k: tuple) -> str:
            types = tuple(map(type, values))
            form = forms.get((source, types), _NEW)
            if form is _NEW:
                form = forms[(source, types)] = _line_format(layer, source, kind, True, names,
                                                             types)
            if form is None:  # (not after the checks passed: the types are all in _TEXT_OF)
                return _dumps(event(seq, time, source, values).to_dict()) + "\n"
            t = _tail_text(form, values)
            if self._known_left <= 0:
                self._forget_known()
            self._known_left -= 1
            known[k] = t
            return f'{{"seq":{seq},"time":{time}{t}'

        ns = {"w": self, "stream": stream, "columns": self.columns, "drain": self._drain,
              "flush": self._flush, "pending": self._pending, "known": known, "learn": learn,
              "event": event, "write": self._write, "BATCH": _BATCH, "OutputError": OutputError,
              "allstr": _all_str}
        exec(compile(_tp_line_source(classes, counted), f"<trace line {kind}>", "exec"), ns)
        return ns["line"]

    def close(self) -> None:
        """Write what is left and flush; stop listening. Safe to call twice."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for col in self.columns:
            col.on_full = None

        def finish() -> None:
            self._drain()
            self._flush()
            self.out.flush()

        self._guarded(finish)
