"""Interrupts through the whole stack (issue 10), read from the trace of real runs.

The expectations come from the documents the simulator models, cited at each test:
- virtualization-facts.md 3.4 (QEMU's kvm_arch_pre_run in target/i386/kvm/kvm.c): with the
  PIC in userspace, QEMU injects with KVM_INTERRUPT when kvm_run says the guest can take
  an interrupt, and otherwise sets request_interrupt_window; kvm.ko turns on interrupt-
  window exiting, the guest exits with reason 7 once RFLAGS.IF=1 and no STI/MOV SS
  blocking, and KVM_RUN returns KVM_EXIT_IRQ_WINDOW_OPEN;
- KVM's api.rst: KVM_INTERRUPT only without an in-kernel irqchip; `immediate_exit` makes
  KVM_RUN return -EINTR at once; with KVM_CREATE_IRQCHIP the PIC and PIT are in the
  kernel and HLT with an in-kernel LAPIC never reaches userspace
  (virtualization-facts.md 1.2, exit 12);
- the SDM: exit reason 1 for a host interrupt with "acknowledge interrupt on exit"
  (VM_EXIT_INTR_INFO = valid | type 0 | vector), STI's one-instruction shadow, and
  IDT-vectoring information when an exit interrupts an event's delivery (2.6);
- the 8254 datasheet: mode 2 gives one IRQ 0 edge every `reload` input clocks of
  1.193182 MHz.
"""

from __future__ import annotations

from functools import cache
from itertools import pairwise
from pathlib import Path

import pytest

from tests.stack.irqguests import OK, PIT_HZ, Run, guest, pit_period_cycles, run
from vmsim.costs import NOMINAL_HZ
from vmsim.kvm import irq as kvm_irq

ROOT = Path(__file__).resolve().parents[2]
TIMER = ROOT / "sample_guests" / "timer.asm"
PIC_PIT_PORTS = {0x20, 0x21, 0xA0, 0xA1, 0x40, 0x41, 0x42, 0x43}
INTR_INFO_VALID = 0x80000000
RESCHEDULE_VECTOR = 0xFD  # arch/x86/include/asm/irq_vectors.h
LOCAL_TIMER_VECTOR = 0xEC
PIT_CLOCK = NOMINAL_HZ / PIT_HZ  # cycles per PIT input clock (about 2514)
TIMER_TEXT = (b"pic: vectors 0x20-0x2F, imr FE FF\n"
              b"pit: channel 0, mode 2, reload 11932 (100 Hz)\n"
              + b"".join(b"tick %d\n" % i for i in range(1, 11))
              + b"pic: isr 01 in the handler, 00 after the eoi\n"
                b"timer: 10 ticks, 10 of them woke the hlt\n")

# IF=0 for longer than one PIT period, then STI and one more instruction: the interrupt
# that came during the loop waits for the window after the NOP (STI's shadow covers it).
WINDOW = """
        mov ecx, SPIN
.spin:  dec ecx
        jnz .spin
        sti
        nop
after_nop:
.wait:  cmp dword [ticks], 1
        jb .wait
        cmp dword [frame_eip], after_nop
        jne fail
        jmp exit_ok
"""

# The same with an interrupt pending at `sti; hlt`: the shadow keeps it out until the HLT
# has executed, and the interrupt then wakes the HLT (its frame's EIP is after the HLT).
STI_HLT = """
        mov ecx, SPIN
.spin:  dec ecx
        jnz .spin
        sti
        hlt
after_hlt:
        cmp dword [ticks], 1
        jne fail
        cmp dword [frame_eip], after_hlt
        jne fail
        jmp exit_ok
"""

# The window guest on a stack page it never touched: pushing the interrupt frame is the
# first access to that page, so the delivery itself exits (EPT violation, or #PF under
# shadow paging) and kvm.ko must inject the interrupt again.
FRESH_STACK = WINDOW.replace("        sti\n", "        mov esp, 0x301000\n        sti\n", 1)


@cache
def timer_run(irqchip: str) -> Run:
    return run(TIMER, irqchip=irqchip)


@cache
def window_run(irqchip: str) -> Run:
    return run(guest(WINDOW), irqchip=irqchip)


def _after(events: list[dict], first: dict) -> list[dict]:
    return [e for e in events if e["seq"] > first["seq"]]


def _first(events: list[dict], kind: str, **match) -> dict:
    for e in events:
        if e["kind"] == kind and all(e.get(k) == v for k, v in match.items()):
            return e
    raise AssertionError(f"no {kind} {match} in the trace")


def _exits(r: Run, reason: str) -> list[dict]:
    return r.of("kvm_exit", exit_reason=reason)


def _userspace(r: Run, reason: str) -> list[dict]:
    return r.of("kvm_userspace_exit", reason=reason)


# -- the sample timer guest in both modes ------------------------------------------------------

@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_timer_guest_prints_the_same_text_in_both_irqchip_modes(irqchip: str) -> None:
    r = timer_run(irqchip)
    assert r.status == OK, r.outcome.reason
    assert r.serial == TIMER_TEXT


def test_kernel_irqchip_keeps_hlt_and_the_pic_and_pit_in_the_kernel() -> None:
    r = timer_run("kernel")
    # No exit of these kinds reaches userspace, and no KVM_INTERRUPT is ever made.
    assert not _userspace(r, "KVM_EXIT_HLT")
    assert not _userspace(r, "KVM_EXIT_IRQ_WINDOW_OPEN")
    assert not r.of("kvm_vcpu_ioctl", name="KVM_INTERRUPT")
    assert not r.of("kvm_arch_pre_run")
    assert not [e for e in _userspace(r, "KVM_EXIT_IO") if e["port"] in PIC_PIT_PORTS]
    # ... but the guest did program them: kvm.ko's own PIO bus served every access.
    kernel_pio = [e for e in r.of("kvm_pio") if e["port"] in PIC_PIT_PORTS]
    user = timer_run("userspace")
    user_pio = [e for e in user.of("device_access", space="port")
                if e["address"] in PIC_PIT_PORTS]
    assert len(kernel_pio) == len(user_pio) > 20
    assert [(e["port"], e["rw"], e["val"]) for e in kernel_pio] == \
        [(e["address"], int(e["is_write"]), e["value"]) for e in user_pio]
    # The VMM made the chips in kvm.ko, before any vCPU.
    vm_ioctls = [e["name"] for e in r.of("kvm_vm_ioctl")]
    assert vm_ioctls.index("KVM_CREATE_IRQCHIP") < vm_ioctls.index("KVM_CREATE_PIT2") \
        < vm_ioctls.index("KVM_CREATE_VCPU")


def test_kernel_irqchip_hlt_blocks_in_kvm_vcpu_block_until_the_pit_wakes_it() -> None:
    r = timer_run("kernel")
    hlts = _exits(r, "HLT")
    blocks = r.of("kvm_vcpu_block")
    wakeups = r.of("kvm_vcpu_wakeup")
    assert len(hlts) == len(blocks) == len(wakeups) == 10
    edges = r.of("kvm_set_irq", gsi=0, level=1, irq_source_id=kvm_irq.KVM_PIT_IRQ_SOURCE_ID)
    for block, wake in zip(blocks, wakeups, strict=True):
        assert wake["seq"] > block["seq"] and wake["valid"]
        # What woke it: the PIT's hrtimer raising GSI 0 while it slept, and the kick
        # that kvm_vcpu_kick gives a blocked vCPU (a wake-up, no IPI).
        edge = next(e for e in edges if block["seq"] < e["seq"] < wake["seq"])
        kick = next(e for e in r.of("kvm_vcpu_kick") if edge["seq"] < e["seq"] < wake["seq"])
        assert kick["how"] == "wake" and kick["mode"] == "blocked"
        # The vCPU runs again at the moment of the edge, and kvm_vcpu_wakeup's ns is how
        # long it slept.
        assert wake["time"] == edge["time"]
        slept = (wake["time"] - block["time"]) * 1_000_000_000 // NOMINAL_HZ
        assert wake["ns"] == slept
        # ... then kvm.ko injects IRQ 0 (vector 0x20) at the next entry.
        inj = _first(_after(r.events, wake), "kvm_inj_virq")
        assert inj["irq"] == 0x20 and not inj["reinjected"]


def test_in_kernel_pit_raises_irq0_every_reload_over_1_193182_mhz() -> None:
    """timer.asm loads reload 11932 in mode 2: an edge every 11932 / 1.193182 MHz (10 ms),
    the first one period after the count is written (8254 datasheet, mode 2)."""
    r = timer_run("kernel")
    loaded = [e for e in r.of("kvm_pio", port=0x40, rw=1)][-1]  # the MSB of the reload
    edges = r.of("kvm_set_irq", gsi=0, level=1, irq_source_id=kvm_irq.KVM_PIT_IRQ_SOURCE_ID)
    assert len(edges) >= 10
    period = pit_period_cycles(11932, NOMINAL_HZ)
    assert abs(edges[0]["time"] - loaded["time"] - period) <= 2 * PIT_CLOCK
    for a, b in pairwise(edges):
        assert abs(b["time"] - a["time"] - period) <= PIT_CLOCK
    # Each edge is the PIT's hrtimer firing (traced as a host timer), at that time.
    fired = r.of("host_timer", name="kvm-pit hrtimer")
    assert [e["time"] for e in fired[:len(edges)]] == [e["time"] for e in edges]
    assert all(f["seq"] < e["seq"] for f, e in zip(fired, edges, strict=False))


def test_userspace_irqchip_hlt_goes_to_qemu_and_the_main_loop_pit_timer_kicks_it() -> None:
    r = timer_run("userspace")
    hlts = _userspace(r, "KVM_EXIT_HLT")
    assert len(hlts) == len(_exits(r, "HLT")) == 10
    assert not r.of("kvm_vcpu_block")  # no in-kernel LAPIC: kvm.ko never halts the vCPU
    for hlt in hlts:
        later = _after(r.events, hlt)
        halted = _first(later, "thread", source="vcpu0", state="halted")
        timer = _first(later, "qemu_timer", name="i8254")
        assert timer["source"] == "main-loop" and timer["seq"] > halted["seq"]
        line = _first(later, "qemu_set_irq", irq=0, level=1)
        kick = _first(later, "qemu_cpu_kick", cpu_index=0)
        assert kick["why"] == "CPU_INTERRUPT_HARD"
        assert timer["seq"] < line["seq"] < kick["seq"]
        # The kick reached a thread outside KVM_RUN: QEMU's SIG_IPI handler set
        # kvm_run.immediate_exit, so the next KVM_RUN returns -EINTR at once (api.rst),
        # with no VM entry; QEMU had already queued the vector with KVM_INTERRUPT.
        inject = _first(_after(r.events, kick), "kvm_vcpu_ioctl", name="KVM_INTERRUPT")
        assert inject["detail"] == "irq 32"
        pre_run = _first(_after(r.events, kick), "kvm_arch_pre_run")
        assert pre_run["injected"] == 32 and pre_run["request_interrupt_window"] == 0
        nxt = _first(_after(r.events, inject), "kvm_userspace_exit")
        assert nxt["reason"] == "KVM_EXIT_INTR" and nxt["errno"] == -4
        assert not [e for e in r.of("kvm_entry") if inject["seq"] < e["seq"] < nxt["seq"]]
        # The next entry delivers it.
        entry = _first(_after(r.events, nxt), "kvm_entry")
        inj = _first(_after(r.events, nxt), "kvm_inj_virq")
        assert inj["irq"] == 32 and inj["seq"] < entry["seq"]


def test_userspace_pic_and_pit_accesses_each_exit_to_qemu() -> None:
    r = timer_run("userspace")
    io = [e for e in _userspace(r, "KVM_EXIT_IO") if e["port"] in PIC_PIT_PORTS]
    assert len(io) == len([e for e in r.of("device_access", space="port")
                           if e["address"] in PIC_PIT_PORTS]) > 20
    assert not [e for e in r.of("kvm_pio") if e["port"] in PIC_PIT_PORTS
                and not any(x["port"] == e["port"] for x in io)]


# -- the window handshake -----------------------------------------------------------------------

def test_userspace_window_handshake_as_qemu_kvm_arch_pre_run_does_it() -> None:
    r = window_run("userspace")
    assert r.status == OK, r.outcome.reason
    # The main loop's PIT timer raises IRQ 0 while the guest spins with IF=0, and kicks
    # the vCPU, which is in the guest: the signal's IPI is an external-interrupt exit
    # (reason 1) with the reschedule vector, and KVM_RUN returns KVM_EXIT_INTR.
    timer = _first(r.events, "qemu_timer", name="i8254")
    kick = _first(_after(r.events, timer), "qemu_cpu_kick")
    ipi = _first(_after(r.events, kick), "kvm_exit", exit_reason="EXTERNAL_INTERRUPT")
    assert ipi["exit_reason_number"] == 1
    assert ipi["intr_info"] == INTR_INFO_VALID | RESCHEDULE_VECTOR
    intr = _first(_after(r.events, ipi), "kvm_userspace_exit")
    assert intr["reason"] == "KVM_EXIT_INTR" and intr["errno"] == -4
    # IF=0: QEMU cannot inject, it asks for a window.
    ask = _first(_after(r.events, intr), "kvm_arch_pre_run")
    assert ask["injected"] == -1 and ask["request_interrupt_window"] == 1
    on = _first(_after(r.events, ask), "kvm_irq_window")
    assert on["enable"] is True
    # Exit 7 at the first boundary with IF=1 and no STI blocking: after the NOP.
    window = _first(_after(r.events, on), "kvm_exit", exit_reason="INTERRUPT_WINDOW")
    assert window["exit_reason_number"] == 7
    assert window["guest_rip"] == r.sym("after_nop")
    opened = _first(_after(r.events, window), "kvm_userspace_exit")
    assert opened["reason"] == "KVM_EXIT_IRQ_WINDOW_OPEN"
    inject = _first(_after(r.events, opened), "kvm_vcpu_ioctl", name="KVM_INTERRUPT")
    assert inject["detail"] == "irq 32"
    done = _first(_after(r.events, inject), "kvm_arch_pre_run")
    assert done["injected"] == 32 and done["request_interrupt_window"] == 0
    inj = _first(_after(r.events, done), "kvm_inj_virq")
    assert inj["irq"] == 32 and not inj["reinjected"] and not inj["soft"]
    delivered = _first(_after(r.events, inj), "exception", vector=32)
    assert delivered["eip"] == r.sym("after_nop")
    # Nothing was injected before the window opened.
    assert not [e for e in r.of("kvm_inj_virq") if e["seq"] < window["seq"]]


def test_kernel_irqchip_opens_the_window_itself_and_userspace_sees_none_of_it() -> None:
    r = window_run("kernel")
    assert r.status == OK, r.outcome.reason
    # The PIT's hrtimer raises the line in kvm.ko; the vCPU is kicked out of the guest
    # (reason 1, reschedule vector) and kvm.ko, finding IF=0, turns on window exiting.
    edge = _first(r.events, "kvm_set_irq", gsi=0, level=1)
    kick = _first(_after(r.events, edge), "kvm_vcpu_kick")
    assert kick["how"] == "ipi" and kick["mode"] == "in_guest"
    ipi = _first(_after(r.events, kick), "kvm_exit", exit_reason="EXTERNAL_INTERRUPT")
    assert ipi["intr_info"] == INTR_INFO_VALID | RESCHEDULE_VECTOR
    on = _first(_after(r.events, ipi), "kvm_irq_window")
    assert on["enable"] is True
    window = _first(_after(r.events, on), "kvm_exit", exit_reason="INTERRUPT_WINDOW")
    assert window["guest_rip"] == r.sym("after_nop")
    inj = _first(_after(r.events, window), "kvm_inj_virq")
    assert inj["irq"] == 32 and not inj["reinjected"]
    # None of it reached userspace.
    assert not _userspace(r, "KVM_EXIT_IRQ_WINDOW_OPEN")
    assert not _userspace(r, "KVM_EXIT_INTR")
    assert not r.of("kvm_vcpu_ioctl", name="KVM_INTERRUPT")


@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_sti_hlt_with_an_interrupt_pending_takes_it_after_the_hlt(irqchip: str) -> None:
    """SDM Vol. 2 STI: with IF=0 before it, interrupts stay blocked until after the next
    instruction; the HLT runs, and the pending interrupt wakes it at once (the frame's
    EIP is the instruction after the HLT). Had it come before the HLT, the HLT would
    sleep for good (the handler masks IRQ 0) and the guest would never exit."""
    r = run(guest(STI_HLT), irqchip=irqchip)
    assert r.status == OK, r.outcome.reason
    hlt = _first(r.events, "kvm_exit", exit_reason="HLT")
    delivered = _first(r.events, "exception", vector=32)
    assert delivered["seq"] > hlt["seq"] and delivered["eip"] == r.sym("after_hlt")
    if irqchip == "kernel":
        wake = _first(_after(r.events, hlt), "kvm_vcpu_wakeup")
        assert wake["valid"] and wake["ns"] == 0  # an interrupt was already there
        assert not _userspace(r, "KVM_EXIT_HLT")
    else:
        # QEMU's kvm_handle_halt: CPU_INTERRUPT_HARD and IF=1, so the vCPU does not halt;
        # kvm_arch_pre_run injects at once.
        assert _userspace(r, "KVM_EXIT_HLT")
        pre = _first(_after(r.events, hlt), "kvm_arch_pre_run")
        assert pre["injected"] == 32
        assert not r.of("thread", source="vcpu0", state="halted")


@pytest.mark.parametrize("paging", ["ept", "shadow"])
@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_a_delivery_cut_short_by_an_exit_is_reinjected(irqchip: str, paging: str) -> None:
    """SDM "Information for VM Exits That Occur During Event Delivery": the exit's
    IDT-vectoring information is the event being delivered (valid, type 0 external
    interrupt, vector 0x20: 0x80000020, virtualization-facts.md 2.6); kvm.ko queues it
    again (vmx_complete_interrupts) and vmx_inject_irq traces it as reinjected. The guest
    takes the interrupt exactly once."""
    r = run(guest(FRESH_STACK), irqchip=irqchip, paging=paging)
    assert r.status == OK, r.outcome.reason
    first = _first(r.events, "kvm_inj_virq", reinjected=False)
    cut = _first(_after(r.events, first), "kvm_exit")
    expected = "EPT_VIOLATION" if paging == "ept" else "EXCEPTION_NMI"
    assert cut["exit_reason"] == expected
    assert cut["info2"] == INTR_INFO_VALID | 0x20
    if paging == "shadow":
        assert cut["intr_info"] == INTR_INFO_VALID | (3 << 8) | (1 << 11) | 14  # #PF
    # The fault is on the stack page the frame goes to (ESP was 0x301000).
    fault = _first(_after(r.events, cut), "kvm_page_fault")
    assert fault["gpa"] == 0x301000 - 4
    again = _first(_after(r.events, cut), "kvm_inj_virq")
    assert again["irq"] == 32 and again["reinjected"] is True
    # Not taken twice: the handler ran once (the guest checks ticks == 1 and the frame).
    assert len(r.of("kvm_inj_virq")) == 2


# -- the signal check before every entry --------------------------------------------------------

@pytest.mark.parametrize("which", ["timer-kernel", "timer-userspace", "window-userspace",
                                   "window-kernel"])
def test_a_signal_check_precedes_every_vm_entry(which: str) -> None:
    """vcpu_enter_guest checks for a pending signal (kvm_vcpu_exit_request) as its last
    step before entry, every time; a check that finds one stops the entry."""
    name, irqchip = which.split("-")
    r = timer_run(irqchip) if name == "timer" else window_run(irqchip)
    checks = r.of("kvm_signal_check")
    entries = r.of("kvm_entry")
    assert len([c for c in checks if not c["pending"]]) == len(entries) > 10
    last: dict | None = None
    for e in r.events:
        if e["source"] != "vcpu0" or e["kind"] in ("kvm_inj_virq", "kvm_inj_exception"):
            continue
        if e["kind"] == "kvm_entry":
            assert last is not None and last["kind"] == "kvm_signal_check", e
            assert not last["pending"]
        last = e


# -- host ticks ---------------------------------------------------------------------------------

COMPUTE = """
bits 32
org 0x100000
start:
        cli
        mov ecx, {rounds}
.l:     dec ecx
        jnz .l
        mov dx, 0x501
        mov al, 0
        out dx, al
        hlt
"""


def _tick_exits(r: Run) -> list[dict]:
    ext = _exits(r, "EXTERNAL_INTERRUPT")
    assert all(e["intr_info"] == INTR_INFO_VALID | LOCAL_TIMER_VECTOR for e in ext)
    return ext


def test_host_tick_is_the_hosts_250_hz_timer() -> None:
    # CONFIG_HZ=250 on the simulated host, on vmsim's 3 GHz scale.
    assert kvm_irq.HOST_HZ == 250
    assert kvm_irq.HOST_TICK == NOMINAL_HZ // 250
    assert kvm_irq.LOCAL_TIMER_VECTOR == LOCAL_TIMER_VECTOR


def test_host_ticks_exit_a_computing_guest_periodically(monkeypatch) -> None:
    """While a guest computes, the host's periodic tick takes its CPU: an external-interrupt
    exit (reason 1) with the tick's vector acknowledged on exit, handled in kvm.ko alone
    (userspace never sees reason 1, virtualization-facts.md 1.2), at every tick. The tick
    is made 20 times as frequent here so that a short run sees many."""
    tick = kvm_irq.HOST_TICK // 20
    monkeypatch.setattr(kvm_irq, "HOST_TICK", tick)
    r = run(assemble_compute(3_000_000), limit=10_000_000)  # about 6 M cycles, IF=0
    assert r.status == OK
    ext = _tick_exits(r)
    # One exit per tick up to the guest's last exit (its write to isa-debug-exit).
    last = _exits(r, "IO_INSTRUCTION")[-1]
    assert len(ext) == last["time"] // tick >= 9
    for n, e in enumerate(ext, 1):
        # At the tick (the guest ran up to it), plus at most one instruction.
        assert 0 <= e["time"] - n * tick <= 2
    assert not _userspace(r, "KVM_EXIT_INTR")
    assert [e["handler"] for e in r.of("kvm_handler")
            if e["handler"] == "handle_external_interrupt"] == ["handle_external_interrupt"] * len(ext)


def test_host_tick_at_its_real_period() -> None:
    """One real host tick (NOMINAL_HZ / 250 = 12 M cycles) in a guest that computes a
    little longer than that."""
    r = run(assemble_compute(6_050_000), limit=20_000_000)
    assert r.status == OK
    ext = _tick_exits(r)
    assert len(ext) == 1
    assert 0 <= ext[0]["time"] - NOMINAL_HZ // 250 <= 2


def test_no_host_tick_exit_for_ticks_while_the_vcpu_is_blocked() -> None:
    """The timer guest sleeps in kvm_vcpu_block for most of its 100 ms: the host's ticks
    then are the host's alone (the vCPU is not in the guest), so they cause no exit;
    only ticks that fall while the guest runs may (it runs for well under 1 ms here)."""
    r = timer_run("kernel")
    guest_cycles = 0
    entry = None
    for e in r.events:
        if e["kind"] == "kvm_entry":
            entry = e
        elif e["kind"] == "kvm_exit" and entry is not None:
            guest_cycles += e["time"] - entry["time"]
            entry = None
    assert guest_cycles < kvm_irq.HOST_TICK // 10
    for e in _tick_exits(r):
        # Any tick exit must follow an entry made before that tick.
        before = [x for x in r.of("kvm_entry") if x["seq"] < e["seq"]][-1]
        assert before["time"] <= (e["time"] // kvm_irq.HOST_TICK) * kvm_irq.HOST_TICK


def assemble_compute(rounds: int):
    from vmsim.asm import assemble

    return assemble(COMPUTE.format(rounds=rounds), "compute.asm")


@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_a_guest_that_halts_with_if_clear_ends_at_its_hlt(irqchip: str) -> None:
    """`nop; hlt` with IF=0: nothing but an NMI or INIT could wake it, so the run ends
    there, as halted, and its virtual time is that of its few instructions and exits, not
    that of the PIT's first tick after reset (QEMU resets channel 0 to mode 3, count
    0x10000: 18.2 Hz, 55 ms; it reaches kvm.ko through KVM_SET_PIT2)."""
    from vmsim.asm import assemble
    from vmsim.session import Session
    from vmsim.vmm.machine import MachineConfig

    s = Session(assemble("bits 32\norg 0x100000\n        nop\n        hlt\n", "halt.asm"),
                "sim", MachineConfig(irqchip=irqchip), max_instructions=1000)
    outcome = s.run()
    assert outcome.halted and outcome.exit_status is None
    assert s.virtual_time < 20_000  # a few exits; the reset tick is 164,776,203 cycles away
