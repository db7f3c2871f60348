; chatty.asm (lesson 11): every vCPU writes to COM1 at the same time.
;
; Entry as in guest.asm: every vCPU starts here and finds its index in CPUID leaf 1. Each
; sends its digit ('0', '1', ...) on COM1 ROUNDS times, polling the LSR before each byte,
; then increments `done`; vCPU 0 waits until `done` is N, ends the line and exits through
; isa-debug-exit, the others stop with `cli; hlt`. The vCPUs' IN and OUT instructions reach
; QEMU at the same virtual time, and their threads queue for the BQL: the order of the
; digits is the order in which they got it. (On qemu-system-i386 -kernel it runs with one
; vCPU and prints 0000: QEMU's other processors wait for INIT-SIPI-SIPI.)
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501
STACK_TOP   equ 0x90000                 ; vCPU i: STACK_TOP - i * 0x1000
ROUNDS      equ 4

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
        mov eax, 1
        cpuid
        mov ebp, ebx
        shr ebp, 16
        and ebp, 0xFF                   ; logical processors
        jnz .n
        inc ebp                         ; 0: one
.n:     shr ebx, 24                     ; initial APIC ID: which vCPU this is
        mov esp, ebx
        shl esp, 12
        neg esp
        add esp, STACK_TOP
        lgdt [gdt_descriptor]           ; our own flat GDT: QEMU enters with its own
        jmp 0x08:.reload_cs
.reload_cs:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        cld

        ; every vCPU: send its digit on COM1 ROUNDS times. The vCPUs run the same
        ; instructions from the same moment, so their OUTs reach QEMU together and the
        ; vCPU threads queue for the BQL
        mov ecx, ROUNDS
.say:   mov al, '0'
        add al, bl
        call putc
        dec ecx
        jnz .say

        lock inc dword [done]
        test ebx, ebx
        jnz park                        ; vCPU 1 and up: nothing more to do

        ; vCPU 0: wait for everyone, then report
.wait:  pause
        cmp [done], ebp
        jb .wait
        mov al, 10
        call putc
        mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al
park:   cli
        hlt
        jmp park

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

        align 4
done:       dd 0

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
