; Bitwise CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) over 64 KiB: a
; compute-bound guest for the interpreter benchmark. If EBX is non-zero at entry it
; first builds a page directory identity-mapping the low 8 MiB with 4 KiB pages and
; turns paging on. The CRC ends in EAX, then the guest halts.
bits 32
org 0x100000

BUF     equ 0x200000            ; the 64 KiB buffer being checksummed
LEN     equ 0x10000
PD      equ 0x300000            ; page directory
PT      equ 0x301000            ; two page tables follow it

start:
        mov esp, 0x100000
        test ebx, ebx
        jz .paging_done
        ; PT entries: identity map 0..8 MiB, present + writable
        mov edi, PT
        mov eax, 0x003
        mov ecx, 2048
.fill:  mov [edi], eax
        add eax, 0x1000
        add edi, 4
        loop .fill
        mov dword [PD], PT + 0x003
        mov dword [PD + 4], PT + 0x1000 + 0x003
        mov eax, PD
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
.paging_done:
        ; fill the buffer with a pattern: byte i = i * 7 + 3
        mov edi, BUF
        xor ecx, ecx
.pat:   lea eax, [ecx*8]
        sub eax, ecx
        add eax, 3
        mov [edi + ecx], al
        inc ecx
        cmp ecx, LEN
        jb .pat

        mov esi, BUF
        mov edx, LEN
        mov eax, 0xFFFFFFFF
.byte:  movzx ebx, byte [esi]
        xor eax, ebx
        mov ecx, 8
.bit:   shr eax, 1
        jnc .nox
        xor eax, 0xEDB88320
.nox:   dec ecx
        jnz .bit
        inc esi
        dec edx
        jnz .byte
        not eax
        hlt
