"""REP STOS, MOVS and LODS over RAM run a page at a time (vmsim.hw.cpu MemFns.fill / copy /
peek), and REP CMPS and SCAS up to the element that ends them: the registers, flags and
memory after the instruction are unicorn's, over runs that cross pages, go down (DF=1),
overlap (MOVS) and stop at ECX=0, up to a whole REP chunk."""

from __future__ import annotations

import iced_x86
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.diff.harness import DATA, DATA_SIZE, STACK_TOP, Start, run_pair

RepKind = iced_x86.RepPrefixKind
MAKE = {("stos", 1): iced_x86.Instruction.create_stosb, ("stos", 2): iced_x86.Instruction.create_stosw,
        ("stos", 4): iced_x86.Instruction.create_stosd, ("movs", 1): iced_x86.Instruction.create_movsb,
        ("movs", 2): iced_x86.Instruction.create_movsw, ("movs", 4): iced_x86.Instruction.create_movsd,
        ("lods", 1): iced_x86.Instruction.create_lodsb, ("lods", 2): iced_x86.Instruction.create_lodsw,
        ("lods", 4): iced_x86.Instruction.create_lodsd}
DF = 0x400


def _encode(ins: iced_x86.Instruction) -> bytes:
    enc = iced_x86.Encoder(32)
    enc.encode(ins, 0x100000)
    return enc.take_buffer()


def _run_start(draw, size: int, down: bool, span: int) -> int:
    """Where a run of `span` bytes stays in the data window (unicorn maps nothing else),
    often near a page boundary, so that runs start, end and cross there."""
    if down:
        low, high = DATA + max(span - size, 0), DATA + DATA_SIZE - size
    else:
        low, high = DATA, DATA + DATA_SIZE - max(span, size)
    page = draw(st.integers(low >> 12, high >> 12)) << 12
    near = draw(st.one_of(st.integers(-8, 8), st.integers(0, 0xFFF)))
    return min(max(page + near, low), high)


@st.composite
def rep_case(draw):
    op = draw(st.sampled_from(("stos", "movs", "lods")))
    size = draw(st.sampled_from((1, 2, 4)))
    down = draw(st.booleans())
    count = draw(st.one_of(st.integers(0, 8), st.integers(0, 4096)))
    span = count * size

    def address() -> int:
        return _run_start(draw, size, down, span)

    edi = address()
    if op == "lods":
        return op, size, down, count, address(), 0, draw(st.integers(0, 0xFFFFFFFF))
    esi = address() if op == "movs" and draw(st.booleans()) else (
        min(max(edi + draw(st.sampled_from((-2, -1, 1, 2, 3))) * size, DATA), DATA + DATA_SIZE - 1)
        if op == "movs" else 0)
    if op == "movs" and not (DATA + (span - size if down else 0) <= esi
                             <= DATA + DATA_SIZE - (size if down else max(span, size))):
        esi = edi  # (an overlapping source outside the window: the run on itself)
    return op, size, down, count, esi, edi, draw(st.integers(0, 0xFFFFFFFF))


@settings(max_examples=60, deadline=None)
@given(case=rep_case(), seed=st.integers(0, 2**32 - 1))
def test_rep_stos_movs_and_lods_match_unicorn(case, seed: int) -> None:
    import random

    op, size, down, count, esi, edi, eax = case
    code = _encode(MAKE[(op, size)](32, rep_prefix=RepKind.REPE))
    regs = [eax, count, 0, 0, STACK_TOP, 0, esi, edi]
    start = Start(regs, 0x2 | (DF if down else 0), random.Random(seed).randbytes(DATA_SIZE))
    pair = run_pair(code, start)
    assert pair.steps == 1


SCAN = {("scas", 1): iced_x86.Instruction.create_scasb, ("scas", 2): iced_x86.Instruction.create_scasw,
        ("scas", 4): iced_x86.Instruction.create_scasd, ("cmps", 1): iced_x86.Instruction.create_cmpsb,
        ("cmps", 2): iced_x86.Instruction.create_cmpsw, ("cmps", 4): iced_x86.Instruction.create_cmpsd}


@st.composite
def scan_case(draw):
    """REPE / REPNE SCAS and CMPS over data that is one byte, or one byte below 0x208000
    and another above, with a few marks of a third: so that the comparisons go on for
    long runs, across pages, and end at the marks, the change, or the count."""
    op = draw(st.sampled_from(("scas", "cmps")))
    size = draw(st.sampled_from((1, 2, 4)))
    down, repne = draw(st.booleans()), draw(st.booleans())
    count = draw(st.one_of(st.integers(0, 8), st.integers(0, 4096)))
    span = count * size
    fill, other, mark = draw(st.lists(st.integers(0, 255), min_size=3, max_size=3, unique=True))
    data = bytearray([fill]) * DATA_SIZE
    if draw(st.booleans()):
        data[DATA_SIZE // 2:] = bytes([other]) * (DATA_SIZE // 2)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, DATA_SIZE - 4))
        data[at:at + 4] = bytes([mark]) * 4

    edi, esi = _run_start(draw, size, down, span), _run_start(draw, size, down, span)
    for at in (edi, esi)[:1 + (op == "cmps")]:  # often a mark within the run itself
        if span and draw(st.booleans()):
            at = at - draw(st.integers(0, span - 1)) if down else at + draw(st.integers(0, span - 1))
            at = min(max(at - DATA, 0), DATA_SIZE - 1)
            data[at] = mark
    eax = int.from_bytes(bytes([draw(st.sampled_from((fill, fill, other, mark)))]) * 4, "little")
    return op, size, down, repne, count, esi if op == "cmps" else 0, edi, eax, bytes(data)


@settings(max_examples=80, deadline=None)
@given(case=scan_case())
def test_rep_cmps_and_scas_match_unicorn(case) -> None:
    """REP CMPS and SCAS compare a page's elements at once (MemFns.peek): ESI, EDI, ECX and
    the flags of the element that ended the REP are unicorn's."""
    op, size, down, repne, count, esi, edi, eax, data = case
    kind = RepKind.REPNE if repne else RepKind.REPE
    code = _encode(SCAN[(op, size)](32, rep_prefix=kind))
    regs = [eax, count, 0, 0, STACK_TOP, 0, esi, edi]
    pair = run_pair(code, Start(regs, 0x2 | (DF if down else 0), data))
    assert pair.steps == 1
