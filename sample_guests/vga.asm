; vga.asm: text in colour on the VGA text buffer, then read back from it.
;
; What it shows about virtualization:
; - The VGA text buffer at guest-physical 0xB8000 is not RAM: no memory slot backs it, so
;   QEMU emulates it (memory-mapped I/O). kvm.ko maps no EPT entry there; the first access
;   is an EPT violation (exit reason 48), after which KVM marks the page as MMIO in EPT and
;   later accesses exit as EPT misconfigurations (reason 49), its fast MMIO path.
; - kvm.ko cannot finish such an instruction alone: its instruction emulator decodes it and
;   hands the access to QEMU as KVM_EXIT_MMIO, one exit per access. A store exits once the
;   instruction has completed, with the data (is_write true); a load exits first (is_write
;   false), QEMU answers, and the emulator completes the instruction on the next KVM_RUN.
; - `rep stosw` and `rep movsw` are emulated one element at a time: one KVM_EXIT_MMIO per
;   word. A read-modify-write (`xor word [...], imm`) is a read exit, then a write exit.
; The guest writes a title line (white on blue), a line in each of the 16 colours, and
; checks and prints what it reads back.
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501

start:
        jmp entry

        align 4
multiboot:                              ; multiboot v1 header, "address fields valid"
        dd 0x1BADB002
        dd 0x00010000
        dd -(0x1BADB002 + 0x00010000)
        dd multiboot                    ; header_addr
        dd 0x100000                     ; load_addr
        dd 0                            ; load_end_addr: whole file
        dd 0                            ; bss_end_addr: no bss
        dd entry                        ; entry_addr

entry:
        mov esp, 0x90000
        lgdt [gdt_descriptor]           ; our own flat GDT: QEMU enters with its own
        jmp 0x08:.reload_cs
.reload_cs:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        cld

VGA         equ 0xB8000
ROW         equ 160                     ; bytes per 80-column row

        ; row 0: clear to blue (80 words of ' ' on blue, one MMIO exit each)
        mov edi, VGA
        mov ax, 0x1F20
        mov ecx, 80
        rep stosw

        ; row 0: the title, white on blue, one word store per character
        mov esi, title
        mov edi, VGA + 2
.title: lodsb
        test al, al
        jz .colours
        mov ah, 0x1F
        mov [edi], ax
        add edi, 2
        jmp .title

        ; row 2: "colour" in each of the 16 foreground colours (black background)
.colours:
        mov edi, VGA + 2 * ROW
        xor ebx, ebx                    ; colour 0..15
.colour:
        mov esi, sample
.char:  lodsb
        test al, al
        jz .next_colour
        mov ah, bl
        stosw
        jmp .char
.next_colour:
        inc ebx
        cmp ebx, 16
        jb .colour

        ; row 4: a prepared string of character/attribute words, copied with rep movsw
        mov esi, cells
        mov edi, VGA + 4 * ROW
        mov ecx, cells_len / 2
        rep movsw

        ; read back: the title characters (low byte of each cell), the attribute of one cell
        ; of row 2, and the copied cells
        mov esi, s_read
        call puts
        mov esi, VGA + 2
        mov ecx, title_len
.back:  mov ax, [esi]                   ; one MMIO read exit per load
        call putc
        add esi, 2
        loop .back
        call newline

        mov esi, s_attr
        call puts
        movzx eax, byte [VGA + 2 * ROW + 7 * 14 + 1]   ; colour 7: 7 cells of 2 bytes each before it
        call puthex8
        call newline

        ; flip the first title cell's colours in place: read, modify, write
        xor word [VGA + 2], 0x7700
        mov esi, s_flip
        call puts
        mov ax, [VGA + 2]
        shr eax, 8
        call puthex8
        call newline

        ; compare the copied cells with the source, word by word
        mov esi, cells
        mov edi, VGA + 4 * ROW
        mov ecx, cells_len / 2
        xor ebx, ebx                    ; mismatches
.cmp:   mov ax, [esi]
        cmp ax, [edi]
        je .same
        inc ebx
.same:  add esi, 2
        add edi, 2
        loop .cmp
        mov esi, s_cmp
        call puts
        mov eax, ebx
        call puthex8
        call newline

        mov al, 0
        jmp exit

title:      db "vmsim: VGA text buffer at 0xB8000 (MMIO)", 0
title_len   equ $ - title - 1
sample:     db "colour ", 0             ; 7 characters: 7 cells per colour
s_read:     db "read back: ", 0
s_attr:     db "attribute of colour 7: ", 0
s_flip:     db "attribute after xor 0x77: ", 0
s_cmp:      db "rep movsw copy mismatches: ", 0
cells:      dw 0x4E52, 0x4E45, 0x4E44, 0x2F47, 0x2F52, 0x2F45, 0x2F45, 0x2F4E
            dw 0x1E42, 0x1E4C, 0x1E55, 0x1E45
cells_len   equ $ - cells

; -- serial output (the same in every sample guest) ----------------------------------------

; putc: send AL on COM1 once the transmitter holding register is empty
putc:
        push edx
        push eax
        mov dx, LSR
.wait:  in al, dx
        test al, LSR_THRE
        jz .wait
        pop eax
        mov dx, COM1
        out dx, al
        pop edx
        ret

; puts: send the zero-terminated string at ESI
puts:
        push eax
        push esi
.next:  lodsb
        test al, al
        jz .done
        call putc
        jmp .next
.done:  pop esi
        pop eax
        ret

; puthex: send EAX as ECX (1..8) hexadecimal digits
puthex:
        pushad
        mov ebx, eax
        mov edx, ecx
        mov ecx, 8
        sub ecx, edx
        shl ecx, 2
        shl ebx, cl                     ; the first digit wanted in bits 31:28
        mov ecx, edx
.digit: rol ebx, 4
        mov eax, ebx
        and eax, 0xF
        mov al, [hexdigits + eax]
        call putc
        loop .digit
        popad
        ret

; puthex32 / puthex8: "0x" and EAX as 8 / AL as 2 digits
puthex32:
        push ecx
        push esi
        mov esi, s_0x
        call puts
        mov ecx, 8
        call puthex
        pop esi
        pop ecx
        ret

puthex8:
        push ecx
        push esi
        mov esi, s_0x
        call puts
        mov ecx, 2
        call puthex
        pop esi
        pop ecx
        ret

newline:
        push eax
        mov al, 10
        call putc
        pop eax
        ret

; exit: isa-debug-exit with the value in AL (QEMU's status is (AL << 1) | 1)
exit:
        mov dx, DEBUG_EXIT
        out dx, al
        hlt
        jmp exit

hexdigits:  db "0123456789abcdef"
s_0x:       db "0x", 0

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
