"""The host's /dev/kvm through vmsim.hostkvm: the protocol's real implementation."""

from __future__ import annotations

import errno
import mmap
import os

import pytest

from vmsim.hostkvm import HostKvmError, open_kvm
from vmsim.kvm.api import (
    KVM_EXIT_HLT,
    KVM_EXIT_INTERNAL_ERROR,
    KVM_EXIT_INTR,
    KVM_EXIT_IO,
    KVM_EXIT_IO_OUT,
    KvmRegs,
    KvmSegment,
    KvmSregs,
)


@pytest.fixture
def kvm():
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm on this host")
    try:
        k = open_kvm()
    except HostKvmError as e:
        pytest.skip(str(e))
    yield k
    k.close()


def _flat_protected_mode(vcpu) -> None:
    s = vcpu.get_sregs()
    s.cs = KvmSegment.flat(0x08, code=True)
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(s, name, KvmSegment.flat(0x10, code=False))
    s.cr0 = 0x11
    vcpu.set_sregs(s)


def test_missing_device_is_a_one_line_error(tmp_path) -> None:
    with pytest.raises(HostKvmError) as info:
        open_kvm(str(tmp_path / "kvm"))
    assert "\n" not in str(info.value) and "kvm" in str(info.value)


def test_sregs_round_trip_through_the_kernel(kvm) -> None:
    vm = kvm.create_vm()
    vcpu = vm.create_vcpu(0)
    _flat_protected_mode(vcpu)
    back = vcpu.get_sregs()
    assert back.cs.selector == 0x08 and back.cs.db == 1 and back.cs.limit == 0xFFFFFFFF
    assert back.ss.selector == 0x10 and back.cr0 & 1
    assert KvmSregs.unpack(back.pack()) == back


def test_out_and_hlt_reach_userspace(kvm) -> None:
    # mov dx, 0x3f8 / mov al, 'A' / out dx, al / hlt
    code = bytes.fromhex("66baf803b041eef4")
    vm = kvm.create_vm()
    mem = mmap.mmap(-1, 2 << 20)
    mem[0x100000:0x100000 + len(code)] = code
    vm.set_user_memory_region(0, 0, 0, 2 << 20, memoryview(mem))
    vm.set_tss_addr()
    vcpu = vm.create_vcpu(0)
    _flat_protected_mode(vcpu)
    vcpu.set_regs(KvmRegs(rip=0x100000, rsp=0x100000, rflags=0x2))
    assert vcpu.run() == 0
    run = vcpu.kvm_run
    assert run.exit_reason == KVM_EXIT_IO
    direction, size, port, count, offset = run.io()
    assert (direction, size, port, count) == (KVM_EXIT_IO_OUT, 1, 0x3F8, 1)
    assert run.buf[offset] == ord("A")
    assert vcpu.run() == 0
    assert run.exit_reason == KVM_EXIT_HLT
    assert vcpu.get_regs().rip == 0x100000 + len(code)


# -- how the host's KVM stops: the watchdog, and the guest instruction it stopped on ------------

LOAD = 0x100000


def _vcpu_running(kvm, code: bytes):
    """A vCPU in flat 32-bit protected mode about to run `code` at 0x100000."""
    vm = kvm.create_vm()
    mem = mmap.mmap(-1, 2 << 20)
    mem[LOAD:LOAD + len(code)] = code
    vm.set_user_memory_region(0, 0, 0, 2 << 20, memoryview(mem))
    vm.set_tss_addr()
    vcpu = vm.create_vcpu(0)
    _flat_protected_mode(vcpu)
    vcpu.set_regs(KvmRegs(rip=LOAD, rsp=0x90000, rflags=0x2))
    return vcpu


def test_watchdog_kicks_a_vcpu_the_host_never_returns_from(kvm, monkeypatch) -> None:
    # mov eax, 1 / vmcall / hlt: this host's software KVM never returns from KVM_RUN on
    # VMCALL (oracles.md); the watchdog's kick makes KVM_RUN return -EINTR, as
    # qemu_cpu_kick does, and the vCPU is left on the VMCALL.
    monkeypatch.setenv("VMSIM_KVM_WATCHDOG", "0.2")
    vcpu = _vcpu_running(kvm, bytes.fromhex("b801000000 0f01c1 f4"))
    r = vcpu.run()
    if r == 0 and vcpu.kvm_run.exit_reason == KVM_EXIT_HLT:
        pytest.skip("this host's KVM runs VMCALL: nothing to kick")
    assert r == -errno.EINTR and vcpu.watchdog_expired
    assert vcpu.get_regs().rip == LOAD + 5
    assert vcpu.kvm_run.immediate_exit == 0  # the next KVM_RUN enters the guest again
    stop = vcpu.explain_stop(KVM_EXIT_INTR)
    assert stop.startswith("the host's KVM did not return from KVM_RUN for 0.2 s at eip "
                           "0x00100005 (`vmcall`)")
    assert "not of vmsim" in stop and stop.exit_status == 70


def test_an_exit_in_time_is_not_the_watchdogs(kvm, monkeypatch) -> None:
    monkeypatch.setenv("VMSIM_KVM_WATCHDOG", "30")
    vcpu = _vcpu_running(kvm, bytes.fromhex("f4"))
    assert vcpu.run() == 0 and vcpu.kvm_run.exit_reason == KVM_EXIT_HLT
    assert not vcpu.watchdog_expired
    assert vcpu.explain_stop(KVM_EXIT_INTR) is None  # an ordinary signal: the VM goes on


def test_watchdog_setting_is_checked(kvm, monkeypatch) -> None:
    vm = kvm.create_vm()
    monkeypatch.setenv("VMSIM_KVM_WATCHDOG", "soon")
    with pytest.raises(HostKvmError) as info:
        vm.create_vcpu(0)
    assert str(info.value) == ("VMSIM_KVM_WATCHDOG=soon: expected a number of seconds "
                               "(0 turns the watchdog off)")
    monkeypatch.setenv("VMSIM_KVM_WATCHDOG", "0")
    assert vm.create_vcpu(1)._watchdog is None


def test_max_instructions_does_not_apply(kvm) -> None:
    vcpu = kvm.create_vm().create_vcpu(0)
    with pytest.raises(HostKvmError, match="--max-instructions does not apply on --backend kvm"):
        vcpu.set_instruction_limit(1000)


def test_emulation_failure_names_the_instruction(kvm) -> None:
    # mov esp, 0x90000 / pushfd / push 8 / push 0x10000e / iretd / hlt: this host's KVM cannot
    # emulate IRET (KVM_EXIT_INTERNAL_ERROR, suberror 1); what userspace can tell a student
    # is the instruction at RIP, read from guest memory.
    code = bytes.fromhex("bc00000900 9c 6a08 680e001000 cf f4")
    vcpu = _vcpu_running(kvm, code)
    assert vcpu.run() == 0
    if vcpu.kvm_run.exit_reason != KVM_EXIT_INTERNAL_ERROR:
        pytest.skip("this host's KVM emulates IRET")
    stop = vcpu.explain_stop(KVM_EXIT_INTERNAL_ERROR)
    assert stop.startswith("the host's KVM could not run the guest instruction `iret` at eip "
                           "0x0010000d (KVM_EXIT_INTERNAL_ERROR, suberror 1: emulation failure); "
                           "this is a limit of the host's KVM")
    assert stop.endswith("not of vmsim: try --backend sim") and stop.exit_status == 70


def test_guest_memory_reads_through_the_slots(kvm) -> None:
    vcpu = _vcpu_running(kvm, b"\x90\xf4")
    assert vcpu.read_guest_linear(LOAD, 2, paging=False) == b"\x90\xf4"
    assert vcpu.read_guest_linear((2 << 20) - 1, 4, paging=False) == b"\0"  # RAM ends there
    assert vcpu.read_guest_linear(0xFEE00000, 4, paging=False) == b""  # no slot
