; ports.asm: port I/O of every width, with an immediate port and with DX, and string I/O.
;
; What it shows about virtualization:
; - kvm.ko runs guests with unconditional I/O exiting: every IN and OUT is a VM exit
;   (exit reason 30, IO_INSTRUCTION) whose qualification gives port, size (1, 2 or 4),
;   direction, string and REP bits. No device here lives in the kernel, so each one
;   reaches QEMU as KVM_EXIT_IO (direction, size, port, count, data).
; - A plain IN/OUT takes kvm.ko's fast path (kvm_fast_pio): OUT exits with the data,
;   IN exits first and the value lands in AL/AX/EAX on the next KVM_RUN.
; - A string instruction goes through kvm.ko's instruction emulator. `rep outsb` leaves
;   as one KVM_EXIT_IO per byte (count 1), while `rep insb` reads ahead: one exit with
;   count = min(ECX, what fits in the page, 1024 bytes) fills a buffer that the following
;   iterations consume without exiting.
; - Nothing claims ports 0xE0 or 0x2E0 on this machine (nor on QEMU's pc): reads give all
;   ones, writes vanish, but each still costs an exit to QEMU.
; The 16550's scratch register (COM1 + 7) remembers a byte: a cheap device to read back.
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

SCRATCH     equ COM1 + 7
NOBODY      equ 0x2E0                   ; an unclaimed port, through DX
NOBODY8     equ 0xE0                    ; an unclaimed port, as an immediate

        ; byte OUT then IN with DX: the scratch register keeps what was written
        mov dx, SCRATCH
        mov al, 0xA5
        out dx, al
        xor eax, eax
        in al, dx
        mov esi, s_scratch
        call puts
        call puthex8
        call newline

        ; IN of each width from an unclaimed port, port in DX and as an immediate
        mov esi, s_in_dx
        call puts
        mov dx, NOBODY
        xor eax, eax
        in al, dx
        mov ecx, 2
        call puthex
        call space
        xor eax, eax
        in ax, dx
        mov ecx, 4
        call puthex
        call space
        in eax, dx
        mov ecx, 8
        call puthex
        call newline

        mov esi, s_in_imm
        call puts
        xor eax, eax
        in al, NOBODY8
        mov ecx, 2
        call puthex
        call space
        xor eax, eax
        in ax, NOBODY8
        mov ecx, 4
        call puthex
        call space
        in eax, NOBODY8
        mov ecx, 8
        call puthex
        call newline

        ; OUT of each width to an unclaimed port: dropped, but each one exits
        mov eax, 0x12345678
        out NOBODY8, al
        out NOBODY8, ax
        out NOBODY8, eax
        mov dx, NOBODY
        out dx, al
        out dx, ax
        out dx, eax

        ; rep outsb: a whole line to the transmitter, one exit per byte
        mov esi, line
        mov ecx, line_len
        mov dx, COM1
        rep outsb

        ; rep insb from the line status register: one exit fetches all 8 bytes
        mov edi, buffer
        mov ecx, 8
        mov dx, LSR
        rep insb
        mov esi, s_insb_lsr
        call puts
        mov esi, buffer
        mov ecx, 8
        call putbytes

        ; rep insb from the scratch register after writing 0x3C to it
        mov dx, SCRATCH
        mov al, 0x3C
        out dx, al
        mov edi, buffer
        mov ecx, 4
        rep insb
        mov esi, s_insb_scr
        call puts
        mov esi, buffer
        mov ecx, 4
        call putbytes

        ; insw / insd (no REP) from an unclaimed port, outsw / outsd to it
        mov dword [buffer], 0
        mov dword [buffer + 4], 0
        mov dx, NOBODY
        mov edi, buffer
        insw
        insd
        mov esi, s_ins_wd
        call puts
        mov esi, buffer
        mov ecx, 6
        call putbytes
        mov esi, words
        outsw
        outsd
        mov ecx, 3
        rep outsw                       ; a REP word string: one exit per word too
        mov eax, esi
        sub eax, words
        mov esi, s_outs
        call puts
        call puthex8
        call newline

        ; the end: a dword OUT to isa-debug-exit (only its low byte counts on QEMU)
        mov eax, 0
        mov dx, DEBUG_EXIT
        out dx, eax
        hlt

space:
        push eax
        mov al, ' '
        call putc
        pop eax
        ret

; putbytes: ECX bytes at ESI as hex pairs, then a newline
putbytes:
        pushad
.byte:  lodsb
        call space
        push ecx
        mov ecx, 2
        call puthex
        pop ecx
        loop .byte
        call newline
        popad
        ret

s_scratch:  db "out/in dx, al (scratch register): ", 0
s_in_dx:    db "in al/ax/eax, dx (port 0x2e0, unclaimed): ", 0
s_in_imm:   db "in al/ax/eax, 0xe0 (unclaimed): ", 0
s_insb_lsr: db "rep insb from LSR x8:", 0
s_insb_scr: db "rep insb from scratch x4:", 0
s_ins_wd:   db "insw + insd (unclaimed):", 0
s_outs:     db "outsw + outsd + rep outsw: bytes sent ", 0
line:       db "rep outsb: this line left the guest one byte per exit", 10
line_len    equ $ - line
words:      dw 0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666, 0x7777
        align 4
buffer:     times 16 db 0

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
