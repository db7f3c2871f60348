"""The instruction table: every (mnemonic, operand form) -> encoding, in NASM's match order.

One line per form: `mnemonic  operand-specs  encoding`. The first form whose operand
specs match wins, as in NASM's insns.dat, so cheaper forms come first.

Operand specs
  r8 r16 r32      general register of that size      al ax eax cl dx   that register
  rm8 rm16 rm32   register or memory of that size    sreg cr dr        segment/control/debug reg
  m               memory of any (or no) size         mw                memory, no size or word
  mo8 mo16 mo32   memory with a bare offset (moffs)  es cs ss ds fs gs that segment register
  i8 i16 i32      immediate (no size or that size)   i16! s16!         ...that size written out
  s16 s32         immediate that fits a sign-extended byte (NASM's sbyteword/sbytedword)
  one             the constant 1 (shift by one)      ptr ptr16         seg:offset far pointer (`word`: 16)
  short           jump target written `short x`      j8                target a rel8 can reach
  rel             near jump target                   jr8               rel8-only target (loop)
  mfar mfar16     memory written `far [..]`

Encoding tokens
  o16             operand-size prefix 0x66           XX                literal opcode byte
  XX+rN           byte plus register number of operand N
  /r              ModRM, reg = the register operand, rm = the rm/m operand
  /rRM            ModRM with reg from operand R and rm from operand M
  /D              ModRM with digit D in reg, rm = the rm/m (or only) operand
  ib iw id        the next immediate operand         rel8 rel32        jump displacement
  mo              moffs address (4 bytes)            ptr ptr16         offset (4 / 2) then segment (2)
A trailing `!nofuzzy` keeps a form out of NASM's operand-size guessing (movzx/movsx).
"""

from __future__ import annotations

from dataclasses import dataclass

CONDITIONS: dict[str, int] = {
    "o": 0, "no": 1, "b": 2, "c": 2, "nae": 2, "ae": 3, "nb": 3, "nc": 3, "e": 4, "z": 4,
    "ne": 5, "nz": 5, "be": 6, "na": 6, "a": 7, "nbe": 7, "s": 8, "ns": 9, "p": 10, "pe": 10,
    "np": 11, "po": 11, "l": 12, "nge": 12, "ge": 13, "nl": 13, "le": 14, "ng": 14, "g": 15,
    "nle": 15,
}


@dataclass(frozen=True, slots=True)
class Form:
    mnemonic: str
    specs: tuple[str, ...]
    enc: tuple[str, ...]
    nofuzzy: bool = False


_TABLE_TEXT = """
mov al,mo8 a0 mo
mov ax,mo16 o16 a1 mo
mov eax,mo32 a1 mo
mov mo8,al a2 mo
mov mo16,ax o16 a3 mo
mov mo32,eax a3 mo
mov rm8,r8 88 /r
mov rm16,r16 o16 89 /r
mov rm32,r32 89 /r
mov r8,rm8 8a /r
mov r16,rm16 o16 8b /r
mov r32,rm32 8b /r
mov r32,sreg 8c /r
mov r16,sreg o16 8c /r
mov mw,sreg 8c /r
mov sreg,r32 8e /r
mov sreg,r16 8e /r
mov sreg,mw 8e /r
mov r32,cr 0f 20 /r
mov cr,r32 0f 22 /r
mov r32,dr 0f 21 /r
mov dr,r32 0f 23 /r
mov r8,i8 b0+r0 ib
mov r16,i16 o16 b8+r0 iw
mov r32,i32 b8+r0 id
mov rm8,i8 c6 /0 ib
mov rm16,i16 o16 c7 /0 iw
mov rm32,i32 c7 /0 id

test rm8,r8 84 /r
test rm16,r16 o16 85 /r
test rm32,r32 85 /r
test r8,m8 84 /r
test r16,m16 o16 85 /r
test r32,m32 85 /r
test al,i8 a8 ib
test ax,i16 o16 a9 iw
test eax,i32 a9 id
test rm8,i8 f6 /0 ib
test rm16,i16 o16 f7 /0 iw
test rm32,i32 f7 /0 id

xchg ax,r16 o16 90+r1
xchg eax,r32 90+r1
xchg r16,ax o16 90+r0
xchg r32,eax 90+r0
xchg r8,rm8 86 /r
xchg r16,rm16 o16 87 /r
xchg r32,rm32 87 /r
xchg rm8,r8 86 /r
xchg rm16,r16 o16 87 /r
xchg rm32,r32 87 /r

lea r16,m o16 8d /r
lea r32,m 8d /r

movzx r16,rm8 o16 0f b6 /r !nofuzzy
movzx r32,rm8 0f b6 /r !nofuzzy
movzx r16,rm16 o16 0f b7 /r !nofuzzy
movzx r32,rm16 0f b7 /r !nofuzzy
movsx r16,rm8 o16 0f be /r !nofuzzy
movsx r32,rm8 0f be /r !nofuzzy
movsx r16,rm16 o16 0f bf /r !nofuzzy
movsx r32,rm16 0f bf /r !nofuzzy

push r16 o16 50+r0
push r32 50+r0
push rm16 o16 ff /6
push rm32 ff /6
push es 06
push cs 0e
push ss 16
push ds 1e
push fs 0f a0
push gs 0f a8
push s32 6a ib
push s16! o16 6a ib
push i32 68 id
push i16! o16 68 iw
pop r16 o16 58+r0
pop r32 58+r0
pop rm16 o16 8f /0
pop rm32 8f /0
pop es 07
pop ss 17
pop ds 1f
pop fs 0f a1
pop gs 0f a9

pusha 60
pushad 60
pushaw o16 60
popa 61
popad 61
popaw o16 61
pushf 9c
pushfd 9c
pushfw o16 9c
popf 9d
popfd 9d
popfw o16 9d
cbw o16 98
cwde 98
cwd o16 99
cdq 99
leave c9
enter i16,i8 c8 iw ib
sahf 9e
lahf 9f
xlatb d7

inc r16 o16 40+r0
inc r32 40+r0
inc rm8 fe /0
inc rm16 o16 ff /0
inc rm32 ff /0
dec r16 o16 48+r0
dec r32 48+r0
dec rm8 fe /1
dec rm16 o16 ff /1
dec rm32 ff /1

imul r16,rm16 o16 0f af /r
imul r32,rm32 0f af /r
imul r16,rm16,s16 o16 6b /r ib
imul r16,rm16,i16 o16 69 /r iw
imul r32,rm32,s32 6b /r ib
imul r32,rm32,i32 69 /r id
imul r16,s16 o16 6b /r00 ib
imul r16,i16 o16 69 /r00 iw
imul r32,s32 6b /r00 ib
imul r32,i32 69 /r00 id

bsf r16,rm16 o16 0f bc /r
bsf r32,rm32 0f bc /r
bsr r16,rm16 o16 0f bd /r
bsr r32,rm32 0f bd /r
bswap r32 0f c8+r0
shld rm16,r16,i8 o16 0f a4 /r ib
shld rm32,r32,i8 0f a4 /r ib
shld rm16,r16,cl o16 0f a5 /r
shld rm32,r32,cl 0f a5 /r
shrd rm16,r16,i8 o16 0f ac /r ib
shrd rm32,r32,i8 0f ac /r ib
shrd rm16,r16,cl o16 0f ad /r
shrd rm32,r32,cl 0f ad /r
cmpxchg rm8,r8 0f b0 /r
cmpxchg rm16,r16 o16 0f b1 /r
cmpxchg rm32,r32 0f b1 /r
xadd rm8,r8 0f c0 /r
xadd rm16,r16 o16 0f c1 /r
xadd rm32,r32 0f c1 /r

jmp short eb rel8
jmp j8 eb rel8
jmp rel e9 rel32
jmp rm16 o16 ff /4
jmp rm32 ff /4
jmp m ff /4
jmp ptr ea ptr
jmp ptr16 o16 ea ptr16
jmp mfar ff /5
jmp mfar16 o16 ff /5
call rel e8 rel32
call rm16 o16 ff /2
call rm32 ff /2
call m ff /2
call ptr 9a ptr
call ptr16 o16 9a ptr16
call mfar ff /3
call mfar16 o16 ff /3
jecxz jr8 e3 rel8
loop jr8 e2 rel8
loope jr8 e1 rel8
loopz jr8 e1 rel8
loopne jr8 e0 rel8
loopnz jr8 e0 rel8

ret c3
ret i16 c2 iw
retn c3
retn i16 c2 iw
retf cb
retf i16 ca iw
retfw o16 cb
retfw i16 o16 ca iw
retfd cb
retfd i16 ca iw
int i8 cd ib
int3 cc
int1 f1
icebp f1
into ce
iret cf
iretd cf
iretw o16 cf

movsb a4
movsw o16 a5
movsd a5
cmpsb a6
cmpsw o16 a7
cmpsd a7
stosb aa
stosw o16 ab
stosd ab
lodsb ac
lodsw o16 ad
lodsd ad
scasb ae
scasw o16 af
scasd af
insb 6c
insw o16 6d
insd 6d
outsb 6e
outsw o16 6f
outsd 6f

in al,i8 e4 ib
in ax,i8 o16 e5 ib
in eax,i8 e5 ib
in al,dx ec
in ax,dx o16 ed
in eax,dx ed
out i8,al e6 ib
out i8,ax o16 e7 ib
out i8,eax e7 ib
out dx,al ee
out dx,ax o16 ef
out dx,eax ef

clc f8
stc f9
cmc f5
cld fc
std fd
cli fa
sti fb
nop 90
pause f3 90
hlt f4
wait 9b
fwait 9b

lgdt m 0f 01 /2
lidt m 0f 01 /3
sgdt m 0f 01 /0
sidt m 0f 01 /1
lldt rm16 0f 00 /2
ltr rm16 0f 00 /3
sldt r16 o16 0f 00 /0
sldt r32 0f 00 /0
sldt mw 0f 00 /0
str r16 o16 0f 00 /1
str r32 0f 00 /1
str mw 0f 00 /1
lmsw rm16 0f 01 /6
smsw r16 o16 0f 01 /4
smsw r32 0f 01 /4
smsw mw 0f 01 /4
invlpg m 0f 01 /7
cpuid 0f a2
rdmsr 0f 32
wrmsr 0f 30
rdtsc 0f 31
rdpmc 0f 33
vmcall 0f 01 c1
vmlaunch 0f 01 c2
vmresume 0f 01 c3
vmxoff 0f 01 c4
ud2 0f 0b
clts 0f 06
invd 0f 08
wbinvd 0f 09
jcxz jr8 67 e3 rel8
xlat d7
sysenter 0f 34
sysexit 0f 35
rdtscp 0f 01 f9
rsm 0f aa
cmpxchg8b m 0f c7 /1
nop rm16 o16 0f 1f /0
nop rm32 0f 1f /0
aaa 37
aas 3f
daa 27
das 2f
aam d4 0a
aam i8 d4 ib
aad d5 0a
aad i8 d5 ib
salc d6
bound r16,m o16 62 /r
bound r32,m 62 /r
les r16,m o16 c4 /r
les r32,m c4 /r
lds r16,m o16 c5 /r
lds r32,m c5 /r
lss r16,m o16 0f b2 /r
lss r32,m 0f b2 /r
lfs r16,m o16 0f b4 /r
lfs r32,m 0f b4 /r
lgs r16,m o16 0f b5 /r
lgs r32,m 0f b5 /r
lar r16,rm16 o16 0f 02 /r
lar r32,rm32 0f 02 /r
lar r32,m 0f 02 /r
lsl r16,rm16 o16 0f 03 /r
lsl r32,rm32 0f 03 /r
lsl r32,m 0f 03 /r
verr rm16 0f 00 /4
verw rm16 0f 00 /5
"""

_ALU = ("add", "or", "adc", "sbb", "and", "sub", "xor", "cmp")
_SHIFTS = {"rol": 0, "ror": 1, "rcl": 2, "rcr": 3, "shl": 4, "sal": 4, "shr": 5, "sar": 7}
_UNARY = {"not": 2, "neg": 3, "mul": 4, "imul": 5, "div": 6, "idiv": 7}
_BITS = {"bt": (0xA3, 4), "bts": (0xAB, 5), "btr": (0xB3, 6), "btc": (0xBB, 7)}


def _generated() -> list[str]:
    lines: list[str] = []
    for n, m in enumerate(_ALU):
        b = 8 * n
        lines += [
            f"{m} rm8,r8 {b:02x} /r", f"{m} rm16,r16 o16 {b + 1:02x} /r",
            f"{m} rm32,r32 {b + 1:02x} /r", f"{m} r8,rm8 {b + 2:02x} /r",
            f"{m} r16,rm16 o16 {b + 3:02x} /r", f"{m} r32,rm32 {b + 3:02x} /r",
            f"{m} al,i8 {b + 4:02x} ib", f"{m} ax,s16 o16 83 /{n} ib",
            f"{m} ax,i16 o16 {b + 5:02x} iw", f"{m} eax,s32 83 /{n} ib",
            f"{m} eax,i32 {b + 5:02x} id", f"{m} rm8,i8 80 /{n} ib",
            f"{m} rm16,s16 o16 83 /{n} ib", f"{m} rm16,i16 o16 81 /{n} iw",
            f"{m} rm32,s32 83 /{n} ib", f"{m} rm32,i32 81 /{n} id",
        ]
    for m, d in _SHIFTS.items():
        lines += [
            f"{m} rm8,one d0 /{d}", f"{m} rm8,cl d2 /{d}", f"{m} rm8,i8 c0 /{d} ib",
            f"{m} rm16,one o16 d1 /{d}", f"{m} rm16,cl o16 d3 /{d}",
            f"{m} rm16,i8 o16 c1 /{d} ib",
            f"{m} rm32,one d1 /{d}", f"{m} rm32,cl d3 /{d}", f"{m} rm32,i8 c1 /{d} ib",
        ]
    for m, d in _UNARY.items():
        lines += [f"{m} rm8 f6 /{d}", f"{m} rm16 o16 f7 /{d}", f"{m} rm32 f7 /{d}"]
    for m, (op, d) in _BITS.items():
        lines += [
            f"{m} rm16,r16 o16 0f {op:02x} /r", f"{m} rm32,r32 0f {op:02x} /r",
            f"{m} rm16,i8 o16 0f ba /{d} ib", f"{m} rm32,i8 0f ba /{d} ib",
        ]
    for cc, c in CONDITIONS.items():
        lines += [
            f"j{cc} short {0x70 + c:02x} rel8", f"j{cc} j8 {0x70 + c:02x} rel8",
            f"j{cc} rel 0f {0x80 + c:02x} rel32",
            f"cmov{cc} r16,rm16 o16 0f {0x40 + c:02x} /r",
            f"cmov{cc} r32,rm32 0f {0x40 + c:02x} /r",
            f"set{cc} rm8 0f {0x90 + c:02x} /0",
        ]
    return lines


def _build() -> dict[str, list[Form]]:
    table: dict[str, list[Form]] = {}
    # Generated single-operand IMUL must precede the 2/3-operand ones written in the text.
    text_lines = _generated() + _TABLE_TEXT.strip().splitlines()
    for line in text_lines:
        parts = line.split()
        if not parts:
            continue
        nofuzzy = parts[-1] == "!nofuzzy"
        if nofuzzy:
            parts = parts[:-1]
        mnemonic = parts[0]
        rest = parts[1:]
        specs: tuple[str, ...] = ()
        if rest and not _is_encoding(rest[0]):
            specs = tuple(rest[0].split(","))
            rest = rest[1:]
        table.setdefault(mnemonic, []).append(Form(mnemonic, specs, tuple(rest), nofuzzy))
    return table


def _is_encoding(word: str) -> bool:
    if word == "o16":
        return True
    try:
        int(word.split("+")[0], 16)
    except ValueError:
        return False
    return len(word.split("+")[0]) == 2


FORMS: dict[str, list[Form]] = _build()
PREFIXES: dict[str, int] = {
    "rep": 0xF3, "repe": 0xF3, "repz": 0xF3, "repne": 0xF2, "repnz": 0xF2, "lock": 0xF0,
    "o16": 0x66,  # the operand-size prefix, on any instruction (`o16 retf`: 66 CB)
}
