"""Random instruction sequences from vmsim's integer subset, built with iced-x86's encoder.

Every legacy encoding iced-x86 knows for a subset mnemonic in 32-bit mode is a candidate
(`FORMS`), so each operand size, the short accumulator forms, the 0x82 and D0 /6 aliases
and every ModRM/SIB addressing form are reached without a hand-written grammar. A form's
operands are drawn per operand kind; a memory operand gets `mov reg, imm32` set-up
instructions before it that make its effective address land in the data window, whatever
mix of base, index, scale and disp8/disp32 (including address arithmetic that wraps at
4 GiB) it uses.

A program is a list of items: iced `Instruction`s, labels, and label references (forward
branches, `call` into a subroutine, `mov reg, label` for indirect jumps). `assemble()` lays
it out in two passes; every form has a fixed length, so the second pass only fills in the
label addresses.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import iced_x86
from hypothesis import strategies as st
from iced_x86 import Code, Instruction, MemoryOperand, Register
from iced_x86 import OpCodeOperandKind as K

from tests.diff.harness import (
    CODE,
    DATA,
    DATA_SIZE,
    LOW_SIZE,
    STACK_SIZE,
    STACK_TOP,
    Start,
    fmt,
)

Mn = iced_x86.Mnemonic
GPR32 = [Register.EAX, Register.ECX, Register.EDX, Register.EBX, Register.ESP, Register.EBP,
         Register.ESI, Register.EDI]
GPR16 = [Register.AX, Register.CX, Register.DX, Register.BX, Register.SP, Register.BP,
         Register.SI, Register.DI]
GPR8 = [Register.AL, Register.CL, Register.DL, Register.BL, Register.AH, Register.CH,
        Register.DH, Register.BH]
NO_ESP32 = [r for r in GPR32 if r != Register.ESP]

INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
               0x80000000, 0x80000001, 0xFFFFFFFE, 0xFFFFFFFF)

_SUBSET = ("MOV MOVZX MOVSX LEA XCHG PUSH POP PUSHAD POPAD PUSHA POPA PUSHFD PUSHF CBW CWDE "
           "CWD CDQ BT BTS BTR BTC ADD ADC SUB SBB CMP INC DEC NEG MUL IMUL DIV IDIV AND OR XOR NOT TEST "
           "XADD CMPXCHG BSF BSR BSWAP "
           "SHL SAL SHR SAR ROL ROR RCL RCR SHLD SHRD CLC STC CMC CLD STD NOP "
           "DAA DAS AAA AAS AAM AAD SALC").split()
# Kinds a plain (straight-line) form may have.
_PLAIN_KINDS = {K.R8_REG, K.R8_OPCODE, K.R16_REG, K.R16_OPCODE, K.R32_REG, K.R32_OPCODE,
                K.R8_OR_MEM, K.R16_OR_MEM, K.R32_OR_MEM, K.MEM, K.MEM_OFFS, K.AL, K.AX, K.EAX,
                K.CL, K.IMM8, K.IMM16, K.IMM32, K.IMM8SEX16, K.IMM8SEX32, K.IMM8_CONST_1}
# Written by the form but not named by it as writable in a useful way: ESP stays the stack.
_READ_ONLY_OP0 = {Mn.CMP, Mn.TEST, Mn.BT, Mn.PUSH}


def _codes() -> list[int]:
    return [getattr(Code, n) for n in dir(Code) if n.isupper()]


def _plain_forms() -> list[int]:
    names = {getattr(Mn, n) for n in _SUBSET} | {
        getattr(Mn, n) for n in dir(Mn) if n.startswith(("CMOV", "SET")) and n.isupper()}
    out = []
    for c in _codes():
        oc = iced_x86.OpCodeInfo(c)
        if not oc.mode32 or oc.encoding != iced_x86.EncodingKind.LEGACY or oc.mnemonic not in names:
            continue
        kinds = [oc.op_kind(i) for i in range(oc.op_count)]
        if not all(k in _PLAIN_KINDS for k in kinds):
            continue
        if oc.mnemonic in (Mn.SETSSBSY,) or (K.MEM in kinds and oc.mnemonic != Mn.LEA):
            continue
        if oc.mnemonic == Mn.POP and kinds[0] != K.R32_OR_MEM and kinds[0] != K.R16_OR_MEM \
                and kinds[0] not in (K.R32_OPCODE, K.R16_OPCODE):
            continue
        if c in _UNICORN_UD:
            continue
        out.append(c)
    return out


# Group 3 /1 (F6 /1, F7 /1) executes as TEST on Intel and AMD CPUs (iced-x86 decodes it so;
# the SDM's opcode map leaves the slot blank), but unicorn (QEMU TCG) raises #UD for it.
# Not a vmsim bug either way, so these aliases are not generated.
_UNICORN_UD = {Code.TEST_RM8_IMM8_F6R1, Code.TEST_RM16_IMM16_F7R1, Code.TEST_RM32_IMM32_F7R1}


FORMS = _plain_forms()
random.Random(0).shuffle(FORMS)  # hypothesis favours early choices: spread that favour
_CODE_NAMES = {getattr(Code, n): n for n in dir(Code) if n.isupper()}
BRANCH_FORMS = sorted(c for c, n in _CODE_NAMES.items()
                      if (n.startswith("J") and n.endswith(("_REL8_32", "_REL32_32"))
                          and not n.startswith("JMPE"))
                      or n in ("LOOP_REL8_32_ECX", "LOOPE_REL8_32_ECX", "LOOPNE_REL8_32_ECX",
                               "LOOP_REL8_32_CX", "LOOPE_REL8_32_CX", "LOOPNE_REL8_32_CX",
                               "JECXZ_REL8_32", "JCXZ_REL8_32"))
DIV_FORMS = [c for c in FORMS if iced_x86.OpCodeInfo(c).mnemonic in (Mn.DIV, Mn.IDIV)]
PLAIN_FORMS = [c for c in FORMS if c not in DIV_FORMS]
_STACK = {Mn.PUSH, Mn.POP, Mn.PUSHA, Mn.PUSHAD, Mn.POPA, Mn.POPAD, Mn.PUSHF, Mn.PUSHFD}
# For a subroutine's body: the return address on the stack must survive.
NO_STACK_FORMS = [c for c in PLAIN_FORMS if iced_x86.OpCodeInfo(c).mnemonic not in _STACK]


@dataclass(frozen=True)
class Label:
    name: int


@dataclass(frozen=True)
class Ref:
    """An instruction whose branch target or imm32 is a label's address (filled in later)."""

    ins: Instruction
    label: int
    how: str  # "branch", "imm" (operand 1 immediate), "mem_imm"


Item = Instruction | Label | Ref
_LABELS = itertools.count()  # label names only need to be distinct


def assemble(items: list[Item]) -> bytes:
    """Lay `items` out at CODE (two passes: lengths first, then label addresses)."""
    addrs: dict[int, int] = {}
    for pass_ in (0, 1):
        out = bytearray()
        for it in items:
            ip = CODE + len(out)
            if isinstance(it, Label):
                addrs[it.name] = ip
                continue
            ins = it.ins if isinstance(it, Ref) else it
            if isinstance(it, Ref):
                target = addrs.get(it.label, ip) if pass_ else ip + 6
                ins = _with_target(it, target)
            enc = iced_x86.Encoder(32)
            enc.encode(ins, ip)
            out += enc.take_buffer()
    return bytes(out)


def _with_target(ref: Ref, target: int) -> Instruction:
    ins = ref.ins
    if ref.how == "branch":
        return Instruction.create_branch(ins.code, target)
    if ref.how == "imm":
        return Instruction.create_reg_u32(ins.code, ins.op0_register, target)
    # mov dword [mem], imm32
    mem = MemoryOperand(ins.memory_base, ins.memory_index, ins.memory_index_scale,
                        _sext(ins.memory_displacement, 32), ins.memory_displ_size)
    return Instruction.create_mem_u32(ins.code, mem, target)


# -- strategies ------------------------------------------------------------------------------

def u32() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(INTERESTING), st.integers(0, 0xFFFFFFFF))


def _imm(draw, bits: int) -> int:
    v = draw(u32())
    return v & ((1 << bits) - 1)


def mov_imm(reg: Register, value: int) -> Instruction:
    return Instruction.create_reg_u32(Code.MOV_R32_IMM32, reg, value & 0xFFFFFFFF)


@st.composite
def memory_operand(draw, setup: list[Item], avoid: tuple[Register, ...] = (),
                   margin: int = 0x1000, no_stack: bool = False) -> MemoryOperand:
    """A ModRM/SIB operand whose address is in the data (or, via ESP, the stack) window."""
    forms = ["base", "base_d8", "base_d32", "sib", "sib_d8", "sib_d32", "index_d32", "abs",
             "wrap", "addr16"]
    if not no_stack:  # a subroutine's body must not write over its return address
        forms += ["esp", "esp_sib"]
    form = draw(st.sampled_from(forms))
    if form in ("esp", "esp_sib"):
        disp = draw(st.integers(-0x40, 0x3C))
        if form == "esp":
            return MemoryOperand(Register.ESP, displ=disp, displ_size=1)
        index = draw(st.sampled_from([r for r in NO_ESP32 if r not in avoid]))
        iv = draw(st.integers(-8, 8))
        setup.append(mov_imm(index, iv))
        return MemoryOperand(Register.ESP, index, 1, disp, 1)
    if form == "addr16":
        # 0x67: [bx|bp + si|di + disp8/16], wrapping at 64 KiB into the low window; the
        # registers' upper halves must not matter.
        pair = draw(st.sampled_from(_ADDR16))
        pair = tuple(r for r in pair if _full(r) not in avoid)
        disp, size = draw(st.sampled_from(((0, 0), (1, 1), (-1, 1), (0x7FFF, 2), (0xFFFF, 2),
                                           (0x1234, 2))))
        for r in pair:
            setup.append(mov_imm(_full(r), draw(u32())))
        if not pair:
            return MemoryOperand(displ=draw(st.integers(0, 0xFFFC)), displ_size=2)
        if size == 0 and pair == (Register.BP,):
            size = 1
        return MemoryOperand(pair[0], pair[1] if len(pair) > 1 else Register.NONE,
                             displ=_sext(disp, 16) if size == 2 else disp, displ_size=size)
    if draw(st.integers(0, 3)):
        target = DATA + draw(st.integers(margin, DATA_SIZE - margin))
    else:  # an access that may straddle a page (vmsim splits those at the page)
        page = draw(st.integers(margin // 0x1000 + 1, (DATA_SIZE - margin) // 0x1000))
        target = DATA + page * 0x1000 - draw(st.integers(1, 3))
    if form == "abs":
        return MemoryOperand(displ=target, displ_size=4)
    regs = [r for r in NO_ESP32 if r not in avoid]
    base = draw(st.sampled_from(regs))
    disp, size = 0, 0
    if form.endswith("d8"):
        disp, size = draw(st.integers(-128, 127)), 1
    elif form.endswith("d32") or form == "wrap":
        disp, size = draw(st.one_of(st.integers(-0x800, 0x800), u32())), 4
    if form == "index_d32":
        index, scale = base, draw(st.sampled_from((1, 2, 4, 8)))
        iv = draw(st.integers(0, 0x200))
        setup.append(mov_imm(index, iv))
        return MemoryOperand(Register.NONE, index, scale, (target - iv * scale) & 0xFFFFFFFF, 4)
    if form.startswith("sib"):
        index = draw(st.sampled_from([r for r in regs if r != base]))
        scale = draw(st.sampled_from((1, 2, 4, 8)))
        iv = draw(st.integers(-0x100, 0x100))
        setup.append(mov_imm(index, iv))
        setup.append(mov_imm(base, target - disp - iv * scale))
        return MemoryOperand(base, index, scale, disp, size)
    setup.append(mov_imm(base, target - disp))
    return MemoryOperand(base, displ=disp, displ_size=size)


_ADDR16 = ((Register.BX, Register.SI), (Register.BX, Register.DI), (Register.BP, Register.SI),
           (Register.BP, Register.DI), (Register.SI,), (Register.DI,), (Register.BP,),
           (Register.BX,))
_REG_LISTS = {K.R8_REG: GPR8, K.R8_OPCODE: GPR8, K.R8_OR_MEM: GPR8,
              K.R16_REG: GPR16, K.R16_OPCODE: GPR16, K.R16_OR_MEM: GPR16,
              K.R32_REG: GPR32, K.R32_OPCODE: GPR32, K.R32_OR_MEM: GPR32}
_FIXED = {K.AL: Register.AL, K.AX: Register.AX, K.EAX: Register.EAX, K.CL: Register.CL}
_IMM_BITS = {K.IMM8: 8, K.IMM16: 16, K.IMM32: 32, K.IMM8SEX16: 8, K.IMM8SEX32: 8}


def _create(code: int, ops: list) -> Instruction:
    sig = "".join(k for k, _ in ops)
    vals = [v for _, v in ops]
    fn = {"": Instruction.create, "r": Instruction.create_reg, "m": Instruction.create_mem,
          "rr": Instruction.create_reg_reg, "rm": Instruction.create_reg_mem,
          "mr": Instruction.create_mem_reg, "ri": Instruction.create_reg_i32,
          "mi": Instruction.create_mem_i32, "i": Instruction.create_i32,
          "rri": Instruction.create_reg_reg_i32, "rmi": Instruction.create_reg_mem_i32,
          "mri": Instruction.create_mem_reg_i32, "rrr": Instruction.create_reg_reg_reg,
          "mrr": Instruction.create_mem_reg_reg}[sig]
    return fn(code, *vals)


def _sext(v: int, bits: int) -> int:
    s = 1 << (bits - 1)
    return ((v & ((1 << bits) - 1)) ^ s) - s


@st.composite
def plain(draw, forms: list[int] | None = None, no_stack: bool = False,
          keep: tuple[Register, ...] = ()) -> list[Item]:
    """One straight-line instruction with its set-up."""
    code = draw(st.sampled_from(forms or (NO_STACK_FORMS if no_stack else PLAIN_FORMS)))
    oc = iced_x86.OpCodeInfo(code)
    m = oc.mnemonic
    setup: list[Item] = []
    ops: list = []
    used: list[Register] = []
    kinds = [oc.op_kind(i) for i in range(oc.op_count)]
    use_mem = [k in (K.R8_OR_MEM, K.R16_OR_MEM, K.R32_OR_MEM) and draw(st.booleans())
               for k in kinds]
    bit_string = m in (Mn.BT, Mn.BTS, Mn.BTR, Mn.BTC) and use_mem[0] and kinds[1] != K.IMM8
    # SHLD/SHRD of 16 bits by more than 16: result and flags undefined (SDM), and QEMU's
    # choice is not every processor's (see arith.shxd_Ev_Gv): counts kept to 0..16.
    short_shxd = m in (Mn.SHLD, Mn.SHRD) and kinds[0] == K.R16_OR_MEM
    # The register operands first (a memory operand's set-up must not clobber them).
    regs: list[Register | None] = []
    for i, k in enumerate(kinds):
        if k in _REG_LISTS and not use_mem[i]:
            choices = _REG_LISTS[k]
            writes_it = (i == 0 and m not in _READ_ONLY_OP0) or m in (Mn.XCHG, Mn.XADD)
            if writes_it or no_stack or bit_string:
                choices = [r for r in choices if r not in (Register.ESP, Register.SP)]
            r = draw(st.sampled_from(choices))
            regs.append(r)
            used.append(r)
        else:
            regs.append(None)
    for i, k in enumerate(kinds):
        if regs[i] is not None:
            ops.append(("r", regs[i]))
        elif k in _FIXED:
            ops.append(("r", _FIXED[k]))
        elif use_mem[i] or k == K.MEM:
            avoid = tuple(_full(r) for r in used) + keep
            if short_shxd and K.CL in kinds:
                avoid += (Register.ECX,)  # the count is set after the operand's set-up
            if k == K.MEM:  # LEA: any address arithmetic, no access
                setup_lea: list[Item] = []
                mem = draw(memory_operand(setup_lea, avoid))
                if draw(st.booleans()):
                    setup += setup_lea
                ops.append(("m", mem))
            else:
                mem = draw(memory_operand(setup, avoid, 0x1800 if bit_string else 0x100,
                                          no_stack))
                ops.append(("m", mem))
        elif k == K.MEM_OFFS:
            addr = DATA + draw(st.integers(0, DATA_SIZE - 4))
            ops.append(("m", MemoryOperand(displ=addr, displ_size=4)))
        elif k == K.IMM8_CONST_1:
            ops.append(("i", 1))
        elif k in _IMM_BITS:
            bits = _IMM_BITS[k]
            v = _imm(draw, bits)
            if short_shxd:
                v = (v & 0xE0) | draw(st.integers(0, 16))  # masked to 5 bits: 0..16
            if m == Mn.AAM and v == 0 and draw(st.integers(0, 7)):
                v = draw(st.integers(1, 0xFF))  # AAM 0 is #DE: now and then only
            # iced's create_*_i32 takes the value the form sign-extends, and an i32.
            ops.append(("i", _sext(v, bits) if k in (K.IMM8SEX16, K.IMM8SEX32, K.IMM32) else v))
        else:
            raise AssertionError(k)
    if bit_string:
        # BT m, r: the bit offset is signed and reaches +-0x1000 bytes around the operand.
        off_reg = _full(regs[1])
        setup.append(mov_imm(off_reg, draw(st.integers(-0x7FFF, 0x7FFF))))
    if short_shxd and K.CL in kinds:
        count = (draw(st.integers(0, 7)) << 5) | draw(st.integers(0, 16))
        setup.append(Instruction.create_reg_u32(Code.MOV_R8_IMM8, Register.CL, count))
    return [*setup, _create(code, ops)]


def _full(r: Register) -> Register:
    """The 32-bit register containing `r`."""
    if r in GPR32:
        return r
    if r in GPR16:
        return GPR32[GPR16.index(r)]
    return GPR32[GPR8.index(r) % 4]


# -- units: a plain instruction, or a small structure around one -----------------------------

@st.composite
def branch_unit(draw, depth: int) -> list[Item]:
    """A forward branch over the next few units (`depth` of them, each straight-line)."""
    code = draw(st.sampled_from(BRANCH_FORMS))
    label = next(_LABELS)
    body: list[Item] = []
    for _ in range(depth):
        body += draw(plain())
    setup: list[Item] = []
    if _CODE_NAMES[code].startswith(("LOOP", "JECXZ", "JCXZ")) and draw(st.booleans()):
        setup.append(mov_imm(Register.ECX, draw(st.sampled_from((0, 1, 2, 0x10000, 0x10001)))))
    short = "_REL8_" in _CODE_NAMES[code]
    if short and len(assemble(body)) > 100:
        body = body[-2:]
    return [*setup, Ref(Instruction.create_branch(code, CODE), label, "branch"), *body,
            Label(label)]


@st.composite
def call_unit(draw) -> list[Item]:
    """call sub / jmp over / sub: straight-line code, ret [imm16] / over:"""
    sub, over = next(_LABELS), next(_LABELS)
    items: list[Item] = []
    how = draw(st.sampled_from(("rel", "reg", "mem")))
    if how == "rel":
        items.append(Ref(Instruction.create_branch(Code.CALL_REL32_32, CODE), sub, "branch"))
    elif how == "reg":
        r = draw(st.sampled_from(NO_ESP32))
        items.append(Ref(mov_imm(r, 0), sub, "imm"))
        items.append(Instruction.create_reg(Code.CALL_RM32, r))
    else:
        setup: list[Item] = []
        mem = draw(memory_operand(setup, margin=0x100, no_stack=True))
        items += setup
        items.append(Ref(Instruction.create_mem_u32(Code.MOV_RM32_IMM32, mem, 0), sub, "mem_imm"))
        items.append(Instruction.create_mem(Code.CALL_RM32, mem))
    jmp = draw(st.sampled_from(("rel8", "rel32", "reg", "mem")))
    if jmp == "reg":
        r = draw(st.sampled_from(NO_ESP32))
        items.append(Ref(mov_imm(r, 0), over, "imm"))
        items.append(Instruction.create_reg(Code.JMP_RM32, r))
    elif jmp == "mem":
        setup = []
        mem = draw(memory_operand(setup, margin=0x100, no_stack=True))
        items += setup
        items.append(Ref(Instruction.create_mem_u32(Code.MOV_RM32_IMM32, mem, 0), over,
                         "mem_imm"))
        items.append(Instruction.create_mem(Code.JMP_RM32, mem))
    else:
        code = Code.JMP_REL8_32 if jmp == "rel8" else Code.JMP_REL32_32
        items.append(Ref(Instruction.create_branch(code, CODE), over, "branch"))
    body_start = len(items)
    items.append(Label(sub))
    for _ in range(draw(st.integers(0, 2))):
        items += draw(plain(no_stack=True))
    if jmp == "rel8" and len(assemble(items[body_start:])) > 100:
        items = items[:body_start + 1]
    if draw(st.booleans()):
        items.append(Instruction.create(Code.RETND))
    else:
        items.append(Instruction.create_i32(Code.RETND_IMM16, draw(st.sampled_from((0, 2, 4, 8,
                                                                                   0x10)))))
    items.append(Label(over))
    return items


@st.composite
def loop_unit(draw) -> list[Item]:
    """A backward LOOP whose count lives in memory, so the body may do what it likes to
    ECX: mov [K], n / top: body / mov ecx, [K] / dec dword [K] / loop top"""
    top = next(_LABELS)
    k = MemoryOperand(displ=DATA, displ_size=4)  # below every generated operand's margin
    items: list[Item] = [Instruction.create_mem_u32(Code.MOV_RM32_IMM32, k, draw(st.integers(1, 4))),
                         Label(top)]
    for _ in range(draw(st.integers(1, 3))):
        items += draw(plain())
    if len(assemble(items[1:])) > 100:
        items = items[:3]
    items += [Instruction.create_reg_mem(Code.MOV_R32_RM32, Register.ECX, k),
              Instruction.create_mem(Code.DEC_RM32, k),
              Ref(Instruction.create_branch(Code.LOOP_REL8_32_ECX, CODE), top, "branch")]
    return items


_STRING = {
    "movs": (Instruction.create_movsb, Instruction.create_movsw, Instruction.create_movsd),
    "stos": (Instruction.create_stosb, Instruction.create_stosw, Instruction.create_stosd),
    "lods": (Instruction.create_lodsb, Instruction.create_lodsw, Instruction.create_lodsd),
    "cmps": (Instruction.create_cmpsb, Instruction.create_cmpsw, Instruction.create_cmpsd),
    "scas": (Instruction.create_scasb, Instruction.create_scasw, Instruction.create_scasd),
}


@st.composite
def string_unit(draw) -> list[Item]:
    name = draw(st.sampled_from(sorted(_STRING)))
    size = draw(st.sampled_from((0, 1, 2)))
    reps = [iced_x86.RepPrefixKind.NONE, iced_x86.RepPrefixKind.REPE]
    if name in ("cmps", "scas"):
        reps.append(iced_x86.RepPrefixKind.REPNE)
    rep = draw(st.sampled_from(reps))
    a16 = draw(st.integers(0, 3)) == 0
    if a16:
        # A 16-bit address size (0x67): SI, DI and CX in the low window, anywhere in 64 KiB
        # (wrapping at its ends), the registers' upper halves anything (they must stay).
        def upper() -> int:
            return draw(st.integers(0, 0xFFFF)) << 16
        items: list[Item] = [
            mov_imm(Register.ESI, upper() | draw(st.integers(0, 0xFFFF))),
            mov_imm(Register.EDI, upper() | draw(st.integers(0, 0xFFFF))),
            mov_imm(Register.ECX, upper() | draw(st.integers(0, 6))),
        ]
    else:
        items = [
            mov_imm(Register.ESI, DATA + draw(st.integers(0x100, DATA_SIZE - 0x100))),
            mov_imm(Register.EDI, DATA + draw(st.integers(0x100, DATA_SIZE - 0x100))),
            mov_imm(Register.ECX, draw(st.integers(0, 6))),
        ]
    if draw(st.booleans()):
        items.append(Instruction.create(draw(st.sampled_from((Code.STD, Code.CLD)))))
    if name == "cmps" and draw(st.booleans()):
        items.append(mov_imm(Register.EDI, items[0].immediate32))  # compare equal bytes
    items.append(_STRING[name][size](16 if a16 else 32, rep_prefix=rep))
    return items


@st.composite
def div_unit(draw) -> list[Item]:
    body = draw(plain(DIV_FORMS, keep=(Register.EAX, Register.EDX)))
    ins = body[-1]
    signed = ins.mnemonic == Mn.IDIV
    k = iced_x86.OpCodeInfo(ins.code).op_kind(0)
    bits = 8 if k == K.R8_OR_MEM else 16 if k == K.R16_OR_MEM else 32
    if draw(st.integers(0, 7)):  # mostly a dividend that fits: no #DE
        setup: list[Item] = []
        if signed:
            setup.append(Instruction.create({8: Code.CBW, 16: Code.CWD, 32: Code.CDQ}[bits]))
        elif bits == 8:
            setup.append(Instruction.create_reg_u32(Code.MOV_R8_IMM8, Register.AH, 0))
        else:
            setup.append(mov_imm(Register.EDX, 0))
        return [*body[:-1], *setup, ins]
    return body


@st.composite
def popf_unit(draw) -> list[Item]:
    wide = draw(st.booleans())
    v = draw(u32()) & ~TF_BIT
    if wide:
        return [Instruction.create_i32(Code.PUSHD_IMM32, _sext(v, 32)),
                Instruction.create(Code.POPFD)]
    return [Instruction.create_i32(Code.PUSH_IMM16, v & 0xFFFF), Instruction.create(Code.POPFW)]


TF_BIT = 0x100


@st.composite
def leave_unit(draw) -> list[Item]:
    ebp = STACK_TOP + draw(st.integers(-0x100, 0x100)) * 4
    return [mov_imm(Register.EBP, ebp),
            Instruction.create(draw(st.sampled_from((Code.LEAVED, Code.LEAVEW))))]


@st.composite
def cmpxchg8b_unit(draw) -> list[Item]:
    """CMPXCHG8B on any memory operand (its set-up leaves EAX EBX ECX EDX alone), once or
    twice in a row: the first mostly differs and loads EDX:EAX, the second then stores."""
    setup: list[Item] = []
    mem = draw(memory_operand(setup, (Register.EAX, Register.EBX, Register.ECX, Register.EDX),
                              margin=0x100))
    items = list(setup)
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            items.append(mov_imm(draw(st.sampled_from((Register.EBX, Register.ECX))), draw(u32())))
        ins = Instruction.create_mem(Code.CMPXCHG8B_M64, mem)
        ins.has_lock_prefix = draw(st.booleans())
        items.append(ins)
    return items


@st.composite
def xlat_unit(draw) -> list[Item]:
    """XLATB with EBX in the data window, or with 0x67 (BX + AL wrapped at 64 KiB, in the
    low window; EBX's upper half must not matter), with or without a segment override."""
    seg = draw(st.sampled_from((Register.NONE, Register.NONE, Register.DS, Register.ES,
                                Register.SS, Register.CS, Register.FS, Register.GS)))
    if draw(st.booleans()):
        items: list[Item] = [mov_imm(Register.EBX, DATA + draw(st.integers(0, DATA_SIZE - 0x100)))]
        base = Register.EBX
    else:
        items = [mov_imm(Register.EBX, draw(u32()))]
        base = Register.BX
    if draw(st.booleans()):
        items.append(mov_imm(Register.EAX, draw(u32())))
    return [*items, Instruction.create_mem(Code.XLAT_M8, MemoryOperand(base, Register.AL,
                                                                        seg=seg))]


@st.composite
def enter_unit(draw) -> list[Item]:
    """ENTER at nesting levels 0, 1 and more (the imm8 taken MOD 32), in either operand
    size, then the stack as it was: LEAVE (32-bit, nothing between), or ESP moved back over
    what ENTER pushed and allocated, after a few straight-line instructions."""
    wide = draw(st.booleans())
    size = 4 if wide else 2
    level = draw(st.one_of(st.sampled_from((0, 1, 2, 3, 31, 32, 33, 0xFF)), st.integers(0, 0xFF)))
    alloc = draw(st.one_of(st.sampled_from((0, 1, 4, 0x7FFF, 0x8000, 0xFFFF)),
                           st.integers(0, 0x100)))
    items: list[Item] = []
    if level & 0x1F > 1 or draw(st.booleans()):
        # The outer frames' pointers are read at EBP - size * i: EBP in a window.
        at = draw(st.sampled_from((STACK_TOP, DATA + 0x1000, DATA + DATA_SIZE // 2)))
        items.append(mov_imm(Register.EBP, at + draw(st.integers(-0x40, 0x40)) * 2))
    code = Code.ENTERD_IMM16_IMM8 if wide else Code.ENTERW_IMM16_IMM8
    items.append(Instruction.create_u32_u32(code, alloc, level))
    if wide and draw(st.booleans()):
        return [*items, Instruction.create(Code.LEAVED)]
    for _ in range(draw(st.integers(0, 2))):
        items += draw(plain(no_stack=True))
    pushed = size * ((level & 0x1F) + 1 if level & 0x1F else 1)
    back = MemoryOperand(Register.ESP, displ=pushed + alloc, displ_size=4)
    return [*items, Instruction.create_reg_mem(Code.LEA_R32_M, Register.ESP, back)]


@st.composite
def bound_unit(draw) -> list[Item]:
    """BOUND r32/r16 against a pair of bounds: mostly ones stored just before (the index
    inside them, on either edge, or one past an edge: #BR ends the program), with the
    index and the bounds each anywhere in their signed range; now and then the random
    bytes at any memory operand, 16-bit addressing included (#BR more often than not)."""
    wide = draw(st.booleans())
    size = 4 if wide else 2
    code = Code.BOUND_R32_M3232 if wide else Code.BOUND_R16_M1616
    index = draw(st.sampled_from(NO_ESP32))
    items: list[Item] = []
    reg = index if wide else GPR16[GPR32.index(index)]
    if not draw(st.integers(0, 7)):
        mem = draw(memory_operand(items, (index,), margin=0x100, no_stack=True))
        return [*items, mov_imm(index, draw(u32())), Instruction.create_reg_mem(code, reg, mem)]
    bits = 8 * size
    a, b = _sext(draw(u32()), bits), _sext(draw(u32()), bits)
    lower, upper = min(a, b), max(a, b)
    where = draw(st.sampled_from(("in", "in", "in", "lower", "upper", "below", "above")))
    i = {"in": draw(st.integers(lower, upper)), "lower": lower, "upper": upper,
         "below": lower - 1, "above": upper + 1}[where]
    if not -(1 << (bits - 1)) <= i < (1 << (bits - 1)):
        i = lower  # one past the edge of the signed range: no such index
    target = DATA + draw(st.integers(0x100, DATA_SIZE - 0x100))
    for at, v in ((target, lower), (target + size, upper)):
        abs_mem = MemoryOperand(displ=at, displ_size=4)
        items.append(Instruction.create_mem_u32(Code.MOV_RM32_IMM32 if wide else
                                                Code.MOV_RM16_IMM16, abs_mem,
                                                v & ((1 << bits) - 1)))
    base = draw(st.sampled_from([r for r in NO_ESP32 if r != index]))
    disp = draw(st.sampled_from((0, -4, 0x7F, 0x1000)))
    items.append(mov_imm(base, target - disp))
    items.append(mov_imm(index, (draw(u32()) & ~((1 << bits) - 1)) | (i & ((1 << bits) - 1))))
    mem = MemoryOperand(base, displ=disp, displ_size=0 if not disp else
                        1 if -128 <= disp < 128 else 4)
    return [*items, Instruction.create_reg_mem(code, reg, mem)]


@st.composite
def unit(draw) -> list[Item]:
    kind = draw(st.sampled_from(("plain",) * 12 + ("branch", "branch", "call", "string",
                                                    "string", "div", "popf", "leave",
                                                    "loop", "ud", "cmpxchg8b", "xlat",
                                                    "enter", "bound")))
    if kind == "bound":
        return draw(bound_unit())
    if kind == "cmpxchg8b":
        return draw(cmpxchg8b_unit())
    if kind == "xlat":
        return draw(xlat_unit())
    if kind == "enter":
        return draw(enter_unit())
    if kind == "plain":
        return draw(plain())
    if kind == "branch":
        return draw(branch_unit(draw(st.integers(0, 3))))
    if kind == "call":
        return draw(call_unit())
    if kind == "string":
        return draw(string_unit())
    if kind == "div":
        return draw(div_unit())
    if kind == "popf":
        return draw(popf_unit())
    if kind == "leave":
        return draw(leave_unit())
    if kind == "loop":
        return draw(loop_unit())
    if draw(st.integers(0, 7)):
        return draw(plain())
    return [Instruction.create(Code.UD2)]  # an exception ends the program


class Program:
    """A generated guest; its repr (what hypothesis prints) is the listing and the state."""

    def __init__(self, code: bytes, start: Start):
        self.code, self.start = code, start

    def __repr__(self) -> str:
        lines = []
        dec = iced_x86.Decoder(32, self.code, ip=CODE)
        for ins in dec:
            raw = self.code[ins.ip - CODE:ins.ip - CODE + ins.len].hex()
            lines.append(f"  {ins.ip:08x}  {raw:<20} {fmt(ins)}")
        regs = " ".join(f"{v:#x}" for v in self.start.regs)
        return (f"Program(regs=[{regs}], eflags={self.start.eflags:#x}, "
                f"memory seed={self.start.seed}):\n" + "\n".join(lines))


@st.composite
def programs(draw, max_units: int = 30) -> Program:
    items: list[Item] = []
    for _ in range(draw(st.integers(max_units // 3, max_units))):
        items += draw(unit())
    code = assemble(items)
    seed = draw(st.integers(0, 1 << 32))
    rnd = random.Random(seed)
    regs = [draw(u32()) for _ in range(8)]
    regs[4] = STACK_TOP
    flags = 0x2 | (draw(st.integers(0, 0xFFF)) & 0x8D5) | (0x400 if draw(st.booleans()) else 0)
    start = Start(regs, flags, data=rnd.randbytes(DATA_SIZE), stack=rnd.randbytes(STACK_SIZE),
                  low=rnd.randbytes(LOW_SIZE), seed=seed)
    return Program(code, start)
