"""Lock-step co-simulation of vmsim's CPU against unicorn, reporting the first divergence.

Both machines get the same code, data window, stack window, registers and EFLAGS. After
every instruction the eight GPRs, EIP, the EFLAGS bits the SDM defines for that
instruction (iced-x86's `rflags_undefined` masks the rest) and both memory windows must be
equal. Where only undefined flags differ, vmsim takes unicorn's values so that a later
instruction reading them (ADC after MUL, Jcc after a shift) compares like with like.

An exception ends the sequence: vmsim stops before delivery (its intercept seam), unicorn
reports it as UC_ERR_INSN_INVALID (#UD) or through UC_HOOK_INTR (the vector); the vectors
and the state at the faulting instruction must agree.

Unicorn's REP string instructions retire one iteration per `count=1` step (QEMU restarts
the instruction at the same EIP); vmsim retires the whole instruction, so unicorn is
stepped until its EIP leaves the instruction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import iced_x86
import pytest

unicorn = pytest.importorskip("unicorn", reason="pip package unicorn (2.x) is the oracle")
from unicorn import x86_const as U  # noqa: E402

from vmsim.hw import Cpu, PhysicalMemory, StopReason  # noqa: E402

CODE, CODE_SIZE = 0x100000, 0x10000
DATA, DATA_SIZE = 0x200000, 0x10000
STACK, STACK_SIZE = 0x2F8000, 0x10000
SCRATCH = 0x500000  # unicorn only: see Pair._uc_step_elsewhere
LOW, LOW_SIZE = 0x0, 0x11000  # 16-bit addressing (0x67) lands here; an access at FFFF runs on
STACK_TOP = 0x300000  # mid-window, on a 64 KiB boundary (16-bit SP and 32-bit ESP differ)

WINDOWS = ((DATA, DATA_SIZE), (STACK, STACK_SIZE), (LOW, LOW_SIZE))  # compared after each step

GPR_NAMES = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
UC_GPRS = (U.UC_X86_REG_EAX, U.UC_X86_REG_ECX, U.UC_X86_REG_EDX, U.UC_X86_REG_EBX,
           U.UC_X86_REG_ESP, U.UC_X86_REG_EBP, U.UC_X86_REG_ESI, U.UC_X86_REG_EDI)

CF, PF, AF, ZF, SF, TF, IF, DF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800
# Compared: every EFLAGS bit except RF (bit 16, not visible to software that matters here)
# and VM (bit 17, never set in protected mode without a task switch).
COMPARED_FLAGS = 0x3FFFFF & ~0x30000
_ICED_FLAG = {iced_x86.RflagsBits.OF: OF, iced_x86.RflagsBits.SF: SF, iced_x86.RflagsBits.ZF: ZF,
              iced_x86.RflagsBits.AF: AF, iced_x86.RflagsBits.CF: CF, iced_x86.RflagsBits.PF: PF,
              iced_x86.RflagsBits.DF: DF, iced_x86.RflagsBits.IF: IF,
              iced_x86.RflagsBits.AC: 0x40000}
_FORMATTER = iced_x86.Formatter(iced_x86.FormatterSyntax.NASM)
_VECTOR_NAMES = {0: "#DE", 1: "#DB", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 8: "#DF",
                 13: "#GP", 14: "#PF", 17: "#AC"}


def eflags_bits(iced_bits: int) -> int:
    """An iced-x86 RflagsBits set as EFLAGS bits."""
    return sum(v for k, v in _ICED_FLAG.items() if iced_bits & k)


_SHXD = (iced_x86.Mnemonic.SHLD, iced_x86.Mnemonic.SHRD)


def undefined_flags(ins: iced_x86.Instruction, before: Snapshot) -> int:
    """The EFLAGS bits the SDM leaves undefined after `ins`, run from `before`.

    iced-x86 knows them per encoding; where they depend on the count at run time it gives
    the widest set. SHLD/SHRD are narrowed here by their count (SDM Vol. 2B): 0 leaves
    every flag as it was, 1 defines all but AF, more leaves OF undefined too. A 16-bit
    operand shifted by more than 16 has an undefined result as well: generated programs
    keep out of that (gen.py), so meeting one is a generator bug."""
    undefined = eflags_bits(ins.rflags_undefined)
    if ins.mnemonic not in _SHXD:
        return undefined
    by_cl = ins.op2_kind == iced_x86.OpKind.REGISTER
    n = (before.regs[1] if by_cl else ins.immediate(2)) & 0x1F
    if n > 16 and iced_x86.RegisterInfo(ins.op1_register).size == 2:  # the source: r16
        raise AssertionError(f"{fmt(ins)} by {n}: undefined (SDM), not to be compared")
    return 0 if n == 0 else AF if n == 1 else AF | OF


def disassemble(code: bytes, ip: int) -> iced_x86.Instruction:
    return iced_x86.Decoder(32, code, ip=ip).decode()


def fmt(ins: iced_x86.Instruction) -> str:
    return _FORMATTER.format(ins)


class Divergence(AssertionError):
    """vmsim and unicorn disagree; the message names the instruction and the difference."""


@dataclass
class Start:
    """The initial machine state both sides get."""

    regs: list[int]
    eflags: int = 0x2
    data: bytes = field(default=bytes(DATA_SIZE), repr=False)
    stack: bytes = field(default=bytes(STACK_SIZE), repr=False)
    low: bytes = field(default=bytes(LOW_SIZE), repr=False)
    seed: int | None = None  # what the windows' random contents came from


@dataclass
class Snapshot:
    regs: list[int]
    eip: int
    eflags: int

    def text(self) -> str:
        regs = " ".join(f"{n}={v:08x}" for n, v in zip(GPR_NAMES, self.regs, strict=True))
        return f"{regs} eip={self.eip:08x} eflags={self.eflags:08x} ({flag_text(self.eflags)})"


def flag_text(f: int) -> str:
    names = (("CF", CF), ("PF", PF), ("AF", AF), ("ZF", ZF), ("SF", SF), ("TF", TF), ("IF", IF),
             ("DF", DF), ("OF", OF))
    return " ".join(n for n, b in names if f & b) or "-"


@dataclass
class Pair:
    """vmsim and unicorn loaded with the same guest; `step()` advances both and compares."""

    code: bytes
    start: Start
    end: int = 0  # EIP at which the sequence is finished (0: CODE + len(code))
    trace: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.end:
            self.end = CODE + len(self.code)
        s = self.start
        mem = PhysicalMemory(16 << 20)
        mem.load(CODE, self.code)
        mem.load(DATA, s.data)
        mem.load(STACK, s.stack)
        mem.load(LOW, s.low)
        cpu = Cpu(mem)
        cpu.reset_flat(entry=CODE, esp=s.regs[4])
        cpu.r[:] = [v & 0xFFFFFFFF for v in s.regs]
        cpu.eflags = s.eflags
        cpu.intercept = lambda info: info.kind == "exception"
        self.cpu = cpu

        uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
        for base, size, content in ((CODE, CODE_SIZE, self.code), (DATA, DATA_SIZE, s.data),
                                    (STACK, STACK_SIZE, s.stack), (LOW, LOW_SIZE, s.low)):
            uc.mem_map(base, size)
            uc.mem_write(base, bytes(content))
        for reg, v in zip(UC_GPRS, cpu.r, strict=True):
            uc.reg_write(reg, v)
        uc.reg_write(U.UC_X86_REG_EFLAGS, s.eflags)
        uc.reg_write(U.UC_X86_REG_EIP, CODE)
        self._intno: list[int] = []

        def on_interrupt(uc_, intno, _user):
            self._intno.append(intno)
            uc_.emu_stop()
        uc.hook_add(unicorn.UC_HOOK_INTR, on_interrupt)
        self.uc = uc
        self._scratch_mapped = False
        self.steps = 0

    # -- state -------------------------------------------------------------------------
    def vm_state(self) -> Snapshot:
        return Snapshot(list(self.cpu.r), self.cpu.eip, self.cpu.eflags)

    def uc_state(self) -> Snapshot:
        uc = self.uc
        return Snapshot([uc.reg_read(r) for r in UC_GPRS], uc.reg_read(U.UC_X86_REG_EIP),
                        uc.reg_read(U.UC_X86_REG_EFLAGS))

    # -- one instruction -----------------------------------------------------------------
    def run(self, max_steps: int = 500) -> int:
        """Step until the end of the code, an exception, or `max_steps`; returns the steps."""
        while self.steps < max_steps and self.step():
            pass
        return self.steps

    def step(self) -> bool:
        """One instruction on both sides; False when the sequence is over."""
        cpu, uc = self.cpu, self.uc
        eip = cpu.eip
        if eip == self.end:
            return False
        ram = cpu.mem.ram
        ins = disassemble(bytes(ram[eip:eip + 15]), eip)
        text = f"{eip:08x}  {ram[eip:eip + ins.len].hex():<20} {fmt(ins)}"
        self.trace.append(text)
        before = self.vm_state()
        self.steps += 1

        stop = cpu.step()
        vm_exc = None
        if stop == StopReason.INTERCEPT and cpu.last_intercept.kind == "exception":
            vm_exc = cpu.last_intercept.vector
        elif stop != StopReason.LIMIT:
            raise Divergence(self._report(text, before, f"vmsim stopped: {stop} "
                                          f"{cpu.stop_message}"))
        uc_exc = self._uc_step(eip, ins)
        if uc_exc is None and ins.code == iced_x86.Code.ENTERW_IMM16_IMM8:
            # Unicorn quirk: its ENTER (unicorn 2.1's TCG) writes all of EBP with FrameTemp,
            # sized as the stack; with a 16-bit operand size the SDM's writes BP only ("BP :=
            # FrameTemp(15:0)"; AMD's "RBP.v = temp_RBP"; qemu-system-i386 7.2 agrees,
            # tests/data/guests/cx8_xlat_enter.asm). Unicorn's EBP gets its upper half
            # back; its low half, ESP and the stack are compared as usual.
            ebp = uc.reg_read(U.UC_X86_REG_EBP)
            uc.reg_write(U.UC_X86_REG_EBP, (before.regs[5] & 0xFFFF0000) | (ebp & 0xFFFF))
        if vm_exc != uc_exc:
            raise Divergence(self._report(
                text, before, f"exception: vmsim {_vname(vm_exc)}, unicorn {_vname(uc_exc)}"))
        undefined = undefined_flags(ins, before) if vm_exc is None else 0
        self.compare(text, before, undefined)
        if vm_exc is not None:
            return False
        vf, uf = cpu.eflags, uc.reg_read(U.UC_X86_REG_EFLAGS)
        if (vf ^ uf) & undefined:
            cpu.eflags = (vf & ~undefined) | (uf & undefined)
        return cpu.eip != self.end

    def run_to(self, addr: int, limit: int = 10_000) -> None:
        """Run both sides freely (not in lock-step) until EIP is `addr`, then compare them.

        For set-up code that is not itself under test: one unicorn call instead of one per
        instruction. The set-up must leave no flag undefined."""
        cpu, uc = self.cpu, self.uc
        before = self.vm_state()
        for _ in range(limit):
            if cpu.eip == addr:
                break
            stop = cpu.step()
            if stop != StopReason.LIMIT:
                raise Divergence(self._report(f"set-up before {addr:08x}", before,
                                              f"vmsim stopped: {stop}"))
        else:
            raise Divergence(f"vmsim did not reach {addr:08x}")
        uc.emu_start(uc.reg_read(U.UC_X86_REG_EIP), addr)
        self.compare(f"(set-up, up to {addr:08x})", before)

    def _uc_step(self, eip: int, ins: iced_x86.Instruction) -> int | str | None:
        uc = self.uc
        rep = ins.is_string_instruction and (ins.has_rep_prefix or ins.has_repne_prefix)
        for _ in range(100_000 if rep else 1):
            self._intno.clear()
            try:
                uc.emu_start(eip, 0xFFFFFFFF, count=1)
            except unicorn.UcError as e:
                if e.errno == unicorn.UC_ERR_INSN_INVALID:
                    return 6
                return f"unicorn error {e}"
            if self._intno:
                return self._intno[0]
            if uc.reg_read(U.UC_X86_REG_EIP) != eip:
                break
        else:
            if not rep and ins.flow_control == iced_x86.FlowControl.NEXT:
                return self._uc_step_elsewhere(ins)
        return None

    def _uc_step_elsewhere(self, ins: iced_x86.Instruction) -> int | str | None:
        """Unicorn quirk: a store into the translation block being executed (the next
        instruction, say) makes QEMU's precise-SMC path abandon the instruction before the
        store; with `count=1` the step then ends with nothing done and EIP unchanged, every
        time. Such an instruction is run from a copy in a scratch page instead (a
        straight-line 32-bit instruction does not depend on where it sits), which leaves
        the written code page's translations to be invalidated the ordinary way."""
        uc, eip = self.uc, ins.ip32
        raw = bytes(uc.mem_read(eip, ins.len))
        if not self._scratch_mapped:
            uc.mem_map(SCRATCH, 0x1000)
            self._scratch_mapped = True
        uc.mem_write(SCRATCH, raw)
        self._intno.clear()
        try:
            uc.emu_start(SCRATCH, 0xFFFFFFFF, count=1)
        except unicorn.UcError as e:
            uc.reg_write(U.UC_X86_REG_EIP, eip)
            return 6 if e.errno == unicorn.UC_ERR_INSN_INVALID else f"unicorn error {e}"
        if self._intno:
            uc.reg_write(U.UC_X86_REG_EIP, eip)
            return self._intno[0]
        assert uc.reg_read(U.UC_X86_REG_EIP) == SCRATCH + ins.len
        uc.reg_write(U.UC_X86_REG_EIP, ins.next_ip32)
        return None

    def compare(self, text: str, before: Snapshot, undefined: int = 0) -> None:
        vm, ucs = self.vm_state(), self.uc_state()
        diffs = []
        for n, a, b in zip(GPR_NAMES, vm.regs, ucs.regs, strict=True):
            if a != b:
                diffs.append(f"{n}: vmsim {a:08x} unicorn {b:08x}")
        if vm.eip != ucs.eip:
            diffs.append(f"eip: vmsim {vm.eip:08x} unicorn {ucs.eip:08x}")
        mask = COMPARED_FLAGS & ~undefined
        if (vm.eflags ^ ucs.eflags) & mask:
            d = (vm.eflags ^ ucs.eflags) & mask
            diffs.append(f"eflags: vmsim {vm.eflags:08x} unicorn {ucs.eflags:08x} "
                         f"differ in {d:08x} ({flag_text(d)}); undefined {undefined:08x}")
        ram = self.cpu.mem.ram
        for base, size in (*WINDOWS, (CODE, len(self.code))):
            a, b = bytes(ram[base:base + size]), bytes(self.uc.mem_read(base, size))
            if a != b:
                i = next(i for i in range(size) if a[i] != b[i])
                j = max(k for k in range(size) if a[k] != b[k])
                lo = i & ~3
                diffs.append(f"memory {base + i:08x}..{base + j:08x}: vmsim "
                             f"{a[lo:j + 1][:32].hex()} unicorn {b[lo:j + 1][:32].hex()} "
                             f"(from {base + lo:08x})")
        if diffs:
            raise Divergence(self._report(text, before, "\n  ".join(diffs), vm, ucs))

    def _report(self, text: str, before: Snapshot, what: str, vm: Snapshot | None = None,
                ucs: Snapshot | None = None) -> str:
        vm = vm or self.vm_state()
        ucs = ucs or self.uc_state()
        recent = "\n    ".join(self.trace[-8:])
        return (f"first divergence at step {self.steps}:\n  {text}\n  {what}\n"
                f"before:  {before.text()}\nvmsim:   {vm.text()}\nunicorn: {ucs.text()}\n"
                f"last instructions:\n    {recent}")


def _vname(v: int | str | None) -> str:
    if v is None:
        return "none"
    if isinstance(v, str):
        return v
    return _VECTOR_NAMES.get(v, f"vector {v}")


def run_pair(code: bytes, start: Start, max_steps: int = 500) -> Pair:
    pair = Pair(code, start)
    pair.run(max_steps)
    return pair
