"""The KVM state ioctls (issue 12): KVM_GET/SET_MSRS, _VCPU_EVENTS, _LAPIC, _IRQCHIP,
_PIT2, _MP_STATE on the simulated kvm.ko and on the host's /dev/kvm.

The structures are packed as the kernel lays them out: their sizes must be the size
field of the ioctl numbers (include/uapi/linux/kvm.h), and the host's KVM must accept
what vmsim packs and give back what it set."""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import pytest

from vmsim.kvm import api
from vmsim.kvm.api import KvmVcpuEvents
from vmsim.kvm.kvm_main import KvmError
from vmsim.session import Session
from vmsim.vmm.machine import MachineConfig

ROOT = Path(__file__).resolve().parents[2]
PORTS = str(ROOT / "sample_guests" / "ports.asm")
HAVE_KVM = os.access("/dev/kvm", os.R_OK | os.W_OK)
needs_kvm = pytest.mark.skipif(not HAVE_KVM, reason="needs the host's /dev/kvm")


def test_structure_sizes_are_the_ioctl_numbers_sizes():
    size = api.ioctl_size
    assert size(api.KVM_GET_VCPU_EVENTS) == size(api.KVM_SET_VCPU_EVENTS) == 64
    assert len(KvmVcpuEvents().pack()) == KvmVcpuEvents.SIZE == 64
    assert size(api.KVM_GET_LAPIC) == size(api.KVM_SET_LAPIC) == api.KVM_APIC_REG_SIZE == 1024
    assert size(api.KVM_GET_IRQCHIP) == size(api.KVM_SET_IRQCHIP) == api.KVM_IRQCHIP_SIZE
    assert len(api.pack_irqchip(0)) == api.KVM_IRQCHIP_SIZE == 520
    channel = dict.fromkeys(api.PIT_CHANNEL_FIELDS, 0)
    assert size(api.KVM_GET_PIT2) == size(api.KVM_SET_PIT2) == 112
    assert len(api.pack_pit_state2([channel] * 3)) == api.KVM_PIT_STATE2_SIZE == 112
    assert size(api.KVM_GET_MSRS) == size(api.KVM_SET_MSRS) == api.KVM_MSRS_HEADER.size == 8
    assert api.KVM_MSR_ENTRY.size == 16
    # The direction bits: GET_MSRS and GET_IRQCHIP are _IOWR, SET_IRQCHIP is _IOR (sic).
    assert api.KVM_GET_MSRS >> 30 == 3 and api.KVM_SET_MSRS >> 30 == 1
    assert api.KVM_GET_IRQCHIP >> 30 == 3 and api.KVM_SET_IRQCHIP >> 30 == 2


def test_vcpu_events_field_offsets():
    e = KvmVcpuEvents(exception_injected=1, exception_nr=14, exception_has_error_code=1,
                      exception_error_code=0x11223344, interrupt_injected=1,
                      interrupt_nr=0x20, interrupt_shadow=2, nmi_masked=1, sipi_vector=0x9A,
                      flags=0x5, smi_latched_init=1, triple_fault_pending=1,
                      exception_has_payload=1, exception_payload=0x1122334455667788)
    b = e.pack()
    assert b[0:4] == bytes([1, 14, 1, 0]) and b[4:8] == (0x11223344).to_bytes(4, "little")
    assert b[8:12] == bytes([1, 0x20, 0, 2]) and b[12:16] == bytes([0, 0, 1, 0])
    assert b[16:20] == (0x9A).to_bytes(4, "little") and b[20:24] == (5).to_bytes(4, "little")
    assert b[24:28] == bytes([0, 0, 0, 1]) and b[28] == 1 and b[55] == 1
    assert b[56:64] == (0x1122334455667788).to_bytes(8, "little")
    assert KvmVcpuEvents.unpack(b) == e


def _stopped_sim(config: MachineConfig | None = None, serial: int = 40) -> Session:
    s = Session(PORTS, "sim", config=config)
    while len(s.serial) < serial:
        assert s.vm.step()
    s.vm.stop()
    return s


def test_sim_round_trips():
    s = _stopped_sim()
    v = s.vm.cpus[0].vcpu
    msrs = v.get_msrs(list(api.PORTABLE_MSRS))
    assert [i for i, _ in msrs] == list(api.PORTABLE_MSRS)
    assert v.set_msrs(msrs) == len(msrs)
    assert v.get_msrs(list(api.PORTABLE_MSRS)) == msrs
    events = v.get_vcpu_events()
    v.set_vcpu_events(events)
    assert v.get_vcpu_events() == events
    page = v.get_lapic()
    assert len(page) == 1024
    assert int.from_bytes(page[0x20:0x24], "little") >> 24 == 0  # APIC ID of vCPU 0
    v.set_lapic(page)
    assert v.get_lapic() == page
    vm = s.vm.kvm.vm
    for chip in (api.KVM_IRQCHIP_PIC_MASTER, api.KVM_IRQCHIP_PIC_SLAVE):
        pic = vm.get_irqchip(chip)
        vm.set_irqchip(chip, pic)
        assert vm.get_irqchip(chip) == pic
    channels, flags = vm.get_pit2()
    vm.set_pit2(channels, flags)
    again, _ = vm.get_pit2()
    assert [{k: c[k] for k in c if k != "count_load_time"} for c in again] == \
        [{k: c[k] for k in c if k != "count_load_time"} for c in channels]


def test_sim_msrs_land_where_the_cpu_uses_them():
    s = _stopped_sim()
    v = s.vm.cpus[0].vcpu
    assert v.set_msrs([(api.MSR_IA32_SYSENTER_EIP, 0x123456), (api.MSR_IA32_TSC, 1 << 40),
                       (0xDEAD, 1), (api.MSR_IA32_SYSENTER_CS, 8)]) == 2  # stops at 0xDEAD
    from vmsim.hw.vmcs import F

    assert v.vmcs.read(F.GUEST_SYSENTER_EIP) == 0x123456
    assert v.get_msrs([api.MSR_IA32_TSC])[0][1] == 1 << 40
    assert v.vmcs.read(F.TSC_OFFSET) == ((1 << 40) - v.cpu.icount) & ((1 << 64) - 1)
    assert v.get_msrs([api.MSR_IA32_SYSENTER_CS, 0xDEAD, api.MSR_IA32_TSC]) == \
        [(api.MSR_IA32_SYSENTER_CS, 0)]


def test_sim_vcpu_events_are_the_vm_entry_fields():
    from vmsim.hw.vmcs import F

    s = _stopped_sim()
    v = s.vm.cpus[0].vcpu
    e = KvmVcpuEvents(exception_injected=1, exception_nr=13, exception_has_error_code=1,
                      exception_error_code=0x18, interrupt_shadow=api.KVM_X86_SHADOW_INT_STI,
                      flags=api.KVM_VCPUEVENT_VALID_SHADOW)
    v.set_vcpu_events(e)
    assert v.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) == 0x80000B0D  # valid, code, hard exc, 13
    assert v.vmcs.read(F.VM_ENTRY_EXCEPTION_ERROR_CODE) == 0x18
    assert v.vmcs.read(F.GUEST_INTERRUPTIBILITY_INFO) & 3 == 1  # blocking by STI
    got = v.get_vcpu_events()
    assert (got.exception_injected, got.exception_nr, got.exception_has_error_code,
            got.exception_error_code, got.interrupt_shadow) == (1, 13, 1, 0x18, 2)
    v.set_vcpu_events(KvmVcpuEvents(interrupt_injected=1, interrupt_nr=0x30))
    assert v.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD) == 0x80000030
    with pytest.raises(KvmError) as e2:
        v.set_vcpu_events(KvmVcpuEvents(exception_injected=1, exception_nr=40))
    assert e2.value.errno == errno.EINVAL


def test_sim_refusals():
    s = _stopped_sim()
    v, vm = s.vm.cpus[0].vcpu, s.vm.kvm.vm
    with pytest.raises(KvmError) as e:
        v.set_lapic(b"\0" * 100)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(KvmError) as e:
        vm.get_irqchip(api.KVM_IRQCHIP_IOAPIC)
    assert e.value.errno == errno.EINVAL
    u = _stopped_sim(MachineConfig(irqchip="userspace"))
    with pytest.raises(KvmError) as e:
        u.vm.cpus[0].vcpu.get_lapic()
    assert e.value.errno == errno.ENXIO
    with pytest.raises(KvmError) as e:
        u.vm.kvm.vm.get_pit2()
    assert e.value.errno == errno.ENXIO


def test_sim_and_host_give_the_same_copies_at_the_same_point():
    """Oracle: stopped right after the same OUT, the host's KVM and the simulated kvm.ko
    hand userspace the same registers."""
    if not HAVE_KVM:
        pytest.skip("needs the host's /dev/kvm")
    got = {}
    for backend in ("sim", "kvm"):
        s = Session(PORTS, backend)
        while len(s.serial) < 40:
            assert s.vm.step()
        s.vm.stop()
        env = s.vm.cpus[0].env
        got[backend] = (env.regs, env.sregs.cs.selector, env.sregs.ss.selector,
                        env.sregs.cr0 & 0x80000001, env.sregs.gdt.base, env.mp_state,
                        {i: d for i, d in env.msrs.items() if i != api.MSR_IA32_TSC})
        s.vm.cont()
        assert s.run().exit_status == 1
    assert got["sim"][0] == got["kvm"][0]
    assert got["sim"][1:6] == got["kvm"][1:6]
    sim_msrs, kvm_msrs = got["sim"][6], got["kvm"][6]
    for index in (api.MSR_IA32_SYSENTER_CS, api.MSR_IA32_SYSENTER_ESP,
                  api.MSR_IA32_SYSENTER_EIP, api.MSR_IA32_APICBASE):
        assert sim_msrs[index] == kvm_msrs[index]


@needs_kvm
def test_host_round_trips():
    from vmsim.hostkvm import open_kvm

    kvm = open_kvm()
    vm = kvm.create_vm()
    try:
        vm.set_tss_addr()
        vm.create_irqchip()
        vm.create_pit2(0)
        mem = mmap.mmap(-1, 2 << 20)
        vm.set_user_memory_region(0, 0, 0, 2 << 20, memoryview(mem))
        v = vm.create_vcpu(0)
        msrs = v.get_msrs(list(api.PORTABLE_MSRS))
        assert [i for i, _ in msrs] == list(api.PORTABLE_MSRS)
        changed = [(i, 0x1234 if i == api.MSR_IA32_SYSENTER_EIP else d) for i, d in msrs]
        assert v.set_msrs(changed) == len(changed)
        assert dict(v.get_msrs([api.MSR_IA32_SYSENTER_EIP])) == {api.MSR_IA32_SYSENTER_EIP:
                                                                  0x1234}
        e = v.get_vcpu_events()
        e.interrupt_shadow, e.flags = api.KVM_X86_SHADOW_INT_STI, api.KVM_VCPUEVENT_VALID_SHADOW
        v.set_vcpu_events(e)
        assert v.get_vcpu_events().interrupt_shadow == api.KVM_X86_SHADOW_INT_STI
        page = bytearray(v.get_lapic())
        assert len(page) == 1024
        page[0x80:0x84] = (0x20).to_bytes(4, "little")  # TPR
        v.set_lapic(bytes(page))
        assert v.get_lapic()[0x80] == 0x20
        pic = vm.get_irqchip(api.KVM_IRQCHIP_PIC_MASTER)
        pic["imr"] = 0xFB
        vm.set_irqchip(api.KVM_IRQCHIP_PIC_MASTER, pic)
        assert vm.get_irqchip(api.KVM_IRQCHIP_PIC_MASTER)["imr"] == 0xFB
        channels, flags = vm.get_pit2()
        channels[0].update(mode=2, count=1000)
        vm.set_pit2(channels, flags)
        again, _ = vm.get_pit2()
        assert (again[0]["mode"], again[0]["count"]) == (2, 1000)
        v.set_mp_state(api.KVM_MP_STATE_HALTED)
        assert v.get_mp_state() == api.KVM_MP_STATE_HALTED
        v.close()
    finally:
        vm.close()
        kvm.close()
