; memset.asm: REP STOSD over 8 MiB, then REP MOVSD of 4 MiB (benchmarks/cpu_bench.py): the
; memset and memcpy a kernel does, a page at a time where that is exact (MemFns.fill/copy).
bits 32
org 0x100000
        mov esp, 0x90000
        mov edi, 0x200000
        mov ecx, 8 * 1024 * 1024 / 4
        mov eax, 0x12345678
        rep stosd
        mov esi, 0x200000
        mov edi, 0xA00000
        mov ecx, 4 * 1024 * 1024 / 4
        rep movsd
        mov dx, 0x501
        mov al, 0
        out dx, al
