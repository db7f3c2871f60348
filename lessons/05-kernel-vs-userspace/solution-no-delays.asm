; Lesson 5, step "no-delays": the reference solution. The guest of the lesson with the
; I/O delays gone: the set-up no longer reaches QEMU.
;
; Lesson 5, exits kvm.ko handles itself and exits that reach QEMU.
;
; The guest asks CPUID whether it runs on KVM, turns on CR4.PSE, programs the PIC and the
; PIT (one timer interrupt, about 1 ms away), waits for it with `sti; hlt`, and prints
; what it found. Every one of these exits the guest, but with the irqchip in the kernel
; (the default, KVM_CREATE_IRQCHIP and KVM_CREATE_PIT2):
; - CPUID (exit 10): kvm.ko answers from the table QEMU gave it (KVM_SET_CPUID2);
; - MOV to CR4 (exit 28): kvm.ko's handle_cr;
; - the PIC's and the PIT's ports (exit 30): kvm.ko's own device models;
; - HLT (exit 12): the vCPU sleeps in kvm.ko (kvm_vcpu_block) until the PIT fires;
; none of them makes KVM_RUN return. What does: COM1 (0x3F8, 0x3FD), isa-debug-exit, and
; the "I/O delay" after each PIC and PIT write: an `out` to port 0x80 (the POST-code port),
; as old drivers did to give slow chips time (Linux's outb_p). Nothing in kvm.ko claims
; port 0x80, so each delay is a trip to QEMU.
; The same binary boots on qemu-system-i386 -kernel (multiboot header below); without
; KVM (TCG) it prints "not KVM".
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
IRQ_BASE    equ 0x20                    ; the master PIC's vectors: 0x20-0x27
COUNT       equ 1193                    ; 1193182 Hz / 1193: about 1 ms

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
        mov esp, 0x90000
        lgdt [gdt_descriptor]           ; our own flat GDT: QEMU enters with its own
        jmp 0x08:.reload_cs
.reload_cs:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax

        ; CPUID leaf 0x40000000: KVM answers with its signature "KVMKVMKVM" in EBX ECX EDX
        mov eax, 0x40000000
        xor ecx, ecx
        cpuid                           ; exit CPUID: answered in kvm.ko
        mov esi, s_kvm
        cmp ebx, 'KVMK'
        je .known
        mov esi, s_not_kvm
.known: mov [found], esi

        mov eax, cr4
        or eax, 0x10                    ; CR4.PSE: 4 MiB pages allowed
        mov cr4, eax                    ; exit CR_ACCESS: kvm.ko's handle_cr

        ; IDT: vector 0x20 (IRQ 0) to `tick`; the others stay empty
        mov eax, tick
        mov [idt + IRQ_BASE * 8], ax
        mov word [idt + IRQ_BASE * 8 + 2], 0x08
        mov word [idt + IRQ_BASE * 8 + 4], 0x8E00   ; present, DPL 0, 32-bit interrupt gate
        shr eax, 16
        mov [idt + IRQ_BASE * 8 + 6], ax
        lidt [idt_descriptor]

        ; PIC: ICW1-ICW4 to both chips, then mask everything but IRQ 0
        mov al, 0x11
        out PIC1_CMD, al
        call io_delay
        out PIC2_CMD, al
        call io_delay
        mov al, IRQ_BASE
        out PIC1_DATA, al
        call io_delay
        mov al, IRQ_BASE + 8
        out PIC2_DATA, al
        call io_delay
        mov al, 4
        out PIC1_DATA, al
        call io_delay
        mov al, 2
        out PIC2_DATA, al
        call io_delay
        mov al, 1
        out PIC1_DATA, al
        call io_delay
        out PIC2_DATA, al
        call io_delay
        mov al, 0xFE
        out PIC1_DATA, al
        call io_delay
        mov al, 0xFF
        out PIC2_DATA, al
        call io_delay

        ; PIT channel 0: LSB then MSB, mode 0 (one interrupt at terminal count)
        mov al, 0x30
        out PIT_CMD, al
        call io_delay
        mov ax, COUNT
        out PIT_CH0, al
        call io_delay
        mov al, ah
        out PIT_CH0, al
        call io_delay

        ; wait for the tick with interrupts on only inside `sti; hlt`
.wait:  cmp byte [ticked], 0
        jne .done
        sti
        hlt                             ; exit HLT: the vCPU sleeps in kvm.ko
        cli
        jmp .wait

.done:  mov esi, [found]
        call puts
        mov esi, s_tick
        call puts
        mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al
        hlt

; io_delay: nothing. The PIC and PIT are kvm.ko's models, which need no time between
; accesses; the write to port 0x80 only cost a trip to QEMU each time. (Linux does the
; same on KVM: arch/x86/kernel/kvm.c, "No need for any IO delay on KVM".)
io_delay:
        ret

; IRQ 0: note it, end of interrupt to the master PIC, return
tick:
        push eax
        mov byte [ticked], 1
        mov al, 0x20                    ; OCW2: non-specific EOI
        out PIC1_CMD, al
        pop eax
        iret

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

s_kvm:      db "KVM", 10, 0
s_not_kvm:  db "not KVM", 10, 0
s_tick:     db "tick", 10, 0
found:      dd 0
ticked:     db 0

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
idt_descriptor:
        dw 256 * 8 - 1
        dd idt
        align 8
idt:    times 256 dq 0
