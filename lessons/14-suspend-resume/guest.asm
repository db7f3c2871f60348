; Lesson 14: a guest whose whole state is in its registers, to suspend and resume.
;
; Prints the first LINES Fibonacci numbers on COM1, one line each ("fib 1 = 1" ...), and
; exits through isa-debug-exit (exit status 1). The two last numbers live in EAX and EBX,
; the line number in ECX, and nothing of them is in memory: a VM stopped between two lines
; and resumed elsewhere prints the right numbers only if its registers went along.
;
; What it shows about virtualization: QEMU's stop copies those registers out of kvm.ko
; with KVM_GET_REGS (and the segment registers with KVM_GET_SREGS, the MSRs with
; KVM_GET_MSRS ...) into its CPUX86State, and savevm writes them to the file; resuming puts
; them back with KVM_SET_* before the first KVM_RUN. Port I/O only, no interrupts, no
; IRET, no paging: it runs on the simulator, on the host's software KVM, and on
; qemu-system-i386 -kernel, so a snapshot can move between them (python -m vmsim.migrate).
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501
LINES       equ 10

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
        cld

        xor eax, eax                    ; EAX = fib(n-1): fib(0)
        mov ebx, 1                      ; EBX = fib(n): fib(1)
        mov ecx, 1                      ; the line number
.line:  mov esi, s_fib                  ; "fib N = X"
        call puts
        push eax
        mov eax, ecx
        call putdec
        mov esi, s_eq
        call puts
        mov eax, ebx
        call putdec
        mov al, 10
        call putc
        pop eax
        xadd ebx, eax                   ; EAX = fib(n), EBX = fib(n-1) + fib(n) = fib(n+1)
        inc ecx
        cmp ecx, LINES
        jbe .line

        mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al
        hlt

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

s_fib:  db "fib ", 0
s_eq:   db " = ", 0

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
