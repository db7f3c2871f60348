; single_step.asm: single-stepping with EFLAGS.TF as a guest sees it (tests/guests/
; test_single_step.py runs it on vmsim's backends and on qemu-system-i386).
;
; The #DB handler (an interrupt gate) logs each trap: the saved EIP, TF and RF in the pushed
; EFLAGS, and DR6, which it then clears. Each scenario turns TF on, runs a few labelled
; instructions, turns TF off, and prints its log on COM1 (with TF off: printing is not
; traced). Multiboot header: boots on QEMU with -kernel too.
bits 32
org 0x100000

COM1    equ 0x3F8

start:  jmp entry
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

entry:  cli
        mov esp, 0x90000
        lgdt [gdt_descriptor]
        jmp 0x08:reload
reload: mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov fs, ax
        mov gs, ax
        mov ss, ax
        mov eax, 1
        mov ebx, db_handler
        mov cl, 0x8E
        call set_gate
        mov eax, 6
        mov ebx, ud_handler
        mov cl, 0x8E
        call set_gate
        mov eax, 0x40
        mov ebx, int40_handler
        mov cl, 0x8F
        call set_gate
        lidt [idt_descriptor]
        xor eax, eax
        mov dr6, eax
        mov esi, msg_dr6
        call puts
        mov eax, dr6
        call puthex
        call newline

; 1: POPF sets TF (first trap after the next instruction), POPF clears it (trapped).
        pushfd
        or dword [esp], 0x100
        popfd
s1_a:   nop
s1_b:   mov eax, 5
s1_c:   add eax, eax
s1_d:   pushfd
s1_e:   and dword [esp], ~0x100
s1_f:   popfd
s1_g:   nop
        mov esi, msg_s1
        call report

; 2: INT n through a trap gate: not traced, handler runs with TF=0, IRET restores TF.
        pushfd
        or dword [esp], 0x100
        popfd
s2_a:   nop
s2_b:   int 0x40
s2_c:   nop
s2_d:   pushfd
s2_e:   and dword [esp], ~0x100
s2_f:   popfd
s2_g:   nop
        mov esi, msg_s2
        call report
        mov esi, msg_int40
        call puts
        mov eax, [int40_flags]
        call putflags
        call newline

; 3: a fault while tracing: no trap for the faulting instruction.
        pushfd
        or dword [esp], 0x100
        popfd
s3_a:   ud2
s3_b:   nop
s3_c:   pushfd
s3_d:   and dword [esp], ~0x100
s3_e:   popfd
s3_f:   nop
        mov esi, msg_s3
        call report
        mov esi, msg_ud
        call puts
        mov eax, [ud_flags]
        call putflags
        call newline

; 4: MOV SS holds the trap back until after the next instruction.
        pushfd
        or dword [esp], 0x100
        popfd
s4_a:   mov ax, ss
s4_b:   mov ss, ax
s4_c:   nop
s4_d:   pushfd
s4_e:   and dword [esp], ~0x100
s4_f:   popfd
s4_g:   nop
        mov esi, msg_s4
        call report

; 5: REP MOVSB is traced per iteration.
        mov esi, src
        mov edi, dst
        mov ecx, 3
        cld
        pushfd
        or dword [esp], 0x100
        popfd
s5_a:   rep movsb
s5_b:   pushfd
s5_c:   and dword [esp], ~0x100
s5_d:   popfd
s5_e:   nop
        mov esi, msg_s5
        call report

; 6: instructions a hypervisor intercepts (IN, CPUID, OUT) are traced too.
        pushfd
        or dword [esp], 0x100
        popfd
s6_a:   mov dx, COM1 + 5
s6_b:   in al, dx
s6_c:   xor eax, eax
s6_d:   cpuid
s6_e:   mov dx, COM1 + 7
s6_f:   out dx, al
s6_g:   pushfd
s6_h:   and dword [esp], ~0x100
s6_i:   popfd
s6_j:   nop
        mov esi, msg_s6
        call report

; 7: IRET that sets TF: no trap after the IRET itself.
        pushfd
        or dword [esp], 0x100
        push dword 0x08
        push dword s7_a
        iretd
s7_a:   nop
s7_b:   pushfd
s7_c:   and dword [esp], ~0x100
s7_d:   popfd
s7_e:   nop
        mov esi, msg_s7
        call report

        mov esi, msg_handler
        call puts
        mov eax, [db_hflags]
        call putflags
        call newline
        mov esi, msg_done
        call puts
        mov al, 0
        mov dx, 0x501
        out dx, al
halt:   hlt
        jmp halt

; -- handlers ------------------------------------------------------------------------------
db_handler:
        push eax
        push ebx
        mov eax, [nlog]
        cmp eax, 32
        jae db_full
        mov ebx, [esp + 8]
        mov [log_eip + eax*4], ebx
        mov ebx, [esp + 16]
        mov [log_flags + eax*4], ebx
        mov ebx, dr6
        mov [log_dr6 + eax*4], ebx
        inc dword [nlog]
db_full:
        xor ebx, ebx
        mov dr6, ebx
        pushfd
        pop ebx
        or [db_hflags], ebx
        pop ebx
        pop eax
        iretd

ud_handler:
        push eax
        mov eax, [esp + 12]
        mov [ud_flags], eax
        pop eax
        add dword [esp], 2
        iretd

int40_handler:
        pushfd
        pop dword [int40_flags]
        iretd

; -- reporting (runs with TF=0) -------------------------------------------------------------
report:                                 ; ESI: scenario name; prints and empties the log
        call puts
        call newline
        xor edi, edi
report_next:
        cmp edi, [nlog]
        jae report_end
        mov esi, msg_eip
        call puts
        mov eax, [log_eip + edi*4]
        call puthex
        mov eax, [log_flags + edi*4]
        call putflags
        mov esi, msg_dr6v
        call puts
        mov eax, [log_dr6 + edi*4]
        call puthex
        call newline
        inc edi
        jmp report_next
report_end:
        mov dword [nlog], 0
        ret

putflags:                               ; " tf=X rf=X" from the EFLAGS image in EAX
        push eax
        mov esi, msg_tf
        call puts
        shr eax, 8
        and eax, 1
        add al, '0'
        call putc
        mov esi, msg_rf
        call puts
        mov eax, [esp]
        shr eax, 16
        and eax, 1
        add al, '0'
        call putc
        pop eax
        ret

newline:
        mov al, 10
        call putc
        ret

putc:
        push edx
        push eax
        mov dx, COM1 + 5
putc_wait:
        in al, dx
        test al, 0x20
        jz putc_wait
        pop eax
        mov dx, COM1
        out dx, al
        pop edx
        ret

puts:
        push eax
puts_next:
        mov al, [esi]
        test al, al
        jz puts_end
        call putc
        inc esi
        jmp puts_next
puts_end:
        pop eax
        ret

puthex:                                 ; EAX as 8 hex digits
        push eax
        push ecx
        push edx
        mov edx, eax
        mov ecx, 8
puthex_digit:
        rol edx, 4
        mov al, dl
        and al, 0x0F
        add al, '0'
        cmp al, '9'
        jbe puthex_put
        add al, 'A' - '0' - 10
puthex_put:
        call putc
        dec ecx
        jnz puthex_digit
        pop edx
        pop ecx
        pop eax
        ret

set_gate:                               ; IDT entry EAX -> handler EBX, type byte CL
        push edx
        push edi
        lea edi, [idt + eax*8]
        mov edx, ebx
        mov [edi], dx
        mov word [edi + 2], 0x08
        mov byte [edi + 4], 0
        mov [edi + 5], cl
        shr edx, 16
        mov [edi + 6], dx
        pop edi
        pop edx
        ret

; -- data ---------------------------------------------------------------------------------
msg_dr6:        db "dr6 after writing 0: ", 0
msg_s1:         db "popf sets and clears TF", 0
msg_s2:         db "int 0x40 through a trap gate", 0
msg_int40:      db "int 0x40 handler:", 0
msg_s3:         db "ud2 while tracing", 0
msg_ud:         db "#UD frame:", 0
msg_s4:         db "mov ss", 0
msg_s5:         db "rep movsb, ecx=3", 0
msg_s6:         db "in, cpuid, out", 0
msg_s7:         db "iretd sets TF", 0
msg_handler:    db "#DB handler:", 0
msg_done:       db "done", 10, 0
msg_eip:        db " #DB eip=", 0
msg_tf:         db " tf=", 0
msg_rf:         db " rf=", 0
msg_dr6v:       db " dr6=", 0
src:            db 1, 2, 3
dst:            db 0, 0, 0
        align 4
nlog:           dd 0
db_hflags:      dd 0
ud_flags:       dd 0
int40_flags:    dd 0
log_eip:        times 32 dd 0
log_flags:      times 32 dd 0
log_dr6:        times 32 dd 0
        align 8
gdt:    dq 0
        dq 0x00CF9A000000FFFF
        dq 0x00CF92000000FFFF
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
        align 8
idt:    times 256 dq 0
idt_descriptor:
        dw 256 * 8 - 1
        dd idt
