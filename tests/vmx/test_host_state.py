"""The VMCS host-state area: what kvm-intel writes there, what a VM exit loads from it, and
the VM-entry checks on it.

- After KVM_CREATE_VCPU every host field reads, by its SDM App. B encoding, what LNX
  arch/x86/kvm/vmx/vmx.c writes (init_vmcs, vmx_set_constant_host_state,
  vmx_vcpu_load_vmcs, vmx_prepare_switch_to_guest, vmx_update_host_rsp), for the x86-64
  Linux host vmsim simulates (values that depend on the build or the process are
  examples: they are checked for the memory region they must lie in).
- Each VM exit loads the host state into `Vmx.host_cpu` (SDM "Loading Host State").
- A corrupted host field fails VM entry with VMfailValid 8 ("VM entry with invalid
  host-state field(s)"), naming the check (SDM "Checks on Host Control Registers, MSRs,
  and SSP", "Checks on Host Segment and Descriptor-Table Registers", "Checks Related to
  Address-Space Size"); kvm.ko reports it as KVM_EXIT_FAIL_ENTRY with reason 8.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.vmx.harness import Bench
from vmsim.hw.vmcs import F, Vmcs, field_info
from vmsim.hw.vmx import AR_UNUSABLE, load_host_state
from vmsim.kvm.api import KVM_EXIT_FAIL_ENTRY, KVM_EXIT_HLT, KvmRegs, KvmSegment
from vmsim.kvm.kvm_main import SimKvm
from vmsim.kvm.vmx import LINUX_HOST

# The whole host-state area the issue names, by encoding (SDM App. B; LNX vmx.h).
HOST_AREA = {
    0x0C00: "HOST_ES_SELECTOR", 0x0C02: "HOST_CS_SELECTOR", 0x0C04: "HOST_SS_SELECTOR",
    0x0C06: "HOST_DS_SELECTOR", 0x0C08: "HOST_FS_SELECTOR", 0x0C0A: "HOST_GS_SELECTOR",
    0x0C0C: "HOST_TR_SELECTOR", 0x2C00: "HOST_IA32_PAT", 0x2C02: "HOST_IA32_EFER",
    0x4C00: "HOST_IA32_SYSENTER_CS", 0x6C00: "HOST_CR0", 0x6C02: "HOST_CR3", 0x6C04: "HOST_CR4",
    0x6C06: "HOST_FS_BASE", 0x6C08: "HOST_GS_BASE", 0x6C0A: "HOST_TR_BASE",
    0x6C0C: "HOST_GDTR_BASE", 0x6C0E: "HOST_IDTR_BASE", 0x6C10: "HOST_IA32_SYSENTER_ESP",
    0x6C12: "HOST_IA32_SYSENTER_EIP", 0x6C14: "HOST_RSP", 0x6C16: "HOST_RIP",
}

# Values Linux fixes: (encoding, value, where kvm-intel writes it and why that value).
FIXED = [
    (0x0C00, 0x0000, "vmx_set_constant_host_state: HOST_ES_SELECTOR 0 on x86-64"),
    (0x0C02, 0x0010, "vmx_set_constant_host_state: __KERNEL_CS = GDT_ENTRY_KERNEL_CS(2)*8"),
    (0x0C04, 0x0018, "vmx_set_constant_host_state: __KERNEL_DS = GDT_ENTRY_KERNEL_DS(3)*8"),
    (0x0C06, 0x0000, "vmx_set_constant_host_state: HOST_DS_SELECTOR 0 on x86-64"),
    (0x0C08, 0x0000, "vmx_prepare_switch_to_guest: a 64-bit task's fsindex is 0"),
    (0x0C0A, 0x0000, "vmx_prepare_switch_to_guest: a 64-bit task's gsindex is 0"),
    (0x0C0C, 0x0040, "vmx_set_constant_host_state: GDT_ENTRY_TSS(8)*8"),
    (0x2C00, 0x0407050600070106, "vmx_set_constant_host_state: rdmsr(MSR_IA32_CR_PAT), "
                                 "pat_bp_init's WB WC UC- UC WB WP UC- WT"),
    (0x2C02, 0x0D01, "vmx_set_constant_host_state: host_efer, SCE LME LMA NXE"),
    (0x4C00, 0x0010, "vmx_set_constant_host_state: SYSENTER_CS = __KERNEL_CS (syscall_init)"),
    (0x6C00, 0x80050033, "vmx_set_constant_host_state: read_cr0(), CR0_STATE"),
    (0x6C04, 0x003726E0, "vmx_set_constant_host_state: cr4_read_shadow(), with VMXE"),
    (0x6C0A, 0xFFFFFE0000003000, "vmx_vcpu_load_vmcs: cpu_entry_area(0)->tss.x86_tss"),
    (0x6C0C, 0xFFFFFE0000001000, "vmx_vcpu_load_vmcs: get_current_gdt_ro(), cpu_entry_area(0)"),
    (0x6C0E, 0xFFFFFE0000000000, "vmx_set_constant_host_state: host_idt_base, "
                                 "CPU_ENTRY_AREA_RO_IDT"),
    (0x6C10, 0xFFFFFE0000003000, "vmx_vcpu_load_vmcs: cpu_entry_stack(0) + 1"),
]

MODULES = (0xFFFFFFFFA0000000, 0xFFFFFFFFFEFFFFFF)  # mm.rst: module mapping space
KERNEL_TEXT = (0xFFFFFFFF80000000, 0xFFFFFFFF9FFFFFFF)  # kernel text mapping
VMALLOC = (0xFFFFC90000000000, 0xFFFFE8FFFFFFFFFF)  # vmalloc/ioremap space
DIRECT_MAP = (0xFFFF888000000000, 0xFFFFC87FFFFFFFFF)  # direct mapping of physical memory
USER = (0x1000, 0x00007FFFFFFFFFFF)


def _vcpu():
    vm = SimKvm().create_vm()
    mem = bytearray(2 << 20)
    mem[0x100000] = 0xF4  # hlt
    vm.set_user_memory_region(0, 0, 0, len(mem), memoryview(mem))
    return vm.create_vcpu(0)


def test_the_host_area_encodings_are_the_sdms() -> None:
    assert {enc: F(enc).name for enc in HOST_AREA} == HOST_AREA
    assert {f.value for f in F if f.name.startswith("HOST_")} == set(HOST_AREA)
    assert all(field_info(enc)[1] == "host state" for enc in HOST_AREA)


def test_every_host_field_is_written_at_vcpu_setup() -> None:
    vmcs = _vcpu().vmcs
    written = {enc for enc, _ in vmcs if field_info(enc)[1] == "host state"}
    assert written == set(HOST_AREA)


@pytest.mark.parametrize(("enc", "value", "source"), FIXED, ids=[HOST_AREA[e] for e, _, _ in FIXED])
def test_host_field_is_what_kvm_intel_writes(enc: int, value: int, source: str) -> None:
    assert _vcpu().vmcs.read(enc) == value, source


@pytest.mark.parametrize(("enc", "region", "source"), [
    (0x6C16, MODULES, "vmx_set_constant_host_state: HOST_RIP = vmx_vmexit, in kvm-intel.ko"),
    (0x6C12, KERNEL_TEXT, "vmx_set_constant_host_state: SYSENTER_EIP = entry_SYSENTER_compat"),
    (0x6C14, VMALLOC, "vmx_update_host_rsp: __vmx_vcpu_run's RSP, the vCPU thread's stack"),
    (0x6C08, DIRECT_MAP, "vmx_prepare_switch_to_guest: cpu_kernelmode_gs_base(cpu)"),
    (0x6C06, USER, "vmx_prepare_switch_to_guest: current->thread.fsbase, QEMU's TLS"),
], ids=["HOST_RIP", "HOST_IA32_SYSENTER_EIP", "HOST_RSP", "HOST_GS_BASE", "HOST_FS_BASE"])
def test_build_dependent_host_field_lies_where_linux_puts_it(enc: int, region, source) -> None:
    lo, hi = region
    assert lo <= _vcpu().vmcs.read(enc) <= hi, source


def test_host_cr3_is_a_page_table_root_with_the_kernel_pcid() -> None:
    cr3 = _vcpu().vmcs.read(F.HOST_CR3)  # vmx_set_constant_host_state: __read_cr3()
    assert cr3 & 0xFFF == 1  # kern_pcid(0): CR4.PCIDE is on in HOST_CR4
    assert cr3 == LINUX_HOST.cr3 and cr3 >> 46 == 0


def test_vm_exit_controls_say_the_host_is_64_bit() -> None:
    vmcs = _vcpu().vmcs
    exit_ctl = vmcs.read(F.VM_EXIT_CONTROLS)
    assert exit_ctl & (1 << 9)  # host address-space size (setup_vmcs_config, x86-64)
    assert exit_ctl & (1 << 15)  # acknowledge interrupt on exit (required by kvm-intel)
    assert exit_ctl & (1 << 19)  # load IA32_PAT
    # update_transition_efer: the guest's EFER (0) differs from the host's, so the CPU
    # switches it at entry and exit (add_atomic_switch_msr_special).
    assert exit_ctl & (1 << 21) and vmcs.read(F.VM_ENTRY_CONTROLS) & (1 << 15)
    assert vmcs.read(F.GUEST_IA32_EFER) == 0


def test_the_dump_shows_the_whole_host_group() -> None:
    dump = _vcpu().vmcs.dump()
    host = dump.split("*** Host state ***")[1].split("***")[0]
    assert [ln.split()[0] for ln in host.strip().splitlines()] == [
        HOST_AREA[e] for e in sorted(HOST_AREA)]
    assert "HOST_RIP                         0x6c16 = 0xffffffffa04c2e20" in host


# -- a VM exit loads the host state ------------------------------------------------------------

def _run_to_hlt():
    vcpu = _vcpu()
    s = vcpu.get_sregs()
    s.cs = KvmSegment.flat(0x08, code=True)
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(s, name, KvmSegment.flat(0x10, code=False))
    s.cr0 = 0x11
    vcpu.set_sregs(s)
    vcpu.set_regs(KvmRegs(rip=0x100000, rsp=0x100000, rflags=0x2))
    assert vcpu.vmx.host_cpu is None  # no exit yet: the host ran code vmsim does not model
    assert vcpu.run() == 0
    assert vcpu.kvm_run.exit_reason == KVM_EXIT_HLT
    return vcpu


def test_after_a_vm_exit_the_host_cpu_is_the_host_area() -> None:
    vcpu = _run_to_hlt()
    r, h = vcpu.vmcs.read, vcpu.vmx.host_cpu
    assert (h.rip, h.rsp) == (r(F.HOST_RIP), r(F.HOST_RSP)) == (
        LINUX_HOST.vmx_vmexit, LINUX_HOST.vcpu_thread_kernel_rsp)
    assert (h.cr0, h.cr3, h.cr4) == (r(F.HOST_CR0), r(F.HOST_CR3), r(F.HOST_CR4))
    for name in ("es", "cs", "ss", "ds", "fs", "gs", "tr"):
        assert h.segments[name].selector == r(F[f"HOST_{name.upper()}_SELECTOR"])
    assert (h.segments["fs"].base, h.segments["gs"].base, h.segments["tr"].base) == (
        r(F.HOST_FS_BASE), r(F.HOST_GS_BASE), r(F.HOST_TR_BASE))
    assert (h.gdtr[0], h.idtr[0]) == (r(F.HOST_GDTR_BASE), r(F.HOST_IDTR_BASE))
    assert (h.sysenter_cs, h.sysenter_esp, h.sysenter_eip) == (
        r(F.HOST_IA32_SYSENTER_CS), r(F.HOST_IA32_SYSENTER_ESP), r(F.HOST_IA32_SYSENTER_EIP))
    assert (h.efer, h.pat) == (r(F.HOST_IA32_EFER), r(F.HOST_IA32_PAT))
    assert h.long_mode


def test_loading_host_state_sets_what_the_sdm_fixes() -> None:
    h = _run_to_hlt().vmx.host_cpu
    # SDM "Loading Host State": RFLAGS 2, DR7 0x400, GDTR/IDTR limits 0xFFFF; CS a flat
    # 64-bit code segment (L=1, D=0); TR a busy TSS of limit 0x67; LDTR unusable; null
    # DS/ES unusable; SS __KERNEL_DS usable flat data.
    assert (h.rflags, h.dr7, h.gdtr[1], h.idtr[1]) == (0x2, 0x400, 0xFFFF, 0xFFFF)
    cs = h.segments["cs"]
    assert (cs.base, cs.limit, cs.ar & 0xFF, bool(cs.ar & 0x2000), bool(cs.ar & 0x4000)) == (
        0, 0xFFFFFFFF, 0x9B, True, False)
    assert (h.segments["tr"].limit, h.segments["tr"].ar) == (0x67, 0x8B)
    assert h.segments["ldtr"].ar == AR_UNUSABLE
    assert h.segments["ds"].ar == AR_UNUSABLE and h.segments["es"].ar == AR_UNUSABLE
    assert h.segments["ss"].ar == 0xC093
    assert "RIP=0xffffffffa04c2e20" in h.dump() and "(64-bit mode)" in h.dump()


def test_without_load_efer_the_host_keeps_the_guests_efer_bits() -> None:
    # Why kvm-intel switches EFER: without "load IA32_EFER" only LMA/LME follow the host
    # address-space size; NX and SCE stay what the guest had.
    vmcs = _vcpu().vmcs
    vmcs.write(F.VM_EXIT_CONTROLS, vmcs.read(F.VM_EXIT_CONTROLS) & ~(1 << 21))
    assert load_host_state(vmcs, prev_efer=0x800).efer == 0xD00
    assert load_host_state(vmcs, prev_efer=0).efer == 0x500


def test_the_kick_is_an_acknowledged_external_interrupt() -> None:
    # kvm_vcpu_kick sends the reschedule IPI; with "acknowledge interrupt on exit" the
    # exit carries its vector (RESCHEDULE_VECTOR 0xFD) as a valid external interrupt.
    b = Bench("jmp $")
    assert b.enter()
    assert b.vmx.run(100) is None
    info = b.vmx.vm_exit(None)
    assert (info.basic_reason, b.read(F.VM_EXIT_INTR_INFO)) == (1, 0x800000FD)
    assert b.vmx.host_cpu.rip == b.read(F.HOST_RIP)


# -- the VM-entry checks on the host-state area -------------------------------------------------

def fields(**values: int) -> Callable[[Bench], None]:
    def apply(b: Bench) -> None:
        for name, value in values.items():
            b.vmcs.write(F[name], value)
    return apply


def exit_ctl(clear: int) -> Callable[[Bench], None]:
    def apply(b: Bench) -> None:
        b.vmcs.write(F.VM_EXIT_CONTROLS, b.read(F.VM_EXIT_CONTROLS) & ~clear)
    return apply


def load_efer(b: Bench) -> None:
    b.vmcs.write(F.VM_EXIT_CONTROLS, b.read(F.VM_EXIT_CONTROLS) | (1 << 21))
    b.vmcs.write(F.HOST_IA32_EFER, 0xD01)


def both(*fns: Callable[[Bench], None]) -> Callable[[Bench], None]:
    def apply(b: Bench) -> None:
        for fn in fns:
            fn(b)
    return apply


NONCANONICAL = 0x0000800000000000
HOST_CHECKS = [
    ("cr0-pg", fields(HOST_CR0=0x00050033), "HOST_CR0"),
    ("cr0-ne", fields(HOST_CR0=0x80050013), "HOST_CR0"),
    ("cr0-pe", fields(HOST_CR0=0x80050032), "HOST_CR0"),
    ("cr0-high-bits", fields(HOST_CR0=(1 << 32) | 0x80050033), "FIXED1"),
    ("cr4-vmxe", fields(HOST_CR4=0x003706E0), "VMXE"),
    ("cr4-smxe", fields(HOST_CR4=0x003766E0), "FIXED1"),
    ("cr4-pae-64-bit-host", fields(HOST_CR4=0x003726C0), "PAE must be 1"),
    ("cr3-beyond-maxphyaddr", fields(HOST_CR3=1 << 46), "physical-address width"),
    ("sysenter-esp", fields(HOST_IA32_SYSENTER_ESP=NONCANONICAL), "HOST_IA32_SYSENTER_ESP"),
    ("sysenter-eip", fields(HOST_IA32_SYSENTER_EIP=NONCANONICAL), "HOST_IA32_SYSENTER_EIP"),
    ("pat-type-2", fields(HOST_IA32_PAT=0x0407050600070206), "entry 1 is not a valid"),
    ("efer-reserved", both(load_efer, fields(HOST_IA32_EFER=0xD03)), "reserved bits 0x2"),
    ("efer-lma", both(load_efer, fields(HOST_IA32_EFER=0x901)), "LMA and LME"),
    ("efer-lme", both(load_efer, fields(HOST_IA32_EFER=0xC01)), "LMA and LME"),
    ("cs-rpl", fields(HOST_CS_SELECTOR=0x13), "HOST_CS_SELECTOR 0x13: RPL and TI"),
    ("ds-ti", fields(HOST_DS_SELECTOR=0x1C), "HOST_DS_SELECTOR 0x1c: RPL and TI"),
    ("tr-rpl", fields(HOST_TR_SELECTOR=0x43), "HOST_TR_SELECTOR 0x43: RPL and TI"),
    ("fs-rpl", fields(HOST_FS_SELECTOR=0x2B), "HOST_FS_SELECTOR"),
    ("cs-null", fields(HOST_CS_SELECTOR=0), "HOST_CS_SELECTOR must not be 0"),
    ("tr-null", fields(HOST_TR_SELECTOR=0), "HOST_TR_SELECTOR must not be 0"),
    ("fs-base", fields(HOST_FS_BASE=NONCANONICAL), "HOST_FS_BASE"),
    ("gs-base", fields(HOST_GS_BASE=NONCANONICAL), "HOST_GS_BASE"),
    ("gdtr-base", fields(HOST_GDTR_BASE=NONCANONICAL), "HOST_GDTR_BASE"),
    ("idtr-base", fields(HOST_IDTR_BASE=NONCANONICAL), "HOST_IDTR_BASE"),
    ("tr-base", fields(HOST_TR_BASE=NONCANONICAL), "HOST_TR_BASE"),
    ("rip", fields(HOST_RIP=NONCANONICAL), "HOST_RIP"),
    ("address-space-size", exit_ctl(1 << 9), "host address-space size"),
]


@pytest.mark.parametrize(("breaks", "words"), [c[1:] for c in HOST_CHECKS],
                         ids=[c[0] for c in HOST_CHECKS])
def test_host_state_check_is_vmfailvalid_8(breaks: Callable[[Bench], None], words: str) -> None:
    b = Bench("hlt")
    breaks(b)
    b.vmcs.write(F.VM_EXIT_REASON, 12)  # from an earlier exit: VMfailValid leaves it
    rip = b.read(F.GUEST_RIP)
    assert b.enter() is False
    assert b.read(F.VM_INSTRUCTION_ERROR) == 8
    assert b.read(F.VM_EXIT_REASON) == 12
    assert b.vmx.entry_fail_valid
    assert words in b.vmx.entry_failure, b.vmx.entry_failure
    assert "\n" not in b.vmx.entry_failure
    assert not b.vmcs.launched and not b.vmx.guest_mode
    assert b.read(F.GUEST_RIP) == rip


HOST_VALID = [
    ("null-ss-64-bit-host", fields(HOST_SS_SELECTOR=0)),  # allowed with host address-space size
    ("null-fs-gs", fields(HOST_FS_SELECTOR=0, HOST_GS_SELECTOR=0)),
    ("high-canonical-rip", fields(HOST_RIP=0xFFFF800000000000)),
    ("no-load-pat-ignores-pat", both(exit_ctl(1 << 19), fields(HOST_IA32_PAT=0x0202020202020202))),
    ("cr3-at-maxphyaddr", fields(HOST_CR3=(1 << 46) - 0x1000)),
]


@pytest.mark.parametrize("change", [c[1] for c in HOST_VALID], ids=[c[0] for c in HOST_VALID])
def test_valid_host_variations_enter(change: Callable[[Bench], None]) -> None:
    b = Bench("hlt")
    change(b)
    assert b.enter(), b.vmx.entry_failure


def test_checks_run_in_the_sdms_order_controls_host_guest() -> None:
    b = Bench("hlt")
    b.vmcs.write(F.HOST_TR_SELECTOR, 0)
    b.vmcs.write(F.GUEST_CR4, 0)  # bad guest state too: the host check comes first
    assert not b.enter() and b.read(F.VM_INSTRUCTION_ERROR) == 8
    b.vmcs.write(F.CR3_TARGET_COUNT, 5)  # and a bad control before that
    assert not b.enter() and b.read(F.VM_INSTRUCTION_ERROR) == 7
    b.vmcs.write(F.CR3_TARGET_COUNT, 0)
    b.vmcs.write(F.HOST_TR_SELECTOR, 0x40)
    assert not b.enter() and not b.vmx.entry_fail_valid
    assert b.read(F.VM_EXIT_REASON) == 0x80000021


@pytest.mark.parametrize(("change", "words"), [
    (fields(VM_ENTRY_CONTROLS=0x11FF | (1 << 15), GUEST_IA32_EFER=0x400), "LMA must equal"),
    (fields(VM_ENTRY_CONTROLS=0x11FF | (1 << 15), GUEST_IA32_EFER=0x2), "reserved bits"),
    (fields(VM_ENTRY_CONTROLS=0x11FF | (1 << 15), GUEST_IA32_EFER=0x100, GUEST_CR0=0x80000031),
     "LME must equal LMA"),
    (fields(VM_ENTRY_CONTROLS=0x11FF | (1 << 14), GUEST_IA32_PAT=0x0303030303030303),
     "GUEST_IA32_PAT"),
], ids=["efer-lma", "efer-reserved", "efer-lme-with-paging", "pat"])
def test_guest_efer_and_pat_are_checked_when_entry_loads_them(change, words: str) -> None:
    b = Bench("hlt")
    change(b)
    assert not b.enter()
    assert b.read(F.VM_EXIT_REASON) == 0x80000021
    assert words in b.vmx.entry_failure, b.vmx.entry_failure


# -- through the KVM API: what userspace sees of a bad host state --------------------------------

def test_bad_host_state_is_kvm_exit_fail_entry_with_reason_8() -> None:
    # A kvm.ko bug that wrote a null HOST_TR_SELECTOR: VMLAUNCH fails with VMfailValid 8 and
    # __vmx_handle_exit reports KVM_EXIT_FAIL_ENTRY with hardware_entry_failure_reason =
    # VM_INSTRUCTION_ERROR.
    vcpu = _vcpu()
    vcpu.vmcs.write(F.HOST_TR_SELECTOR, 0)
    vcpu.set_regs(KvmRegs(rip=0x100000, rsp=0x100000, rflags=0x2))
    assert vcpu.run() == 0
    assert vcpu.kvm_run.exit_reason == KVM_EXIT_FAIL_ENTRY
    assert vcpu.kvm_run.fail_entry() == (8, 0)
    assert "HOST_TR_SELECTOR must not be 0" in vcpu.fail_entry_detail
    assert vcpu.vmx.host_cpu is None


def test_vmcs_fields_natural_width_is_64_bit() -> None:
    v = Vmcs()
    v.write(F.HOST_RIP, 0xFFFFFFFFA04C2E20)
    v.write(F.GUEST_RIP, (1 << 64) | 0x100000)
    assert (v.read(F.HOST_RIP), v.read(F.GUEST_RIP)) == (0xFFFFFFFFA04C2E20, 0x100000)


def test_a_host_field_broken_after_a_good_entry_fails_the_next_one() -> None:
    # The checks run at every VMLAUNCH/VMRESUME, not once.
    b = Bench("hlt")
    assert b.enter(launch=True)
    b.vmx.run(10)
    b.vmcs.write(F.HOST_RIP, NONCANONICAL)
    assert not b.enter(launch=False)
    assert b.read(F.VM_INSTRUCTION_ERROR) == 8 and "HOST_RIP" in b.vmx.entry_failure
    b.vmcs.write(F.HOST_RIP, LINUX_HOST.vmx_vmexit)
    assert b.enter(launch=False), b.vmx.entry_failure


def test_the_session_shows_where_the_last_exit_went() -> None:
    from pathlib import Path

    from vmsim.session import Session

    s = Session(str(Path(__file__).resolve().parents[2] / "sample_guests" / "hello.asm"), "sim")
    assert s.host_cpu() is None  # no VM exit yet
    s.step_vmexit()
    h = s.host_cpu()
    assert h is not None and h["rip_symbol"] == "vmx_vmexit"
    assert (h["rip"], h["rsp"], h["cr3"]) == (LINUX_HOST.vmx_vmexit,
                                             LINUX_HOST.vcpu_thread_kernel_rsp, LINUX_HOST.cr3)
    assert h["segments"]["cs"]["selector"] == 0x10 and h["long_mode"]


def test_bad_host_state_through_the_vmm_stops_the_vm_naming_the_check() -> None:
    from vmsim.vmm.machine import Machine
    from vmsim.vmm.vm import VirtualMachine

    m = Machine()
    vm = VirtualMachine(m, SimKvm(m.events))
    vm.cpus[0].vcpu.vmcs.write(F.HOST_CS_SELECTOR, 0)
    result = vm.run()
    assert not result.halted and result.exit_status is None
    assert result.stop_reason == ("KVM_EXIT_FAIL_ENTRY: hardware entry failure reason 0x8 "
                                  "(HOST_CS_SELECTOR must not be 0)")
