"""Every flag-setting form the block translator writes inline, against every flag reader,
over the operand values where flags change (equal, adjacent, a sign boundary apart, all
ones), CF clear and set going in: translated path against the per-instruction path.

The translator keeps the last flag-setting instruction's operands in Python locals and
reads a following Jcc's condition straight off them (vmsim.hw.blocks `_Pending.cond`);
random programs reach a given (operation, condition, values) triple too rarely to pin
each one. Here each (operation, reader) pair is a loop over a table of operand values
(the first time round decodes it, the rest run translated blocks):

    mov ebp, table
 l: mov eax, [ebp] / mov ebx, [ebp + 4] / mov [esi], b / bt dword [ebp + 8], 0  ; CF in
    OP                                   ; e.g. cmp al, bl
    READER                               ; Jcc over a store, ADC, PUSHFD: into [edx]
    add edx, 2 / add ebp, 12 / cmp ebp, table_end / jb l

READER is each of the 16 Jcc (jumping over the store of a 1), ADC and PUSHFD, and some
readers (Jcc, SETcc, CMOVcc, ADC, PUSHFD) after a JMP, at the head of the loop's next
block; every iteration writes its own slot, so the RAM compared at the end names the
case.
"""

from __future__ import annotations

import pytest

from tests.diff.blocks import Twin, has_blocks
from tests.diff.harness import CODE, DATA, STACK_TOP, Start

CCS = ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g")
# The same readers after a JMP: at the head of the next block of the loop's region (the
# flags record then crosses a block boundary inside one compiled function).
READERS = (*CCS, "adc", "pushf", "j:be", "j:l", "j:o", "j:setg", "j:cmovs", "j:adc", "j:pushf")
TABLE = DATA + 0x1000
SLOTS = DATA + 0x2000
OPERAND = DATA + 0x20

# (registers a, b, bits, shift) per operand size; 8-bit runs on the low and high bytes.
SIZES = {
    "32": ("eax", "ebx", 32, 0),
    "16": ("ax", "bx", 16, 0),
    "8": ("al", "bl", 8, 0),
    "8h": ("ah", "bh", 8, 8),
}


def _pairs(bits: int) -> list[tuple[int, int]]:
    m, s = (1 << bits) - 1, 1 << (bits - 1)
    return [(0, 0), (5, 5), (0, 1), (1, 0), (m, m), (m, 1), (s, s - 1), (s - 1, s), (s, 1)]


GROUPS = {
    "alu": ["cmp {a}, {b}", "sub {a}, {b}", "sbb {a}, {b}", "add {a}, {b}", "adc {a}, {b}",
            "and {a}, {b}", "or {a}, {b}", "xor {a}, {b}", "test {a}, {b}", "inc {a}",
            "dec {a}"],
    "mem": ["cmp {a}, [esi]", "cmp [esi], {a}", "sub {a}, [esi]", "add [esi], {a}",
            "adc [esi], {a}", "sbb {a}, [esi]", "and {a}, [esi]"],
    # The immediate is part of the code: one loop per value.
    "imm": ["cmp {a}, {i}", "sub {a}, {i}", "add {a}, {i}", "adc {a}, {i}"],
}
SHIFTS = ["shl eax, 1", "shl eax, 4", "shl eax, 31", "shr eax, 1", "shr eax, 7",
          "shr eax, 31", "sar eax, 1", "sar eax, 5", "sar eax, 31", "shl eax, 0"]


# Flag setters the one-instruction path runs (a block ends before them): the reader then
# starts the next block, which reads the flags record the string handler left (the
# translator guesses its kind when it translates: checked at run time).
STRINGS = {"32": "d", "16": "w", "8": "b"}


def guest(size: str, group: str) -> str:
    a, b, bits, shift = SIZES[size]
    m, s = (1 << bits) - 1, 1 << (bits - 1)
    if group == "string":
        x = STRINGS[size]
        ops = [f"cmps{x}", f"scas{x}", f"repe cmps{x}", f"repne scas{x}"]
    elif group == "shift":
        ops = SHIFTS
    elif group == "imm":
        ops = [op.replace("{i}", f"{i:#x}") for op in GROUPS["imm"] for i in (1, s, m)]
    else:
        ops = GROUPS[group]
    table = []
    for va, vb in _pairs(bits):
        for cf in (0, 1):
            table += [va << shift, vb << shift, cf]
    lines = ["bits 32", f"org {CODE:#x}", f"mov edx, {SLOTS:#x}", f"mov esi, {OPERAND:#x}"]
    n = 0
    for op in ops:
        for reader in READERS:
            n += 1
            lines += [f"mov ebp, {TABLE:#x}", f".l{n}:", "mov eax, [ebp]", "mov ebx, [ebp + 4]"]
            if group == "string":  # [esi] - [edi], or the accumulator - [edi]
                lines += [f"mov esi, {OPERAND:#x}", f"mov [esi], {a}",
                          f"mov [esi + 8], {b}", "lea edi, [esi + 8]", "mov ecx, 1"]
            else:
                lines += [f"mov [esi], {b}"]
            lines += ["bt dword [ebp + 8], 0", op.format(a=a, b=b)]
            if reader.startswith("j:"):
                lines += [f"jmp .j{n}", f".j{n}:"]
                reader = reader[2:]
            if reader == "setg":
                lines += ["setg byte [edx]"]
            elif reader == "cmovs":
                lines += ["mov ecx, 0", "cmovs ecx, ebp", "mov [edx], cl"]
            elif reader in CCS:
                lines += [f"j{reader} .s{n}", "mov byte [edx], 1", f".s{n}:"]
            elif reader == "adc":
                lines += ["mov ecx, 0", "adc ecx, 0", "mov [edx], cl"]
            else:
                lines += ["pushfd", "pop ecx", "mov [edx], cx"]
            lines += ["add edx, 2", "add ebp, 12", f"cmp ebp, {TABLE + 4 * len(table):#x}",
                      f"jb .l{n}"]
    if group == "string":
        lines.insert(2, "cld")
    lines += ["hlt", "align 4", f"times {TABLE:#x} - {CODE:#x} - ($ - $$) db 0"]
    lines += [f"dd {v:#x}" for v in table]
    return "\n".join(lines) + "\n"


CASES = ([(s, g) for s in SIZES for g in GROUPS] + [("32", "shift")]
         + [(s, "string") for s in STRINGS])


@pytest.mark.parametrize(("size", "group"), CASES, ids=[f"{s}-{g}" for s, g in CASES])
def test_flag_setter_and_reader_forms(nasm, size: str, group: str):
    code = nasm(guest(size, group), f"forms_{size}_{group}")
    # The 32-bit cases with the instruction recorder on (its own compiled variant).
    twin = Twin(code, Start([0, 0, 0, 0, STACK_TOP, 0, 0, 0]), events=None,
                record=size == "32")
    # A free run: budgets of thousands, the CPUs translate as they go.
    twin.run_budgets([5000] * 200)
    assert twin.fast.halted and twin.slow.halted, twin.log[-3:]
    twin.compare_saved_state()
    if has_blocks():
        assert twin.fast.blocks, "the fast CPU translated no block"
