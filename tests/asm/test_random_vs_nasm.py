"""Property test: random instructions of the supported subset assemble like NASM.

Each example is a batch of instructions assembled by one nasm run, to keep it fast.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.asm.oracle import nasm_bin
from vmsim.asm import assemble
from vmsim.asm.forms import CONDITIONS

R = {
    8: "al cl dl bl ah ch dh bh".split(),
    16: "ax cx dx bx sp bp si di".split(),
    32: "eax ecx edx ebx esp ebp esi edi".split(),
}
SIZE_WORD = {8: "byte", 16: "word", 32: "dword"}
ALU = "add or adc sbb and sub xor cmp".split()
SHIFTS = "rol ror rcl rcr shl sal shr sar".split()
BOUNDARY = [
    0,
    1,
    -1,
    2,
    127,
    128,
    -128,
    -129,
    255,
    256,
    0x7FFF,
    0x8000,
    -0x8000,
    0xFFFF,
    0x7FFFFFFF,
    -0x80000000,
    0xFFFFFFFF,
    0xFFFFFF80,
    0xFF80,
]


def imm(bits: int) -> st.SearchStrategy[int]:
    lo, hi = -(1 << (bits - 1)), (1 << bits) - 1
    edge = [v for v in BOUNDARY if lo <= v <= hi]
    return st.one_of(st.sampled_from(edge), st.integers(lo, hi))


@st.composite
def mem(draw: st.DrawFn, size: int | None = None) -> str:
    base = draw(st.one_of(st.none(), st.sampled_from(R[32])))
    index = draw(st.one_of(st.none(), st.sampled_from([r for r in R[32] if r != "esp"])))
    scale = draw(st.sampled_from([1, 2, 4, 8]))
    disp = draw(
        st.one_of(
            st.sampled_from([0, 1, -1, 127, 128, -128, -129, 0x1000]),
            st.integers(-(1 << 31), (1 << 31) - 1),
        )
    )
    terms = []
    if base:
        terms.append(base)
    if index:
        terms.append(f"{index}*{scale}")
    if disp or not terms:
        terms.append(str(disp))
    order = draw(st.permutations(terms))
    text = "+".join(order).replace("+-", "-")
    seg = draw(st.sampled_from(["", "", "", "es:", "fs:", "ss:"]))
    prefix = f"{SIZE_WORD[size]} " if size else ""
    return f"{prefix}[{seg}{text}]"


@st.composite
def instruction(draw: st.DrawFn) -> str:
    size = draw(st.sampled_from([8, 16, 32]))
    r1, r2 = draw(st.sampled_from(R[size])), draw(st.sampled_from(R[size]))
    wide = draw(st.sampled_from([16, 32]))
    w1, w2 = draw(st.sampled_from(R[wide])), draw(st.sampled_from(R[wide]))
    kind = draw(st.integers(0, 17))
    if kind == 0:
        m = draw(st.sampled_from([*ALU, "mov", "test"]))
        form = draw(st.integers(0, 4))
        if form == 0:
            return f"{m} {r1}, {r2}"
        if form == 1:
            return f"{m} {r1}, {draw(mem())}"
        if form == 2:
            return f"{m} {draw(mem())}, {r1}"
        if form == 3:
            return f"{m} {r1}, {draw(imm(size))}"
        return f"{m} {draw(mem(size))}, {draw(imm(size))}"
    if kind == 1:
        m = draw(st.sampled_from(["inc", "dec", "not", "neg", "mul", "imul", "div", "idiv"]))
        return f"{m} {draw(st.one_of(st.just(r1), mem(size)))}"
    if kind == 2:
        m = draw(st.sampled_from(SHIFTS))
        count = draw(st.sampled_from(["1", "cl", str(draw(st.integers(0, 255)))]))
        return f"{m} {draw(st.one_of(st.just(r1), mem(size)))}, {count}"
    if kind == 3:
        form = draw(st.integers(0, 3))
        if form == 0:
            return f"imul {w1}, {draw(st.one_of(st.just(w2), mem()))}"
        if form == 1:
            return f"imul {w1}, {draw(st.one_of(st.just(w2), mem()))}, {draw(imm(wide))}"
        return f"imul {w1}, {draw(imm(wide))}"
    if kind == 4:
        m = draw(st.sampled_from(["bt", "bts", "btr", "btc"]))
        src = draw(st.sampled_from([w2, str(draw(st.integers(0, 255)))]))
        return f"{m} {draw(st.one_of(st.just(w1), mem(wide)))}, {src}"
    if kind == 5:
        cc = draw(st.sampled_from(sorted(CONDITIONS)))
        if draw(st.booleans()):
            return f"set{cc} {draw(st.one_of(st.sampled_from(R[8]), mem()))}"
        return f"cmov{cc} {w1}, {draw(st.one_of(st.just(w2), mem()))}"
    if kind == 6:
        m = draw(st.sampled_from(["movzx", "movsx"]))
        src = draw(st.one_of(st.sampled_from(R[8]), mem(8)))
        if wide == 32 and draw(st.booleans()):
            src = draw(st.one_of(st.sampled_from(R[16]), mem(16)))
        return f"{m} {w1}, {src}"
    if kind == 7:
        return f"lea {w1}, {draw(mem())}"
    if kind == 8:
        return f"xchg {draw(st.sampled_from([r1, draw(mem())]))}, {r2}"
    if kind == 9:
        m = draw(st.sampled_from(["push", "pop"]))
        what = draw(st.sampled_from([w1, draw(mem(wide)), "ds", "es", "fs", "gs", "ss"]))
        if m == "push" and draw(st.booleans()):
            what = str(draw(imm(32)))
        return f"{m} {what}"
    if kind == 10:
        acc = {8: "al", 16: "ax", 32: "eax"}[size]
        port = draw(st.sampled_from(["dx", str(draw(st.integers(0, 255)))]))
        return f"in {acc}, {port}" if draw(st.booleans()) else f"out {port}, {acc}"
    if kind == 11:
        sreg = draw(st.sampled_from(["es", "ds", "ss", "fs", "gs"]))
        src = draw(st.sampled_from([R[16][0], R[32][3], draw(mem())]))
        return f"mov {sreg}, {src}" if draw(st.booleans()) else f"mov {src}, {sreg}"
    if kind == 12:
        acc = {8: "al", 16: "ax", 32: "eax"}[size]
        addr = draw(st.integers(0, (1 << 32) - 1))
        return f"mov {acc}, [{addr}]" if draw(st.booleans()) else f"mov [{addr}], {acc}"
    if kind == 13:
        op = draw(st.sampled_from(["movs", "stos", "lods", "cmps", "scas", "ins", "outs"]))
        rep = draw(st.sampled_from(["", "rep ", "repe ", "repne "]))
        return f"{rep}{op}{draw(st.sampled_from('bwd'))}"
    if kind == 14:
        return draw(
            st.sampled_from(
                [
                    f"ret {draw(st.integers(0, 65535))}",
                    f"int {draw(st.integers(0, 255))}",
                    f"enter {draw(st.integers(0, 65535))}, {draw(st.integers(0, 31))}",
                ]
            )
        )
    if kind == 15:
        cr = draw(st.sampled_from(["cr0", "cr2", "cr3", "cr4"]))
        return (
            f"mov {cr}, {R[32][0]}"
            if draw(st.booleans())
            else f"mov {w1 if wide == 32 else 'esi'}, {cr}"
        )
    if kind == 16:
        m = draw(st.sampled_from(["jmp", "call"]))
        return f"{m} {draw(st.one_of(st.sampled_from(R[32]), mem()))}"
    return draw(
        st.sampled_from(
            [
                "nop",
                "hlt",
                "cli",
                "sti",
                "clc",
                "stc",
                "cmc",
                "cld",
                "std",
                "cpuid",
                "rdtsc",
                "rdmsr",
                "wrmsr",
                "vmcall",
                "ud2",
                "pushad",
                "popad",
                "pushfd",
                "popfd",
                "cbw",
                "cwde",
                "cwd",
                "cdq",
                "leave",
                "int3",
                "iret",
                "pause",
            ]
        )
    )


@pytest.mark.usefixtures("nasm")
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(instruction(), min_size=1, max_size=25))
def test_random_instructions_match_nasm(lines: list[str]) -> None:
    source = "bits 32\n" + "\n".join(lines) + "\n"
    expected = nasm_bin(source)
    got = assemble(source).data
    if got != expected:
        for line in lines:
            one = "bits 32\n" + line + "\n"
            assert assemble(one).data.hex() == nasm_bin(one).hex(), line
    assert got == expected
