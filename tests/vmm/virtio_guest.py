"""A small virtio-blk driver guest, assembled by vmsim.asm, for the device tests.

The guest does the driver's part of VIRTIO 1.2 §3.1.1 on the disk's transport
(0xFEB00E00): reset, ACKNOWLEDGE, DRIVER, the features it is given, FEATURES_OK, one
queue of QNUM entries whose rings sit in its own image, DRIVER_OK. Then, for each head
in `heads`, it puts the head in the available ring, bumps avail->idx, writes QueueNotify
and polls used->idx (no interrupt handler), giving up on a request when Status shows
DEVICE_NEEDS_RESET. It stores what it saw (Status after FEATURES_OK, the final Status and
InterruptStatus, how many requests completed) at `results` and exits through
isa-debug-exit. The descriptor table, request headers and buffers are data of the image,
written by the test (`chains`): each descriptor is (address expression, len, flags, next).
"""

from __future__ import annotations

QNUM = 8
DISK = 0xFEB00E00


def guest_source(chains: list[list[tuple[str, int, int, int]]], heads: list[int],
                 data: str = "", features_lo: int = 0, features_hi: int = 1,
                 report: tuple[str, ...] = ()) -> str:
    """Assembly text: descriptors are laid out in order, chain by chain, from index 0."""
    descs = [d for chain in chains for d in chain]
    desc_lines = "\n".join(f"        dd {a}, 0\n        dd {n}\n        dw {f}, {nx}"
                           for a, n, f, nx in descs)
    pad = QNUM - len(descs)
    heads_line = ", ".join(str(h) for h in heads) or "0"
    # Printed on COM1 at the end: the four result words, then each labelled byte.
    report_lines = "\n".join(
        [f"        mov eax, [results + {4 * i}]\n        call hex" for i in range(4)]
        + [f"        movzx eax, byte [{label}]\n        call hex" for label in report]
        + ["        mov al, 10\n        call putc"]) if report else ""
    return f"""bits 32
org 0x100000
DISK equ {DISK:#x}
QNUM equ {QNUM}
NREQ equ {len(heads)}
        jmp start
        align 4
multiboot:                              ; so that qemu-system-i386 -kernel boots it too
        dd 0x1BADB002
        dd 0x00010000
        dd -(0x1BADB002 + 0x00010000)
        dd multiboot
        dd 0x100000
        dd 0
        dd 0
        dd start
start:
        mov esp, 0x90000
        lgdt [gdt_descriptor]
        jmp 0x08:.cs
.cs:    mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov esi, DISK
        mov dword [esi+0x70], 0
        mov dword [esi+0x70], 1
        mov dword [esi+0x70], 3
        mov dword [esi+0x24], 1
        mov dword [esi+0x20], {features_hi:#x}
        mov dword [esi+0x24], 0
        mov dword [esi+0x20], {features_lo:#x}
        mov dword [esi+0x70], 11
        mov eax, [esi+0x70]
        mov [results], eax
        mov dword [esi+0x30], 0
        mov dword [esi+0x38], QNUM
        mov dword [esi+0x80], desc
        mov dword [esi+0x84], 0
        mov dword [esi+0x90], avail
        mov dword [esi+0x94], 0
        mov dword [esi+0xa0], used
        mov dword [esi+0xa4], 0
        mov dword [esi+0x44], 1
        mov dword [esi+0x70], 15
        xor ecx, ecx
.next:
        cmp ecx, NREQ
        jae .done
        movzx eax, word [heads + ecx*2]
        mov edx, ecx
        and edx, QNUM-1
        mov [avail + 4 + edx*2], ax
        lea eax, [ecx+1]
        mov [avail + 2], ax
        mov dword [esi+0x50], 0
        mov ebx, 0x4000000               ; QEMU completes reads and writes asynchronously
.poll:
        movzx eax, word [used + 2]
        lea edx, [ecx+1]
        cmp eax, edx
        je .ok
        test dword [esi+0x70], 0x40
        jnz .next_req
        dec ebx
        jnz .poll
        jmp .next_req
.ok:
        inc dword [results + 12]
.next_req:
        inc ecx
        jmp .next
.done:
        mov eax, [esi+0x70]
        mov [results + 4], eax
        mov eax, [esi+0x60]
        mov [results + 8], eax
{report_lines}
        mov dx, 0x501
        mov al, 0
        out dx, al
        hlt

; hex: EAX as 8 hex digits and a space on COM1
hex:    push ecx
        mov ecx, 8
.h:     rol eax, 4
        push eax
        and al, 0xf
        add al, '0'
        cmp al, '9'
        jbe .d
        add al, 7
.d:     call putc
        pop eax
        loop .h
        mov al, ' '
        call putc
        pop ecx
        ret
putc:   push edx
        push eax
        mov dx, 0x3FD
.w:     in al, dx
        test al, 0x20
        jz .w
        pop eax
        mov dx, 0x3F8
        out dx, al
        pop edx
        ret

        align 8
gdt:    dq 0
        dq 0x00CF9A000000FFFF
        dq 0x00CF92000000FFFF
gdt_descriptor:
        dw 23
        dd gdt

        align 4
results: dd 0, 0, 0, 0
heads:  dw {heads_line}
        align 16
desc:
{desc_lines}
        times {pad * 16} db 0
        align 2
avail:  dw 0, 0
        times QNUM dw 0
        dw 0
        align 4
used:   dw 0, 0
        times QNUM dd 0, 0
        dw 0
        align 16
{data}
"""
