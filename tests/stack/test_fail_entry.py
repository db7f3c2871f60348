"""(e) A VM entry that fails its guest-state checks, built through the KVM API.

KVM_SET_SREGS accepts the state (as Linux does: it only checks a few CR bits); the next
KVM_RUN attempts VMLAUNCH, the processor refuses it with exit reason 33 | bit 31 (invalid
guest state) and kvm.ko hands that to userspace as KVM_EXIT_FAIL_ENTRY with
hardware_entry_failure_reason = 0x80000021. vmsim also names the check that failed.
(The host's software KVM performs no VMX entry checks, so it is no oracle here.)
"""

from __future__ import annotations

import pytest

from vmsim.events import EventStream
from vmsim.kvm.api import KVM_EXIT_FAIL_ENTRY, KVM_EXIT_HLT, KvmRegs, KvmSegment
from vmsim.kvm.kvm_main import SimKvm

INVALID_GUEST_STATE = 0x80000021  # VMX_EXIT_REASONS_FAILED_VMENTRY | EXIT_REASON_INVALID_STATE


def _vcpu(events: EventStream | None = None):
    vm = SimKvm(events).create_vm()
    mem = bytearray(2 << 20)
    mem[0x100000] = 0xF4  # hlt
    vm.set_user_memory_region(0, 0, 0, len(mem), memoryview(mem))
    vcpu = vm.create_vcpu(0)
    s = vcpu.get_sregs()
    s.cs = KvmSegment.flat(0x08, code=True)
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(s, name, KvmSegment.flat(0x10, code=False))
    s.cr0 = 0x11
    return vcpu, s, mem


def _break_cs_type(s) -> None:
    s.cs.type = 1  # read-only data: not code, and not the type 3 an unrestricted guest may use


def _break_tr(s) -> None:
    s.tr.unusable = 1


def _break_ss_dpl(s) -> None:
    s.ss.dpl = 3  # CS DPL 0, SS DPL 3


@pytest.mark.parametrize(("breaker", "field", "words"), [
    (_break_cs_type, "GUEST_CS_AR_BYTES", "CS type 1"),
    (_break_tr, "GUEST_TR_AR_BYTES", "TR must be usable"),
    (_break_ss_dpl, "GUEST_CS_AR_BYTES", "SS's DPL 3"),
], ids=["cs-data-type", "tr-unusable", "ss-dpl"])
def test_bad_guest_state_is_kvm_exit_fail_entry(breaker, field: str, words: str) -> None:
    events = EventStream()
    failed = []
    events.subscribe(lambda ev: failed.append(ev), ["vmentry_failed"])
    vcpu, sregs, _ = _vcpu(events)
    breaker(sregs)
    vcpu.set_sregs(sregs)
    vcpu.set_regs(KvmRegs(rip=0x100000, rsp=0x100000, rflags=0x2))
    assert vcpu.run() == 0
    run = vcpu.kvm_run
    assert run.exit_reason == KVM_EXIT_FAIL_ENTRY
    reason, cpu = run.fail_entry()
    assert (reason, cpu) == (INVALID_GUEST_STATE, 0)
    assert field in vcpu.fail_entry_detail and words in vcpu.fail_entry_detail
    assert "\n" not in vcpu.fail_entry_detail
    assert len(failed) == 1 and words in failed[0].to_dict()["check"]


def test_cr0_without_ne_still_enters() -> None:
    # KVM keeps CR0.NE on in the VMCS (KVM_VM_CR0_ALWAYS_ON) and shows the guest its own
    # value through the read shadow, so CR0 = PE alone is no failed entry.
    vcpu, sregs, _ = _vcpu()
    sregs.cr0 = 0x1
    vcpu.set_sregs(sregs)
    vcpu.set_regs(KvmRegs(rip=0x100000, rsp=0x100000, rflags=0x2))
    assert vcpu.run() == 0
    assert vcpu.kvm_run.exit_reason == KVM_EXIT_HLT
    assert vcpu.get_sregs().cr0 == 0x1


def test_failed_entry_through_the_vmm_stops_the_vm_with_the_check() -> None:
    # The same failure seen from QEMU's side: kvm_cpu_exec reports it and stops the VM.
    from vmsim.vmm.machine import Machine
    from vmsim.vmm.vm import VirtualMachine

    m = Machine()
    vm = VirtualMachine(m, SimKvm(m.events))
    vcpu = vm.cpus[0].vcpu
    sregs = vcpu.get_sregs()
    _break_tr(sregs)
    vcpu.set_sregs(sregs)
    result = vm.run()
    assert not result.halted and result.exit_status is None
    assert "KVM_EXIT_FAIL_ENTRY" in result.stop_reason
    assert "0x80000021" in result.stop_reason and "TR must be usable" in result.stop_reason
