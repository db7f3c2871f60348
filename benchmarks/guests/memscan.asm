; memscan.asm: REPE CMPSD of two 4 MiB buffers that are equal, then REPNE SCASB over 8 MiB
; for a byte that is not there (benchmarks/cpu_bench.py): the memcmp and strlen a kernel
; does, a page at a time where that is exact (MemFns.peek). Exit status 1 if both ran to
; their end (ZF as each leaves it: set after CMPS, clear after SCAS).
bits 32
org 0x100000
        mov esp, 0x90000
        cld
        mov esi, 0x200000
        mov edi, 0x600000
        mov ecx, 4 * 1024 * 1024 / 4
        repe cmpsd
        jne .bad
        mov edi, 0x200000
        mov ecx, 8 * 1024 * 1024
        mov al, 0xFF
        repne scasb
        je .bad
        test ecx, ecx
        jnz .bad
        mov al, 0
        jmp .out
.bad:   mov al, 1
.out:   mov dx, 0x501
        out dx, al
        hlt
