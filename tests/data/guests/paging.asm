; paging.asm: 32-bit paging (SDM Vol. 3A 4.3, 4.7, 4.8, 4.10): A and D bits, #PF error
; codes and CR2, CR0.WP, CR4.PSE 4-MiB pages, reserved bits, INVLPG and CR3 loads.
%include "common.inc"

PD      equ 0x200000                    ; page directory
PT0     equ 0x201000                    ; identity map of 0-4 MiB (code, stack, tables)
PT1     equ 0x202000                    ; linear 0x400000-0x7FFFFF: the test pages
PT2     equ 0x203000                    ; linear 0x1400000: under a read-only PDE
PDE_RO  equ PD + 5*4

; PT1 slots (linear 0x400000 + n*0x1000)
L_AD    equ 0x400000                    ; -> 0x300000 read/write, A/D cleared
L_RO    equ 0x401000                    ; -> 0x301000 read-only
L_NP    equ 0x402000                    ; not present
L_NP2   equ 0x403000                    ; not present (fetch)
L_SWAP  equ 0x404000                    ; -> 0x304000, 0x305000, 0x306000 in turn
L_CODE  equ 0x405000                    ; -> 0x307000, followed by the not-present 0x406000
L_BIG   equ 0x800000                    ; 4-MiB page -> physical 0 (an alias of PT0's map)
L_NOPDE equ 0xC00000                    ; PDE not present
L_RSVD  equ 0x1000000                   ; 4-MiB PDE with reserved bit 21 set
L_PDERO equ 0x1400000                   ; PDE R/W=0, PTE R/W=1

main:
        ; markers in physical memory, written before paging is on
        mov dword [0x304000], 0x11111111
        mov dword [0x305000], 0x22222222
        mov dword [0x306000], 0x33333333
        mov dword [0x700000], 0x44444444
        mov dword [0x701000], 0x55555555
        mov dword [0x300010], 0xA5A5A5A5
        ; code for the instruction-fetch test: "mov eax, 0x44332211" across a page end
        mov edi, 0x307FFE
        mov byte [edi], 0xB8
        mov dword [edi + 1], 0x44332211

        ; zero the tables
        mov edi, PD
        mov ecx, 4 * 1024
        xor eax, eax
        cld
        rep stosd
        ; identity map 0-4 MiB, read/write
        mov edi, PT0
        mov eax, 0x003
.ident: stosd
        add eax, 0x1000
        cmp edi, PT0 + 4096
        jb .ident
        mov dword [PD + 0*4], PT0 | 3
        mov dword [PD + 1*4], PT1 | 3             ; A clear: the walk sets it
        mov dword [PD + 2*4], 0x00000083          ; 4 MiB, R/W, frame 0
        mov dword [PD + 4*4], 0x00200083          ; bit 21 is reserved in a 4-MiB PDE
        mov dword [PD + 5*4], PT2 | 1             ; R/W=0 for the whole table
        mov dword [PT2], 0x300003
        mov dword [PT1 + 0*4], 0x300003
        mov dword [PT1 + 1*4], 0x301001
        mov dword [PT1 + 4*4], 0x304003
        mov dword [PT1 + 5*4], 0x307003

        mov eax, PD
        mov cr3, eax
        mov eax, cr4
        or eax, 0x10                    ; CR4.PSE
        mov cr4, eax
        mov eax, cr0
        or eax, 0x80010000              ; CR0.PG | CR0.WP
        mov cr0, eax
        jmp .paged
.paged:
        PRINT_LINE "paging on"

        ; -- A and D bits (the CPU sets A on the PDE and PTE it uses, D on the PTE written)
        PRINT "before:     pde="
        HEX [PD + 1*4], 3
        PRINT " pte="
        HEX [PT1 + 0*4], 3
        PRINT {10}
        mov eax, [L_AD + 0x10]
        PRINT "after read: pde="
        HEX [PD + 1*4], 3
        PRINT " pte="
        HEX [PT1 + 0*4], 3
        PRINT " value="
        HEX eax, 8
        PRINT {10}
        mov dword [L_AD + 0x20], 0x12345678
        PRINT "after write: pde="
        HEX [PD + 1*4], 3
        PRINT " pte="
        HEX [PT1 + 0*4], 3
        PRINT " phys="
        HEX [0x300020], 8
        PRINT {10}
        ; clear A and D, INVLPG, then a write alone sets both
        and dword [PT1 + 0*4], ~0x60
        invlpg [L_AD]
        mov byte [L_AD + 0x30], 1
        PRINT "write after invlpg: pte="
        HEX [PT1 + 0*4], 3
        PRINT {10}

        ; -- 4-MiB page (PS=1): A then D on the PDE itself
        mov eax, [L_BIG + 0x300010]
        PRINT "4M read: pde="
        HEX [PD + 2*4], 3
        PRINT " value="
        HEX eax, 8
        PRINT {10}
        mov dword [L_BIG + 0x300040], 0xCAFEF00D
        PRINT "4M write: pde="
        HEX [PD + 2*4], 3
        PRINT " phys="
        HEX [0x300040], 8
        PRINT {10}

        ; -- not-present faults: P=0, W/R tells the access
        TRY "read np pte", np1, np1_back
np1:    mov eax, [L_NP + 0xABC]
np1_back:
        TRY "write np pte", np2, np2_back
np2:    mov dword [L_NP + 0xABC], eax
np2_back:
        TRY "read np pde", np3, np3_back
np3:    mov eax, [L_NOPDE + 0x123]
np3_back:
        TRY "push np", np4, np4_back
np4:    push dword [L_NOPDE + 0x456]
np4_back:
        CHECK_ESP
        ; instruction fetch: the saved EIP is the target, no I/D bit without NX/SMEP
        mov eax, L_NP2 + 0x10
        TRY "fetch np", L_NP2 + 0x10, fetch_back
        jmp eax
fetch_back:
        ; an instruction that runs into a not-present page: CR2 is that page
        mov eax, L_CODE + 0xFFE
        TRY "fetch across", L_CODE + 0xFFE, fetch2_back
        jmp eax
fetch2_back:
        ; a dword read across into a not-present page
        TRY "read across", rx1, rx1_back
rx1:    mov eax, [L_SWAP - 0x1000 - 2]   ; 0x402FFE..0x403001: both pages not present
rx1_back:
        TRY "read across 2", rx2, rx2_back
rx2:    mov eax, [L_RO + 0xFFE]          ; 0x401FFE: present, then not present
rx2_back:
        TRY "write across", wx1, wx1_back
wx1:    mov dword [L_AD + 0xFFE], 0x99999999     ; read/write page, then read-only
wx1_back:
        PRINT "no partial write: "
        HEX [0x300FFC], 8
        PRINT {10}

        ; -- write protection: CR0.WP=1 faults (P=1 W=1), CR0.WP=0 lets CPL 0 write
        mov eax, [L_RO + 4]
        TRY "write ro wp=1", wp1, wp1_back
wp1:    mov dword [L_RO + 4], 0x5A5A5A5A
wp1_back:
        TRY "write ro pde", wp2, wp2_back
wp2:    mov dword [L_PDERO + 8], 0x5A5A5A5A
wp2_back:
        mov eax, cr0
        and eax, ~0x10000
        mov cr0, eax
        mov dword [L_RO + 4], 0x5A5A5A5A
        mov dword [L_PDERO + 8], 0x6B6B6B6B
        PRINT "wp=0 writes: "
        HEX [0x301004], 8
        PRINT " "
        HEX [0x300008], 8
        PRINT " pte="
        HEX [PT1 + 1*4], 3
        PRINT {10}
        mov eax, cr0
        or eax, 0x10000
        mov cr0, eax
        TRY "write ro wp=1 again", wp3, wp3_back
wp3:    mov byte [L_RO + 5], 0
wp3_back:

        ; -- reserved bit 21 in a 4-MiB PDE: P=1 RSVD=1
        TRY "read rsvd", rs1, rs1_back
rs1:    mov eax, [L_RSVD + 0x10]
rs1_back:
        TRY "write rsvd", rs2, rs2_back
rs2:    mov dword [L_RSVD + 0x20], eax
rs2_back:
        PRINT "rsvd pde untouched: "
        HEX [PD + 4*4], 8
        PRINT {10}

        ; -- INVLPG and CR3 loads make a changed entry visible
        PRINT "swap: "
        HEX [L_SWAP], 8
        mov dword [PT1 + 4*4], 0x305003
        invlpg [L_SWAP]
        PRINT " after invlpg: "
        HEX [L_SWAP], 8
        mov dword [PT1 + 4*4], 0x306003
        mov eax, cr3
        mov cr3, eax
        PRINT " after cr3 load: "
        HEX [L_SWAP], 8
        PRINT {10}
        ; the same for a 4-MiB page: INVLPG of any address in it drops the whole page
        mov eax, [L_BIG + 0x300000]
        mov eax, [L_BIG + 0x301000]
        mov dword [PD + 2*4], 0x00400083
        invlpg [L_BIG + 0x300000]
        PRINT "4M remapped: "
        HEX [L_BIG + 0x300000], 8
        PRINT " "
        HEX [L_BIG + 0x301000], 8
        PRINT {10}
        mov dword [PD + 2*4], 0x00000083
        invlpg [L_BIG + 0x300000]
        ; a page made not present, then INVLPG: the next access faults
        mov dword [PT1 + 4*4], 0
        invlpg [L_SWAP]
        TRY "unmapped", um1, um1_back
um1:    mov eax, [L_SWAP]
um1_back:

        ; -- self-modifying code through another linear address (the 4-MiB alias)
        mov byte [L_BIG + smc_insn + 1 - 0x100000 + 0x100000], 0x77
smc_insn:
        mov al, 0x11
        PRINT "smc via alias: "
        HEX eax, 2
        PRINT {10}
        ; paging off again: linear = physical
        mov eax, cr0
        and eax, 0x7FFFFFFF
        mov cr0, eax
        PRINT "paging off: "
        HEX [0x304000], 8
        PRINT {10}
        jmp finish
