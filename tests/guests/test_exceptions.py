"""Exception and interrupt delivery on a bare Cpu (SDM Vol. 3A 6.12-6.15).

Every IDT handler in the bench is a `hlt` at HANDLERS + 16*vector, so where the CPU stops
says which vector was delivered, and the stack holds the frame it pushed.
"""

from __future__ import annotations

import struct

import pytest

from tests.guests.cpubench import CODE, HANDLERS, IDT, STACK, Bench
from vmsim.hw import exceptions as X
from vmsim.hw.cpu import StopReason, _is_double

FLAGS_IF = 0x200


def delivered(b: Bench, vector: int) -> bool:
    return b.cpu.eip == b.handler(vector) + 1 and b.cpu.halted


def run_to_handler(code: bytes, vector: int, **kw) -> Bench:
    b = Bench(code, kinds=("exception", "triple_fault", "not_in_subset"), **kw)
    b.all_gates()
    assert b.run() is StopReason.HLT
    assert delivered(b, vector), f"stopped at {b.cpu.eip:#x}"
    return b


# -- faults and traps: saved EIP, frame, error code ------------------------------------------

@pytest.mark.parametrize("code, vector, rel", [
    (b"\x0F\x0B", X.UD, 0),                       # ud2: fault, EIP of ud2
    (b"\x31\xC9\xF7\xF1", X.DE, 2),               # xor ecx,ecx; div ecx: fault, EIP of div
    (b"\xCC", X.BP, 1),                           # int3: trap, next instruction
    (b"\xCD\x40", 0x40, 2),                       # int 0x40: trap
    (b"\xB0\x7F\x04\x01\xCE", X.OF, 5),           # mov al,0x7f; add al,1; into: trap
])
def test_no_error_code_frame(code: bytes, vector: int, rel: int):
    b = run_to_handler(code, vector)
    assert b.cpu.r[4] == STACK - 12  # EIP, CS, EFLAGS: no error code (Table 6-1)
    eip, cs, _ = b.stack(3)
    assert (eip, cs) == (CODE + rel, 0x08)


@pytest.mark.parametrize("code, vector, ec, rel", [
    # mov ax,0x18; mov ds,ax: selector beyond the GDT limit (0x17): #GP(selector)
    (b"\x66\xB8\x18\x00\x8E\xD8", X.GP, 0x18, 4),
    # mov ax,0x1B: the RPL bits are not part of the error code
    (b"\x66\xB8\x1B\x00\x8E\xD8", X.GP, 0x18, 4),
    # TI=1: vmsim models no LDT (LDTR null), so any LDT selector is #GP(selector)
    (b"\x66\xB8\x0C\x00\x8E\xD8", X.GP, 0x0C, 4),
    # jmp 0x18:0x10000 (far, ptr16:32)
    (b"\xEA\x00\x00\x01\x00\x18\x00", X.GP, 0x18, 0),
    # jmp 0x10:0x10000: a data segment is no JMP target
    (b"\xEA\x00\x00\x01\x00\x10\x00", X.GP, 0x10, 0),
    # mov ax,0; mov ss,ax: null SS
    (b"\x66\xB8\x00\x00\x8E\xD0", X.GP, 0, 4),
])
def test_error_code_frame(code: bytes, vector: int, ec: int, rel: int):
    b = run_to_handler(code, vector)
    assert b.cpu.r[4] == STACK - 16  # error code on top of EIP, CS, EFLAGS
    assert b.stack(3)[:3] == [ec, CODE + rel, 0x08]


def test_fault_eip_is_the_faulting_instruction_after_others():
    # nop; nop; mov ax,0x18; mov ds,ax -> saved EIP = the mov ds
    b = run_to_handler(b"\x90\x90\x66\xB8\x18\x00\x8E\xD8", X.GP)
    assert b.stack(2) == [0x18, CODE + 6]
    assert b.cpu.icount == 4  # nop, nop, mov ax and the handler's hlt; not mov ds


def test_not_present_segment_np_and_ss():
    b = Bench(b"\x66\xB8\x18\x00\x8E\xD8")  # mov ax,0x18; mov ds,ax
    b.all_gates()
    b.mem.load(0x1000 + 0x18, struct.pack("<Q", 0x00CF12000000FFFF))  # data, P=0
    b.cpu.gdtr = (0x1000, 0x1F)
    assert b.run() is StopReason.HLT and delivered(b, X.NP)
    assert b.stack(1) == [0x18]
    b = Bench(b"\x66\xB8\x18\x00\x8E\xD0")  # mov ss,ax
    b.all_gates()
    b.mem.load(0x1000 + 0x18, struct.pack("<Q", 0x00CF12000000FFFF))
    b.cpu.gdtr = (0x1000, 0x1F)
    assert b.run() is StopReason.HLT and delivered(b, X.SS)
    assert b.stack(1) == [0x18]


def test_segment_load_sets_accessed_bit():
    b = Bench(b"\x66\xB8\x10\x00\x8E\xD8\xF4")  # mov ax,0x10; mov ds,ax; hlt
    b.mem.load(0x1000 + 0x10, struct.pack("<Q", 0x00CF92000000FFFF))  # A=0
    assert b.run() is StopReason.HLT
    assert b.r32(0x1000 + 0x14) & 0x100


def test_gate_errors():
    # int 0x41, gate not present: #NP(0x41*8 + IDT), EXT=0 for INT n
    b = Bench(b"\xCD\x41")
    b.all_gates()
    b.gate(0x41, kind=0x0E)
    assert b.run() is StopReason.HLT and delivered(b, X.NP)
    assert b.stack(2) == [0x41 * 8 + 2, CODE]  # INT n faulting: EIP of the INT
    # ud2 with #UD's gate not present: #NP with EXT=1 (during delivery of an exception)
    b = Bench(b"\x0F\x0B")
    b.all_gates()
    b.gate(X.UD, kind=0x0E)
    assert b.run() is StopReason.HLT and delivered(b, X.NP)
    assert b.stack(2) == [X.UD * 8 + 3, CODE]
    assert b.cpu.r[4] == STACK - 16  # the failed #UD frame was not left on the stack
    # vector beyond the IDT limit: #GP(vector*8 + 2)
    b = Bench(b"\xCD\x40")
    b.all_gates()
    b.cpu.idtr = (IDT, 0x40 * 8 - 1)
    assert b.run() is StopReason.HLT and delivered(b, X.GP)
    assert b.stack(1) == [0x40 * 8 + 2]
    # gate's code selector beyond the GDT limit / a data segment / DPL 3: #GP(selector)
    for sel, setup in ((0x20, None), (0x10, None), (0x18, 0x00CFFA000000FFFF)):
        b = Bench(b"\xCD\x40")
        b.all_gates()
        if setup:
            b.mem.load(0x1000 + sel, struct.pack("<Q", setup))
            b.cpu.gdtr = (0x1000, 0x1F)
        b.gate(0x40, selector=sel)
        assert b.run() is StopReason.HLT and delivered(b, X.GP), hex(sel)
        assert b.stack(1) == [sel]
    # a call gate (type 0xC) in the IDT: #GP(vector*8 + 2)
    b = Bench(b"\xCD\x40")
    b.all_gates()
    b.gate(0x40, kind=0x8C)
    assert b.run() is StopReason.HLT and delivered(b, X.GP)
    assert b.stack(1) == [0x40 * 8 + 2]


def test_task_gate_stops_as_unsupported():
    b = Bench(b"\xCD\x40")
    b.all_gates()
    b.gate(0x40, kind=0x85)
    assert b.run() is StopReason.UNSUPPORTED
    assert "task" in b.cpu.stop_message


@pytest.mark.parametrize("kind, if_in_handler", [(0x8E, 0), (0x8F, FLAGS_IF)])
def test_interrupt_gate_clears_if_trap_gate_keeps_it(kind: int, if_in_handler: int):
    b = Bench(b"\xFB\xCD\x40")  # sti; int 0x40
    b.all_gates()
    b.gate(0x40, kind=kind)
    assert b.run() is StopReason.HLT and delivered(b, 0x40)
    assert b.cpu.eflags & FLAGS_IF == if_in_handler
    assert b.stack(3)[2] & FLAGS_IF  # the pushed EFLAGS still has IF=1
    assert not b.cpu.eflags & 0x100  # TF cleared by both gate kinds


def test_iretd_returns_and_restores_flags():
    # handler: or dword [esp+8], 1 (set CF in the frame); iretd
    handler = b"\x83\x4C\x24\x08\x01\xCF"
    b = Bench(b"\xF8\xCD\x40\x0F\x92\xC0\xF4")  # clc; int 0x40; setc al; hlt
    b.all_gates()
    b.mem.load(HANDLERS + 0x800, handler)
    b.gate(0x40, handler=HANDLERS + 0x800)
    assert b.run() is StopReason.HLT
    assert b.cpu.eip == CODE + 7
    assert b.cpu.r[0] & 0xFF == 1
    assert b.cpu.r[4] == STACK


# -- double and triple faults (Table 6-5) ----------------------------------------------------

BENIGN = [X.DB, X.NMI, X.BP, X.OF, X.BR, X.UD, X.NM, X.MF, X.AC, X.MC]
CONTRIB = [X.DE, X.TS, X.NP, X.SS, X.GP]


@pytest.mark.parametrize("first", BENIGN + CONTRIB + [X.PF])
@pytest.mark.parametrize("second", BENIGN + CONTRIB + [X.PF])
def test_double_fault_table(first: int, second: int):
    want = (first in CONTRIB and second in CONTRIB) or (
        first == X.PF and (second in CONTRIB or second == X.PF))
    assert _is_double(first, second) == want


def test_contributory_twice_is_df():
    # mov ax,0x18; mov ds,ax (#GP) with the #GP gate not present (#NP): #DF(0)
    b = Bench(b"\x66\xB8\x18\x00\x8E\xD8", kinds=("exception",))
    b.all_gates()
    b.gate(X.GP, kind=0x0E)
    assert b.run() is StopReason.HLT and delivered(b, X.DF)
    assert b.stack(2) == [0, CODE + 4]
    assert [(e["vector"], e["error_code"]) for e in b.kinds("exception")] == [
        (X.GP, 0x18), (X.DF, 0)]


def test_benign_then_contributory_is_serial():
    b = Bench(b"\x0F\x0B", kinds=("exception",))
    b.all_gates()
    b.gate(X.UD, kind=0x8C)  # not a gate: #GP(6*8 + IDT + EXT)
    assert b.run() is StopReason.HLT and delivered(b, X.GP)
    assert b.stack(1) == [X.UD * 8 + 3]


@pytest.mark.parametrize("vector", [X.GP, X.DF, X.PF])
def test_int_n_is_not_an_exception_for_the_double_fault_rules(vector: int):
    """INT 13 / INT 8 / INT 14 through a not-present gate: a plain #NP(n*8 + IDT)."""
    b = Bench(b"\xCD" + bytes([vector]), kinds=("exception", "triple_fault"))
    b.all_gates()
    b.gate(vector, kind=0x0E)
    assert b.run() is StopReason.HLT and delivered(b, X.NP)
    assert b.stack(2) == [vector * 8 + 2, CODE]


def test_no_idt_is_a_triple_fault():
    b = Bench(b"\x0F\x0B", kinds=("exception", "triple_fault"))
    b.cpu.idtr = (0, 0)
    assert b.run() is StopReason.SHUTDOWN
    # #UD -> #GP(6*8+3) (benign + contributory) -> #GP(13*8+3): #DF -> #GP: shutdown
    assert [e["vector"] for e in b.kinds("exception")] == [X.UD, X.GP, X.DF]
    assert len(b.kinds("triple_fault")) == 1
    assert b.cpu.shut_down
    assert b.run() is StopReason.SHUTDOWN  # stays down
    assert b.cpu.eip == CODE


def test_df_gate_not_present_is_a_triple_fault():
    b = Bench(b"\x66\xB8\x18\x00\x8E\xD8", kinds=("exception", "triple_fault"))
    b.all_gates()
    b.gate(X.GP, kind=0x0E)
    b.gate(X.DF, kind=0x0E)
    assert b.run() is StopReason.SHUTDOWN
    assert [e["vector"] for e in b.kinds("exception")] == [X.GP, X.DF]


def test_stack_push_faulting_during_delivery():
    """ESP 8 bytes above a not-present page: #UD's EIP push faults (#PF, W=1, CR2 = the
    slot), the #PF's own push faults the same way (#PF + #PF: #DF), then the #DF's:
    shutdown. ESP never moved."""
    b = Bench(b"\x0F\x0B", kinds=("exception", "triple_fault"))
    b.all_gates()
    b.paging()
    hole = 0x70000
    b.map(hole, 0)
    b.cpu.r[4] = hole + 0x1000 + 8
    assert b.run() is StopReason.SHUTDOWN
    ex = [(e["vector"], e["error_code"]) for e in b.kinds("exception")]
    assert ex == [(X.UD, None), (X.PF, 2), (X.DF, 0)]
    assert b.cpu.cr2 == hole + 0xFFC
    assert b.cpu.r[4] == hole + 0x1000 + 8


def test_pf_while_delivering_pf_loads_cr2():
    """#PF on the IDT entry of #PF: #DF, with CR2 = the IDT entry's address."""
    b = Bench(b"\xA1\x00\x00\x40\x00", kinds=("exception",))  # mov eax,[0x400000]
    b.all_gates()
    b.paging()
    idt = 0x60000 - 14 * 8  # #PF's gate is the first entry on the next page
    b.mem.load(idt, b.mem.read_bytes(IDT, 14 * 8 + 8))
    b.mem.load(0x60000, bytes(8))
    b.map(0x60000, 0)
    b.cpu.idtr = (idt, 0x7FF)
    assert b.run() is StopReason.HLT and delivered(b, X.DF)
    assert b.cpu.cr2 == 0x60000
    assert [e["vector"] for e in b.kinds("exception")] == [X.PF, X.DF]


# -- instructions outside vmsim's subset -----------------------------------------------------

@pytest.mark.parametrize("code, text", [
    (b"\xD9\xE8", "fld1"),                 # x87
    (b"\x0F\x58\xC1", "addps xmm0,xmm1"),  # SSE
])
def test_not_in_subset_is_ud_with_event(code: bytes, text: str):
    b = run_to_handler(code, X.UD)
    ev = b.kinds("not_in_subset")
    assert len(ev) == 1 and ev[0]["eip"] == CODE
    assert ev[0]["text"].replace(" ", "") == text.replace(" ", "")
    assert ev[0]["bytes"] == code.hex()
    assert b.stack(1) == [CODE]
