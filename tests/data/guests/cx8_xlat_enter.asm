; cx8_xlat_enter.asm: CMPXCHG8B, XLAT and ENTER under 32-bit paging (SDM Vol. 2A
; CMPXCHG8B and ENTER, Vol. 2B XLAT): results, flags, and the faults, each of which must
; leave the registers as they were.
%include "common.inc"

PD      equ 0x200000                    ; page directory
PT0     equ 0x201000                    ; identity map of 0-4 MiB (code, stack, tables)
PT1     equ 0x202000                    ; linear 0x400000-0x7FFFFF: the test pages

L_RW    equ 0x400000                    ; -> 0x300000 read/write
L_RO    equ 0x401000                    ; -> 0x301000 read-only
L_RW2   equ 0x402000                    ; -> 0x302000 read/write, followed by
L_RO2   equ 0x403000                    ; -> 0x303000 read-only
L_NP    equ 0x404000                    ; not present
L_SNP   equ 0x406000                    ; a stack: not present,
L_SRO   equ 0x407000                    ; -> 0x307000 read-only,
L_SRW   equ 0x408000                    ; -> 0x308000 and 0x309000 read/write
S_TOP   equ 0x409800
S       equ 0x80000                     ; ENTER's ESP on the identity-mapped stack

%macro KEEP_FLAGS 0                     ; right after the instruction: PRINT changes them
        pushfd
        pop dword [got_flags]
        and dword [got_flags], 0x8D5    ; the six arithmetic flags
%endmacro

main:
        mov dword [0x300000], 0x11111111
        mov dword [0x300004], 0x22222222
        mov dword [0x301008], 0xAAAAAAAA
        mov dword [0x30100C], 0xBBBBBBBB
        mov dword [0x302FFC], 0xCCCCCCCC
        mov dword [0x303000], 0xDDDDDDDD
        ; an XLAT table at 0x300100: byte i = i XOR 5Ah; a byte at physical 10h
        xor ecx, ecx
.table: mov al, cl
        xor al, 0x5A
        mov [0x300100 + ecx], al
        inc ecx
        cmp ecx, 256
        jb .table
        mov byte [0x10], 0x77

        mov edi, PD                     ; zero the tables
        mov ecx, 3 * 1024
        xor eax, eax
        cld
        rep stosd
        mov edi, PT0                    ; identity map 0-4 MiB, read/write
        mov eax, 0x003
.ident: stosd
        add eax, 0x1000
        cmp edi, PT0 + 4096
        jb .ident
        mov dword [PD + 0*4], PT0 | 3
        mov dword [PD + 1*4], PT1 | 3
        mov dword [PT1 + 0*4], 0x300003
        mov dword [PT1 + 1*4], 0x301001
        mov dword [PT1 + 2*4], 0x302003
        mov dword [PT1 + 3*4], 0x303001
        mov dword [PT1 + 7*4], 0x307001
        mov dword [PT1 + 8*4], 0x308003
        mov dword [PT1 + 9*4], 0x309003
        mov eax, PD
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80010000              ; CR0.PG | CR0.WP
        mov cr0, eax
        jmp .paged
.paged:

        ; -- CMPXCHG8B: EDX:EAX = m64 -> ZF = 1, m64 = ECX:EBX; else ZF = 0, EDX:EAX = m64;
        ; CF PF AF SF OF unchanged
        push dword 0x897                ; CF PF AF SF OF, ZF clear
        popfd
        mov eax, 0x11111111
        mov edx, 0x22222222
        mov ebx, 0x33333333
        mov ecx, 0x44444444
        lock cmpxchg8b [L_RW]
        KEEP_FLAGS
        PRINT "cx8 equal: flags="
        HEX [got_flags], 3
        PRINT " edx:eax="
        HEX edx, 8
        HEX eax, 8
        PRINT " m="
        HEX [L_RW + 4], 8
        HEX [L_RW], 8
        PRINT {10}
        push dword 0x8D7                ; all six set
        popfd
        mov eax, 0x33333333             ; the low halves equal, the high ones not
        mov edx, 0x55555555
        mov esi, L_RW - 0x10
        cmpxchg8b [esi + 0x10]
        KEEP_FLAGS
        PRINT "cx8 differs: flags="
        HEX [got_flags], 3
        PRINT " edx:eax="
        HEX edx, 8
        HEX eax, 8
        PRINT " m="
        HEX [L_RW + 4], 8
        HEX [L_RW], 8
        PRINT {10}
        ; a read-only m64: "the destination operand is written back if the comparison
        ; fails", so the write faults (P=1 W=1) whether or not they are equal, and the
        ; fault leaves EDX:EAX and the flags as they were
        xor eax, eax
        xor edx, edx
        push dword 0x8D7
        popfd
        TRY "cx8 ro differs", cro1, cro1_back
cro1:   cmpxchg8b [L_RO + 8]
cro1_back:
        KEEP_FLAGS
        PRINT "after: flags="
        HEX [got_flags], 3
        PRINT " edx:eax="
        HEX edx, 8
        HEX eax, 8
        PRINT {10}
        mov eax, 0xAAAAAAAA
        mov edx, 0xBBBBBBBB
        TRY "cx8 ro equal", cro2, cro2_back
cro2:   lock cmpxchg8b [L_RO + 8]
cro2_back:
        ; across a page end into a read-only page: the second page's first byte in CR2,
        ; nothing written in the first
        mov eax, 0xCCCCCCCC
        mov edx, 0xDDDDDDDD
        TRY "cx8 across", cx1, cx1_back
cx1:    cmpxchg8b [L_RO2 - 4]
cx1_back:
        PRINT "no partial write: "
        HEX [0x302FFC], 8
        HEX [0x303000], 8
        PRINT {10}

        ; -- XLAT: AL = [EBX + ZeroExtend(AL)]; with 0x67 [BX + AL] wraps at 64 KiB
        mov ebx, L_RW + 0x100
        mov eax, 0x123456F0
        xlatb
        PRINT "xlat: "
        HEX eax, 8
        mov al, 0x80
        fs xlatb
        PRINT " "
        HEX eax, 8
        mov ebx, 0xABCDFFF0
        mov eax, 0x20
        a16 xlatb
        PRINT " a16: "
        HEX eax, 8
        PRINT {10}
        mov ebx, L_NP + 0x10
        mov eax, 0x99999930
        TRY "xlat np", xl1, xl1_back
xl1:    xlatb
xl1_back:
        PRINT "after: eax="
        HEX eax, 8
        PRINT {10}

        ; -- ENTER: Push(EBP); FrameTemp = ESP; level - 1 pointers copied from [EBP - 4i];
        ; Push(FrameTemp); EBP = FrameTemp; ESP -= size
        mov [saved_esp], esp
        mov esp, S
        mov ebp, 0x12345678
        enter 0x10, 0
        mov [got_esp], esp
        mov [got_ebp], ebp
        mov esp, [saved_esp]
        PRINT "enter 10h,0: esp="
        HEX [got_esp], 8
        PRINT " ebp="
        HEX [got_ebp], 8
        PRINT " slot="
        HEX [S - 4], 8
        PRINT {10}
        mov dword [0x81000 - 4], 0xAAAA0001
        mov dword [0x81000 - 8], 0xAAAA0002
        mov esp, S
        mov ebp, 0x81000
        enter 8, 3
        mov [got_esp], esp
        mov [got_ebp], ebp
        mov esp, [saved_esp]
        PRINT "enter 8,3: esp="
        HEX [got_esp], 8
        PRINT " ebp="
        HEX [got_ebp], 8
        PRINT " slots="
        HEX [S - 4], 8
        PRINT " "
        HEX [S - 8], 8
        PRINT " "
        HEX [S - 12], 8
        PRINT " "
        HEX [S - 16], 8
        PRINT {10}
        mov esp, S
        mov ebp, 0x81000
        enter 4, 33                     ; level 33 MOD 32 = 1
        mov [got_esp], esp
        mov [got_ebp], ebp
        mov esp, [saved_esp]
        PRINT "enter 4,33: esp="
        HEX [got_esp], 8
        PRINT " ebp="
        HEX [got_ebp], 8
        PRINT " slots="
        HEX [S - 4], 8
        PRINT " "
        HEX [S - 8], 8
        PRINT {10}
        ; 16-bit operand size: words pushed, and "BP := FrameTemp(15:0)" (EBP[31:16] kept)
        mov word [0x61000 - 2], 0xBEEF
        mov dword [S - 8], 0
        mov dword [S - 4], 0
        mov esp, S
        mov ebp, 0x61000
        o16 enter 6, 2
        mov [got_esp], esp
        mov [got_ebp], ebp
        mov esp, [saved_esp]
        PRINT "o16 enter 6,2: esp="
        HEX [got_esp], 8
        PRINT " ebp="
        HEX [got_ebp], 8
        PRINT " slots="
        HEX [S - 4], 8
        PRINT " "
        HEX [S - 8], 8
        PRINT {10}
        ; a fault reading an outer frame's pointer: EBP and ESP as they were
        mov ebp, L_NP + 8
        TRY "enter np frame", en1, en1_back
en1:    enter 4, 3
en1_back:
        CHECK_ESP
        PRINT "after: ebp="
        HEX ebp, 8
        PRINT {10}
        ; "#PF(fault-code) If a page fault occurs or if a write using the final value of
        ; the stack pointer (within the current stack segment) would cause a page fault"
        mov esp, S_TOP
        mov ebp, 0x5555AAAA
        enter 0x1000, 0                 ; the final ESP in a read/write page
        mov [got_esp], esp
        mov [got_ebp], ebp
        mov esp, S_TOP
        PRINT "enter 1000h,0: esp="
        HEX [got_esp], 8
        PRINT " ebp="
        HEX [got_ebp], 8
        PRINT {10}
        mov ebp, 0x5555AAAA
        TRY "enter final ro", en2, en2_back
en2:    enter 0x2000, 0                 ; ... in a read-only page
        mov esp, S_TOP
        mov ebp, 0x5555AAAA
        PRINT_LINE "enter final ro: no fault"
en2_back:
        CHECK_ESP
        TRY "enter final np", en3, en3_back
en3:    enter 0x3000, 0                 ; ... in a page not present
        mov esp, S_TOP
        mov ebp, 0x5555AAAA
        PRINT_LINE "enter final np: no fault"
en3_back:
        CHECK_ESP
        PRINT "after: ebp="
        HEX ebp, 8
        PRINT {10}
        mov esp, [saved_esp]
        jmp finish

        align 4
saved_esp:      dd 0
got_esp:        dd 0
got_ebp:        dd 0
got_flags:      dd 0
