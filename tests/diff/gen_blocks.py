"""Random programs for the block-translator tests: gen.py's units plus what ends or breaks
a basic block.

On top of gen.py's integer subset (every size and addressing form, flag readers, forward
branches, CALL/RET, LOOP, string instructions, DIV with some #DE, POPF, #UD) these add:
- self-modifying code: a store into an instruction further on in the same straight-line
  run (often the same block), into one that already ran, and a loop that rewrites an
  immediate of its own body on every iteration;
- segment loads (MOV Sreg): a read-only or null DS/ES/FS/GS (the segment-class change that
  drops decoded code; a later access through it is #GP(0)) and bad selectors (#GP);
- the instructions a block cannot hold: CPUID, RDTSC, RDMSR, IN/OUT, MOV from/to CR0 and
  CR3 (paging switched off and on, CR3 reloaded), INVLPG, CLI/STI, INT3, HLT;
- POPF setting EFLAGS.TF (a single-step #DB after the next instruction).

The machine the programs expect (GDT, IDT, page tables) is built by tests/diff/blocks.py.
"""

from __future__ import annotations

import random

from hypothesis import strategies as st
from iced_x86 import Code, Instruction, MemoryOperand, Register

from tests.diff import gen
from tests.diff.gen import Item, Label, Program, Ref, assemble, mov_imm, plain
from tests.diff.harness import DATA, DATA_SIZE, LOW_SIZE, STACK_SIZE, STACK_TOP, Start

# The test GDT (tests/diff/blocks.py builds it): every descriptor is flat.
SEL_CODE, SEL_DATA, SEL_RO, SEL_XO, SEL_CODE_R = 0x08, 0x10, 0x18, 0x20, 0x28
SEL_BEYOND = 0x38  # past the GDT limit: #GP(0x38)
SELECTORS = (SEL_DATA, SEL_DATA, SEL_RO, SEL_RO, 0, SEL_XO, SEL_CODE_R, SEL_BEYOND, 0x13)
SEGS = (Register.DS, Register.ES, Register.FS, Register.GS, Register.SS)
SMC_COUNTER = DATA + 8  # the SMC loop's count (below every gen.py operand's margin)
SMC_SCRATCH = DATA + 0x20  # where an SMC unit's store goes while it is aimed at data
OUTER_COUNTER = DATA + 16  # a looped program's pass counter (3, 2, 1)
# inc/dec of a register other than ESP: what a patched one-byte instruction becomes.
INC_DEC = [b for b in range(0x40, 0x50) if b not in (0x44, 0x4C)]


def _mem(base: Register, disp: int) -> MemoryOperand:
    return MemoryOperand(base, displ=disp, displ_size=1 if -128 <= disp < 128 else 4)


@st.composite
def smc_unit(draw) -> list[Item]:
    """A store into code: forward (the target has not run yet: the new bytes must run),
    or backward (it ran already: no effect until it runs again, which here it does not)."""
    target = gen._LABELS.__next__()
    reg = draw(st.sampled_from([r for r in gen.NO_ESP32
                                if r not in (Register.EBX, Register.EAX, Register.EDX)]))
    if draw(st.booleans()):
        victim = [Label(target), mov_imm(reg, draw(gen.u32()))]
        k, v = draw(st.integers(1, 4)), draw(st.integers(0, 255))
    else:
        op = draw(st.sampled_from(INC_DEC))
        victim = [Label(target), Instruction.create_reg(
            Code.INC_R32 if op < 0x48 else Code.DEC_R32, gen.GPR32[op & 7])]
        k, v = 0, draw(st.sampled_from([*INC_DEC, 0x90]))
    size = draw(st.sampled_from(("byte", "byte", "dword_at_imm")))
    # The store is aimed at the code only while the outer loop's counter (in a looped
    # program) is neither 3 nor 2, i.e. on the last time round, when the code has been
    # translated; at data before (branch-free, so the store stays inside its block).
    store: list[Item] = [Ref(mov_imm(Register.EBX, 0), target, "imm"),
                         mov_imm(Register.EDX, SMC_SCRATCH),
                         Instruction.create_reg_mem(Code.MOV_R32_RM32, Register.EAX,
                                                    MemoryOperand(displ=OUTER_COUNTER,
                                                                  displ_size=4)),
                         Instruction.create_reg_i32(Code.SUB_RM32_IMM8, Register.EAX, 2),
                         Instruction.create_reg_i32(Code.CMP_RM32_IMM8, Register.EAX, 2),
                         Instruction.create_reg_reg(Code.CMOVB_R32_RM32, Register.EBX,
                                                    Register.EDX)]
    if size == "dword_at_imm" and k:
        # A 32-bit store that may run past the victim into the next instruction's bytes.
        store.append(Instruction.create_mem_u32(Code.MOV_RM32_IMM32, _mem(Register.EBX, k),
                                                draw(gen.u32())))
    else:
        store.append(Instruction.create_mem_u32(Code.MOV_RM8_IMM8, _mem(Register.EBX, k), v))
    between: list[Item] = []
    for _ in range(draw(st.integers(0, 2))):
        between += draw(plain())
    if draw(st.integers(0, 3)):
        return [*store, *between, *victim]  # forward: same block or the next one
    return [*victim, *between, *store]  # backward: already executed


@st.composite
def smc_loop_unit(draw) -> list[Item]:
    """A loop whose body is rewritten on every iteration:
        mov dword [C], n
    top: mov eax, imm32          ; its immediate changes each time round
        add esi, eax
        mov ebx, top
        inc/add byte [ebx + k], ...
        mov ecx, [C] / dec dword [C] / loop top"""
    top = gen._LABELS.__next__()
    c = MemoryOperand(displ=SMC_COUNTER, displ_size=4)
    k = draw(st.integers(1, 4))
    patch = draw(st.sampled_from(("inc", "add", "not")))
    if patch == "inc":
        store = Instruction.create_mem(Code.INC_RM8, _mem(Register.EBX, k))
    elif patch == "add":
        store = Instruction.create_mem_i32(Code.ADD_RM8_IMM8, _mem(Register.EBX, k),
                                           draw(st.integers(1, 255)))
    else:
        store = Instruction.create_mem(Code.NOT_RM32, _mem(Register.EBX, 1))
    return [Instruction.create_mem_u32(Code.MOV_RM32_IMM32, c, draw(st.integers(1, 5))),
            Label(top),
            mov_imm(Register.EAX, draw(gen.u32())),
            Instruction.create_reg_reg(Code.ADD_R32_RM32, Register.ESI, Register.EAX),
            Ref(mov_imm(Register.EBX, 0), top, "imm"),
            store,
            Instruction.create_reg_mem(Code.MOV_R32_RM32, Register.ECX, c),
            Instruction.create_mem(Code.DEC_RM32, c),
            Ref(Instruction.create_branch(Code.LOOP_REL8_32_ECX, 0), top, "branch")]


@st.composite
def segment_unit(draw) -> list[Item]:
    """MOV Sreg, r16 with a selector from the test GDT (or a bad one), a few instructions
    that use it, then the flat data selector back."""
    seg = draw(st.sampled_from(SEGS))
    sel = draw(st.sampled_from(SELECTORS))
    items: list[Item] = [mov_imm(Register.EAX, sel),
                         Instruction.create_reg_reg(Code.MOV_SREG_R32M16, seg, Register.EAX)]
    for _ in range(draw(st.integers(0, 2))):
        items += draw(plain())
    items += [mov_imm(Register.EAX, SEL_DATA),
              Instruction.create_reg_reg(Code.MOV_SREG_R32M16, seg, Register.EAX)]
    return items


CR0_PG = 0x80000000


@st.composite
def system_unit(draw) -> list[Item]:
    """One instruction outside the translated set, with its set-up."""
    # INT3, HLT and TF end a program (the handler halts): rarer than the rest.
    what = draw(st.sampled_from(("cpuid", "rdtsc", "rdmsr", "in", "out", "in_dx", "cr0",
                                 "cr3", "cr3_reload", "paging_off_on", "invlpg", "cli",
                                 "sti") * 3 + ("int3", "hlt", "tf")))
    if what == "cpuid":
        return [mov_imm(Register.EAX, draw(st.sampled_from((0, 1, 0x80000000, 7)))),
                Instruction.create(Code.CPUID)]
    if what == "rdtsc":
        return [Instruction.create(Code.RDTSC)]
    if what == "rdmsr":
        return [mov_imm(Register.ECX, 0x10), Instruction.create(Code.RDMSR)]  # the TSC
    if what == "in":
        return [Instruction.create_reg_u32(Code.IN_AL_IMM8, Register.AL, 0x80)]
    if what == "out":
        return [Instruction.create_u32_reg(Code.OUT_IMM8_AL, 0x80, Register.AL)]
    if what == "in_dx":
        return [mov_imm(Register.EDX, 0x2E0),
                Instruction.create_reg_reg(Code.IN_EAX_DX, Register.EAX, Register.DX)]
    if what == "cr0":
        return [Instruction.create_reg_reg(Code.MOV_R32_CR, Register.EAX, Register.CR0)]
    if what == "cr3":
        return [Instruction.create_reg_reg(Code.MOV_R32_CR, Register.EDX, Register.CR3)]
    if what == "cr3_reload":
        return [Instruction.create_reg_reg(Code.MOV_R32_CR, Register.EAX, Register.CR3),
                Instruction.create_reg_reg(Code.MOV_CR_R32, Register.CR3, Register.EAX)]
    if what == "paging_off_on":
        # Identity-mapped code: switching paging off and back on runs on; the faults the
        # page tables make (not-present and read-only data pages) come and go with it.
        items: list[Item] = [
            Instruction.create_reg_reg(Code.MOV_R32_CR, Register.EAX, Register.CR0),
            Instruction.create_reg_u32(Code.XOR_RM32_IMM32, Register.EAX, CR0_PG),
            Instruction.create_reg_reg(Code.MOV_CR_R32, Register.CR0, Register.EAX)]
        for _ in range(draw(st.integers(0, 2))):
            items += draw(plain())
        return [*items,
                Instruction.create_reg_reg(Code.MOV_R32_CR, Register.EAX, Register.CR0),
                Instruction.create_reg_u32(Code.XOR_RM32_IMM32, Register.EAX, CR0_PG),
                Instruction.create_reg_reg(Code.MOV_CR_R32, Register.CR0, Register.EAX)]
    if what == "invlpg":
        page = draw(st.integers(0, 15))
        return [Instruction.create_mem(Code.INVLPG_M, MemoryOperand(
            displ=DATA + page * 0x1000 + draw(st.integers(0, 0xFFF)), displ_size=4))]
    if what == "cli":
        return [Instruction.create(Code.CLI)]
    if what == "sti":
        return [Instruction.create(Code.STI)]
    if what == "int3":
        return [Instruction.create(Code.INT3)]
    if what == "hlt":
        return [Instruction.create(Code.HLT)]
    # POPF setting TF: the instruction after it traps (#DB) once it retires.
    return [Instruction.create(Code.PUSHFD),
            Instruction.create_mem_i32(Code.OR_RM32_IMM32,
                                       MemoryOperand(Register.ESP, displ_size=0), 0x100),
            Instruction.create(Code.POPFD), *draw(plain())]


@st.composite
def block_unit(draw) -> list[Item]:
    kind = draw(st.sampled_from(("gen",) * 10 + ("smc", "smc", "smc_loop", "segment",
                                                  "system", "system", "system")))
    if kind == "gen":
        return draw(gen.unit())
    if kind == "smc":
        return draw(smc_unit())
    if kind == "smc_loop":
        return draw(smc_loop_unit())
    if kind == "segment":
        return draw(segment_unit())
    return draw(system_unit())


@st.composite
def block_programs(draw, max_units: int = 24, looped: bool = False) -> Program:
    """`looped`: the whole program three times round an outer loop (the second and third
    times run translated blocks and regions of them)."""
    items: list[Item] = []
    for _ in range(draw(st.integers(max_units // 3, max_units))):
        items += draw(block_unit())
    if looped:
        top = gen._LABELS.__next__()
        c = MemoryOperand(displ=OUTER_COUNTER, displ_size=4)
        items = [Instruction.create_mem_u32(Code.MOV_RM32_IMM32, c, 3), Label(top), *items,
                 Instruction.create_mem(Code.DEC_RM32, c),
                 Ref(Instruction.create_branch(Code.JNE_REL32_32, 0), top, "branch")]
    code = assemble(items)
    seed = draw(st.integers(0, 1 << 32))
    rnd = random.Random(seed)
    regs = [draw(gen.u32()) for _ in range(8)]
    regs[4] = STACK_TOP
    flags = 0x2 | (draw(st.integers(0, 0xFFF)) & 0x8D5) | (0x400 if draw(st.booleans()) else 0)
    start = Start(regs, flags, data=rnd.randbytes(DATA_SIZE), stack=rnd.randbytes(STACK_SIZE),
                  low=rnd.randbytes(LOW_SIZE), seed=seed)
    return Program(code, start)


# -- dense straight-line arithmetic: what the translator writes inline --------------------

_INLINE_MNEMONICS = {getattr(gen.Mn, n) for n in (
    "MOV MOVZX MOVSX LEA ADD ADC SUB SBB CMP AND OR XOR TEST INC DEC NEG NOT SHL SAL SHR "
    "SAR ROL ROR RCL RCR SHLD SHRD MUL IMUL PUSH POP XCHG BT BTS BTR BTC BSF BSR BSWAP "
    "CLC STC CMC CBW CWDE CWD CDQ "
    "NOP").split()} | {m for n in dir(gen.Mn) if n.startswith(("CMOV", "SET")) and n.isupper()
                       for m in (getattr(gen.Mn, n),)}
INLINE_FORMS = [c for c in gen.PLAIN_FORMS
                if gen.iced_x86.OpCodeInfo(c).mnemonic in _INLINE_MNEMONICS]
LOOP_COUNTER = DATA + 12


@st.composite
def flag_unit(draw) -> list[Item]:
    kind = draw(st.sampled_from(("plain",) * 5 + ("compare",) * 4 + ("branch", "pushf")))
    if kind == "compare":
        return draw(compare_unit())
    if kind == "plain":
        return draw(plain(INLINE_FORMS))
    if kind == "pushf":  # every flag, straight after whatever set them
        return [Instruction.create(Code.PUSHFD), Instruction.create_reg(Code.POP_R32,
                                                                        Register.EDX)]
    return draw(gen.branch_unit(draw(st.integers(0, 2))))


@st.composite
def flag_programs(draw, max_units: int = 16) -> Program:
    """Straight-line arithmetic of every size and its flag readers (Jcc, SETcc, CMOVcc,
    ADC/SBB, PUSHFD), the whole body run three times round a loop so that the second and
    third times run translated blocks:
        mov dword [C], 3 / top: body / dec dword [C] / jnz top"""
    top = gen._LABELS.__next__()
    c = MemoryOperand(displ=LOOP_COUNTER, displ_size=4)
    items: list[Item] = [Instruction.create_mem_u32(Code.MOV_RM32_IMM32, c, 3), Label(top)]
    for _ in range(draw(st.integers(max_units // 2, max_units))):
        items += draw(flag_unit())
    items += [Instruction.create_mem(Code.DEC_RM32, c),
              Ref(Instruction.create_branch(Code.JNE_REL32_32, 0), top, "branch")]
    code = assemble(items)
    seed = draw(st.integers(0, 1 << 32))
    rnd = random.Random(seed)
    regs = [draw(gen.u32()) for _ in range(8)]
    regs[4] = STACK_TOP
    flags = 0x2 | (draw(st.integers(0, 0xFFF)) & 0x8D5)
    start = Start(regs, flags, data=rnd.randbytes(DATA_SIZE), stack=rnd.randbytes(STACK_SIZE),
                  low=rnd.randbytes(LOW_SIZE), seed=seed)
    return Program(code, start)


JCC_FORMS = [c for c in gen.BRANCH_FORMS if gen._CODE_NAMES[c].startswith("J")
             and not gen._CODE_NAMES[c].startswith(("JMP", "JECXZ", "JCXZ"))]
SETCC_FORMS = [c for c in gen.PLAIN_FORMS if gen._CODE_NAMES[c].startswith("SET")
               and gen._CODE_NAMES[c].endswith("_RM8")]
_CMP_OPS = {
    4: (Code.CMP_R32_RM32, Code.SUB_R32_RM32, Code.SBB_R32_RM32, Code.ADD_R32_RM32,
        Code.ADC_R32_RM32, Code.AND_R32_RM32, Code.TEST_RM32_R32, Code.XOR_R32_RM32),
    2: (Code.CMP_R16_RM16, Code.SUB_R16_RM16, Code.SBB_R16_RM16, Code.ADD_R16_RM16,
        Code.ADC_R16_RM16, Code.TEST_RM16_R16),
    1: (Code.CMP_R8_RM8, Code.SUB_R8_RM8, Code.SBB_R8_RM8, Code.ADD_R8_RM8, Code.ADC_R8_RM8,
        Code.TEST_RM8_R8),
}
_CMP_IMM = {4: (Code.CMP_RM32_IMM32, Code.CMP_RM32_IMM8, Code.SUB_RM32_IMM32),
            2: (Code.CMP_RM16_IMM16,), 1: (Code.CMP_RM8_IMM8, Code.SUB_RM8_IMM8)}
_DELTAS = (0, 0, 0, 1, -1, 2, 0x7F, 0x80, 0x7FFF, 0x8000, 0x7FFFFFFF, 0x80000000)


@st.composite
def compare_unit(draw) -> list[Item]:
    """Two operands that are equal, adjacent or a sign boundary apart, an instruction
    that sets the flags from them (CMP, SUB, SBB, ADD, ADC, TEST; INC/DEC), and at once
    one flag reader (Jcc over one instruction, SETcc, CMOVcc, ADC) or PUSHFD."""
    size = draw(st.sampled_from((4, 4, 2, 1)))
    regs = {4: gen.GPR32, 2: gen.GPR16, 1: gen.GPR8}[size]
    usable = [r for r in regs if gen._full(r) not in (Register.ESP, Register.EDX)]
    a = draw(st.sampled_from(usable))
    b = draw(st.sampled_from([r for r in usable if gen._full(r) != gen._full(a)]))
    v = draw(gen.u32())
    w = (v + draw(st.sampled_from(_DELTAS)) * draw(st.sampled_from((1, -1)))) & 0xFFFFFFFF
    if size == 1 and a in gen.GPR8[4:]:
        v, w = v << 8, w << 8
    items: list[Item] = [mov_imm(gen._full(a), v)]
    how = draw(st.sampled_from(("reg", "reg", "imm", "incdec")))
    shift = 8 if size == 1 and a in gen.GPR8[4:] else 0
    mask = (1 << (8 * size)) - 1
    if how == "reg":
        if size == 1 and b in gen.GPR8[4:]:
            w = w << 8 if not shift else w
        elif shift:
            w >>= 8
        items.append(mov_imm(gen._full(b), w))
        code = draw(st.sampled_from(_CMP_OPS[size]))
        if code in (Code.TEST_RM32_R32, Code.TEST_RM16_R16, Code.TEST_RM8_R8):
            items.append(Instruction.create_reg_reg(code, a, b))
        else:
            items.append(Instruction.create_reg_reg(code, a, b))
    elif how == "imm":
        code = draw(st.sampled_from(_CMP_IMM[size]))
        imm = (w >> shift) & mask
        if code == Code.CMP_RM32_IMM8:
            imm = draw(st.sampled_from((0, 1, 0x7F, -1, -0x80)))
            items[0] = mov_imm(gen._full(a), imm + draw(st.sampled_from((0, 0, 1, -1))))
        else:
            imm = gen._sext(imm, 8 * size)
        items.append(Instruction.create_reg_i32(code, a, imm))
    else:
        items.append(Instruction.create_reg(
            draw(st.sampled_from((Code.INC_R32, Code.DEC_R32))), gen._full(a)))
    reader = draw(st.sampled_from(("jcc", "jcc", "setcc", "cmov", "adc", "pushf")))
    if reader == "jcc":
        over = gen._LABELS.__next__()
        items += [Ref(Instruction.create_branch(draw(st.sampled_from(JCC_FORMS)), 0), over,
                      "branch"),
                  Instruction.create_reg(Code.INC_R32, Register.EDX), Label(over)]
    elif reader == "setcc":
        items.append(Instruction.create_reg(draw(st.sampled_from(SETCC_FORMS)), Register.DL))
    elif reader == "cmov":
        cmov = draw(st.sampled_from([c for c in gen.PLAIN_FORMS if gen._CODE_NAMES[c]
                                     .startswith("CMOV") and gen._CODE_NAMES[c]
                                     .endswith("R32_RM32")]))
        items.append(Instruction.create_reg_reg(cmov, Register.EDX, gen._full(b)))
    elif reader == "adc":
        items.append(Instruction.create_reg_i32(
            draw(st.sampled_from((Code.ADC_RM32_IMM8, Code.SBB_RM32_IMM8))), Register.EDX, 0))
    else:
        items += [Instruction.create(Code.PUSHFD),
                  Instruction.create_reg(Code.POP_R32, Register.EDX)]
    return items
