"""Small guests for the memory-virtualization tests, assembled by vmsim's assembler."""

from __future__ import annotations

from vmsim.asm import assemble
from vmsim.asm.image import GuestImage

# A flat GDT, serial output, and a page directory at 0x200000 whose first entry maps the
# low 4 MiB through the page table at 0x201000 (identity); PD[1] is a 4 MiB page.
PROLOGUE = """
bits 32
org 0x100000
COM1 equ 0x3F8
PD equ 0x200000
PT equ 0x201000
        mov esp, 0x90000
        lgdt [gdt_descriptor]
        jmp 0x08:.cs
.cs:    mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov edi, PT
        mov eax, 3
        mov ecx, 1024
.fill:  mov [edi], eax
        add eax, 0x1000
        add edi, 4
        loop .fill
        mov dword [PD], PT + 3
        mov dword [PD + 4], 0x00400000 | 0x83      ; 4 MiB page: 4-8 MiB identity
        mov eax, PD
        mov cr3, eax
        mov eax, cr4
        or eax, 0x10                               ; PSE
        mov cr4, eax
        mov eax, cr0
        or eax, 0x80010000                         ; PG, WP
        mov cr0, eax
"""

EPILOGUE = """
        mov dx, 0x501
        mov al, 0
        out dx, al
        hlt

; puthex: EAX as 8 hex digits and a newline
puthex: push ecx
        push edx
        mov ecx, 8
.d:     rol eax, 4
        push eax
        and al, 0x0F
        add al, '0'
        cmp al, '9'
        jbe .p
        add al, 'a' - '0' - 10
.p:     mov dx, COM1
        out dx, al
        pop eax
        loop .d
        mov al, 10
        out dx, al
        pop edx
        pop ecx
        ret

        align 8
gdt:    dq 0
        dq 0x00CF9A000000FFFF
        dq 0x00CF92000000FFFF
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
"""


def guest(body: str) -> GuestImage:
    return assemble(PROLOGUE + body + EPILOGUE, "<mmu test guest>")
