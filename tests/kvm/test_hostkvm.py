"""The host's /dev/kvm through vmsim.hostkvm: the protocol's real implementation."""

from __future__ import annotations

import mmap
import os

import pytest

from vmsim.hostkvm import HostKvmError, open_kvm
from vmsim.kvm.api import (
    KVM_EXIT_HLT,
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
