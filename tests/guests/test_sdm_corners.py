"""Corners of the SDM where vmsim was found to depart from it (issue 8), on a bare Cpu.

Each test names the SDM text it checks. The bench (tests/guests/cpubench.py) puts code at
CODE, an IDT whose handlers are all `hlt`, and a GDT with flat code 0x08 and data 0x10;
tests add descriptors of their own at 0x18 and up.
"""

from __future__ import annotations

import struct

import pytest

from tests.guests.cpubench import CODE, GDT, STACK, Bench
from vmsim.asm import assemble
from vmsim.hw import exceptions as X
from vmsim.hw.cpu import CS, StopReason

CONFORMING_CODE = 0x00CF9E000000FFFF  # flat 32-bit code, type 0xE: conforming, readable
NT = 0x4000


def bench(body: str, *descriptors: int) -> Bench:
    """A bench running `body`, with `descriptors` at GDT selectors 0x18, 0x20, ...; its
    labels in b.sym."""
    image = assemble(f"bits 32\norg {CODE:#x}\n{body}\n", "<sdm corner>")
    b = Bench(image.data)
    b.sym = image.symbols
    b.all_gates()
    for i, d in enumerate(descriptors):
        b.mem.load(GDT + 0x18 + 8 * i, struct.pack("<Q", d))
    b.cpu.gdtr = (GDT, 0x18 + 8 * len(descriptors) - 1)
    return b


def handled(b: Bench, vector: int) -> bool:
    return b.cpu.halted and b.cpu.eip == b.handler(vector) + 1


# -- far JMP/CALL: RPL of a nonconforming target ---------------------------------------------

def test_far_jmp_to_nonconforming_with_rpl_above_cpl_is_gp():
    """SDM Vol. 2A JMP, protected mode, NONCONFORMING-CODE-SEGMENT: "IF (RPL > CPL) OR
    (DPL != CPL) THEN #GP(code segment selector)": at CPL 0, `jmp 0x0B:x` (the flat code
    segment 0x08 with RPL 3) faults with error code 0x08, EIP at the jmp."""
    b = bench("jmp 0x0B:target\ntarget: hlt")
    assert b.run() is StopReason.HLT and handled(b, X.GP)
    assert b.stack(3) == [0x08, CODE, 0x08]
    assert b.cpu.seg[CS].selector == 0x08


def test_far_call_to_nonconforming_with_rpl_above_cpl_is_gp():
    """SDM Vol. 2A CALL, NONCONFORMING-CODE-SEGMENT: "IF (RPL > CPL) OR (DPL != CPL) THEN
    #GP(code segment selector)", raised before anything is pushed."""
    b = bench("call 0x09:target\ntarget: hlt")
    assert b.run() is StopReason.HLT and handled(b, X.GP)
    assert b.cpu.r[4] == STACK - 16  # only the #GP frame: CALL pushed nothing
    assert b.stack(3) == [0x08, CODE, 0x08]


# -- CS.RPL <- CPL -------------------------------------------------------------------------------

def test_far_jmp_to_conforming_segment_loads_rpl_cpl():
    """SDM Vol. 2A JMP, CONFORMING-CODE-SEGMENT: RPL is not checked, and "CS(RPL) <- CPL":
    `jmp 0x1B:x` to a conforming DPL-0 segment runs on with CS = 0x18."""
    b = bench("jmp 0x1B:target\ntarget: mov eax, cs\nhlt", CONFORMING_CODE)
    assert b.run() is StopReason.HLT and not handled(b, X.GP)
    assert b.cpu.seg[CS].selector == 0x18
    assert b.cpu.r[0] & 0xFFFF == 0x18


def test_far_call_to_conforming_segment_loads_rpl_cpl():
    """SDM Vol. 2A CALL, CONFORMING-CODE-SEGMENT: "CS(RPL) <- CPL"; the pushed return CS
    is the caller's (0x08)."""
    b = bench("call 0x1B:target\ntarget: mov eax, cs\nhlt", CONFORMING_CODE)
    assert b.run() is StopReason.HLT and not handled(b, X.GP)
    assert b.cpu.seg[CS].selector == 0x18 and b.cpu.r[0] & 0xFFFF == 0x18
    assert b.stack(2) == [CODE + 7, 0x08]


def test_interrupt_gate_selector_rpl_is_replaced_by_cpl():
    """SDM Vol. 2A INT n, INTRA-PRIVILEGE-LEVEL-INTERRUPT: "CS(RPL) <- CPL" (the gate's
    selector RPL is neither checked nor kept): a gate naming 0x0B runs its handler with
    CS = 0x08, and IRETD back to the pushed CS 0x08 works."""
    b = bench("int 0x40\nhlt")
    b.gate(0x40, selector=0x0B)
    assert b.run() is StopReason.HLT and handled(b, 0x40)
    assert b.cpu.seg[CS].selector == 0x08


def test_exception_gate_selector_rpl_is_replaced_by_cpl():
    """SDM Vol. 3A 6.12.1 (same privilege level: "CS(RPL) <- CPL" in INT n's operation,
    which exception delivery follows): #UD through a gate whose selector is 0x0A."""
    b = bench("ud2")
    b.gate(X.UD, selector=0x0A)
    assert b.run() is StopReason.HLT and handled(b, X.UD)
    assert b.cpu.seg[CS].selector == 0x08
    assert b.stack(2) == [CODE, 0x08]


# -- IRET: task return from the current NT ----------------------------------------------------

def test_iret_with_nt_only_in_the_image_returns_and_loads_nt():
    """SDM Vol. 2A IRET: "ELSE IF EFLAGS.NT = 1 THEN GOTO TASK-RETURN" reads the CURRENT
    EFLAGS, before the pop; with NT=0 now, an image with NT=1 is a normal return that
    loads NT=1 into EFLAGS."""
    b = bench("""
        push dword 0x4002       ; EFLAGS image: NT
        push dword 0x08
        push dword back
        iretd
    back:
        pushfd
        pop eax
        hlt""")
    assert b.run() is StopReason.HLT, b.cpu.stop_message
    assert b.cpu.r[0] & NT and b.cpu.eflags & NT
    assert b.cpu.r[4] == STACK


def test_iret_with_current_nt_is_a_task_return():
    """SDM Vol. 2A IRET: with EFLAGS.NT = 1 the IRET is a task return, whatever the stack
    holds; vmsim models no tasks and stops with a reason (never returns through the stack)."""
    b = bench("""
        pushfd
        or dword [esp], 0x4000
        popfd
        push dword 0x0002       ; an image without NT
        push dword 0x08
        push dword back
        iretd
    back:
        hlt""")
    assert b.run() is StopReason.UNSUPPORTED
    assert "task return" in b.cpu.stop_message


# -- where vmsim follows the SDM and QEMU 7.2 TCG does not (docs/qemu-departures.md) --------

def test_int1_icebp_is_a_debug_trap():
    """SDM Vol. 2A INT n/INTO/INT3/INT1: "The INT1 instruction also uses a one-byte opcode
    (F1) and generates a call to the debug exception handler" (vector 1), a trap: the saved
    EIP is the next instruction. QEMU 7.2 TCG raises #UD for F1."""
    b = bench("nop\nint1\nhlt")
    assert b.run() is StopReason.HLT and handled(b, X.DB)
    assert b.stack(3)[:2] == [CODE + 2, 0x08]
    assert b.cpu.r[4] == STACK - 12  # no error code


def test_ext_bit_in_a_fault_while_delivering_an_exception():
    """SDM Vol. 3A 6.13 Error Code: "EXT External event (bit 0) - When set, indicates that
    the exception occurred during delivery of an event external to the program, such as
    an interrupt or an earlier exception." #UD through a not-present gate: #NP(6*8 + 2 +
    1). QEMU 7.2 TCG leaves EXT clear (0x32)."""
    b = bench("ud2")
    b.gate(X.UD, kind=0x0E)  # P=0
    assert b.run() is StopReason.HLT and handled(b, X.NP)
    assert b.stack(2) == [X.UD * 8 + 2 + 1, CODE]


def test_far_jmp_sets_the_code_descriptor_accessed_bit():
    """SDM Vol. 3A 3.4.5.1: the accessed bit: "The processor sets this bit whenever it loads
    a segment selector for the segment into a segment register, assuming that the type of
    memory that contains the segment descriptor supports processor writes." CS included:
    a far JMP to a code descriptor with A=0 (type 0xA) leaves it A=1 (0xB). QEMU 7.2 TCG
    leaves it clear."""
    b = bench("jmp 0x18:target\ntarget: hlt", 0x00CF9A000000FFFF)
    assert b.run() is StopReason.HLT and not handled(b, X.GP)
    assert b.r32(GDT + 0x18 + 4) >> 8 & 0xFF == 0x9B


def test_reserved_bit_in_a_present_4mib_pde_reports_p1():
    """SDM Vol. 3A 4.7 Page-Fault Exceptions: P "is 0 if there is no translation for the
    linear address because the P flag was 0 in one of the paging-structure entries", and
    RSVD is 1 "because a reserved bit was set": a present 4-MiB PDE with bit 21 set (a
    reserved bit of a 32-bit-paging 4-MiB PDE, 4.3) gives error code P|RSVD = 0x9 for a
    read, 0xB for a write, CR2 the address. QEMU 7.2 TCG reports 0x8 / 0xA."""
    for insn, code in (("mov eax, [0x00400010]", 0x9), ("mov [0x00400020], eax", 0xB)):
        b = bench(insn)
        b.paging(pse=True)
        b.w32(0x100000 + 4, 0x00600000 | 0x80 | 0x3)  # PDE 1: 4 MiB at 6 MiB, bit 21 set
        assert b.run() is StopReason.HLT and handled(b, X.PF)
        assert b.stack(2) == [code, CODE]
        assert b.cpu.cr2 == (0x00400010 if code == 0x9 else 0x00400020)


def test_iretd_loads_vif_and_vip_at_cpl0_and_popfd_does_not():
    """SDM Vol. 2A IRET, RETURN-TO-SAME-PRIVILEGE-LEVEL: "IF CPL = 0 THEN ... IF OperandSize
    = 32 THEN EFLAGS(VIF, VIP) <- tempEFLAGS"; POPF: "VIP, VIF, VM, and all reserved bits
    are unaffected". QEMU 7.2 TCG's IRETD does not load VIF and VIP."""
    vif_vip = 0x180000
    b = bench("""
        push dword 0x180002
        popfd
        pushfd
        pop ebx                 ; POPF: VIF and VIP stay clear
        push dword 0x180002
        push dword 0x08
        push dword back
        iretd
    back:
        pushfd
        pop eax
        hlt""")
    assert b.run() is StopReason.HLT
    assert not b.cpu.r[3] & vif_vip
    assert b.cpu.r[0] & vif_vip == vif_vip


def test_reserved_cr4_bit_is_gp():
    """SDM Vol. 2B MOV (control registers), Protected Mode Exceptions: "#GP(0) ... If an
    attempt is made to write a 1 to any reserved bit in CR4"; bit 12 is reserved on a CPU
    without LA57 (Vol. 3A 2.5). QEMU 7.2 TCG was seen ignoring a reserved CR4 bit."""
    b = bench("mov eax, 1 << 12\nmov cr4, eax\nhlt")
    assert b.run() is StopReason.HLT and handled(b, X.GP)
    assert b.stack(2) == [0, CODE + 5]
    assert b.cpu.cr4 == 0


# -- segment usability: null and read-only data segments -----------------------------------
RO_DATA = 0x00CF90000000FFFF  # flat data, type 0: read-only


def test_memory_access_through_a_null_segment_is_gp0():
    """SDM Vol. 2B MOV, Protected Mode Exceptions: "#GP(0) If the DS, ES, FS, or GS register
    is used to access memory and it contains a NULL segment selector" (Vol. 3A 3.4.2: a
    null selector may be loaded, not used). The access faults; EIP at the instruction."""
    b = bench("xor eax, eax\nmov ds, ax\nlea ecx, [ebx + 8]\nfault: mov eax, [ebx]\nhlt")
    assert b.run() is StopReason.HLT and handled(b, X.GP)
    assert b.stack(2)[0] == 0 and b.cpu.r[1] == 8  # LEA accesses no memory: no fault
    # ES null: STOSB faults, but REP STOSB with ECX = 0 accesses nothing and runs on.
    b = bench("xor eax, eax\nmov es, ax\nxor ecx, ecx\nrep stosb\nmov ecx, 1\nstosb\nhlt")
    assert b.run() is StopReason.HLT and handled(b, X.GP)
    assert b.stack(2)[1] == CODE + 2 + 2 + 2 + 2 + 5


def test_write_through_a_read_only_segment_is_gp0():
    """SDM Vol. 3A 5.4.1: a write through a read-only data segment is #GP(0) (Vol. 2B MOV:
    "If the destination operand is located in a non-writable segment"); reads are fine,
    and a read-modify-write faults before it reads."""
    b = bench("mov ax, 0x18\nmov ds, ax\nmov eax, [0x5000]\nmov dword [0x5000], 7\nhlt",
              RO_DATA)
    assert b.run() is StopReason.HLT and handled(b, X.GP)
    assert b.stack(2) == [0, CODE + 4 + 2 + 5]
    b = bench("mov ax, 0x18\nmov ds, ax\nadd dword [0x5000], 1\nhlt", RO_DATA)
    assert b.run() is StopReason.HLT and handled(b, X.GP)
    assert b.r32(0x5000) == 0


def test_write_with_a_cs_override_is_gp0():
    """A code segment is never writable (Vol. 3A 3.4.5.1, 5.4.1): `mov [cs:eax], ...` is
    #GP(0) whatever the other segments hold."""
    b = bench("mov eax, 0x5000\nmov ecx, [cs:eax]\nmov dword [cs:eax], 1\nhlt")
    assert b.run() is StopReason.HLT and handled(b, X.GP)
    assert b.stack(2) == [0, CODE + 5 + 3]  # mov eax, imm32; mov ecx, [cs:eax]


def test_reloading_the_segment_lets_the_same_instruction_run():
    """The fault depends on the segment when the instruction runs, not when it was first
    decoded: a #GP handler that reloads DS and returns to the faulting instruction sees it
    complete."""
    b = bench("""
        xor eax, eax
        mov ds, ax
        mov ebx, 0x5000
    again:
        mov eax, [ebx]          ; faults once, then reads 0x11223344
        hlt
    gp:
        mov cx, 0x10
        mov ds, cx
        add esp, 4              ; the error code
        iretd""")
    b.w32(0x5000, 0x11223344)
    b.gate(X.GP, handler=b.sym["gp"])
    assert b.run() is StopReason.HLT
    assert b.cpu.r[0] == 0x11223344 and b.cpu.eip == b.sym["gp"]


def test_read_through_an_execute_only_cs_is_gp0():
    """Vol. 3A 5.4.1: an execute-only code segment cannot be read: with CS execute-only
    (after a far JMP to one), `mov eax, [cs:x]` is #GP(0); a DS read still works."""
    b = bench("jmp 0x18:x\nx: mov eax, [0x5000]\ny: mov eax, [cs:0x5000]\nhlt",
              0x00CF98000000FFFF)
    assert b.run() is StopReason.HLT and handled(b, X.GP)
    assert b.stack(3) == [0, b.sym["y"], 0x18]


# -- a faulting memory operand of BSF/BSR/SHLD/SHRD changes nothing -----------------------------
# SDM Vol. 3A 6.5: a fault is reported with the state before the instruction, so that it
# can be restarted: no register, flag or byte of memory it would have changed has changed.
RO, HOLE = 0x300000, 0x302000  # a present read-only page, a page not present
FLAGS = 0x8D7  # CF PF AF ZF SF OF, and the fixed bit 1
RF = 0x10000  # set in the EFLAGS image a fault pushes (Vol. 3A 18.3.1.1)


def _paged(body: str) -> Bench:
    b = bench(f"mov eax, 0xAABBCCDD\nmov ebx, 0x12345678\nmov ecx, 0x105\nmov edx, 0x8001\n"
              f"push {FLAGS:#x}\npopfd\n{body}\nhlt")
    b.paging()  # 0-4 MiB identity-mapped, CR0.WP set
    b.map(RO, RO | 1)  # present, not writable
    b.map(HOLE, 0)
    for at in range(RO - 16, RO + 16, 4):
        b.w32(at, 0x5A5A5A5A)
    for at in range(HOLE - 16, HOLE, 4):
        b.w32(at, 0)  # BSF/BSR would then leave their destination: all-zero bytes
    return b


@pytest.mark.parametrize("insn, esi, error_code", [
    ("shld [esi], ebx, 4", RO + 8, 3),                # write to a read-only page: P W
    ("shrd dword [esi], ebx, cl", RO + 12, 3),
    ("shld word [esi], bx, cl", RO - 1, 3),           # crosses into the read-only page
    ("shrd dword [esi], edx, 1", RO - 2, 3),
    ("bsf eax, [esi]", HOLE + 8, 0),                  # read of a page not present
    ("bsr ax, [esi]", HOLE - 1, 0),                   # crosses into it
    ("bsf ecx, dword [esi]", HOLE - 3, 0),
])
def test_faulting_memory_operand_changes_nothing(insn: str, esi: int, error_code: int):
    b = _paged(f"mov esi, {esi:#x}\nfault: {insn}")
    regs = [0xAABBCCDD, 0x105, 0x8001, 0x12345678]
    ram = b.mem.read_bytes(RO - 16, 32), b.mem.read_bytes(HOLE - 16, 16)
    assert b.run() is StopReason.HLT and handled(b, X.PF)
    assert b.stack(4) == [error_code, b.sym["fault"], 0x08, FLAGS | RF]
    assert b.cpu.cr2 >> 12 == (RO if error_code else HOLE) >> 12
    assert b.cpu.r[:4] == regs and b.cpu.r[6] == esi
    assert (b.mem.read_bytes(RO - 16, 32), b.mem.read_bytes(HOLE - 16, 16)) == ram


def test_shld_through_a_read_only_segment_is_gp0_and_changes_nothing():
    """SDM Vol. 2B SHLD, Protected Mode Exceptions: "#GP(0) If the destination is located in
    a non-writable segment"."""
    b = bench("mov ax, 0x18\nmov ds, ax\nmov eax, 0x8001\nmov ecx, 3\npush 0x2\npopfd\n"
              "fault: shrd [0x5000], eax, cl\nhlt", RO_DATA)
    b.w32(0x5000, 0x11223344)
    assert b.run() is StopReason.HLT and handled(b, X.GP)
    assert b.stack(4) == [0, b.sym["fault"], 0x08, 0x2 | RF]
    assert b.r32(0x5000) == 0x11223344 and b.cpu.r[0] == 0x8001


# -- WAIT/FWAIT on a processor without an FPU -------------------------------------------------

@pytest.mark.parametrize(("bits", "faults"), [(0x0, False), (0x2, False), (0x8, False),
                                              (0xA, True), (0xE, True)])
def test_wait_is_nm_only_with_mp_and_ts(bits: int, faults: bool):
    """SDM Vol. 2B WAIT/FWAIT, Protected Mode Exceptions: "#NM If CR0.MP[bit 1] = 1 and
    CR0.TS[bit 3] = 1"; else it checks for pending unmasked x87 exceptions, of which a CPU
    without an FPU has none, and goes on (vmsim raised #UD: outside its subset). CR0.EM
    (bit 2) does not matter to it."""
    b = bench(f"mov eax, cr0\nor eax, {bits:#x}\nmov cr0, eax\nw: wait\nmov ebx, 1\nhlt")
    assert b.run() is StopReason.HLT
    if faults:
        assert handled(b, X.NM) and b.cpu.r[3] != 1
        assert b.stack(1) == [b.sym["w"]]  # a fault: EIP at the WAIT
    else:
        assert b.cpu.r[3] == 1 and not handled(b, X.NM)


@pytest.mark.parametrize("form", ["reg", "mem"])
def test_arpl_raises_the_rpl(form: str):
    """SDM Vol. 2A ARPL: "IF DEST[RPL] < SRC[RPL] THEN ZF <- 1; DEST[RPL] <- SRC[RPL]; ELSE
    ZF <- 0": the destination's bits 1:0 only, the other flags kept (vmsim raised #UD).
    Each pair of RPLs, with CF set beforehand to see it kept."""
    for dst in range(4):
        for src in range(4):
            value = 0xABCD1230 | dst
            # arpl cx, bx (63 D9) / arpl [0x5000], bx (63 1D disp32): the assembler has no ARPL
            arpl = "db 0x63, 0xD9" if form == "reg" else "db 0x63, 0x1D\ndd 0x5000"
            b = bench(f"mov ecx, {value:#x}\nmov [0x5000], ecx\nmov ebx, {0x44 | src:#x}\n"
                      f"stc\n{arpl}\nhlt")
            assert b.run() is StopReason.HLT
            got = b.cpu.r[1] if form == "reg" else b.mem.read(0x5000, 4)
            want = (value & ~3) | src if dst < src else value
            assert got == want, (dst, src)
            assert bool(b.cpu.eflags & 0x40) == (dst < src) and b.cpu.eflags & 1


@pytest.mark.parametrize(("bits", "vector"), [(0x4, X.NM), (0x8, X.NM), (0xC, X.NM),
                                              (0x2, X.UD), (0x0, X.UD)])
def test_x87_with_em_or_ts_is_nm(bits: int, vector: int):
    """SDM Vol. 3A 2.5, CR0.EM: "x87 FPU instructions generate a device-not-available
    exception (#NM)"; CR0.TS: an x87 instruction "generates #NM" (Table 12-8): how a
    kernel emulates a missing FPU or switches FPU state lazily. With neither set this CPU,
    which has no FPU, gives #UD (and the not_in_subset event), as before."""
    b = bench(f"mov eax, cr0\nor eax, {bits:#x}\nmov cr0, eax\nx: db 0xD9, 0xE8\nhlt")  # fld1
    assert b.run() is StopReason.HLT and handled(b, vector)
    assert b.stack(1) == [b.sym["x"]]
