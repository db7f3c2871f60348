"""DAA, DAS, AAA, AAS, AAM, AAD, SALC and BOUND (SDM Vol. 2A) on bare metal, on the
simulated kvm.ko with EPT and with shadow paging, and on the host's KVM; and, as a 32-bit
Linux process, on the host's processor itself.

The guest runs each adjustment over every AL, with CF and AF each clear and set (OF SF ZF
PF set for odd AL, EAX's upper half a pattern, AH through the values its carry and borrow
wrap at), and stores EAX and EFLAGS with the flags the SDM leaves undefined cleared; SALC
after flags set in several ways; BOUND over indexes on and past both edges of its signed
bounds, and AAM 0, whose faults (#BR, #DE) a handler records with the EIP pushed and
resumes past. Every backend must store the same bytes, and they must be what the SDM's
Operation sections give, worked out here in Python.

The host's KVM is the oracle for each part it runs. A software KVM runs these in KVM's
instruction emulator instead (this host's kvm_pvm, tests/stack/test_host_kvm.py), which
has DAS, AAM, AAD and SALC but not DAA, AAA, AAS or BOUND (nor IRET): a part it refuses is
skipped there, with the host's reason; and its em_aam and em_aad set SF and ZF from all of
EAX (`fastop(ctxt, em_or)` on the 4-byte accumulator), where the processor takes them
from AL: there those two flags are left out of the comparison. The processor is reached
anyway through a 32-bit process (where nasm, ld and the kernel's IA-32 emulation are
there), which runs the loops and SALC natively: it agrees with the SDM everywhere.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.stack.stackrun import guest_sees, host_kvm_problem
from vmsim.asm import assemble
from vmsim.hostkvm.explain import host_kvm_module

CF, PF, AF, ZF, SF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x800
RESULTS = 0x20000  # the guest's results; 8 bytes a case: EAX, then EFLAGS
COMBOS = 1024  # AL (bits 0-7), CF (bit 8), AF (bit 9)
AH_VALUES = (0x00, 0xFF, 0x01, 0xFE, 0x7F, 0x80, 0x09, 0x99)
HIGH = 0x5A5A0000
# Each loop: the instruction and the flags the SDM defines after it (the rest are cleared).
LOOPS = (("daa", CF | PF | AF | ZF | SF), ("das", CF | PF | AF | ZF | SF),
         ("aaa", CF | AF), ("aas", CF | AF),
         ("aam", PF | ZF | SF), ("aam 16", PF | ZF | SF), ("aam 0xff", PF | ZF | SF),
         ("aad", PF | ZF | SF), ("aad 0", PF | ZF | SF), ("aad 7", PF | ZF | SF))
# SALC after flags from POPFD, or after an instruction that leaves CF lazily in vmsim (one
# that leaves no flag undefined: SALC keeps them, and they are compared).
SALC_CASES = ("push 0x8d6\n        popfd", "push 0x8d7\n        popfd", "push 0x2\n        popfd",
              "push 0x3\n        popfd", "stc", "clc", "mov al, 0x80\n        add al, al",
              "mov al, 1\n        sub al, 2", "mov al, 0xff\n        neg al",
              "stc\n        inc eax", "mov al, 0x40\n        cmp al, 0x40")
SALC_CARRY = (False, True, False, True, True, False, True, True, True, True, False)
# BOUND (index, lower, upper): on and past each edge, signed; 32- then 16-bit.
BOUND32 = ((5, 5, 5), (4, 5, 5), (6, 5, 5), (-1, -1, 0), (0, -1, -1),
           (-0x80000000, -0x80000000, 0x7FFFFFFF), (-0x80000000, -0x7FFFFFFF, 0x7FFFFFFF),
           (0x7FFFFFFF, 0, 0x7FFFFFFE), (-0x80000000, 0, -1), (3, 4, 2))
BOUND16 = ((-1, -1, -1), (0x7FFF, -0x8000, 0x7FFF), (-0x8000, -0x7FFF, 0x7FFF),
           (-1, 0, 0x7FFF), (0x7FFF, 0, 0x7FFE))
# Where each part stores, as an offset from RESULTS.
SALC_OFF = len(LOOPS) * COMBOS * 8
BOUND_OFF = SALC_OFF + len(SALC_CASES) * 8
AAM0_OFF = BOUND_OFF + (len(BOUND32) + len(BOUND16)) * 8
SIZE = AAM0_OFF + 12
PARTS = {**{insn: (k * COMBOS * 8, (k + 1) * COMBOS * 8) for k, (insn, _) in enumerate(LOOPS)},
         "salc": (SALC_OFF, BOUND_OFF), "bound": (BOUND_OFF, SIZE)}
NATIVE = [p for p in PARTS if p != "bound"]  # faults in a process are signals: not there


def _loop(k: int) -> str:
    insn, defined = LOOPS[k]
    return f"""
        mov edi, results + {k * COMBOS * 8:#x}
        xor ecx, ecx
loop{k}:
        mov edx, ecx
        shr edx, 8
        and edx, 3
        mov esi, ecx
        and esi, 1
        lea edx, [edx + esi * 4]
        mov eax, ecx
        and eax, 0xff
        or eax, {HIGH:#x}
        mov ah, [ah_values + edx]
        mov edx, ecx
        shr edx, 8
        mov esi, edx
        and esi, 1
        and edx, 2
        shl edx, 3
        or edx, esi
        or edx, 2
        test cl, 1
        jz even{k}
        or edx, {OF | SF | ZF | PF:#x}
even{k}:
        push edx
        popfd
        {insn}
        pushfd
        and dword [esp], {defined | 2:#x}
        pop edx
        mov [edi], eax
        mov [edi + 4], edx
        add edi, 8
        inc ecx
        cmp ecx, {COMBOS}
        jb loop{k}
"""


def _salc() -> str:
    return "".join(f"""
        mov eax, 0x12345678
        {setup}
        salc
        pushfd
        and dword [esp], {OF | SF | ZF | AF | PF | CF | 2:#x}
        pop edx
        mov [results + {SALC_OFF + 8 * i:#x}], eax
        mov [results + {SALC_OFF + 8 * i + 4:#x}], edx
""" for i, setup in enumerate(SALC_CASES))


def _bound() -> str:
    """BOUND over the tables, then AAM 0; a handler records each fault's EIP and vector."""
    return f"""
        mov ebx, bound32
        mov edi, results + {BOUND_OFF:#x}
b32:    mov dword [fault_eip], 0
        mov eax, [ebx]
        lea esi, [ebx + 4]
        mov ebp, 2
bnd32:  bound eax, [esi]
        mov ecx, [fault_eip]
        mov [edi], ecx
        mov [edi + 4], eax
        add edi, 8
        add ebx, 12
        cmp ebx, bound16
        jb b32
b16:    mov dword [fault_eip], 0
        mov eax, [ebx]
        lea esi, [ebx + 4]
        mov ebp, 3
bnd16:  bound ax, [esi]
        mov ecx, [fault_eip]
        mov [edi], ecx
        mov [edi + 4], eax
        add edi, 8
        add ebx, 8
        cmp ebx, bounds_end
        jb b16
        mov dword [fault_eip], 0
        mov eax, 0x1234abcd
        mov ebp, 2
aam0:   aam 0
        mov ecx, [fault_eip]
        mov [results + {AAM0_OFF:#x}], ecx
        mov [results + {AAM0_OFF + 4:#x}], eax
        mov eax, [fault_vector]
        mov [results + {AAM0_OFF + 8:#x}], eax
"""


def _part(name: str) -> str:
    if name == "salc":
        return _salc()
    if name == "bound":
        return _bound()
    return _loop([insn for insn, _ in LOOPS].index(name))


def _guest(parts: list[str]) -> str:
    table32 = "\n".join(f"        dd {i & 0xFFFFFFFF:#x}, {lo & 0xFFFFFFFF:#x}, "
                        f"{hi & 0xFFFFFFFF:#x}" for i, lo, hi in BOUND32)
    table16 = "\n".join(f"        dd {0xABCD0000 | (i & 0xFFFF):#x}\n        dw {lo & 0xFFFF:#x}, "
                        f"{hi & 0xFFFF:#x}" for i, lo, hi in BOUND16)
    return f"""bits 32
org 0x100000
results equ {RESULTS:#x}
        lgdt [gdtr]
        jmp 0x08:flat
flat:   mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov esp, 0x90000
        mov eax, de_handler
        mov [idt], ax
        shr eax, 16
        mov [idt + 6], ax
        mov eax, br_handler
        mov [idt + 5 * 8], ax
        shr eax, 16
        mov [idt + 5 * 8 + 6], ax
        lidt [idtr]
{"".join(_part(p) for p in parts)}
        mov dx, 0x501
        mov al, 0
        out dx, al
        hlt

; #DE and #BR are faults: record the EIP pushed (the instruction's), go on EBP bytes past it
de_handler:
        mov dword [fault_vector], 0
        jmp fault
br_handler:
        mov dword [fault_vector], 5
fault:  push eax
        mov eax, [esp + 4]
        mov [fault_eip], eax
        add [esp + 4], ebp
        pop eax
        iretd

fault_eip:      dd 0
fault_vector:   dd 0
ah_values:      db {", ".join(f"{v:#x}" for v in AH_VALUES)}
bound32:
{table32}
bound16:
{table16}
bounds_end:
        align 8
gdt:    dq 0
        dq 0x00CF9A000000FFFF
        dq 0x00CF92000000FFFF
gdtr:   dw 23
        dd gdt
idtr:   dw 6 * 8 - 1
        dd idt
idt:    dw 0, 0x08, 0x8e00, 0
        times 4 dq 0
        dw 0, 0x08, 0x8e00, 0
"""


def _native() -> str:
    """The loops and SALC as a 32-bit Linux program that writes its results to stdout."""
    return f"""bits 32
section .text
global _start
_start:
{"".join(_part(p) for p in NATIVE)}
        mov eax, 4
        mov ebx, 1
        mov ecx, results
        mov edx, {BOUND_OFF}
        int 0x80
        mov eax, 1
        xor ebx, ebx
        int 0x80
section .data
ah_values:      db {", ".join(f"{v:#x}" for v in AH_VALUES)}
section .bss
results:        resb {BOUND_OFF}
"""


# -- the SDM's Operation sections, written out again for the expected values ----------------

def _szp(al: int) -> int:
    return (PF if bin(al).count("1") % 2 == 0 else 0) | (al & SF) | (0 if al else ZF)


def _sdm(insn: str, ax: int, flags: int) -> tuple[int, int]:
    """(AX, flags) after `insn`, from the SDM's pseudo-code (flags it leaves undefined: 0)."""
    al, ah, cf, af = ax & 0xFF, ax >> 8, flags & CF, flags & AF
    op, _, imm = insn.partition(" ")
    if op == "daa":
        new_al, new_af = al, 0
        if al & 0xF > 9 or af:
            new_al, new_af = (al + 6) & 0xFF, AF
        if al > 0x99 or cf:
            new_al = (new_al + 0x60) & 0xFF
            return ah << 8 | new_al, CF | new_af | _szp(new_al)
        return ah << 8 | new_al, new_af | _szp(new_al)
    if op == "das":
        new_al, new_af, new_cf = al, 0, 0
        if al & 0xF > 9 or af:
            new_al, new_af, new_cf = (al - 6) & 0xFF, AF, cf | (al < 6)
        if al > 0x99 or cf:
            new_al, new_cf = (new_al - 0x60) & 0xFF, CF
        return ah << 8 | new_al, new_cf | new_af | _szp(new_al)
    if op in ("aaa", "aas"):
        if al & 0xF > 9 or af:  # AAA: AX + 106h; AAS: AX - 6, then AH - 1
            ax = (ax + 0x106) & 0xFFFF if op == "aaa" else (((ax - 6) & 0xFFFF) - 0x100) & 0xFFFF
            return ax & 0xFF0F, AF | CF
        return ax & 0xFF0F, 0
    base = int(imm, 0) if imm else 10
    if op == "aam":
        return (al // base) << 8 | al % base, _szp(al % base)
    al = (al + ah * base) & 0xFF
    return al, _szp(al)


def _expected_loop(insn: str, defined: int) -> bytes:
    out = bytearray()
    for n in range(COMBOS):
        al, cf, af = n & 0xFF, (n >> 8) & 1, (n >> 9) & 1
        ah = AH_VALUES[((n >> 8) & 3) | (n & 1) << 2]
        ax, flags = _sdm(insn, ah << 8 | al, cf | af << 4)
        out += (HIGH | ax).to_bytes(4, "little") + ((flags & defined) | 2).to_bytes(4, "little")
    return bytes(out)


def _case(seen: bytes, part: str, n: int) -> str:
    """Which input case `n` of a part was (for a message)."""
    if part == "salc":
        return f"SALC after `{SALC_CASES[n].split(chr(10))[0]} ...`"
    if part == "bound":
        return f"BOUND case {n}"
    return f"{part} with AL={n & 0xFF:#04x} CF={(n >> 8) & 1} AF={(n >> 9) & 1}"


def _first_difference(part: str, got: bytes, want: bytes, who: str) -> str:
    start, end = PARTS[part]
    for n in range(0, end - start, 8):
        g, w = got[start + n:start + n + 8], want[start + n:start + n + 8]
        if g != w:
            return f"{_case(got, part, n // 8)}: {who} stored {g.hex()}, vmsim {w.hex()}"
    return ""


def _without(seen: bytes, part: str, flags: int) -> bytes:
    """`seen` with `flags` cleared in each stored EFLAGS of a loop's part."""
    out = bytearray(seen)
    start, end = PARTS[part]
    for at in range(start + 4, end, 8):
        out[at] &= ~flags & 0xFF
    return bytes(out)


@pytest.fixture(scope="module")
def bare() -> bytes:
    status, shutdown, seen = guest_sees(_guest(list(PARTS)), "bare", "ept", ((RESULTS, SIZE),))
    assert (status, shutdown) == (1, False)
    return seen


@pytest.mark.parametrize("paging", ["ept", "shadow"])
def test_the_simulated_kvm_agrees_with_bare_metal(bare: bytes, paging: str) -> None:
    assert guest_sees(_guest(list(PARTS)), "sim", paging, ((RESULTS, SIZE),)) == (1, False, bare)


@pytest.mark.parametrize("part", list(PARTS))
def test_the_host_kvm_agrees(bare: bytes, part: str) -> None:
    problem = host_kvm_problem()
    if problem is not None:
        pytest.skip(problem)
    from vmsim.session import Session

    s = Session(assemble(_guest([part]), "<guest>"), "kvm")
    outcome = s.run()
    if outcome.exit_status is None and "could not run the guest instruction" in outcome.reason:
        pytest.skip(outcome.reason)  # a software KVM's emulator without the instruction
    assert (outcome.exit_status, outcome.reason) == (1, "isa-debug-exit: status 1")
    start, end = PARTS[part]
    got, want = s.read_linear(RESULTS, SIZE), bare
    if host_kvm_module() == "kvm_pvm" and part.startswith(("aam", "aad")):
        got, want = _without(got, part, SF | ZF), _without(want, part, SF | ZF)
    assert got[start:end] == want[start:end], _first_difference(part, got, want,
                                                                "the host's KVM")


def test_the_host_processor_agrees(bare: bytes, tmp_path: Path) -> None:
    nasm, ld = shutil.which("nasm"), shutil.which("ld")
    if nasm is None or ld is None:
        pytest.skip("nasm and ld build the 32-bit program")
    (tmp_path / "bcd.asm").write_text(_native())
    for cmd in ([nasm, "-f", "elf32", "-o", "bcd.o", "bcd.asm"],
                [ld, "-m", "elf_i386", "-o", "bcd", "bcd.o"]):
        r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, timeout=60)
        if r.returncode:
            pytest.skip(f"cannot build a 32-bit program: {r.stderr.decode().strip()}")
    try:
        r = subprocess.run([str(tmp_path / "bcd")], capture_output=True, timeout=60)
    except OSError as e:  # no IA-32 emulation in the kernel: not an executable here
        pytest.skip(f"32-bit programs do not run here: {e}")
    if r.returncode:
        pytest.skip(f"32-bit programs do not run here (status {r.returncode})")
    got = r.stdout
    assert len(got) == BOUND_OFF
    for part in NATIVE:
        start, end = PARTS[part]
        assert got[start:end] == bare[start:end], _first_difference(part, got, bare,
                                                                    "the processor")


def test_what_the_sdm_gives(bare: bytes) -> None:
    for k, (insn, defined) in enumerate(LOOPS):
        at = k * COMBOS * 8
        assert bare[at:at + COMBOS * 8] == _expected_loop(insn, defined), insn
    word = [int.from_bytes(bare[SALC_OFF + 4 * i:SALC_OFF + 4 * i + 4], "little")
            for i in range(2 * len(SALC_CASES))]
    assert word[0::2] == [0x123456FF if c else 0x12345600 for c in SALC_CARRY]
    assert word[1:8:2] == [0x8D6, 0x8D7, 0x2, 0x3]  # SALC changes no flag
    symbols = assemble(_guest(list(PARTS)), "<guest>").symbols
    for j, (i, lo, hi) in enumerate(BOUND32 + BOUND16):
        eip, reg = (int.from_bytes(bare[BOUND_OFF + 8 * j + o:BOUND_OFF + 8 * j + o + 4],
                                   "little") for o in (0, 4))
        outside = not lo <= i <= hi
        where = symbols["bnd32" if j < len(BOUND32) else "bnd16"]
        assert eip == (where if outside else 0), (i, lo, hi)  # #BR: the BOUND's EIP
        assert reg == (i & 0xFFFFFFFF if j < len(BOUND32) else 0xABCD0000 | (i & 0xFFFF))
    de = [int.from_bytes(bare[AAM0_OFF + 4 * i:AAM0_OFF + 4 * i + 4], "little")
          for i in range(3)]
    assert de == [symbols["aam0"], 0x1234ABCD, 0]  # #DE at the AAM, EAX as it was
