"""One line per instruction form: the assembly and NASM's bytes side by side.

These run without nasm (the bytes were taken from NASM 2.16), so they pin the encoder
even where the differential tests are skipped.
"""

from __future__ import annotations

import pytest

from vmsim.asm import assemble

CASES = [
    ("mov eax, ebx", "89d8"),
    ("mov eax, [ebx+eax]", "8b0403"),
    ("mov eax, [ebp+eax]", "8b440500"),
    ("mov eax, [eax*2]", "8b0400"),
    ("mov eax, [eax*3]", "8b0440"),
    ("mov eax, [eax*4]", "8b048500000000"),
    ("mov eax, [esp]", "8b0424"),
    ("mov eax, [ebp]", "8b4500"),
    ("mov eax, [eax+esp]", "8b0404"),
    ("mov eax, [ebx+127]", "8b437f"),
    ("mov eax, [ebx+128]", "8b8380000000"),
    ("mov eax, [ebx-128]", "8b4380"),
    ("mov eax, [ebx-129]", "8b837fffffff"),
    ("mov eax, [0x1234]", "a134120000"),
    ("mov ebx, [0x1234]", "8b1d34120000"),
    ("mov [0x1234], al", "a234120000"),
    ("mov ax, [0x1234]", "66a134120000"),
    ("mov eax, [es:edi]", "268b07"),
    ("es mov eax, [edi]", "268b07"),
    ("mov ax, ds", "668cd8"),
    ("mov ds, ax", "8ed8"),
    ("mov eax, cr0", "0f20c0"),
    ("mov cr3, eax", "0f22d8"),
    ("mov byte [eax], 5", "c60005"),
    ("mov dword [eax], 5", "c70005000000"),
    ("add eax, 5", "83c005"),
    ("add eax, 500", "05f4010000"),
    ("add eax, 0xffffffff", "83c0ff"),
    ("add ax, 0xffff", "6683c0ff"),
    ("add al, 5", "0405"),
    ("add [eax], byte 5", "800005"),
    ("add [eax], dword 5", "830005"),
    ("add ebx, strict dword 5", "81c305000000"),
    ("test eax, 5", "a905000000"),
    ("test ebx, [eax]", "8518"),
    ("xchg eax, ebx", "93"),
    ("xchg al, bl", "86c3"),
    ("xchg eax, eax", "90"),
    ("inc eax", "40"),
    ("inc ax", "6640"),
    ("inc byte [eax]", "fe00"),
    ("imul eax, 5", "6bc005"),
    ("imul eax, ebx, 500", "69c3f4010000"),
    ("imul eax, ebx", "0fafc3"),
    ("shl eax, 1", "d1e0"),
    ("shl eax, cl", "d3e0"),
    ("shl eax, 3", "c1e003"),
    ("shl eax, byte 1", "c1e001"),
    ("bt eax, 3", "0fbae003"),
    ("bts dword [eax], 3", "0fba2803"),
    ("setz al", "0f94c0"),
    ("cmovz eax, ebx", "0f44c3"),
    ("movzx eax, byte [eax]", "0fb600"),
    ("movsx ax, bl", "660fbec3"),
    ("push 5", "6a05"),
    ("push 0x80", "6880000000"),
    ("push word 5", "666a05"),
    ("push strict dword 5", "6805000000"),
    ("push fs", "0fa0"),
    ("pop ds", "1f"),
    ("jmp [eax]", "ff20"),
    ("jmp far [eax]", "ff28"),
    ("jmp 0x08:0x1000", "ea001000000800"),
    ("call 0x08:0x1000", "9a001000000800"),
    ("call far [eax]", "ff18"),
    ("ret 4", "c20400"),
    ("int 3", "cd03"),
    ("int3", "cc"),
    ("in eax, 0x60", "e560"),
    ("out dx, ax", "66ef"),
    ("rep movsb", "f3a4"),
    ("repne scasb", "f2ae"),
    ("lgdt [eax]", "0f0110"),
    ("vmcall", "0f01c1"),
    ("x: jmp x", "ebfe"),
    ("x: jmp near x", "e9fbffffff"),
    ("x: je x", "74fe"),
    ("x: je near x", "0f84faffffff"),
    ("x: loop x", "e2fe"),
]


@pytest.mark.parametrize(("asm", "hexbytes"), CASES, ids=[c[0] for c in CASES])
def test_form(asm: str, hexbytes: str) -> None:
    assert assemble("bits 32\n" + asm + "\n").data.hex() == hexbytes
