; unassigned.asm: what a guest reads where no RAM and no device is, for
; tests/stack/test_unassigned.py. QEMU's unassigned memory reads 0 and drops stores
; (memory.c unassigned_mem_read); the VGA window below the text buffer reads all ones in
; text mode (vga_mem_readb); a port nobody claims reads all ones (unassigned_io_read).
; The guest prints each value in hex on COM1, one a line; the same binary boots on
; qemu-system-i386 -m 16 -kernel (multiboot header), which must print the same.
bits 32
org 0x100000

DEBUG_EXIT  equ 0x501
COPY        equ 0x300000

start:
        jmp entry

        align 4
multiboot:
        dd 0x1BADB002
        dd 0x00010000
        dd -(0x1BADB002 + 0x00010000)
        dd multiboot
        dd 0x100000
        dd 0
        dd 0
        dd entry

entry:
        mov esp, 0x90000
        cld
        mov dword [0xFFFFF8], 0x88776655
        mov dword [0xFFFFFC], 0x44332211
        mov dword [0x2000000], 0x12345678   ; dropped: nothing is there
        mov dword [0xA0000], 0x12345678     ; dropped by the VGA
        ; Loads of every size, one across the end of RAM.
        mov esi, loads
.load:  mov ebx, [esi]
        cmp ebx, 1
        je .loaded
        mov eax, [ebx]
        call hex
        movzx eax, word [ebx + 1]
        call hex
        movzx eax, byte [ebx + 3]
        call hex
        add esi, 4
        jmp .load
.loaded:
        ; REP MOVSD from the last 8 bytes of RAM on into 3 pages where nothing is, and from
        ; the VGA window below the text buffer: the copies' sum of dwords and their OR.
        mov esi, 0xFFFFF8
        mov edi, COPY
        mov ecx, 0xC02
        rep movsd
        mov esi, 0xA0000
        mov ecx, 0x400
        rep movsd
        mov esi, COPY
        mov ecx, 0x1002
        xor ebx, ebx
        xor edx, edx
.sum:   lodsd
        add ebx, eax
        or edx, eax
        loop .sum
        mov eax, ebx
        call hex
        mov eax, edx
        call hex
        mov eax, [COPY]
        call hex
        mov eax, [COPY + 4]
        call hex
        mov eax, [COPY + 8]
        call hex
        mov eax, [COPY + 0x3008]
        call hex
        ; A port nobody claims (COM4's: there is no COM4).
        mov dx, 0x2E8
        in eax, dx
        call hex
        mov dx, DEBUG_EXIT
        mov al, 0
        out dx, al
        hlt

; eax in hex and a newline on COM1
hex:    push edx
        mov ecx, 8
.digit: rol eax, 4
        push eax
        and al, 15
        add al, '0'
        cmp al, '9'
        jbe .put
        add al, 7
.put:   mov dx, 0x3F8
        out dx, al
        pop eax
        loop .digit
        mov al, 10
        out dx, al
        pop edx
        ret

        align 4
loads:  dd 0xA0000
        dd 0xB7FFC
        dd 0xFFFFFC
        dd 0xFFFFFE
        dd 0x1000000
        dd 0x2000000
        dd 0x7FFFFFF0
        dd 1
