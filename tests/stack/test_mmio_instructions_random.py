"""Random programs whose memory operands lie in the VGA text window (MMIO: no memory slot,
so under KVM every access is an EPT misconfiguration, kvm.ko's instruction emulator and a
KVM_EXIT_MMIO to the VGA model), run on bare metal, on the simulated kvm.ko with EPT and
with shadow paging, and on the host's KVM where there is one (its emulator: a second
oracle). The VGA window reads back what was written, as RAM does, so the same program run
on bare metal with its operands in RAM is the architecture's answer: every run must leave
the same registers, flags and bytes.

Forms: MOV both ways, the ALU ops and CMP/TEST with a register or an immediate, INC/DEC/
NOT/NEG, XCHG, XADD, CMPXCHG, MOVZX/MOVSX, shifts and rotates, SHLD/SHRD by an immediate
or CL, BT/BTS/BTR/BTC, BSF/BSR from memory, SETcc, PUSH/POP of memory, MUL/IMUL, and REP
MOVS/STOS/LODS in both directions, in each operand size; and BSWAP of a register, which
the host's processor runs itself under KVM: there it is checked against the hardware,
the 16-bit form (undefined in the SDM) included; CMPXCHG8B (once, or twice so that the
second finds EDX:EAX equal), and XLATB with its table in the window (EBX below it by AL,
whatever AL is). A fixed set of programs in CI (derandomized); `VMSIM_SOAK=N` runs N fresh
ones.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.diff.conftest import SOAK
from tests.stack.stackrun import guest_sees, host_kvm_problem

VGA = 0xB8000
RAM = 0x20000  # the same program with its window in RAM: the oracle
RESULTS = 0x3000
BUFFER = 0x4000  # RAM the string instructions copy from and to
STACK = 0x90000
WINDOW = 0x80  # bytes of the window the programs touch (and the guest copies out)
EXAMPLES = SOAK or 30

REGS = {4: ("eax", "ecx", "edx", "ebx", "esi", "edi", "ebp"),
        2: ("ax", "cx", "dx", "bx", "si", "di", "bp"),
        1: ("al", "cl", "dl", "bl", "ah", "ch", "dh", "bh")}
PTR = {1: "byte", 2: "word", 4: "dword"}
ALU = ("add", "sub", "and", "or", "xor", "adc", "sbb", "cmp", "test")
UNARY = ("inc", "dec", "not", "neg")
SHIFTS = ("shl", "shr", "sar", "rol", "ror", "rcl", "rcr")
CONDS = ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g")

# Flags the SDM leaves undefined after a form (MUL/IMUL: SF ZF AF PF; BTx: OF SF AF PF;
# AND/OR/XOR/TEST: AF; shifts: AF, and OF past a count of 1 and CF for a count this test
# does not know; rotates: OF past 1; SHLD/SHRD: AF, and OF past 1; BSF/BSR: all but ZF):
# cleared after it with POPFD, since the host's KVM emulator sets them otherwise than
# vmsim's CPU (a MUL's PF, say; BSF's CF OF SF AF PF, which the host's CPU keeps).
CF, PF, AF, ZF, SF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x800


def _defined(undefined: int) -> str:
    return (f"\n        pushfd\n        and dword [esp], {~undefined & 0xFFFFFFFF:#x}"
            "\n        popfd") if undefined else ""


size = st.sampled_from((1, 2, 4))
offset = st.integers(0, WINDOW - 4)


@st.composite
def form(draw) -> str:
    n = draw(size)
    reg = draw(st.sampled_from(REGS[n]))
    mem = f"{PTR[n]} [W + {draw(offset)}]"
    imm = draw(st.integers(0, (1 << (8 * n)) - 1))
    kind = draw(st.sampled_from(("mov_to", "mov_from", "alu_mem", "alu_reg", "alu_imm",
                                 "unary", "xchg", "xadd", "cmpxchg", "movx", "shift",
                                 "shxd", "bt", "bsf", "bswap", "setcc", "push_pop", "mul",
                                 "string", "cmpxchg8b", "xlatb")))
    if kind == "mov_to":
        return f"mov {mem}, {draw(st.sampled_from((reg, str(imm))))}"
    if kind == "mov_from":
        return f"mov {reg}, {mem}"
    op = draw(st.sampled_from(ALU))
    logic = _defined(AF if op in ("and", "or", "xor", "test") else 0)
    if kind == "alu_mem":
        return f"{op} {mem}, {reg}" + logic
    if kind == "alu_reg":
        return (f"{op} {reg}, {mem}" if op != "test" else f"test {mem}, {reg}") + logic
    if kind == "alu_imm":
        return f"{op} {mem}, {imm}" + logic
    if kind == "unary":
        return f"{draw(st.sampled_from(UNARY))} {mem}"
    if kind == "xchg":
        return f"xchg {mem}, {reg}"
    if kind == "xadd":
        return f"xadd {mem}, {reg}"
    if kind == "cmpxchg":
        return f"cmpxchg {mem}, {reg}"
    if kind == "cmpxchg8b":
        at = draw(st.integers(0, WINDOW - 8))
        return "\n        ".join(
            f"{'lock ' if draw(st.booleans()) else ''}cmpxchg8b [W + {at}]"
            for _ in range(draw(st.integers(1, 2))))
    if kind == "xlatb":
        # EBX = the table's byte at AL's distance below it; EBX then as an offset, the
        # same whichever the window is
        at, al = draw(offset), draw(st.integers(0, 255))
        return f"mov ebx, W + {at} - {al}\n        mov al, {al}\n        xlatb\n        sub ebx, W + 0"
    if kind == "movx":
        src = draw(st.sampled_from((1, 2)))
        dst = draw(st.sampled_from(REGS[4] if src == 2 else REGS[4] + REGS[2]))
        return f"{draw(st.sampled_from(('movzx', 'movsx')))} {dst}, {PTR[src]} [W + {draw(offset)}]"
    if kind == "shift":
        count = draw(st.sampled_from(("1", "cl", str(draw(st.integers(0, 31))))))
        op = draw(st.sampled_from(SHIFTS))
        undefined = 0 if count == "1" else OF
        if op in ("shl", "shr", "sar"):
            undefined |= AF | (CF if count == "cl" or int(count) >= 8 * n else 0)
        return f"{op} {mem}, {count}" + _defined(undefined)
    if kind == "shxd":
        m = draw(st.sampled_from((2, 4)))
        # 16-bit operands by more than 16: undefined (SDM), and processors differ
        count = draw(st.integers(0, 16 if m == 2 else 31))
        op = draw(st.sampled_from(("shld", "shrd")))
        insn = f"{op} {PTR[m]} [W + {draw(offset)}], {draw(st.sampled_from(REGS[m]))}"
        insn = f"mov cl, {count}\n        {insn}, cl" if draw(st.booleans()) else \
            f"{insn}, {count}"
        return insn + _defined(AF | (OF if count != 1 else 0))
    if kind == "bsf":
        m = draw(st.sampled_from((2, 4)))
        at = f"{PTR[m]} [W + {draw(offset)}]"
        zero = f"mov {at}, 0\n        " if draw(st.booleans()) else ""  # ZF=1, dest kept
        return (f"{zero}{draw(st.sampled_from(('bsf', 'bsr')))} "
                f"{draw(st.sampled_from(REGS[m]))}, {at}" + _defined(CF | OF | SF | AF | PF))
    if kind == "bswap":
        r = draw(st.sampled_from((0, 1, 2, 3, 5, 6, 7)))  # not ESP
        if draw(st.booleans()):
            return f"bswap {('eax', 'ecx', 'edx', 'ebx', 'esp', 'ebp', 'esi', 'edi')[r]}"
        return f"db 0x66, 0x0f, {0xC8 + r:#x}  ; bswap r16 (NASM has no 16-bit form)"
    if kind == "bt":
        m = draw(st.sampled_from((2, 4)))
        return (f"{draw(st.sampled_from(('bt', 'bts', 'btr', 'btc')))} {PTR[m]} "
                f"[W + {draw(offset)}], {draw(st.integers(0, 8 * m - 1))}"
                + _defined(OF | SF | AF | PF))
    if kind == "setcc":
        return f"set{draw(st.sampled_from(CONDS))} byte [W + {draw(offset)}]"
    if kind == "push_pop":
        a, b = draw(offset), draw(offset)
        return f"push dword [W + {a}]\n        pop dword [W + {b}]"
    if kind == "mul":
        m = draw(st.sampled_from((2, 4)))
        if draw(st.booleans()):
            insn = f"imul {draw(st.sampled_from(REGS[m]))}, {PTR[m]} [W + {draw(offset)}]"
        else:
            insn = f"{draw(st.sampled_from(('mul', 'imul')))} {PTR[m]} [W + {draw(offset)}]"
        return insn + _defined(SF | ZF | AF | PF)
    # REP MOVS/STOS/LODS, forwards or backwards, into or out of the window
    s = draw(st.sampled_from((1, 2, 4)))
    count = draw(st.integers(0, 6))
    suffix = {1: "b", 2: "w", 4: "d"}[s]
    op = draw(st.sampled_from(("movs_in", "movs_out", "stos", "lods")))
    back = draw(st.booleans())
    at = draw(st.integers(s * count, WINDOW - s)) if back else draw(
        st.integers(0, WINDOW - s * max(count, 1)))
    win, buf = f"W + {at}", f"{BUFFER + at}"
    src, dst = {"movs_in": (buf, win), "movs_out": (win, buf), "stos": (None, win),
                "lods": (win, None)}[op]
    lines = ["std" if back else "cld", f"mov ecx, {count}"]
    if src is not None:
        lines.append(f"mov esi, {src}")
    if dst is not None:
        lines.append(f"mov edi, {dst}")
    lines.append(f"rep {op[:4]}{suffix}")
    # ESI and EDI as offsets into their region, the same whichever the window is
    for r, at_ in (("esi", src), ("edi", dst)):
        if at_ is not None:
            lines.append(f"sub {r}, {'W + 0' if at_ == win else BUFFER}")
    lines.append("cld")
    return "\n        ".join(lines)


def program(forms: list[str], seed: int, window: int) -> str:
    body = "\n        ".join(f.replace("W +", f"{window} +") for f in forms)
    regs = ("eax", "ecx", "edx", "ebx", "esi", "edi", "ebp")
    init = "\n        ".join(f"mov {r}, {(seed * (i + 3) * 0x9E3779B1) & 0xFFFFFFFF:#x}"
                             for i, r in enumerate(regs))
    stores = "\n        ".join(f"mov [{RESULTS + 4 * i:#x}], {r}" for i, r in enumerate(regs))
    return f"""bits 32
org 0x100000
        mov esp, {STACK:#x}
        mov edi, {window:#x}            ; the window and the buffer start with a pattern
        mov eax, {seed:#x}
        mov ecx, {WINDOW // 4}
        rep stosd
        mov edi, {BUFFER:#x}
        mov ecx, {WINDOW // 4}
        not eax
        rep stosd
        {init}
        {body}
        {stores}
        mov [{RESULTS + 28:#x}], esp
        pushfd
        pop eax
        mov [{RESULTS + 32:#x}], eax
        cld
        mov esi, {window:#x}           ; what the window holds now, copied out
        mov edi, {RESULTS + 64:#x}
        mov ecx, {WINDOW // 4}
        rep movsd
        mov dx, 0x501
        mov al, 0
        out dx, al
"""


def _seen(text: str, backend: str, paging: str = "ept") -> tuple:
    return guest_sees(text, backend, paging, ((RESULTS, 64 + WINDOW), (BUFFER, WINDOW)))


@settings(deadline=None, derandomize=not SOAK, database=None, max_examples=EXAMPLES,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(form(), min_size=1, max_size=8), st.integers(1, 0xFFFFFFFF))
def test_mmio_operands_give_what_ram_operands_give(forms: list[str], seed: int) -> None:
    ram = _seen(program(forms, seed, RAM), "bare")
    text = program(forms, seed, VGA)
    assert _seen(text, "bare") == ram, f"bare metal's VGA differs from RAM:\n{text}"
    for paging in ("ept", "shadow"):
        assert _seen(text, "sim", paging) == ram, f"{paging} differs from RAM:\n{text}"
    if host_kvm_problem() is None:
        assert _seen(text, "kvm") == ram, f"the host's KVM differs from RAM:\n{text}"
