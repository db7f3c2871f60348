"""One test per instruction form: raw bytes and assembly side by side, vmsim against
unicorn on the values that sit on every flag edge.

Each form runs once per combination of operand values (and, for forms that read CF, both
carry states). Registers: EAX/AL = a (destination), EBX/BL = b (source), ECX/CL = b (counts
and ECX for LOOP and REP), EDX = the dividend's high half (DIV/IDIV), the source of
SHLD/SHRD by CL (each value in turn) or a; ESI points at a dword holding a (memory
destinations), EDI at a dword holding b (memory sources). The set-up runs freely on both
sides and is compared; the form itself is stepped in lock-step. CMPXCHG8B: EDX:EAX = b:a,
ECX:EBX = b:~a, the m64 b:a or a:b. XLATB: EBX a table in the data window, or BX = b's low
half with 0x67. ENTER: EBP = STACK_TOP - 20h. DAA/DAS/AAA/AAS (BCD): every AL with CF and
AF each clear and set (OF SF ZF PF set for odd AL), AH cycling through its edges.
AAM/AAD (AX8): every AL, AH cycling. BOUND: the index a (or b) between the signed
smaller and larger of a and b, stored at [EDI] (so always inside, on an edge: the faulting
side is test_bound_edges).
The text column is what iced-x86 prints for the bytes (checked), assembled with NASM.
"""

from __future__ import annotations

import random

import iced_x86
import pytest
from iced_x86 import Code, Instruction, MemoryOperand, Register

from tests.diff.harness import (
    CODE,
    DATA,
    DATA_SIZE,
    LOW_SIZE,
    STACK_SIZE,
    STACK_TOP,
    Divergence,
    Pair,
    Start,
    disassemble,
    fmt,
)

ALU, DIV, IDIV, SHIFT, SHIFTD, BIT, BITSTR, COND, JCC, LOOP, STACK, RET, FLAG, STRING, CX8, XLAT = (
    "alu", "div", "idiv", "shift", "shiftd", "bit", "bitstr", "cond", "jcc", "loop", "stack",
    "ret", "flag", "string", "cx8", "xlat")
BCD, AX8, BOUND = "bcd", "ax8", "bound"

FORMS = [
    # raw bytes               assembly (iced-x86, NASM syntax)  operand values
    ("01 d8",                 "add eax,ebx",                     ALU),
    ("66 01 d8",              "add ax,bx",                       ALU),
    ("00 d8",                 "add al,bl",                       ALU),
    ("00 dc",                 "add ah,bl",                       ALU),
    ("83 c0 ff",              "add eax,0FFFFFFFFh",              ALU),
    ("04 80",                 "add al,80h",                      ALU),
    ("05 ff ff ff 7f",        "add eax,7FFFFFFFh",               ALU),
    ("01 1e",                 "add [esi],ebx",                   ALU),
    ("03 07",                 "add eax,[edi]",                   ALU),
    ("80 06 ff",              "add byte [esi],0FFh",             ALU),
    ("66 01 1e",              "add [esi],bx",                    ALU),
    ("11 d8",                 "adc eax,ebx",                     ALU),
    ("66 11 d8",              "adc ax,bx",                       ALU),
    ("10 d8",                 "adc al,bl",                       ALU),
    ("83 d0 01",              "adc eax,1",                       ALU),
    ("11 1e",                 "adc [esi],ebx",                   ALU),
    ("29 d8",                 "sub eax,ebx",                     ALU),
    ("66 29 d8",              "sub ax,bx",                       ALU),
    ("28 d8",                 "sub al,bl",                       ALU),
    ("83 e8 01",              "sub eax,1",                       ALU),
    ("66 2d 00 80",           "sub ax,8000h",                    ALU),
    ("2b 07",                 "sub eax,[edi]",                   ALU),
    ("66 29 1e",              "sub [esi],bx",                    ALU),
    ("19 d8",                 "sbb eax,ebx",                     ALU),
    ("66 19 d8",              "sbb ax,bx",                       ALU),
    ("18 d8",                 "sbb al,bl",                       ALU),
    ("1d 00 00 00 80",        "sbb eax,80000000h",               ALU),
    ("18 1e",                 "sbb [esi],bl",                    ALU),
    ("39 d8",                 "cmp eax,ebx",                     ALU),
    ("66 39 d8",              "cmp ax,bx",                       ALU),
    ("38 d8",                 "cmp al,bl",                       ALU),
    ("83 f8 ff",              "cmp eax,0FFFFFFFFh",              ALU),
    ("39 1e",                 "cmp [esi],ebx",                   ALU),
    ("3a 1e",                 "cmp bl,[esi]",                    ALU),
    ("21 d8",                 "and eax,ebx",                     ALU),
    ("66 21 d8",              "and ax,bx",                       ALU),
    ("20 d8",                 "and al,bl",                       ALU),
    ("25 01 00 00 80",        "and eax,80000001h",               ALU),
    ("09 d8",                 "or eax,ebx",                      ALU),
    ("66 09 d8",              "or ax,bx",                        ALU),
    ("08 d8",                 "or al,bl",                        ALU),
    ("09 1e",                 "or [esi],ebx",                    ALU),
    ("31 d8",                 "xor eax,ebx",                     ALU),
    ("66 31 d8",              "xor ax,bx",                       ALU),
    ("30 d8",                 "xor al,bl",                       ALU),
    ("30 1e",                 "xor [esi],bl",                    ALU),
    ("85 d8",                 "test eax,ebx",                    ALU),
    ("66 85 d8",              "test ax,bx",                      ALU),
    ("84 d8",                 "test al,bl",                      ALU),
    ("a9 00 00 00 80",        "test eax,80000000h",              ALU),
    ("85 1e",                 "test [esi],ebx",                  ALU),
    ("40",                    "inc eax",                         ALU),
    ("66 40",                 "inc ax",                          ALU),
    ("fe c0",                 "inc al",                          ALU),
    ("ff 06",                 "inc dword [esi]",                 ALU),
    ("48",                    "dec eax",                         ALU),
    ("66 48",                 "dec ax",                          ALU),
    ("fe cc",                 "dec ah",                          ALU),
    ("66 ff 0e",              "dec word [esi]",                  ALU),
    ("f7 d8",                 "neg eax",                         ALU),
    ("66 f7 d8",              "neg ax",                          ALU),
    ("f6 d8",                 "neg al",                          ALU),
    ("f7 1e",                 "neg dword [esi]",                 ALU),
    ("f7 d0",                 "not eax",                         ALU),
    ("66 f7 d0",              "not ax",                          ALU),
    ("f6 16",                 "not byte [esi]",                  ALU),
    ("f7 e3",                 "mul ebx",                         ALU),
    ("66 f7 e3",              "mul bx",                          ALU),
    ("f6 e3",                 "mul bl",                          ALU),
    ("f7 27",                 "mul dword [edi]",                 ALU),
    ("f7 eb",                 "imul ebx",                        ALU),
    ("66 f7 eb",              "imul bx",                         ALU),
    ("f6 eb",                 "imul bl",                         ALU),
    ("0f af c3",              "imul eax,ebx",                    ALU),
    ("66 0f af c3",           "imul ax,bx",                      ALU),
    ("6b c3 fd",              "imul eax,ebx,0FFFFFFFDh",         ALU),
    ("69 07 01 00 01 00",     "imul eax,[edi],10001h",           ALU),
    ("66 69 c3 ff 7f",        "imul ax,bx,7FFFh",                ALU),
    ("f7 f3",                 "div ebx",                         DIV),
    ("66 f7 f3",              "div bx",                          DIV),
    ("f6 f3",                 "div bl",                          DIV),
    ("f7 37",                 "div dword [edi]",                 DIV),
    ("f7 fb",                 "idiv ebx",                        IDIV),
    ("66 f7 fb",              "idiv bx",                         IDIV),
    ("f6 fb",                 "idiv bl",                         IDIV),
    ("66 f7 3f",              "idiv word [edi]",                 IDIV),
    ("d1 e0",                 "shl eax,1",                       SHIFT),
    ("d3 e0",                 "shl eax,cl",                      SHIFT),
    ("66 d3 e0",              "shl ax,cl",                       SHIFT),
    ("d2 e0",                 "shl al,cl",                       SHIFT),
    ("c1 e0 07",              "shl eax,7",                       SHIFT),
    ("d3 26",                 "shl dword [esi],cl",              SHIFT),
    ("d1 e8",                 "shr eax,1",                       SHIFT),
    ("d3 e8",                 "shr eax,cl",                      SHIFT),
    ("66 d3 e8",              "shr ax,cl",                       SHIFT),
    ("d2 e8",                 "shr al,cl",                       SHIFT),
    ("c1 e8 09",              "shr eax,9",                       SHIFT),
    ("d0 2e",                 "shr byte [esi],1",                SHIFT),
    ("d1 f8",                 "sar eax,1",                       SHIFT),
    ("d3 f8",                 "sar eax,cl",                      SHIFT),
    ("66 d3 f8",              "sar ax,cl",                       SHIFT),
    ("d2 f8",                 "sar al,cl",                       SHIFT),
    ("c1 f8 1f",              "sar eax,1Fh",                     SHIFT),
    ("d1 c0",                 "rol eax,1",                       SHIFT),
    ("d3 c0",                 "rol eax,cl",                      SHIFT),
    ("66 d3 c0",              "rol ax,cl",                       SHIFT),
    ("d2 c0",                 "rol al,cl",                       SHIFT),
    ("c1 06 04",              "rol dword [esi],4",               SHIFT),
    ("d1 c8",                 "ror eax,1",                       SHIFT),
    ("d3 c8",                 "ror eax,cl",                      SHIFT),
    ("66 d3 c8",              "ror ax,cl",                       SHIFT),
    ("d2 c8",                 "ror al,cl",                       SHIFT),
    ("d1 d0",                 "rcl eax,1",                       SHIFT),
    ("d3 d0",                 "rcl eax,cl",                      SHIFT),
    ("66 d3 d0",              "rcl ax,cl",                       SHIFT),
    ("d2 d0",                 "rcl al,cl",                       SHIFT),
    ("66 d1 16",              "rcl word [esi],1",                SHIFT),
    ("d1 d8",                 "rcr eax,1",                       SHIFT),
    ("d3 d8",                 "rcr eax,cl",                      SHIFT),
    ("66 d3 d8",              "rcr ax,cl",                       SHIFT),
    ("d2 d8",                 "rcr al,cl",                       SHIFT),
    ("d2 1e",                 "rcr byte [esi],cl",               SHIFT),
    # SHLD/SHRD: by imm8 with EAX/[ESI] = a and EBX = b; by CL with CL = b (a count) and
    # EDX cycling through the values (SHIFTD); 16-bit counts past 16 left out (undefined).
    ("0f a4 d8 01",           "shld eax,ebx,1",                  ALU),
    ("0f a4 d8 1f",           "shld eax,ebx,1Fh",                ALU),
    ("0f a4 d8 00",           "shld eax,ebx,0",                  ALU),
    ("0f a4 d8 21",           "shld eax,ebx,21h",                ALU),
    ("66 0f a4 d8 10",        "shld ax,bx,10h",                  ALU),
    ("66 0f a4 d8 07",        "shld ax,bx,7",                    ALU),
    ("0f a4 1e 04",           "shld [esi],ebx,4",                ALU),
    ("66 0f a4 1e 0f",        "shld [esi],bx,0Fh",               ALU),
    ("0f a5 d0",              "shld eax,edx,cl",                 SHIFTD),
    ("66 0f a5 d0",           "shld ax,dx,cl",                   SHIFTD),
    ("0f a5 16",              "shld [esi],edx,cl",               SHIFTD),
    ("66 0f a5 16",           "shld [esi],dx,cl",                SHIFTD),
    ("0f a5 c0",              "shld eax,eax,cl",                 SHIFT),
    ("0f ac d8 01",           "shrd eax,ebx,1",                  ALU),
    ("0f ac d8 1f",           "shrd eax,ebx,1Fh",                ALU),
    ("0f ac d8 00",           "shrd eax,ebx,0",                  ALU),
    ("66 0f ac d8 10",        "shrd ax,bx,10h",                  ALU),
    ("66 0f ac d8 03",        "shrd ax,bx,3",                    ALU),
    ("0f ac 1e 1c",           "shrd [esi],ebx,1Ch",              ALU),
    ("66 0f ac 1e 01",        "shrd [esi],bx,1",                 ALU),
    ("0f ad d0",              "shrd eax,edx,cl",                 SHIFTD),
    ("66 0f ad d0",           "shrd ax,dx,cl",                   SHIFTD),
    ("0f ad 16",              "shrd [esi],edx,cl",               SHIFTD),
    ("66 0f ad 16",           "shrd [esi],dx,cl",                SHIFTD),
    ("0f ad c0",              "shrd eax,eax,cl",                 SHIFT),
    ("0f a3 d8",              "bt eax,ebx",                      BIT),
    ("66 0f a3 d8",           "bt ax,bx",                        BIT),
    ("0f ab d8",              "bts eax,ebx",                     BIT),
    ("0f b3 d8",              "btr eax,ebx",                     BIT),
    ("0f bb d8",              "btc eax,ebx",                     BIT),
    ("0f ba e0 1f",           "bt eax,1Fh",                      BIT),
    ("0f ba 2e 05",           "bts dword [esi],5",               BIT),
    ("66 0f ba 36 0f",        "btr word [esi],0Fh",              BIT),
    ("0f ba 3e 00",           "btc dword [esi],0",               BIT),
    ("0f a3 1e",              "bt [esi],ebx",                    BITSTR),
    ("0f ab 1e",              "bts [esi],ebx",                   BITSTR),
    ("66 0f b3 1e",           "btr [esi],bx",                    BITSTR),
    ("0f bb 1e",              "btc [esi],ebx",                   BITSTR),
    ("0f bc c3",              "bsf eax,ebx",                     ALU),
    ("66 0f bc c3",           "bsf ax,bx",                       ALU),
    ("0f bc 07",              "bsf eax,[edi]",                   ALU),
    ("66 0f bc 07",           "bsf ax,[edi]",                    ALU),
    ("0f bd c3",              "bsr eax,ebx",                     ALU),
    ("66 0f bd c3",           "bsr ax,bx",                       ALU),
    ("0f bd 07",              "bsr eax,[edi]",                   ALU),
    ("66 0f bd 07",           "bsr ax,[edi]",                    ALU),
    ("0f c8",                 "bswap eax",                       ALU),
    ("0f cb",                 "bswap ebx",                       ALU),
    ("66 0f c8",              "bswap ax",                        ALU),
    ("0f b6 c3",              "movzx eax,bl",                    ALU),
    ("0f b7 c3",              "movzx eax,bx",                    ALU),
    ("66 0f b6 c3",           "movzx ax,bl",                     ALU),
    ("0f b6 07",              "movzx eax,byte [edi]",            ALU),
    ("0f be c3",              "movsx eax,bl",                    ALU),
    ("0f bf c3",              "movsx eax,bx",                    ALU),
    ("66 0f be c3",           "movsx ax,bl",                     ALU),
    ("0f bf 07",              "movsx eax,word [edi]",            ALU),
    ("89 d8",                 "mov eax,ebx",                     ALU),
    ("88 f8",                 "mov al,bh",                       ALU),
    ("66 8b 07",              "mov ax,[edi]",                    ALU),
    ("88 1e",                 "mov [esi],bl",                    ALU),
    ("a1 00 02 20 00",        "mov eax,[200200h]",               ALU),
    ("66 a3 00 01 20 00",     "mov [200100h],ax",                ALU),
    ("c7 06 78 56 34 12",     "mov dword [esi],12345678h",       ALU),
    ("8d 44 98 10",           "lea eax,[eax+ebx*4+10h]",         ALU),
    ("66 8d 44 18 ff",        "lea ax,[eax+ebx-1]",              ALU),
    ("8d 04 dd 00 00 00 00",  "lea eax,[ebx*8]",                 ALU),
    ("93",                    "xchg ebx,eax",                    ALU),
    ("66 93",                 "xchg bx,ax",                      ALU),
    ("86 c7",                 "xchg al,bh",                      ALU),
    ("87 1e",                 "xchg ebx,[esi]",                  ALU),
    ("66 98",                 "cbw",                             ALU),
    ("98",                    "cwde",                            ALU),
    ("66 99",                 "cwd",                             ALU),
    ("99",                    "cdq",                             ALU),
    ("0f 90 c0",              "seto al",                         COND),
    ("0f 91 c0",              "setno al",                        COND),
    ("0f 92 c0",              "setb al",                         COND),
    ("0f 93 c0",              "setae al",                        COND),
    ("0f 94 c0",              "sete al",                         COND),
    ("0f 95 c0",              "setne al",                        COND),
    ("0f 96 c0",              "setbe al",                        COND),
    ("0f 97 c0",              "seta al",                         COND),
    ("0f 98 c0",              "sets al",                         COND),
    ("0f 99 c0",              "setns al",                        COND),
    ("0f 9a c0",              "setp al",                         COND),
    ("0f 9b c0",              "setnp al",                        COND),
    ("0f 9c c0",              "setl al",                         COND),
    ("0f 9d c0",              "setge al",                        COND),
    ("0f 9e c0",              "setle al",                        COND),
    ("0f 9f 06",              "setg [esi]",                      COND),
    ("d6",                    "salc",                            COND),
    ("0f 42 c3",              "cmovb eax,ebx",                   COND),
    ("66 0f 46 c3",           "cmovbe ax,bx",                    COND),
    ("0f 4c 07",              "cmovl eax,[edi]",                 COND),
    ("0f 4f c3",              "cmovg eax,ebx",                   COND),
    ("70 02",                 "jo short 00100004h",              JCC),
    ("71 02",                 "jno short 00100004h",             JCC),
    ("72 02",                 "jb short 00100004h",              JCC),
    ("73 02",                 "jae short 00100004h",             JCC),
    ("74 02",                 "je short 00100004h",              JCC),
    ("75 02",                 "jne short 00100004h",             JCC),
    ("76 02",                 "jbe short 00100004h",             JCC),
    ("77 02",                 "ja short 00100004h",              JCC),
    ("78 02",                 "js short 00100004h",              JCC),
    ("79 02",                 "jns short 00100004h",             JCC),
    ("7a 02",                 "jp short 00100004h",              JCC),
    ("7b 02",                 "jnp short 00100004h",             JCC),
    ("7c 02",                 "jl short 00100004h",              JCC),
    ("7d 02",                 "jge short 00100004h",             JCC),
    ("7e 02",                 "jle short 00100004h",             JCC),
    ("7f 02",                 "jg short 00100004h",              JCC),
    ("0f 8e 02 00 00 00",     "jle near 00100008h",              JCC),
    ("e2 02",                 "loop 00100004h",                  LOOP),
    ("e1 02",                 "loope 00100004h",                 LOOP),
    ("e0 02",                 "loopne 00100004h",                LOOP),
    ("e3 02",                 "jecxz 00100004h",                 LOOP),
    ("67 e3 02",              "jcxz 00100005h",                  LOOP),
    ("53",                    "push ebx",                        STACK),
    ("66 53",                 "push bx",                         STACK),
    ("6a fe",                 "push 0FFFFFFFEh",                 STACK),
    ("68 00 00 00 80",        "push 80000000h",                  STACK),
    ("ff 37",                 "push dword [edi]",                STACK),
    ("58",                    "pop eax",                         STACK),
    ("66 58",                 "pop ax",                          STACK),
    ("8f 06",                 "pop dword [esi]",                 STACK),
    ("60",                    "pusha",                           STACK),
    ("66 60",                 "pushaw",                          STACK),
    ("61",                    "popa",                            STACK),
    ("66 61",                 "popaw",                           STACK),
    ("9c",                    "pushf",                           STACK),
    ("66 9c",                 "pushfw",                          STACK),
    ("9d",                    "popf",                            STACK),
    ("66 9d",                 "popfw",                           STACK),
    ("c9",                    "leave",                           STACK),
    ("66 c9",                 "o16 leave",                       STACK),
    ("c8 10 00 00",           "enter 10h,0",                     STACK),
    ("c8 00 00 01",           "enter 0,1",                       STACK),
    ("c8 08 00 03",           "enter 8,3",                       STACK),
    ("c8 04 00 21",           "enter 4,21h",                     STACK),
    ("c8 00 00 1f",           "enter 0,1Fh",                     STACK),
    ("c8 ff ff 00",           "enter 0FFFFh,0",                  STACK),
    ("66 c8 00 00 00",        "o16 enter 0,0",                   STACK),
    ("66 c8 04 00 01",        "o16 enter 4,1",                   STACK),
    ("66 c8 02 00 02",        "o16 enter 2,2",                   STACK),
    ("e8 00 00 00 00",        "call 00100005h",                  STACK),
    ("c3",                    "ret",                             RET),
    ("c2 08 00",              "ret 8",                           RET),
    ("f8",                    "clc",                             FLAG),
    ("f9",                    "stc",                             FLAG),
    ("f5",                    "cmc",                             FLAG),
    ("fc",                    "cld",                             FLAG),
    ("fd",                    "std",                             FLAG),
    ("90",                    "nop",                             FLAG),
    ("a4",                    "movsb",                           STRING),
    ("66 a5",                 "movsw",                           STRING),
    ("f3 a5",                 "rep movsd",                       STRING),
    ("aa",                    "stosb",                           STRING),
    ("f3 66 ab",              "rep stosw",                       STRING),
    ("ab",                    "stosd",                           STRING),
    ("ac",                    "lodsb",                           STRING),
    ("66 ad",                 "lodsw",                           STRING),
    ("f3 ad",                 "rep lodsd",                       STRING),
    ("a6",                    "cmpsb",                           STRING),
    ("f3 66 a7",              "repe cmpsw",                      STRING),
    ("f2 a7",                 "repne cmpsd",                     STRING),
    ("ae",                    "scasb",                           STRING),
    ("f3 66 af",              "repe scasw",                      STRING),
    ("f2 af",                 "repne scasd",                     STRING),
    ("0f c7 0e",              "cmpxchg8b [esi]",                 CX8),
    ("f0 0f c7 0e",           "lock cmpxchg8b [esi]",            CX8),
    ("66 0f c7 0f",           "cmpxchg8b [edi]",                 CX8),
    ("27",                    "daa",                             BCD),
    ("2f",                    "das",                             BCD),
    ("37",                    "aaa",                             BCD),
    ("3f",                    "aas",                             BCD),
    ("d4 0a",                 "aam",                             AX8),
    ("d4 10",                 "aam 10h",                         AX8),
    ("d4 01",                 "aam 1",                           AX8),
    ("d4 07",                 "aam 7",                           AX8),
    ("d4 ff",                 "aam 0FFh",                        AX8),
    ("d5 0a",                 "aad",                             AX8),
    ("d5 10",                 "aad 10h",                         AX8),
    ("d5 00",                 "aad 0",                           AX8),
    ("d5 07",                 "aad 7",                           AX8),
    ("d5 ff",                 "aad 0FFh",                        AX8),
    ("62 07",                 "bound eax,[edi]",                 BOUND),
    ("66 62 07",              "bound ax,[edi]",                  BOUND),
    ("62 1f",                 "bound ebx,[edi]",                 BOUND),
    ("66 62 0f",              "bound cx,[edi]",                  BOUND),
    ("d7",                    "xlatb",                           XLAT),
    ("67 d7",                 "a16 xlatb",                       XLAT),
    ("64 d7",                 "fs xlatb",                        XLAT),
    ("2e d7",                 "cs xlatb",                        XLAT),
]

VALUES = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
COUNTS = (0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 0xFF)
BIT_OFFSETS = (0, 1, 7, 8, 15, 16, 31, 32, 33, 0x7FF, -1, -8, -32, -33, -0x800)
SMALL = (0, 1, 2, 3, 0x10000)  # ECX for LOOP/JECXZ
REPEATS = (0, 1, 2, 3, 5)  # ECX for REP
ALL_FLAGS, NO_FLAGS = 0x8D7, 0x2  # CF PF AF ZF SF OF (+ the fixed bit 1), none
TF = 0x100
SRC, DST = DATA + 0x200, DATA + 0x100  # EDI, ESI

# Instructions that leave a condition for CMOVcc/SETcc/Jcc/LOOPcc, cycled through.
_PRODUCERS = [
    Instruction.create_reg_reg(Code.CMP_RM32_R32, Register.EAX, Register.EBX),
    Instruction.create_reg_reg(Code.SUB_RM32_R32, Register.EAX, Register.EBX),
    Instruction.create_reg_reg(Code.CMP_RM8_R8, Register.AL, Register.BL),
    Instruction.create_reg_reg(Code.CMP_RM16_R16, Register.AX, Register.BX),
    Instruction.create_reg_reg(Code.ADD_RM32_R32, Register.EAX, Register.EBX),
    Instruction.create_reg_reg(Code.ADC_RM32_R32, Register.EAX, Register.EBX),
    Instruction.create_reg_reg(Code.SBB_RM32_R32, Register.EAX, Register.EBX),
    Instruction.create_reg_reg(Code.TEST_RM32_R32, Register.EAX, Register.EBX),
    Instruction.create_reg(Code.INC_R32, Register.EAX),
    Instruction.create_reg(Code.DEC_R32, Register.EAX),
    Instruction.create_reg(Code.NEG_RM32, Register.EAX),
    Instruction.create_reg_i32(Code.SHL_RM32_1, Register.EAX, 1),
    Instruction.create_reg_i32(Code.SAR_RM32_1, Register.EAX, 1),
    Instruction.create_reg_reg(Code.IMUL_R32_RM32, Register.EAX, Register.EBX),
    Instruction.create(Code.NOPD),  # the flags as POPFD left them
]


def _mov(reg: Register, v: int) -> Instruction:
    return Instruction.create_reg_u32(Code.MOV_R32_IMM32, reg, v & 0xFFFFFFFF)


def _store(addr: int, v: int) -> Instruction:
    return Instruction.create_mem_u32(Code.MOV_RM32_IMM32, MemoryOperand(displ=addr, displ_size=4),
                                      v & 0xFFFFFFFF)


def _signed(v: int, bits: int) -> int:
    s = 1 << (bits - 1)
    return ((v & ((1 << bits) - 1)) ^ s) - s


def _div_faults(ins: iced_x86.Instruction, a: int, b: int, edx: int) -> bool:
    bits = 8 * iced_x86.MemorySizeExt.size(ins.memory_size) if ins.op0_kind != \
        iced_x86.OpKind.REGISTER else {1: 8, 2: 16, 4: 32}[_reg_size(ins.op0_register)]
    m = (1 << bits) - 1
    if bits == 8:
        n = a & 0xFFFF
    elif bits == 16:
        n = ((edx & 0xFFFF) << 16) | (a & 0xFFFF)
    else:
        n = (edx << 32) | a
    d = b & m
    if d == 0:
        return True
    if ins.mnemonic == iced_x86.Mnemonic.DIV:
        return n // d > m
    n, d = _signed(n, 2 * bits), _signed(d, bits)
    q = abs(n) // abs(d) * (1 if (n < 0) == (d < 0) else -1)
    return not -(1 << (bits - 1)) <= q < (1 << (bits - 1))


def _reg_size(reg: int) -> int:
    return iced_x86.RegisterInfo(reg).size


# AH for the AL sweeps: the edges AAA's and AAS's carry and borrow into AH wrap at.
AH_EDGES = (0x00, 0xFF, 0x01, 0xFE, 0x7F, 0x80, 0x09, 0x99)
HIGH = 0x5A5A0000  # EAX's upper half: the adjustments must leave it


def _combos(kind: str, ins: iced_x86.Instruction):
    """(a, b, flags) triples for a form."""
    if kind in (BCD, AX8):
        n = 0
        for al in range(256):
            for cf, af in ((0, 0), (1, 0), (0, 0x10), (1, 0x10))[:4 if kind == BCD else 1]:
                others = 0x8C4 if al & 1 else 0  # OF SF ZF PF, replaced or kept
                yield HIGH | (AH_EDGES[n % len(AH_EDGES)] << 8) | al, 0, 0x2 | cf | af | others
                n += 1
        return
    reads_cf = ins.rflags_read & iced_x86.RflagsBits.CF
    flag_sets = (NO_FLAGS, ALL_FLAGS)
    bs = {SHIFT: COUNTS, SHIFTD: COUNTS, BIT: COUNTS, BITSTR: BIT_OFFSETS, LOOP: SMALL, STRING: REPEATS}.get(
        kind, VALUES)
    i = 0
    for a in VALUES:
        for b in bs:
            if reads_cf or kind in (COND, JCC, LOOP):
                for f in flag_sets:
                    yield a, b, f
            else:
                yield a, b, flag_sets[i % 2]
                i += 1


def _program(raw: bytes, kind: str) -> tuple[bytes, list[int]]:
    """The set-up and the form for every combination; returns code and the forms' EIPs."""
    ins = disassemble(raw, CODE)
    out, at = bytearray(), []
    enc = iced_x86.Encoder(32)
    for n, (a, b, flags) in enumerate(_combos(kind, ins)):
        edx = a
        if kind == DIV:
            edx = 0
        elif kind == IDIV:
            edx = 0xFFFFFFFF if a & 0x80000000 else 0
            if ins.op0_kind == iced_x86.OpKind.REGISTER and _reg_size(ins.op0_register) == 2:
                edx = 0xFFFF if a & 0x8000 else 0
        if kind in (DIV, IDIV) and _div_faults(ins, a, b, edx):
            continue
        if kind == SHIFTD:
            if b & 0x1F > 16 and _reg_size(ins.op1_register) == 2:
                continue  # SDM: a 16-bit operand shifted by more than 16 is undefined
            edx = VALUES[n % len(VALUES)]  # the source
        setup = [_mov(Register.ESP, STACK_TOP), _mov(Register.EAX, a), _mov(Register.EBX, b),
                 _mov(Register.ECX, b), _mov(Register.EDX, edx), _mov(Register.ESI, DST),
                 _mov(Register.EDI, SRC), _store(DST, a), _store(SRC, b),
                 _mov(Register.EBP, STACK_TOP - 0x20),
                 Instruction.create_i32(Code.PUSHD_IMM32, _signed(flags, 32)),
                 Instruction.create(Code.POPFD)]
        if kind in (BCD, AX8):  # EAX and the flags only: a thousand sweeps fit the window
            setup = [_mov(Register.EAX, a), *setup[-2:]]
        if kind in (COND, JCC, LOOP):
            setup.append(_PRODUCERS[n % len(_PRODUCERS)])
            setup.append(_mov(Register.ECX, b))
        if kind == STRING and n % 3 == 1:
            setup.append(Instruction.create(Code.STD))
        if kind == STRING and n % 4 == 2:
            setup.append(_store(SRC, a))  # equal elements: REPE runs on
        if kind == CX8:
            # EDX:EAX = b:a against m64 = b:a (equal) or a:b (equal only if a = b).
            lo, hi = (a, b) if n % 2 == 0 else (b, a)
            setup += [_mov(Register.EDX, b), _store(DST, lo), _store(DST + 4, hi),
                      _store(SRC, lo), _store(SRC + 4, hi), _mov(Register.EBX, ~a)]
        if kind == XLAT:
            # A table in the data window; with 0x67, BX + AL in the low window (and past
            # FFFFh, wrapped), EBX's upper half not used.
            a16 = ins.memory_base == Register.BX
            setup.append(_mov(Register.EBX, b if a16 else DATA + 0x800 + (b & 0x7FFF)))
        if kind == BOUND:
            # The index (EAX, EBX = b, ECX = b) between the signed smaller and larger of a
            # and b, stored as [EDI] = lower, [EDI + size] = upper.
            size = _reg_size(ins.op0_register)
            bits = 8 * size
            lower, upper = sorted((_signed(a, bits), _signed(b, bits)))
            m = (1 << bits) - 1
            if size == 4:
                setup += [_store(SRC, lower), _store(SRC + 4, upper)]
            else:
                setup.append(_store(SRC, (upper & m) << 16 | (lower & m)))
        if ins.mnemonic in (iced_x86.Mnemonic.POPF, iced_x86.Mnemonic.POPFD):
            setup.append(Instruction.create_i32(Code.PUSHD_IMM32, _signed(b & ~TF, 32)))
        for s in setup:
            enc.encode(s, CODE + len(out))
            out += enc.take_buffer()
        if kind == RET:
            ret_to = CODE + len(out) + len(raw) + 8
            enc.encode(Instruction.create_i32(Code.PUSHD_IMM32, _signed(ret_to, 32)),
                       CODE + len(out))
            out += enc.take_buffer()
        at.append(CODE + len(out))
        out += raw
        if kind in (JCC, LOOP, RET):
            out += b"\x90" * (2 if kind != RET else 8)  # what a taken branch jumps over
    return bytes(out), at


@pytest.mark.parametrize(("raw", "asm", "kind"), FORMS, ids=[f[1] for f in FORMS])
def test_form(raw: str, asm: str, kind: str):
    code = bytes.fromhex(raw)
    ins = disassemble(code, CODE)
    assert (fmt(ins), ins.len) == (asm, len(code)), "the table's bytes and text disagree"
    program, at = _program(code, kind)
    rnd = random.Random(raw)
    start = Start([0] * 4 + [STACK_TOP] + [0] * 3, 0x2, rnd.randbytes(DATA_SIZE),
                  rnd.randbytes(STACK_SIZE), rnd.randbytes(LOW_SIZE))
    pair = Pair(program, start)
    for addr in at:
        pair.run_to(addr)
        if not pair.step():
            if pair.cpu.eip != pair.end:
                raise Divergence(f"{asm}: an exception nobody expected at {addr:08x}")


@pytest.mark.parametrize(("raw", "asm"), [("66 e8 00 00", "call word 4"),
                                         ("66 ff 16", "call word [esi]"),
                                         ("66 ff d0", "call ax")])
def test_call16_pushes_ip(raw: str, asm: str):
    """A CALL with a 16-bit operand size pushes IP, the low half of the return address (the
    fuzz found vmsim pushing all of EIP into the word). It jumps below 64 KiB, into the low
    window: one step, compared."""
    code = bytes.fromhex(raw)
    assert fmt(disassemble(code, CODE)) == asm
    rnd = random.Random(raw)
    start = Start([0x2345, 0, 0, 0, STACK_TOP, 0, DATA + 0x100, 0], 0x2, rnd.randbytes(DATA_SIZE),
                  rnd.randbytes(STACK_SIZE), rnd.randbytes(LOW_SIZE))
    pair = Pair(code, start)
    pair.step()
    assert pair.cpu.eip < 0x10000


# A 16-bit address size (0x67): SI, DI and CX, wrapping within 64 KiB, upper halves kept.
A16 = [("67 a4", "a16 movsb"), ("67 f3 66 a5", "a16 rep movsw"), ("67 f3 a5", "a16 rep movsd"),
       ("67 ac", "a16 lodsb"), ("67 f3 ad", "a16 rep lodsd"), ("67 66 ab", "a16 stosw"),
       ("67 f3 aa", "a16 rep stosb"), ("67 a6", "a16 cmpsb"), ("67 f3 a7", "a16 repe cmpsd"),
       ("67 f2 66 a7", "a16 repne cmpsw"), ("67 ae", "a16 scasb"), ("67 f3 66 af", "a16 repe scasw"),
       ("67 f2 af", "a16 repne scasd"), ("67 26 a4", "a16 es movsb"),
       ("67 e2 fe", "loop 00100001h,cx"), ("67 e1 fe", "loope 00100001h,cx"),
       ("67 e0 fe", "loopne 00100001h,cx"), ("67 e3 fe", "jcxz 00100001h")]


@pytest.mark.parametrize(("raw", "asm"), A16, ids=[a[1] for a in A16])
def test_a16(raw: str, asm: str):
    """String instructions and LOOPcc with a 16-bit address size address with SI and DI and
    count in CX (vmsim refused most with #UD and ran LOOP, LODS and SCAS on ESI, EDI, ECX).
    SI and DI on the edges of 64 KiB, CX 0-3 (a REP ends in one step), their upper halves
    set, DF and ZF clear and set; one step each, compared."""
    code = bytes.fromhex(raw)
    assert fmt(disassemble(code, CODE)) == asm
    rnd = random.Random(raw)
    for si in (0x0000, 0x0001, 0x7FFF, 0xFFFC, 0xFFFF):
        for di in (0x0000, 0xFFFE, 0x1234):
            for cx in (0, 1, 3):
                for flags in (0x2, 0x42, 0x402, 0x443):
                    regs = [rnd.getrandbits(32), 0xABCD0000 | cx, 0, 0, STACK_TOP, 0,
                            0x5A5A0000 | si, 0xA5A50000 | di]
                    start = Start(regs, flags, rnd.randbytes(DATA_SIZE), rnd.randbytes(STACK_SIZE),
                                  rnd.randbytes(LOW_SIZE))
                    Pair(code, start).step()


# The hint-NOP space 0F 18-0F 1F (ENDBR32, PREFETCHh, CLDEMOTE, reserved NOPs): NOPs here.
# (0F 18 /0-/3 with a register operand is #UD in unicorn and QEMU, a reserved NOP in the SDM's
# opcode map and iced-x86: docs/qemu-departures.md.)
HINT_NOPS = ["f3 0f 1e fb", "f3 0f 1e fa", "f3 0f 1e c8", "0f 18 06", "0f 18 0e", "0f 18 16",
             "0f 18 1e", "0f 18 3e", "0f 18 e0", "0f 19 06", "0f 1a 44 24 08", "0f 1b c3",
             "0f 1c 06", "0f 1d 80 00 00 00 00", "0f 1e fa", "66 0f 1f 44 00 00", "67 0f 1f 00"]


@pytest.mark.parametrize("raw", HINT_NOPS)
def test_hint_nops(raw: str):
    """They change nothing but EIP, and read no memory (ESI points where nothing is)."""
    code = bytes.fromhex(raw)
    rnd = random.Random(raw)
    start = Start([0, 1, 2, 3, STACK_TOP, 5, 0x7FF00000, 7], 0x2, rnd.randbytes(DATA_SIZE),
                  rnd.randbytes(STACK_SIZE), rnd.randbytes(LOW_SIZE))
    pair = Pair(code, start)
    pair.step()
    assert pair.cpu.eip == CODE + len(code)


# Faults: both sides must raise the same exception at the same instruction, state untouched.
FAULTS = [
    # raw bytes               assembly                         vector
    ("f7 f3",                 "div ebx",                       0),   # EBX = 0: #DE
    ("f6 fb",                 "idiv bl",                       0),   # AX = 8000h / -1: #DE
    ("66 f7 f3",              "div bx",                        0),   # quotient > FFFFh
    ("0f 0b",                 "ud2",                           6),
    ("f0 01 d8",              "(bad)",                         6),   # lock add eax,ebx: LOCK wants memory
    ("8d c3",                 "(bad)",                         6),   # lea eax,ebx: LEA needs memory
    ("ff f8",                 "(bad)",                         6),   # group 5 /7
    ("fe f0",                 "(bad)",                         6),   # group 4 /6
    ("0f c7 c8",              "(bad)",                         6),   # cmpxchg8b eax: m64 only
    ("f0 0f c7 cb",           "(bad)",                         6),   # lock cmpxchg8b ebx
    ("d4 00",                 "aam 0",                         0),   # #DE, AX kept
    ("62 c3",                 "(bad)",                         6),   # bound eax,ebx: m only
    ("66 62 d8",              "(bad)",                         6),   # bound bx,ax
    ("62 06",                 "bound eax,[esi]",               5),   # 8000h above [0, 0]
    ("66 62 16",              "bound dx,[esi]",                5),   # 2345h above [0, 0]
]


@pytest.mark.parametrize(("raw", "asm", "vector"), FAULTS, ids=[f"{f[1]}:{f[0]}" for f in FAULTS])
def test_fault(raw: str, asm: str, vector: int):
    code = bytes.fromhex(raw)
    assert fmt(disassemble(code, CODE)) == asm
    regs = [0x8000, 0, 0x12345, 0xFF, STACK_TOP, 0, DATA + 0x100, DATA + 0x200]  # BL = -1
    if "ebx" in asm and "div" in asm:
        regs[3] = 0
    pair = Pair(code, Start(regs, 0x8D7))
    assert pair.step() is False
    assert pair.cpu.last_intercept.vector == vector
    assert pair.cpu.eip == CODE


# BOUND on and past each edge of its signed bounds (SDM Vol. 2A BOUND: #BR "if the bounds
# test fails", the index below the lower or above the upper bound, both signed); the upper
# half of a 16-bit index's register does not count. The expected outcome is the SDM's rule
# worked out here; vmsim and unicorn must both give it.
BOUND_EDGES = [
    # index          lower        upper        (size 4, then size 2)
    (4, 5,           5,           5),
    (4, 4,           5,           5),
    (4, 6,           5,           5),
    (4, 0xFFFFFFFF,  0xFFFFFFFF,  0),           # -1 in [-1, 0]
    (4, 0,           0xFFFFFFFF,  0xFFFFFFFF),  # 0 above [-1, -1]
    (4, 0x7FFFFFFF,  0x80000000,  0x7FFFFFFF),  # the whole signed range
    (4, 0x80000000,  0x80000000,  0x7FFFFFFF),
    (4, 0x80000000,  0x80000001,  0x7FFFFFFF),  # below, by one
    (4, 0x7FFFFFFF,  0,           0x7FFFFFFE),  # above, by one
    (4, 0x80000000,  0,           0xFFFFFFFF),  # unsigned, it would be inside
    (4, 3,           4,           2),           # lower above upper: never inside
    (2, 0x7FFF,      0x8000,      0x7FFF),
    (2, 0x8000,      0x8001,      0x7FFF),      # below, by one
    (2, 0x1FFFF,     0xFFFF,      0xFFFF),      # -1 in [-1, -1]: EAX's upper half ignored
    (2, 0xFFFF,      0,           0x7FFF),      # -1 below [0, 7FFFh]
    (2, 0x17FFF,     0,           0x7FFE),      # above, by one
]


@pytest.mark.parametrize(("size", "index", "lower", "upper"), BOUND_EDGES)
def test_bound_edges(size: int, index: int, lower: int, upper: int):
    bits = 8 * size
    outside = not _signed(lower, bits) <= _signed(index, bits) <= _signed(upper, bits)
    code = bytes.fromhex("6207" if size == 4 else "666207")  # bound eax/ax, [edi]
    data = bytearray(DATA_SIZE)
    data[0x200:0x200 + 2 * size] = (lower.to_bytes(size, "little")
                                    + upper.to_bytes(size, "little"))
    regs = [index, 0, 0, 0, STACK_TOP, 0, 0, SRC]
    pair = Pair(code, Start(regs, 0x2, bytes(data)))
    pair.run()
    got = pair.cpu.last_intercept.vector if pair.cpu.eip != pair.end else None
    assert got == (5 if outside else None)
    assert pair.cpu.r == regs and pair.cpu.eip == (CODE if outside else pair.end)
