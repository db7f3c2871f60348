"""Self-modifying code, vmsim against unicorn in lock-step.

A store into the instruction stream must be seen by the very next fetch of those bytes
(SDM Vol. 3A 11.6: on P6 and later a write to a code address already prefetched or
decoded is detected and the prefetched code invalidated). vmsim decodes once per address
into a cached handler; each case checks the cache is dropped when its bytes change.
"""

from __future__ import annotations

import pytest

from tests.diff.harness import CODE, DATA_SIZE, STACK_SIZE, STACK_TOP, Pair, Start

CASES = {
    # The store rewrites the next instruction's opcode: inc eax (40) becomes dec eax (48).
    "next opcode": """
        mov ebx, next
        mov eax, 10
        mov byte [ebx], 0x48
    next:
        inc eax
    """,
    # The store rewrites the next instruction's immediate, with a disp32 absolute address.
    "next immediate": """
        mov dword [imm + 1], 0x12345678
    imm:
        mov eax, 0x11111111
    """,
    # An instruction runs, is cached, is patched, and runs again.
    "patched after running": """
        mov ecx, 3
        xor eax, eax
    again:
        add eax, 1
        mov byte [again + 2], 5
        loop again
    """,
    # REP STOSB turns the following instructions into NOPs, one element at a time.
    "rep stosb over the next instructions": """
        mov edi, over
        mov ecx, 10
        mov al, 0x90
        cld
        rep stosb
    over:
        mov eax, 1
        mov ebx, 2
    """,
    # A 16-bit store that crosses into the instruction after the next one.
    "store across two instructions": """
        mov word [second - 1], 0x4848
    first:
        nop
    second:
        inc ecx
        inc edx
    """,
}


@pytest.mark.parametrize("name", list(CASES))
def test_self_modifying_code_matches_unicorn(nasm, name: str):
    code = nasm(f"bits 32\norg {CODE:#x}\n{CASES[name]}\n", name.replace(" ", "_"))
    start = Start([0, 0, 0, 0, STACK_TOP, 0, 0, 0], 0x2, bytes(DATA_SIZE), bytes(STACK_SIZE))
    pair = Pair(code, start)
    steps = pair.run(max_steps=100)
    assert pair.cpu.eip == pair.end, f"stopped early after {steps} steps"
    # The cases are chosen so the patched code gives a different result than the original.
    ram = pair.cpu.mem.ram
    assert bytes(ram[CODE:CODE + len(code)]) != code
