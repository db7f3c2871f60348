; Lesson 7 (string I/O): one `rep outsb` and one `rep insb`, and what each costs.
;
; A string I/O instruction (INS/OUTS) exits like any IN/OUT (IO_INSTRUCTION, reason 30),
; with the string (bit 4) and REP (bit 5) bits set in the qualification. kvm.ko's
; handle_io sends it to the instruction emulator, which runs it one element at a time and
; hands the device accesses to QEMU as KVM_EXIT_IO, with a count of elements: how many
; each exit carries, in each direction, is what lesson 7 is about.
; The same binary boots on qemu-system-i386 -kernel (multiboot header below).
bits 32
org 0x100000

COM1        equ 0x3F8
FCR         equ COM1 + 2                ; FIFO control
LSR         equ COM1 + 5                ; line status
LSR_THRE    equ 0x20                    ; transmit FIFO empty: room for 16 bytes
DEBUG_EXIT  equ 0x501
BUFFER      equ 0x200000                ; a page-aligned buffer in RAM
COUNT       equ 3000                    ; bytes for rep insb

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

        mov dx, FCR
        mov al, 0x07                    ; enable the 16-byte FIFOs, clear both
        out dx, al

        ; a 14-byte line with one rep outsb, once the transmit FIFO is empty
        call wait_thre
        mov esi, line
        mov ecx, line_len
        mov dx, COM1
        rep outsb

        ; COUNT bytes of line status with one rep insb into a page-aligned buffer
        mov edi, BUFFER
        mov ecx, COUNT
        mov dx, LSR
        rep insb

        ; every byte read should show an idle transmitter (THRE set)
        mov esi, BUFFER
        mov ecx, COUNT
        xor ebx, ebx                    ; bytes without THRE
.check: lodsb
        test al, LSR_THRE
        jnz .ok
        inc ebx
.ok:    loop .check
        mov esi, s_bad
        test ebx, ebx
        jnz .report
        mov esi, s_good
.report:
        call wait_thre
        mov ecx, s_len
        mov dx, COM1
        rep outsb

        mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al
        hlt

; wait_thre: poll LSR until the transmit FIFO is empty
wait_thre:
        push eax
        push edx
        mov dx, LSR
.wait:  in al, dx
        test al, LSR_THRE
        jz .wait
        pop edx
        pop eax
        ret

line:       db "rep outsb: 14", 10
line_len    equ $ - line
s_good:     db "insb: all ok", 10       ; s_good and s_bad have the same length
s_bad:      db "insb: BAD!!!", 10
s_len       equ s_bad - s_good

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
