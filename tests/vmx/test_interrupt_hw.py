"""What the VMX hardware does for external interrupts, so that kvm.ko can inject them as
KVM does: the interrupt shadow of STI and MOV SS / POP SS and the interruptibility state
that VM exit saves and VM entry loads, interrupt-window exiting (exit reason 7), external-
interrupt exits with the host's vector, injection of an external interrupt through the
guest's IDT, and IDT-vectoring information when an exit interrupts that delivery.

Oracles: the SDM. Vol. 3A 6.8.3 (STI and MOV SS shadows), 6.12.1 (the stack frame of an
interrupt without a privilege change: EFLAGS, CS, EIP; an interrupt gate clears IF);
Vol. 3C "Guest Non-Register State" (interruptibility bits 0 STI, 1 MOV SS), "Interrupt-
Window Exiting and Virtual-Interrupt Delivery", "Architectural State Before a VM Exit"
(an event that exits directly changes nothing; one that exits indirectly leaves no
STI/MOV SS blocking), "Interruptibility State" under "Special Features of VM Entry" (a
vectoring entry leaves none), "Event Injection", "Information for VM Exits During Event
Delivery". Host vectors from Linux arch/x86/include/asm/irq_vectors.h.
"""

from __future__ import annotations

import pytest

from tests.vmx.harness import (
    CODE,
    IDT,
    STACK,
    Bench,
    identity_paging,
    stub_address,
)
from vmsim.hw import exceptions as X
from vmsim.hw.cpu import SHADOW_MOV_SS, SHADOW_STI
from vmsim.hw.vmcs import (
    CPU_BASED_HLT_EXITING,
    CPU_BASED_INTR_WINDOW_EXITING,
    GUEST_ACTIVITY_ACTIVE,
    GUEST_ACTIVITY_HLT,
    GUEST_INTR_STATE_MOV_SS,
    GUEST_INTR_STATE_STI,
    VM_EXIT_ACK_INTR_ON_EXIT,
    ExitReason,
    F,
)
from vmsim.hw.vmx import (
    CALL_FUNCTION_SINGLE_VECTOR,
    LOCAL_TIMER_VECTOR,
    RESCHEDULE_VECTOR,
)

IF = 0x200
EXT_INTR_0x30 = 0x80000030  # vector 0x30, type 0 (external interrupt), valid


def _set_gate(b: Bench, vector: int, handler: int, trap: bool = False) -> None:
    """A 32-bit interrupt (or trap) gate to `handler` in the bench's flat CS 0x08."""
    lo = (handler & 0xFFFF) | 0x08 << 16
    hi = (handler & 0xFFFF0000) | (0x8F00 if trap else 0x8E00)
    b.mem.write(IDT + vector * 8, 4, lo)
    b.mem.write(IDT + vector * 8 + 4, 4, hi)


def _window(b: Bench, on: bool = True) -> None:
    b.controls(set_=CPU_BASED_INTR_WINDOW_EXITING if on else 0,
               clear=0 if on else CPU_BASED_INTR_WINDOW_EXITING)


def _skip_and_clear_shadow(b: Bench) -> None:
    """kvm.ko's skip_emulated_instruction: RIP past the instruction, and
    vmx_set_interrupt_shadow(0) (the instruction it completed ends any shadow)."""
    b.vmcs.write(F.GUEST_RIP, b.read(F.GUEST_RIP) + b.read(F.VM_EXIT_INSTRUCTION_LEN))
    b.vmcs.write(F.GUEST_INTERRUPTIBILITY_INFO, 0)


# -- the interrupt shadow, saved by VM exit --------------------------------------------------

def test_constants_are_the_vmcs_bits() -> None:
    assert (SHADOW_STI, SHADOW_MOV_SS) == (GUEST_INTR_STATE_STI, GUEST_INTR_STATE_MOV_SS) == (1, 2)
    assert (LOCAL_TIMER_VECTOR, RESCHEDULE_VECTOR, CALL_FUNCTION_SINGLE_VECTOR) == \
        (0xEC, 0xFD, 0xFB)


def test_sti_then_out_exits_with_blocking_by_sti() -> None:
    b = Bench("sti\nport: out 0x80, al\nhlt")  # RFLAGS 0x2: IF=0 at entry
    e = b.run()
    assert e.reason == ExitReason.IO_INSTRUCTION
    assert b.read(F.GUEST_RIP) == b.sym("port")
    assert b.read(F.GUEST_RFLAGS) & IF
    # The OUT exits directly: the STI's shadow over it is saved as it was.
    assert b.read(F.GUEST_INTERRUPTIBILITY_INFO) == GUEST_INTR_STATE_STI


def test_the_shadow_covers_one_instruction_only() -> None:
    b = Bench("sti\nnop\nport: out 0x80, al\nhlt")
    e = b.run()
    assert e.reason == ExitReason.IO_INSTRUCTION and b.read(F.GUEST_RIP) == b.sym("port")
    assert b.read(F.GUEST_INTERRUPTIBILITY_INFO) == 0


def test_sti_with_if_already_set_makes_no_shadow() -> None:
    b = Bench("sti\nout 0x80, al\nhlt")
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    assert b.run().reason == ExitReason.IO_INSTRUCTION
    assert b.read(F.GUEST_INTERRUPTIBILITY_INFO) == 0


def test_mov_ss_then_out_exits_with_blocking_by_mov_ss() -> None:
    b = Bench("mov ax, 0x10\nmov ss, ax\nport: out 0x80, al\nhlt")
    assert b.run().reason == ExitReason.IO_INSTRUCTION
    assert b.read(F.GUEST_RIP) == b.sym("port")
    assert b.read(F.GUEST_INTERRUPTIBILITY_INFO) == GUEST_INTR_STATE_MOV_SS


def test_pop_ss_makes_the_same_shadow() -> None:
    b = Bench("push dword 0x10\npop ss\nport: out 0x80, al\nhlt")
    assert b.run().reason == ExitReason.IO_INSTRUCTION
    assert b.read(F.GUEST_RIP) == b.sym("port")
    assert b.read(F.GUEST_RSP) == STACK
    assert b.read(F.GUEST_INTERRUPTIBILITY_INFO) == GUEST_INTR_STATE_MOV_SS


def test_a_plain_segment_load_makes_no_shadow() -> None:
    b = Bench("mov ax, 0x10\nmov ds, ax\nout 0x80, al\nhlt")
    assert b.run().reason == ExitReason.IO_INSTRUCTION
    assert b.read(F.GUEST_INTERRUPTIBILITY_INFO) == 0


def test_interrupt_shadow_is_what_kvm_asks_for() -> None:
    """Cpu.interrupt_shadow(): the bits at this boundary (kvm's "interrupt allowed?")."""
    b = Bench("sti\nnop\nhlt")
    assert b.enter()
    assert b.cpu.interrupt_shadow() == 0
    assert b.vmx.run(1) is None  # the STI
    assert b.cpu.interrupt_shadow() == SHADOW_STI
    assert b.vmx.run(1) is None  # the NOP in its shadow
    assert b.cpu.interrupt_shadow() == 0


def test_an_exception_that_exits_directly_keeps_the_shadow() -> None:
    b = Bench("sti\nfault: ud2\nhlt")
    b.vmcs.write(F.EXCEPTION_BITMAP, 1 << X.UD)
    e = b.run()
    assert e.reason == ExitReason.EXCEPTION_NMI and b.read(F.GUEST_RIP) == b.sym("fault")
    assert b.read(F.GUEST_INTERRUPTIBILITY_INFO) == GUEST_INTR_STATE_STI


def test_an_exception_delivered_ends_the_shadow() -> None:
    b = Bench("sti\nud2\nhlt")
    assert b.enter()
    assert b.vmx.run(2) is None  # STI, then the #UD delivered to the guest's handler
    assert b.cpu.eip == stub_address(X.UD)
    assert b.cpu.interrupt_shadow() == 0
    b.vmx.vm_exit(None)
    assert b.read(F.GUEST_INTERRUPTIBILITY_INFO) == 0


# -- the interruptibility state loaded by VM entry --------------------------------------------

def test_entry_loads_blocking_by_sti_for_the_first_instruction() -> None:
    b = Bench("nop\nsecond: nop\nhlt")
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    b.vmcs.write(F.GUEST_INTERRUPTIBILITY_INFO, GUEST_INTR_STATE_STI)
    _window(b)
    e = b.run()
    # Blocked at entry; the window opens after the first instruction.
    assert e.reason == ExitReason.INTERRUPT_WINDOW
    assert b.read(F.GUEST_RIP) == b.sym("second")
    assert b.read(F.GUEST_INTERRUPTIBILITY_INFO) == 0


def test_entry_honours_the_field_kvm_cleared() -> None:
    """kvm.ko completes the OUT (skip_emulated_instruction, vmx_set_interrupt_shadow(0)):
    the next entry loads no shadow, so the window is open at once."""
    b = Bench("sti\nout 0x80, al\nafter: nop\nhlt")
    assert b.run().reason == ExitReason.IO_INSTRUCTION
    assert b.read(F.GUEST_INTERRUPTIBILITY_INFO) == GUEST_INTR_STATE_STI
    _skip_and_clear_shadow(b)
    _window(b)
    e = b.run()
    assert e.reason == ExitReason.INTERRUPT_WINDOW
    assert b.read(F.GUEST_RIP) == b.sym("after")


def test_a_vectoring_entry_leaves_no_shadow() -> None:
    b = Bench("nop\nhlt")
    b.vmcs.write(F.GUEST_INTERRUPTIBILITY_INFO, GUEST_INTR_STATE_MOV_SS)
    b.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, 0x80000306)  # inject #UD
    assert b.enter(), b.vmx.entry_failure
    assert b.cpu.eip == stub_address(X.UD)
    assert b.cpu.interrupt_shadow() == 0


def test_injecting_under_the_saved_sti_blocking_fails_the_entry() -> None:
    """The entry check on the interruptibility state uses what the exit saved: kvm.ko
    must not inject an external interrupt into the STI shadow (it asks for a window)."""
    b = Bench("sti\nout 0x80, al\nhlt")
    b.run()
    b.vmcs.write(F.GUEST_RIP, b.read(F.GUEST_RIP) + b.read(F.VM_EXIT_INSTRUCTION_LEN))
    b.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, EXT_INTR_0x30)
    assert not b.enter()
    assert "STI/MOV SS blocking" in b.vmx.entry_failure
    assert b.read(F.VM_EXIT_REASON) == 0x80000021  # invalid guest state
    b.vmcs.write(F.GUEST_INTERRUPTIBILITY_INFO, 0)  # what kvm.ko does after the OUT
    assert b.enter(launch=False), b.vmx.entry_failure
    assert b.cpu.eip == stub_address(0x30)


def test_injecting_with_if_clear_fails_the_entry() -> None:
    b = Bench("cli\nout 0x80, al\nhlt")
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    b.run()  # the guest cleared IF; the exit saved it
    b.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, EXT_INTR_0x30)
    assert not b.enter(launch=False)
    assert "IF must be 1" in b.vmx.entry_failure


# -- interrupt-window exiting -------------------------------------------------------------------

def test_window_exit_right_at_entry_when_if_is_set() -> None:
    b = Bench("inc eax\nhlt")
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    _window(b)
    e = b.run()
    assert e.reason == ExitReason.INTERRUPT_WINDOW == 7
    assert b.read(F.VM_EXIT_REASON) == 7
    assert b.read(F.GUEST_RIP) == CODE
    assert b.cpu.r[0] == 0 and b.cpu.icount == 0  # before any instruction
    assert b.read(F.VM_EXIT_INTR_INFO) == 0


def test_window_exit_after_sti_and_one_instruction() -> None:
    b = Bench("inc eax\nsti\ninc eax\nopen: inc eax\nhlt")
    _window(b)
    e = b.run()
    assert e.reason == ExitReason.INTERRUPT_WINDOW
    assert b.read(F.GUEST_RIP) == b.sym("open")
    assert b.cpu.r[0] == 2  # the instruction in the STI shadow ran, the next did not
    assert b.read(F.GUEST_INTERRUPTIBILITY_INFO) == 0
    assert b.read(F.GUEST_RFLAGS) & IF


def test_window_exit_after_mov_ss_and_one_instruction() -> None:
    b = Bench("mov ax, 0x10\nmov ss, ax\ninc eax\nopen: inc eax\nhlt")
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    b.vmcs.write(F.GUEST_RIP, CODE + 4)  # start at the MOV SS (mov ax, imm16 is 4 bytes)
    b.cpu.r[0] = 0x10
    _window(b)
    # The window is open at entry: it exits before the MOV SS.
    assert b.run().reason == ExitReason.INTERRUPT_WINDOW
    assert b.read(F.GUEST_RIP) == CODE + 4
    # Without the window control, kvm.ko lets the MOV SS run; asking again after it: the
    # exit comes only after the instruction in its shadow.
    _window(b, False)
    assert b.enter(launch=False)
    assert b.vmx.run(1) is None
    b.vmx.vm_exit(None)
    assert b.read(F.GUEST_INTERRUPTIBILITY_INFO) == GUEST_INTR_STATE_MOV_SS
    _window(b)
    assert b.run().reason == ExitReason.INTERRUPT_WINDOW
    assert b.read(F.GUEST_RIP) == b.sym("open")


def test_no_window_exit_while_if_is_clear() -> None:
    b = Bench("mov ecx, 1000\nloop_: inc eax\ndec ecx\njnz loop_\nout 0x80, al\nhlt")
    _window(b)
    e = b.run(10_000)
    assert e.reason == ExitReason.IO_INSTRUCTION  # the guest ran its whole loop
    assert b.cpu.r[0] == 1000 and b.cpu.r[1] == 0


def test_window_watch_stops_at_the_budget_and_resumes() -> None:
    b = Bench("mov ecx, 100\nloop_: dec ecx\njnz loop_\nsti\nnop\nopen: hlt")
    _window(b)
    assert b.enter()
    assert b.vmx.run(50) is None  # budget used, IF still 0
    assert b.cpu.icount == 50
    e = b.vmx.run(1000)
    assert e.reason == ExitReason.INTERRUPT_WINDOW
    assert b.read(F.GUEST_RIP) == b.sym("open")


def test_window_exit_wakes_a_guest_halted_with_if_set() -> None:
    b = Bench("sti\nhlt\nafter: nop")
    b.controls(clear=CPU_BASED_HLT_EXITING)
    _window(b)
    e = b.run()
    # STI; HLT runs in its shadow, then the CPU halts with IF=1: the window is open.
    assert e.reason == ExitReason.INTERRUPT_WINDOW
    assert b.read(F.GUEST_RIP) == b.sym("after")
    # The exit happened in the HLT state, which it leaves only once the exit is done.
    assert b.read(F.GUEST_ACTIVITY_STATE) == GUEST_ACTIVITY_HLT


def test_window_exit_from_the_hlt_activity_state_at_entry() -> None:
    b = Bench("nop\nhlt")
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    b.vmcs.write(F.GUEST_ACTIVITY_STATE, GUEST_ACTIVITY_HLT)
    _window(b)
    assert b.run().reason == ExitReason.INTERRUPT_WINDOW
    assert b.read(F.GUEST_ACTIVITY_STATE) == GUEST_ACTIVITY_HLT


def test_a_guest_halted_with_if_clear_stays_halted() -> None:
    b = Bench("hlt\nnop")
    b.controls(clear=CPU_BASED_HLT_EXITING)
    _window(b)
    assert b.run() is None
    assert b.cpu.halted and b.cpu.icount == 1


def test_window_exit_after_an_injected_event_through_a_trap_gate() -> None:
    """The window exit follows event injection: a trap gate leaves IF=1, so it comes at
    the handler's first instruction."""
    b = Bench("nop\nhandler: nop\nhlt")
    _set_gate(b, 0x30, b.sym("handler"), trap=True)
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    b.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, EXT_INTR_0x30)
    _window(b)
    e = b.run()
    assert e.reason == ExitReason.INTERRUPT_WINDOW
    assert b.read(F.GUEST_RIP) == b.sym("handler")
    assert b.read(F.GUEST_RSP) == STACK - 12
    assert b.read(F.IDT_VECTORING_INFO_FIELD) == 0  # the delivery was complete


def test_no_window_exit_in_a_handler_entered_through_an_interrupt_gate() -> None:
    b = Bench("nop\nhlt")
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    b.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, EXT_INTR_0x30)
    _window(b)
    e = b.run()
    assert e.reason == ExitReason.HLT  # the stub ran with IF=0 and halted
    assert b.vector_log == 0x30


# -- injecting an external interrupt ----------------------------------------------------------

def test_injected_interrupt_frame_is_intr_delivery() -> None:
    """SDM Vol. 3A 6.12.1, no privilege change: push EFLAGS (IF=1 as it was), CS, EIP of
    the instruction that would have run next; no error code; an interrupt gate clears IF
    (and TF, NT, RF). IRET returns to the interrupted instruction with IF=1 again."""
    b = Bench("""
        start: inc eax
        pushfd
        pop edx
        out 0x80, al
        handler: mov esi, [esp]
        mov edi, [esp + 4]
        mov ebp, [esp + 8]
        pushfd
        pop ebx
        inc ecx
        iret
    """)
    _set_gate(b, 0x30, b.sym("handler"))
    b.vmcs.write(F.GUEST_RFLAGS, 0x2 | IF | 0x1 | 0x40)  # IF, CF, ZF
    b.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, EXT_INTR_0x30)
    assert b.enter(), b.vmx.entry_failure
    assert not b.read(F.VM_ENTRY_INTR_INFO_FIELD) & 0x80000000  # consumed
    assert b.cpu.eip == b.sym("handler")
    assert b.cpu.r[4] == STACK - 12
    assert b.mem.read(STACK - 12, 4) == b.sym("start")  # EIP: the interrupted instruction
    assert b.mem.read(STACK - 8, 4) == 0x08  # CS
    assert b.mem.read(STACK - 4, 4) == 0x243  # EFLAGS as they were: IF CF ZF
    e = b.vmx.run(100)
    assert e.reason == ExitReason.IO_INSTRUCTION
    r = b.cpu.r
    assert (r[6], r[7], r[5]) == (b.sym("start"), 0x08, 0x243)  # the handler saw the frame
    assert not r[3] & IF  # the handler ran with IF=0 (interrupt gate)
    assert r[1] == 1 and r[0] == 1  # handler once, then the interrupted INC
    assert r[2] & IF  # IRET gave IF back
    assert b.read(F.GUEST_RSP) == STACK


def test_injected_interrupt_wakes_the_hlt_activity_state() -> None:
    b = Bench("hlt\nafter: nop\nout 0x80, al")
    b.controls(clear=CPU_BASED_HLT_EXITING)
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    assert b.run() is None and b.cpu.halted
    b.vmx.vm_exit(None)
    assert b.read(F.GUEST_ACTIVITY_STATE) == GUEST_ACTIVITY_HLT
    assert b.read(F.GUEST_RIP) == b.sym("after")
    b.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, EXT_INTR_0x30)  # allowed into HLT
    assert b.enter(), b.vmx.entry_failure
    assert not b.cpu.halted
    assert b.cpu.eip == stub_address(0x30)
    assert b.mem.read(STACK - 12, 4) == b.sym("after")  # returns past the HLT
    e = b.vmx.run(100)
    assert e is None and b.vector_log == 0x30  # the stub ran (and halted again)


@pytest.mark.parametrize("vector", [X.DF, X.GP])
def test_an_injected_interrupt_with_an_exception_vector_is_no_exception(vector: int) -> None:
    """An external interrupt may use any vector, and is still no exception for the
    double-fault rules (SDM Vol. 3A Table 6-5): the #NP its not-present gate raises is
    delivered as itself, not turned into #DF (as after a #GP) or a triple fault (as
    after a #DF)."""
    b = Bench("nop\nhlt")
    b.mem.write(IDT + vector * 8 + 4, 4, b.mem.read(IDT + vector * 8 + 4, 4) & ~0x8000)
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    b.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, 0x80000000 | vector)  # type 0
    assert b.enter(), b.vmx.entry_failure
    e = b.vmx.run(100)
    assert not b.cpu.shut_down
    assert e.reason == ExitReason.HLT and b.vector_log == X.NP
    assert b.mem.read(STACK - 4 * 4, 4) == vector * 8 + 2 + 1  # #NP's error code: IDT, EXT


# -- external-interrupt exits -----------------------------------------------------------------

def test_external_interrupt_exit_stores_the_host_vector() -> None:
    b = Bench("inc eax\ninc eax\nnext: inc eax\nhlt")
    assert b.enter()
    assert b.vmx.run(2) is None
    e = b.vmx.external_interrupt_exit(LOCAL_TIMER_VECTOR)
    assert e.reason == ExitReason.EXTERNAL_INTERRUPT == 1
    assert b.read(F.VM_EXIT_REASON) == 1
    assert b.read(F.VM_EXIT_INTR_INFO) == e.intr_info == 0x800000EC  # valid, type 0, 0xEC
    assert b.read(F.GUEST_RIP) == b.sym("next")
    assert b.read(F.IDT_VECTORING_INFO_FIELD) == 0


def test_external_interrupt_exit_without_acknowledge_stores_no_vector() -> None:
    b = Bench("nop\nhlt")
    b.vmcs.write(F.VM_EXIT_CONTROLS, b.read(F.VM_EXIT_CONTROLS) & ~VM_EXIT_ACK_INTR_ON_EXIT)
    assert b.enter()
    e = b.vmx.external_interrupt_exit(CALL_FUNCTION_SINGLE_VECTOR)
    assert e.reason == ExitReason.EXTERNAL_INTERRUPT
    assert b.read(F.VM_EXIT_INTR_INFO) == 0


def test_the_kick_is_still_the_reschedule_vector() -> None:
    b = Bench("nop\nhlt")
    assert b.enter()
    e = b.vmx.vm_exit(None)
    assert e.reason == ExitReason.EXTERNAL_INTERRUPT
    assert b.read(F.VM_EXIT_INTR_INFO) == 0x800000FD


def test_external_interrupt_exit_comes_even_with_if_clear() -> None:
    b = Bench("cli\nnop\nhlt")
    assert b.enter()
    b.vmx.run(2)
    assert b.vmx.external_interrupt_exit(LOCAL_TIMER_VECTOR).reason == \
        ExitReason.EXTERNAL_INTERRUPT
    assert not b.read(F.GUEST_RFLAGS) & IF


def test_external_interrupt_waits_for_the_instruction_in_the_sti_shadow() -> None:
    b = Bench("sti\ninc eax\nnext: inc eax\nhlt")
    assert b.enter()
    assert b.vmx.run(1) is None and b.cpu.interrupt_shadow() == SHADOW_STI
    e = b.vmx.external_interrupt_exit(LOCAL_TIMER_VECTOR)
    assert e.reason == ExitReason.EXTERNAL_INTERRUPT
    assert b.read(F.GUEST_RIP) == b.sym("next") and b.cpu.r[0] == 1
    assert b.read(F.GUEST_INTERRUPTIBILITY_INFO) == 0


def test_the_instruction_in_the_shadow_may_exit_first() -> None:
    b = Bench("sti\nport: out 0x80, al\nhlt")
    assert b.enter()
    assert b.vmx.run(1) is None
    e = b.vmx.external_interrupt_exit(LOCAL_TIMER_VECTOR)
    assert e.reason == ExitReason.IO_INSTRUCTION  # the host interrupt is still pending
    assert b.read(F.GUEST_RIP) == b.sym("port")


def test_external_interrupt_exit_from_hlt_saves_the_hlt_state() -> None:
    b = Bench("hlt\nafter: nop")
    b.controls(clear=CPU_BASED_HLT_EXITING)
    assert b.run() is None
    b.vmx.external_interrupt_exit(LOCAL_TIMER_VECTOR)
    assert b.read(F.GUEST_ACTIVITY_STATE) == GUEST_ACTIVITY_HLT
    assert b.read(F.GUEST_RIP) == b.sym("after")


def test_an_open_window_goes_before_the_external_interrupt() -> None:
    b = Bench("nop\nhlt")
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    _window(b)
    assert b.enter()
    assert b.vmx.external_interrupt_exit(LOCAL_TIMER_VECTOR).reason == \
        ExitReason.INTERRUPT_WINDOW


# -- exits during the delivery of an injected external interrupt --------------------------------

def test_ept_violation_on_the_stack_records_the_interrupt_in_idt_vectoring_info() -> None:
    b = Bench("start: nop\nhlt")
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    b.vmcs.write(F.GUEST_RSP, 0x300000)  # beyond the bench's EPT (2 MiB identity)
    b.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, EXT_INTR_0x30)
    assert b.enter(), b.vmx.entry_failure
    e = b.vmx.run(100)
    assert e.reason == ExitReason.EPT_VIOLATION
    assert b.read(F.GUEST_PHYSICAL_ADDRESS) == 0x300000 - 4  # the EFLAGS push
    # The interrupt, as injected: type 0 (not a hardware exception), for kvm.ko to re-inject.
    assert b.read(F.IDT_VECTORING_INFO_FIELD) == EXT_INTR_0x30
    assert b.read(F.GUEST_RIP) == b.sym("start")
    assert b.read(F.GUEST_RSP) == 0x300000
    assert b.read(F.GUEST_RFLAGS) & IF  # the gate did not clear it: delivery never finished
    assert b.read(F.GUEST_INTERRUPTIBILITY_INFO) == 0
    assert b.read(F.GUEST_ACTIVITY_STATE) == GUEST_ACTIVITY_ACTIVE
    assert b.vector_log is None


def test_pf_on_the_stack_under_shadow_paging_records_the_interrupt() -> None:
    """kvm.ko with shadow paging intercepts #PF: a #PF while the CPU pushes the frame of
    an injected interrupt exits with IDT-vectoring info naming that interrupt."""
    stack_page = (STACK - 4) & ~0xFFF
    b = Bench("start: nop\nhlt")
    identity_paging(b, not_present=(stack_page,))
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    b.vmcs.write(F.EXCEPTION_BITMAP, 1 << X.PF)
    b.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, EXT_INTR_0x30)
    assert b.enter(), b.vmx.entry_failure
    e = b.vmx.run(100)
    assert e.reason == ExitReason.EXCEPTION_NMI
    assert b.read(F.VM_EXIT_INTR_INFO) == 0x80000B0E  # #PF with its error code
    assert b.read(F.EXIT_QUALIFICATION) == STACK - 4
    assert b.read(F.IDT_VECTORING_INFO_FIELD) == EXT_INTR_0x30
    assert b.read(F.GUEST_RIP) == b.sym("start")
    # kvm.ko maps the page and re-injects the interrupt: now it is delivered.
    identity_paging(b)
    b.cpu.invlpg(stack_page)
    b.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, b.read(F.IDT_VECTORING_INFO_FIELD))
    assert b.enter(launch=False), b.vmx.entry_failure
    assert b.cpu.eip == stub_address(0x30)
    assert b.mem.read(STACK - 12, 4) == b.sym("start")


def test_gp_on_the_idt_limit_records_the_interrupt() -> None:
    b = Bench("start: nop\nhlt")
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    b.vmcs.write(F.GUEST_IDTR_LIMIT, 0x30 * 8 - 1)  # vector 0x30 is past the limit
    b.vmcs.write(F.EXCEPTION_BITMAP, 1 << X.GP)
    b.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, EXT_INTR_0x30)
    assert b.enter(), b.vmx.entry_failure
    e = b.vmx.run(100)
    assert e.reason == ExitReason.EXCEPTION_NMI
    assert b.read(F.VM_EXIT_INTR_INFO) == 0x80000B0D
    assert b.read(F.VM_EXIT_INTR_ERROR_CODE) == 0x30 * 8 + 2 + 1  # IDT, EXT
    assert b.read(F.IDT_VECTORING_INFO_FIELD) == EXT_INTR_0x30


@pytest.mark.parametrize("opener, flags_at_open", [
    ("sti\nnop", "sti"),  # STI, then the instruction in its shadow
    ("push dword 0x202\npopfd", "popfd"),  # POPF setting IF: no shadow (SDM POPF)
])
def test_window_with_if_clear_runs_at_full_speed_until_if_is_set(
        monkeypatch, opener: str, flags_at_open: str) -> None:
    # With interrupt-window exiting on and IF=0, only an instruction that sets IF can open
    # the window, so the CPU runs whole batches until one does (not one instruction per
    # window check: a guest with an interrupt pending and IF=0 must not crawl). The exit
    # still comes at the exact boundary the SDM gives.
    from vmsim.hw.cpu import Cpu

    b = Bench(f"mov ecx, 3000\nloop_: inc eax\ndec ecx\njnz loop_\n{opener}\nopen: hlt")
    _window(b)
    runs = []
    real_run = Cpu.run
    monkeypatch.setattr(Cpu, "run", lambda self, n: (runs.append(n), real_run(self, n))[1])
    e = b.run(100_000)
    assert e.reason == ExitReason.INTERRUPT_WINDOW
    assert b.read(F.GUEST_RIP) == b.sym("open")
    assert b.cpu.r[0] == 3000
    assert len(runs) <= 4, f"{len(runs)} calls of Cpu.run for a 9,000-instruction loop"
