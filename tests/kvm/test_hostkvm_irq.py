"""The host's /dev/kvm for interrupts and several vCPUs (issue 10): the in-kernel irqchip and
PIT, KVM_IRQ_LINE, KVM_INTERRUPT with the interrupt window, one OS thread per vCPU, and
kicks as QEMU makes them (SIG_IPI blocked in the vCPU thread, KVM_SET_SIGNAL_MASK,
immediate_exit, kvm_eat_signals).

This host's KVM is a software one that cannot run IRET or paging (oracles.md): the guests
here use neither. The kernel itself is the oracle for the signal plumbing: the vCPU
thread's pending and blocked signals are read from /proc/self/task/TID/status.
"""

from __future__ import annotations

import errno
import mmap
import os
import signal
import struct
import threading
import time

import pytest

from vmsim.asm import assemble
from vmsim.hostkvm import HostKvmError, open_kvm
from vmsim.hostkvm.vcpu_thread import kernel_sigset
from vmsim.kvm.api import (
    KVM_CAP_IMMEDIATE_EXIT,
    KVM_CAP_IRQCHIP,
    KVM_CAP_MAX_VCPUS,
    KVM_CAP_NR_VCPUS,
    KVM_CAP_PIT2,
    KVM_EXIT_INTR,
    KVM_EXIT_IO,
    KVM_EXIT_IO_OUT,
    KVM_EXIT_IRQ_WINDOW_OPEN,
    KVM_EXIT_NAMES,
    KVM_MP_STATE_HALTED,
    KVM_MP_STATE_RUNNABLE,
    KvmRegs,
    KvmSegment,
)

LOAD = 0x100000
RAM = 2 << 20
SIGUSR1_BIT = 1 << (signal.SIGUSR1 - 1)


@pytest.fixture
def kvm(monkeypatch):
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm on this host")
    try:
        k = open_kvm()
    except HostKvmError as e:
        pytest.skip(str(e))
    # Runs here end by the guest's own exits or by a kick, never by the watchdog.
    monkeypatch.setenv("VMSIM_KVM_WATCHDOG", "120")
    yield k
    k.close()


def _need(kvm, cap: int, name: str, at_least: int = 1) -> None:
    if kvm.check_extension(cap) < at_least:
        pytest.skip(f"the host's KVM lacks {name} (KVM_CHECK_EXTENSION {cap})")


def _entry_state(vcpu, index: int) -> None:
    """vmsim's entry contract (vmsim.vmm.kvm_all.kvm_arch_put_registers, issue 10 --smp):
    32-bit protected mode, paging off, flat CS=0x08 and data 0x10, GDTR and IDTR empty,
    EIP at the load address, ESP = 0x100000 - index * 0x10000."""
    s = vcpu.get_sregs()
    s.cs = KvmSegment.flat(0x08, code=True)
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(s, name, KvmSegment.flat(0x10, code=False))
    s.gdt.base, s.gdt.limit = 0, 0
    s.idt.base, s.idt.limit = 0, 0
    s.cr0, s.cr3, s.cr4 = 0x11, 0, 0
    vcpu.set_sregs(s)
    vcpu.set_regs(KvmRegs(rip=LOAD, rsp=0x100000 - index * 0x10000, rflags=0x2))


def _machine(kvm, source: str, vcpus: int = 1, irqchip: bool = False, pit: bool = False):
    """A VM with 2 MiB of RAM, `source` assembled at 0x100000, and `vcpus` vCPUs in the
    entry state: (vm, memory, vcpus, symbols)."""
    image = assemble("bits 32\norg 0x100000\n" + source, "guest.asm")
    vm = kvm.create_vm()
    mem = mmap.mmap(-1, RAM)
    mem[LOAD:LOAD + len(image.data)] = image.data
    vm.set_user_memory_region(0, 0, 0, RAM, memoryview(mem))
    vm.set_tss_addr()
    if irqchip:
        vm.create_irqchip()  # before the vCPUs, so that each gets its local APIC
    if pit:
        vm.create_pit2()
    cpus = [vm.create_vcpu(i) for i in range(vcpus)]
    for i, vcpu in enumerate(cpus):
        _entry_state(vcpu, i)
    return vm, mem, cpus, image.symbols


def _u32(mem, address: int) -> int:
    return struct.unpack_from("<I", mem, address)[0]


def _out(vcpu) -> tuple[int, int]:
    """The OUT this exit reports: (port, data)."""
    run = vcpu.kvm_run
    assert run.exit_reason == KVM_EXIT_IO, KVM_EXIT_NAMES.get(run.exit_reason)
    direction, size, port, count, offset = run.io()
    assert direction == KVM_EXIT_IO_OUT and count == 1
    return port, int.from_bytes(run.buf[offset:offset + size], "little")


def _thread_signals(vcpu) -> tuple[int, int]:
    """(pending, blocked) signal masks of the vCPU's OS thread, as the kernel reports them."""
    fields = {}
    with open(f"/proc/self/task/{vcpu._thread.native_id}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["SigPnd"], 16), int(fields["SigBlk"], 16)


def _thread_state(vcpu) -> str:
    """The vCPU thread's scheduler state (/proc/self/task/TID/stat): R running, S asleep."""
    with open(f"/proc/self/task/{vcpu._thread.native_id}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def _wait_for(mem, address: int) -> None:
    """Until the guest has written a non-zero dword at `address` (it is then running, inside
    KVM_RUN on its thread); a bound only so that a broken run fails instead of hanging."""
    deadline = time.monotonic() + 60
    while not _u32(mem, address):
        if time.monotonic() > deadline:  # a hang bound, not a timing check
            pytest.fail("the guest never got there")


# -- capabilities, the in-kernel irqchip and PIT, KVM_IRQ_LINE --------------------------------

def test_capabilities_on_the_system_and_the_vm_fd(kvm) -> None:
    vm = kvm.create_vm()
    for cap in (KVM_CAP_IRQCHIP, KVM_CAP_PIT2, KVM_CAP_IMMEDIATE_EXIT):
        assert vm.check_extension(cap) == kvm.check_extension(cap) in (0, 1)
    nr, most = kvm.check_extension(KVM_CAP_NR_VCPUS), kvm.check_extension(KVM_CAP_MAX_VCPUS)
    assert 1 <= nr <= most  # api.rst: NR_VCPUS is the recommended number, MAX_VCPUS the limit
    vm.close()


PIC_IMR_GUEST = """
    mov al, 0xa5
    out 0x21, al        ; OCW1: the master's IMR
    mov al, 0
    in al, 0x21         ; the IMR, read back
    out 0x80, al
    mov al, 0x34
    out 0x43, al        ; PIT channel 0, lobyte/hibyte, mode 2
    mov al, 0x9c
    out 0x40, al
    mov al, 0x2e
    out 0x40, al        ; count 11932 (100 Hz)
    mov al, 0x00
    out 0x43, al        ; counter latch, channel 0
    in al, 0x40
    mov ah, al
    in al, 0x40
    xchg al, ah
    out 0x82, ax
    jmp $
"""


def test_in_kernel_pic_and_pit_answer_without_exits(kvm) -> None:
    _need(kvm, KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP")
    _need(kvm, KVM_CAP_PIT2, "KVM_CAP_PIT2")
    vm, _, (vcpu,), _ = _machine(kvm, PIC_IMR_GUEST, irqchip=True, pit=True)
    # 8259A datasheet: OCW1 (A0=1) writes the IMR, and a read with A0=1 returns it. The
    # in-kernel PIC answers both, so the first exit is the guest's report on port 0x80.
    assert vcpu.run() == 0
    assert _out(vcpu) == (0x80, 0xA5)
    # 8254 datasheet: in mode 2 the counter counts N..1 and reloads; a latched read gives a
    # value in that range. The in-kernel PIT answers 0x43 and 0x40 too.
    assert vcpu.run() == 0
    port, count = _out(vcpu)
    assert port == 0x82 and 1 <= count <= 11932
    assert vcpu.get_mp_state() == KVM_MP_STATE_RUNNABLE
    vm.close()


def test_without_the_irqchip_the_pic_is_userspaces(kvm) -> None:
    vm, _, (vcpu,), _ = _machine(kvm, PIC_IMR_GUEST)
    assert vcpu.run() == 0
    assert _out(vcpu) == (0x21, 0xA5)  # QEMU's i8259 model would get it
    vm.close()


def test_with_the_irqchip_hlt_blocks_in_the_kernel_until_kicked(kvm) -> None:
    _need(kvm, KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP")
    # The in-kernel local APIC takes HLT: no KVM_EXIT_HLT, the vCPU sleeps in
    # kvm_vcpu_block (KVM_MP_STATE_HALTED) until an interrupt or a signal wakes it.
    vm, mem, (vcpu,), sym = _machine(kvm, """
    mov dword [inside], 1
    hlt
inside: dd 0
    """, irqchip=True)
    vcpu.start_run()
    _wait_for(mem, sym["inside"])
    # Inside KVM_RUN (the guest has run) and asleep: blocked on the HLT. (KVM_GET_MP_STATE
    # cannot be asked meanwhile: it waits for the vCPU's mutex, which KVM_RUN holds.)
    deadline = time.monotonic() + 60
    while _thread_state(vcpu) != "S":
        if time.monotonic() > deadline:  # a hang bound, not a timing check
            pytest.fail("the vCPU thread never slept")
    vcpu.kick()
    assert vcpu.finish_run() == -errno.EINTR and vcpu.kvm_run.exit_reason == KVM_EXIT_INTR
    assert vcpu.get_mp_state() == KVM_MP_STATE_HALTED
    assert vcpu.get_regs().rip == sym["inside"]  # past the HLT
    vm.close()


def test_irq_line_raises_gsi0_on_the_in_kernel_pic(kvm) -> None:
    _need(kvm, KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP")
    guest = """
    mov al, 0x11
    out 0x20, al        ; ICW1: edge triggered, cascade, ICW4 follows
    mov al, 0x20
    out 0x21, al        ; ICW2: vectors 0x20-0x27
    mov al, 0x04
    out 0x21, al        ; ICW3: slave on IRQ2
    mov al, 0x01
    out 0x21, al        ; ICW4: 8086 mode
    mov al, 0x0a
    out 0x20, al        ; OCW3: read the IRR
    in al, 0x20
    out 0x80, al        ; IRR before
    in al, 0x20
    out 0x81, al        ; IRR after the host raised GSI 0
    jmp $
    """
    vm, _, (vcpu,), _ = _machine(kvm, guest)
    with pytest.raises(HostKvmError, match="KVM_IRQ_LINE failed"):
        vm.irq_line(0, 1)  # no irqchip yet: ENXIO
    vm.close()
    vm, _, (vcpu,), _ = _machine(kvm, guest, irqchip=True)
    assert vcpu.run() == 0 and _out(vcpu) == (0x80, 0x00)
    vm.irq_line(0, 1)  # an edge on IRQ 0, as a PIT in userspace would give it
    vm.irq_line(0, 0)
    # 8259A datasheet: in edge-triggered mode a rising edge sets the IRR bit, which stays
    # set until the interrupt is acknowledged (IF=0 here: it is not).
    assert vcpu.run() == 0 and _out(vcpu) == (0x81, 0x01)
    with pytest.raises(HostKvmError, match="KVM_INTERRUPT failed: No such device"):
        vcpu.interrupt(0x20)  # the in-kernel PIC injects; KVM_INTERRUPT is for userspace's
    vm.close()


# -- KVM_INTERRUPT and the interrupt window, without the irqchip -------------------------------

GDT, IDT, VECTOR = 0x7F000, 0x80000, 0x30


def test_kvm_interrupt_after_the_interrupt_window_opens(kvm) -> None:
    guest = """
    cli
    out 0x80, al        ; an exit with IF=0: not ready for injection
    sti
    nop                 ; STI's interrupt shadow
    out 0x81, al
    jmp $
handler:
    mov al, 0x42
    out 0x82, al        ; the handler ran (it cannot IRET on this host)
    jmp $
    """
    vm, mem, (vcpu,), sym = _machine(kvm, guest)
    # Interrupt delivery loads CS from the GDT (SDM Vol. 3 6.12.1): flat code and data
    # descriptors, and an interrupt gate for VECTOR (type 0xE, P=1, DPL 0).
    mem[GDT:GDT + 24] = bytes(8) + bytes.fromhex("ffff0000009acf00 ffff00000092cf00")
    handler = sym["handler"]
    mem[IDT + VECTOR * 8:IDT + VECTOR * 8 + 8] = struct.pack(
        "<HHBBH", handler & 0xFFFF, 0x08, 0, 0x8E, handler >> 16)
    s = vcpu.get_sregs()
    s.gdt.base, s.gdt.limit = GDT, 23
    s.idt.base, s.idt.limit = IDT, (VECTOR + 1) * 8 - 1
    vcpu.set_sregs(s)
    run = vcpu.kvm_run

    assert vcpu.run() == 0 and _out(vcpu)[0] == 0x80
    assert (run.if_flag, run.ready_for_interrupt_injection) == (0, 0)
    # QEMU's kvm_arch_pre_run: not ready, so ask for the window instead of injecting.
    run.request_interrupt_window = 1
    assert vcpu.run() == 0
    # Upstream KVM exits with KVM_EXIT_IRQ_WINDOW_OPEN once IF=1 and STI's shadow has
    # passed; this host's software KVM runs on to the guest's next exit. Either way the
    # exit says the window is open, which is all QEMU looks at.
    assert run.exit_reason == KVM_EXIT_IRQ_WINDOW_OPEN or _out(vcpu)[0] == 0x81
    assert (run.if_flag, run.ready_for_interrupt_injection) == (1, 1)
    window_eip = vcpu.get_regs().rip
    run.request_interrupt_window = 0
    vcpu.interrupt(VECTOR)
    assert vcpu.run() == 0 and _out(vcpu) == (0x82, 0x42)
    # The frame an interrupt gate pushes (SDM Vol. 3 6.12.1): EFLAGS, CS, EIP of the
    # instruction the window opened before; the gate cleared IF.
    regs = vcpu.get_regs()
    assert regs.rsp == 0x100000 - 12
    eip, cs, eflags = struct.unpack_from("<III", mem, regs.rsp)
    assert (eip, cs) == (window_eip, 0x08) and eflags & 0x200
    assert not regs.rflags & 0x200
    vm.close()


# -- several vCPUs, each on its own OS thread --------------------------------------------------

SMP_GUEST = """
    mov ecx, 100000
again:
    mov eax, 1
    lock xadd [counter], eax
    dec ecx
    jnz again
    out 0x80, al
    jmp $
align 4
counter: dd 0
"""


def test_two_vcpus_on_two_threads_count_with_lock_xadd(kvm) -> None:
    _need(kvm, KVM_CAP_NR_VCPUS, "2 vCPUs (KVM_CAP_NR_VCPUS)", at_least=2)
    vm, mem, cpus, sym = _machine(kvm, SMP_GUEST, vcpus=2)
    main_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    for vcpu in cpus:
        vcpu.start_run()
    # Each vCPU is its own OS thread, not the caller's, and the caller's mask is as it was.
    threads = {vcpu._thread.native_id for vcpu in cpus}
    assert len(threads) == 2 and threading.get_native_id() not in threads
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == main_mask
    while not all(vcpu.run_done() for vcpu in cpus):
        vm.wait_for_any_run(None)
    for i, vcpu in enumerate(cpus):
        assert vcpu.finish_run() == 0 and _out(vcpu)[0] == 0x80
        assert vcpu.get_regs().rsp == 0x100000 - i * 0x10000
    assert _u32(mem, sym["counter"]) == 200000  # LOCK XADD is atomic across the vCPUs
    vm.close()
    assert not any(vcpu._thread.is_alive() for vcpu in cpus)


SPIN_GUEST = """
    mov dword [inside], 1
spin:
    cmp dword [go], 0
    je spin
    out 0x80, al
    jmp $
align 4
inside: dd 0
go: dd 0
"""


def test_wait_for_any_run_wakes_for_the_vcpu_that_exits(kvm) -> None:
    vm = kvm.create_vm()
    vm.wait_for_any_run(None)  # nothing in flight: returns at once
    vm.close()
    guest = """
    cmp esp, 0x100000
    je report           ; vCPU 0 reports at once
    mov dword [inside], 1
spin:
    cmp dword [go], 0   ; vCPU 1 spins until the host says go
    je spin
report:
    out 0x80, al
    jmp $
align 4
inside: dd 0
go: dd 0
    """
    vm, mem, cpus, sym = _machine(kvm, guest, vcpus=2)
    for vcpu in cpus:
        vcpu.start_run()
    vm.wait_for_any_run(None)
    _wait_for(mem, sym["inside"])
    assert [vcpu.run_done() for vcpu in cpus] == [True, False]
    assert cpus[0].finish_run() == 0 and _out(cpus[0])[0] == 0x80
    mem[sym["go"]] = 1
    vm.wait_for_any_run(None)
    assert cpus[1].run_done()
    assert cpus[1].finish_run() == 0 and _out(cpus[1])[0] == 0x80
    assert not any(vcpu.run_done() for vcpu in cpus)
    vm.close()


@pytest.mark.parametrize("disposition", ["default", "python-handler"])
def test_kick_interrupts_kvm_run_on_the_vcpu_thread(kvm, disposition) -> None:
    # SIGUSR1's default action terminates the process, and a Python handler runs on the main
    # thread: neither may see a kick, which is for the vCPU thread alone (vcpu_thread.py).
    calls: list[int] = []
    old = signal.signal(signal.SIGUSR1, signal.SIG_DFL if disposition == "default"
                        else lambda signum, frame: calls.append(signum))
    try:
        vm, mem, (vcpu,), sym = _machine(kvm, SPIN_GUEST)
        vcpu.start_run()
        _wait_for(mem, sym["inside"])
        pending, blocked = _thread_signals(vcpu)
        assert not blocked & SIGUSR1_BIT  # inside KVM_RUN: KVM_SET_SIGNAL_MASK's mask
        vcpu.kick()
        assert vcpu.finish_run() == -errno.EINTR
        assert vcpu.kvm_run.exit_reason == KVM_EXIT_INTR and not vcpu.watchdog_expired
        # kvm_eat_signals: the thread has taken the signal, blocked again in userspace.
        pending, blocked = _thread_signals(vcpu)
        assert not pending & SIGUSR1_BIT and blocked & SIGUSR1_BIT
        assert vcpu.kvm_run.immediate_exit == 0
        # The next KVM_RUN enters the guest again and runs on from the spin.
        mem[sym["go"]] = 1
        assert vcpu.run() == 0 and _out(vcpu)[0] == 0x80
        sum(range(1000))  # bytecodes, where a pending Python handler would run
        assert calls == []
        vm.close()
    finally:
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.parametrize("thread", ["not yet made", "idle"])
def test_a_kick_before_entry_stops_the_next_kvm_run(kvm, thread) -> None:
    vm, mem, (vcpu,), sym = _machine(kvm, SPIN_GUEST)
    mem[sym["go"]] = 1
    if thread == "idle":
        vcpu.start_run()
        assert vcpu.finish_run() == 0 and _out(vcpu)[0] == 0x80
        _entry_state(vcpu, 0)
    vcpu.kick()  # immediate_exit, and SIG_IPI left pending in an idle thread
    vcpu.start_run()
    assert vcpu.finish_run() == -errno.EINTR
    assert vcpu.get_regs().rip == LOAD  # the guest did not run
    assert not _thread_signals(vcpu)[0] & SIGUSR1_BIT
    assert vcpu.run() == 0 and _out(vcpu)[0] == 0x80  # one kick, one -EINTR
    vm.close()


def test_kick_ends_a_blocking_run_on_the_main_thread(kvm, monkeypatch) -> None:
    # No vCPU thread: run() makes KVM_RUN on the caller's (main) thread, where Python's
    # SIG_IPI handler receives the kick, as the single-vCPU VMM does today.
    monkeypatch.setenv("VMSIM_KVM_WATCHDOG", "0")
    vm, mem, (vcpu,), sym = _machine(kvm, SPIN_GUEST)

    def kicker() -> None:
        _wait_for(mem, sym["inside"])
        vcpu.kick()

    helper = threading.Thread(target=kicker)
    helper.start()
    assert vcpu.run() == -errno.EINTR and vcpu.kvm_run.exit_reason == KVM_EXIT_INTR
    helper.join()
    assert vcpu._thread is None and vcpu.kvm_run.immediate_exit == 0
    mem[sym["go"]] = 1
    assert vcpu.run() == 0 and _out(vcpu)[0] == 0x80
    vm.close()


def test_watchdog_kicks_a_vcpu_thread(kvm, monkeypatch) -> None:
    monkeypatch.setenv("VMSIM_KVM_WATCHDOG", "0.2")
    vm, mem, (vcpu,), sym = _machine(kvm, SPIN_GUEST)
    vcpu.start_run()
    assert vcpu.finish_run() == -errno.EINTR and vcpu.watchdog_expired
    assert "did not return from KVM_RUN for 0.2 s" in vcpu.explain_stop(KVM_EXIT_INTR)
    assert not _thread_signals(vcpu)[0] & SIGUSR1_BIT and vcpu.kvm_run.immediate_exit == 0
    mem[sym["go"]] = 1
    vcpu.start_run()
    assert vcpu.finish_run() == 0 and _out(vcpu)[0] == 0x80 and not vcpu.watchdog_expired
    vm.close()


def test_close_ends_a_vcpu_thread_inside_kvm_run(kvm) -> None:
    vm, mem, (vcpu,), sym = _machine(kvm, SPIN_GUEST)
    vcpu.start_run()
    _wait_for(mem, sym["inside"])
    thread = vcpu._thread
    vcpu.close()
    assert not thread.is_alive()
    with pytest.raises(HostKvmError, match="KVM_RUN after close"):
        vcpu.start_run()
    vm.close()


def test_a_run_is_started_once(kvm) -> None:
    vm, _, (vcpu,), _ = _machine(kvm, SPIN_GUEST)
    with pytest.raises(HostKvmError, match="finish_run without start_run"):
        vcpu.finish_run()
    vcpu.start_run()
    with pytest.raises(HostKvmError, match="KVM_RUN started twice"):
        vcpu.start_run()
    vcpu.kick()
    assert vcpu.finish_run() == -errno.EINTR
    vm.close()


def test_kernel_sigset_layout() -> None:
    # struct kvm_signal_mask: u32 len (8, the kernel's sigset_t), then bit n-1 for signal n.
    assert kernel_sigset({signal.SIGUSR1, signal.SIGINT}) == struct.pack(
        "<IQ", 8, (1 << 9) | (1 << 1))
    assert kernel_sigset(set()) == struct.pack("<IQ", 8, 0)
