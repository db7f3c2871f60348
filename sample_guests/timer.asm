; timer.asm: the PC's oldest timer interrupt, IRQ 0 from the 8254 PIT through the 8259A PIC.
;
; The guest remaps the PIC pair to vectors 0x20-0x2F (ICW1 0x11, ICW2 0x20/0x28, ICW3 4/2,
; ICW4 1), masks every line but IRQ 0, programs PIT channel 0 in mode 2 (rate generator)
; with reload 11932 (1193182 Hz / 11932 = 100 Hz), and waits for 10 ticks with `sti; hlt`.
; The IRQ 0 handler counts, sends a non-specific EOI (0x20 to port 0x20) and returns with
; IRET; at the tenth tick it masks IRQ 0 again, so exactly 10 ticks are taken.
;
; What it shows about virtualization (run it with --stats, once with --irqchip kernel and
; once with --irqchip userspace):
; - kernel: the PIC and PIT live in kvm.ko. HLT does not leave the kernel (the vCPU sleeps
;   in kvm_vcpu_block until the PIT's timer raises IRQ 0), the PIC and PIT port writes
;   are handled in the kernel too, and kvm.ko injects vector 0x20 at the next VM entry.
; - userspace: the PIC and PIT are QEMU's device models. Every port access above is a
;   KVM_EXIT_IO, every HLT a KVM_EXIT_HLT (the vCPU thread sleeps until the main loop's
;   PIT timer kicks it), and QEMU injects with KVM_INTERRUPT.
; The guest cannot tell: it prints the same lines in both modes and on qemu-system-i386.
; Nothing it prints depends on timing (no counter values): only what the PIC and the
; interrupt frames say, which the hardware defines.
;
; Checks in the output: the IMR reads back as written; the PIC's ISR has IRQ 0 in service
; during the handler and nothing after the EOI; every tick interrupted the HLT (the frame's
; EIP is the instruction after HLT, CS is 0x08, the pushed EFLAGS has IF=1), which also
; shows that STI's one-instruction shadow kept the interrupt out of the gap before HLT.
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501
PIC1_CMD    equ 0x20
PIC1_DATA   equ 0x21
PIC2_CMD    equ 0xA0
PIC2_DATA   equ 0xA1
PIT_CH0     equ 0x40
PIT_CMD     equ 0x43
IRQ_BASE    equ 0x20                    ; master: vectors 0x20-0x27, slave: 0x28-0x2F
RELOAD      equ 11932                   ; 1193182 / 11932 = 100 Hz
TICKS       equ 10

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
        cli
        mov esp, 0x90000                ; RAM on QEMU too (0xF0000-0xFFFFF is its BIOS)
        lgdt [gdt_descriptor]           ; our own flat GDT: QEMU enters with its own
        jmp 0x08:.reload_cs
.reload_cs:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        cld

        ; IDT: every vector to `unexpected`, vector 0x20 (IRQ 0) to `irq0`
        xor ecx, ecx
.fill:  mov eax, unexpected
        call set_gate
        inc ecx
        cmp ecx, 256
        jb .fill
        mov ecx, IRQ_BASE
        mov eax, irq0
        call set_gate
        lidt [idt_descriptor]

        ; PIC: ICW1 (edge, cascade, ICW4 follows), ICW2 (vector base), ICW3 (slave on IR2 /
        ; cascade identity 2), ICW4 (8086 mode); then OCW1: mask all but IRQ 0
        mov al, 0x11
        out PIC1_CMD, al
        out PIC2_CMD, al
        mov al, IRQ_BASE
        out PIC1_DATA, al
        mov al, IRQ_BASE + 8
        out PIC2_DATA, al
        mov al, 4
        out PIC1_DATA, al
        mov al, 2
        out PIC2_DATA, al
        mov al, 1
        out PIC1_DATA, al
        out PIC2_DATA, al
        mov al, 0xFE
        out PIC1_DATA, al
        mov al, 0xFF
        out PIC2_DATA, al

        mov esi, s_pic
        call puts
        in al, PIC1_DATA                ; OCW1 reads back as the IMR
        call puthex2
        mov al, ' '
        call putc
        in al, PIC2_DATA
        call puthex2
        call newline

        ; PIT channel 0: LSB then MSB, mode 2, binary (0x34); reload 11932
        mov al, 0x34
        out PIT_CMD, al
        mov ax, RELOAD
        out PIT_CH0, al
        mov al, ah
        out PIT_CH0, al
        mov esi, s_pit
        call puts

        ; wait with interrupts off except inside `sti; hlt`, and print one line per tick
        ; taken, however many arrived during one wait (none is lost: the count is the
        ; handler's)
        xor ebx, ebx                    ; ticks printed
.wait:  cmp ebx, TICKS
        jae .done
        cmp ebx, [ticks]
        jb .print
        sti
        hlt                             ; STI's shadow: no interrupt before the HLT
.after_hlt:
        cli
        jmp .wait
.print: inc ebx
        mov esi, s_tick
        call puts
        mov eax, ebx
        call putdec
        call newline
        jmp .wait

.done:  mov al, 0x0B                    ; OCW3: read the ISR
        out PIC1_CMD, al
        in al, PIC1_CMD
        mov [isr_after], al
        mov al, 0x0A                    ; OCW3: back to the IRR (the power-on choice)
        out PIC1_CMD, al

        mov esi, s_isr
        call puts
        mov al, [isr_in_handler]
        call puthex2
        mov esi, s_isr2
        call puts
        mov al, [isr_after]
        call puthex2
        mov esi, s_isr3
        call puts

        mov esi, s_timer
        call puts
        mov eax, [ticks]
        call putdec
        mov esi, s_timer2
        call puts
        mov eax, [good_frames]
        call putdec
        mov esi, s_timer3
        call puts

        mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al
        hlt

; IRQ 0: count the tick, check the frame, EOI, return
irq0:
        push eax
        inc dword [ticks]
        ; frame above the saved EAX: EIP, CS, EFLAGS
        cmp dword [esp + 4], entry.after_hlt
        jne .frame_done
        cmp dword [esp + 8], 0x08
        jne .frame_done
        test dword [esp + 12], 0x200    ; IF was set where the interrupt came in
        jz .frame_done
        inc dword [good_frames]
.frame_done:
        cmp dword [ticks], 1
        jne .isr_done
        mov al, 0x0B                    ; OCW3: read the ISR while IRQ 0 is in service
        out PIC1_CMD, al
        in al, PIC1_CMD
        mov [isr_in_handler], al
        mov al, 0x0A
        out PIC1_CMD, al
.isr_done:
        cmp dword [ticks], TICKS
        jb .eoi
        mov al, 0xFF                    ; the last tick: mask IRQ 0
        out PIC1_DATA, al
.eoi:   mov al, 0x20                    ; OCW2: non-specific EOI
        out PIC1_CMD, al
        pop eax
        iret

; any other vector: say so and stop with exit status 1 (host status 3)
unexpected:
        mov esi, s_unexpected
        call puts
        mov dx, DEBUG_EXIT
        mov al, 1
        out dx, al
        cli
        hlt

; set_gate: IDT entry ECX = 32-bit interrupt gate to EAX, selector 0x08, DPL 0
set_gate:
        push edx
        mov edx, eax
        and edx, 0xFFFF
        or edx, 0x08 << 16
        mov [idt + ecx*8], edx
        mov edx, eax
        and edx, 0xFFFF0000
        or edx, 0x8E00                  ; present, DPL 0, 32-bit interrupt gate
        mov [idt + ecx*8 + 4], edx
        pop edx
        ret

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
        push esi
        push eax
.next:  lodsb
        test al, al
        jz .end
        call putc
        jmp .next
.end:   pop eax
        pop esi
        ret

newline:
        push eax
        mov al, 10
        call putc
        pop eax
        ret

; puthex2: AL as two hexadecimal digits
puthex2:
        push eax
        push ebx
        movzx ebx, al
        shr al, 4
        and eax, 0xF
        mov al, [hexdigits + eax]
        call putc
        and ebx, 0xF
        mov al, [hexdigits + ebx]
        call putc
        pop ebx
        pop eax
        ret

; putdec: EAX in decimal
putdec:
        pushad
        mov ebx, 10
        xor ecx, ecx
.div:   xor edx, edx
        div ebx
        push edx
        inc ecx
        test eax, eax
        jnz .div
.out:   pop eax
        add al, '0'
        call putc
        loop .out
        popad
        ret

s_pic:        db "pic: vectors 0x20-0x2F, imr ", 0
s_pit:        db "pit: channel 0, mode 2, reload 11932 (100 Hz)", 10, 0
s_tick:       db "tick ", 0
s_isr:        db "pic: isr ", 0
s_isr2:       db " in the handler, ", 0
s_isr3:       db " after the eoi", 10, 0
s_timer:      db "timer: ", 0
s_timer2:     db " ticks, ", 0
s_timer3:     db " of them woke the hlt", 10, 0
s_unexpected: db "unexpected interrupt", 10, 0
hexdigits:    db "0123456789ABCDEF"

        align 4
ticks:          dd 0
good_frames:    dd 0
isr_in_handler: db 0
isr_after:      db 0

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt

        align 8
idt:    times 256 dq 0
idt_descriptor:
        dw 256 * 8 - 1
        dd idt
