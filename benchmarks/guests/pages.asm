; A long-running guest for the step-back benchmark (benchmarks/stepback_bench.py): sweeps
; a 4 MiB buffer (1024 pages) a dword per 64 bytes, so RAM writes are spread over many
; pages, with a VM exit to userspace every 64 stores (an OUT to the POST port 0x80,
; which nothing claims) and one kvm.ko handles itself every 4096 (CPUID). About
; 13 M instructions; the sum of the buffer ends on COM1 and the guest exits with
; status (0x21 << 1) | 1 through isa-debug-exit.
bits 32
org 0x100000

COM1        equ 0x3F8
DEBUG_EXIT  equ 0x501
BUF         equ 0x400000
LEN         equ 0x400000
ROUNDS      equ 18

start:
        mov esp, 0x90000
        xor ebp, ebp                    ; round
.round: mov edi, BUF
        xor ecx, ecx
.store: lea eax, [edi + ebp]
        xor eax, ecx
        mov [edi], eax
        add edi, 64
        inc ecx
        test ecx, 63
        jnz .next
        out 0x80, al                    ; an exit to userspace (unclaimed port)
        test ecx, 4095
        jnz .next
        push ecx
        xor eax, eax
        cpuid                           ; an exit kvm.ko handles itself
        pop ecx
.next:  cmp edi, BUF + LEN
        jb .store
        inc ebp
        cmp ebp, ROUNDS
        jb .round
        ; the sum of the buffer's dwords (every 16th), low byte on COM1
        mov esi, BUF
        xor ebx, ebx
.sum:   add ebx, [esi]
        add esi, 64
        cmp esi, BUF + LEN
        jb .sum
        mov dx, COM1
        mov al, bl
        out dx, al
        mov al, 0x21
        mov dx, DEBUG_EXIT
        out dx, al
        hlt
