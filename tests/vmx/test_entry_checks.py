"""VM-entry checks (SDM "Checks on VMX Controls", "Checks on the Guest State Area"): each
check with a VMCS that violates it, one field at a time, from a VMCS that enters."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.vmx.harness import AR_CODE, AR_DATA, AR_LDTR, AR_UNUSABLE, Bench
from vmsim.hw.vmcs import (
    CPU_BASED_ACTIVATE_SECONDARY_CONTROLS,
    SECONDARY_EXEC_ENABLE_EPT,
    SECONDARY_EXEC_UNRESTRICTED_GUEST,
    F,
)

UG = SECONDARY_EXEC_ENABLE_EPT | SECONDARY_EXEC_UNRESTRICTED_GUEST


def restricted(b: Bench) -> None:
    """No unrestricted guest: the guest must then be paged protected mode."""
    b.vmcs.write(F.SECONDARY_VM_EXEC_CONTROL, SECONDARY_EXEC_ENABLE_EPT)
    b.vmcs.write(F.GUEST_CR0, 0x80000031)


def fields(**values: int) -> Callable[[Bench], None]:
    def apply(b: Bench) -> None:
        for name, value in values.items():
            b.vmcs.write(F[name], value)
    return apply


def both(*fns: Callable[[Bench], None]) -> Callable[[Bench], None]:
    def apply(b: Bench) -> None:
        for fn in fns:
            fn(b)
    return apply


# (id, how to break the VMCS, words the failure must contain)
GUEST_STATE_CHECKS = [
    ("cr0-ne", fields(GUEST_CR0=0x11), "GUEST_CR0"),
    ("cr0-pe-restricted", both(restricted, fields(GUEST_CR0=0x80000030)), "GUEST_CR0"),
    ("cr0-pg-restricted", both(restricted, fields(GUEST_CR0=0x31)), "GUEST_CR0"),
    ("cr0-pg-without-pe", fields(GUEST_CR0=0x80000030), "PG set without PE"),
    ("cr4-vmxe", fields(GUEST_CR4=0), "VMXE"),
    ("cr4-fixed1", fields(GUEST_CR4=0x2000 | 0x4000), "FIXED1"),
    ("rflags-bit1", fields(GUEST_RFLAGS=0x0), "GUEST_RFLAGS"),
    ("rflags-bit3", fields(GUEST_RFLAGS=0xA), "GUEST_RFLAGS"),
    ("rflags-bit15", fields(GUEST_RFLAGS=0x8002), "GUEST_RFLAGS"),
    ("rflags-bit22", fields(GUEST_RFLAGS=0x400002), "GUEST_RFLAGS"),
    ("rflags-vm", fields(GUEST_RFLAGS=0x20002), "virtual-8086"),
    ("rflags-if-for-ext-intr", fields(VM_ENTRY_INTR_INFO_FIELD=0x80000020), "IF must be 1"),
    ("link-pointer", fields(VMCS_LINK_POINTER=0), "VMCS_LINK_POINTER"),
    ("tr-ti", fields(GUEST_TR_SELECTOR=0x1C), "TI must be 0"),
    ("ldtr-ti", fields(GUEST_LDTR_SELECTOR=0x24, GUEST_LDTR_AR_BYTES=AR_LDTR), "TI must be 0"),
    ("ss-rpl-restricted", both(restricted, fields(GUEST_SS_SELECTOR=0x13)), "RPL must equal CS"),
    ("cs-unusable", fields(GUEST_CS_AR_BYTES=AR_UNUSABLE), "CS must be usable"),
    ("cs-type-data", fields(GUEST_CS_AR_BYTES=0xC091), "CS type 1"),
    ("cs-type-3-restricted", both(restricted, fields(GUEST_CS_AR_BYTES=0xC093)), "CS type 3"),
    ("cs-not-accessed", fields(GUEST_CS_AR_BYTES=0xC09A), "CS type 10"),
    ("cs-s", fields(GUEST_CS_AR_BYTES=0xC08B), "S must be 1"),
    ("cs-p", fields(GUEST_CS_AR_BYTES=0xC01B), "P must be 1"),
    ("cs-reserved-11-8", fields(GUEST_CS_AR_BYTES=0xC19B), "reserved"),
    ("cs-reserved-31-17", fields(GUEST_CS_AR_BYTES=0x2C09B), "reserved"),
    ("cs-g-limit-low-bits", fields(GUEST_CS_LIMIT=0xFFFFF000), "G must be 0"),
    ("cs-g-big-limit", fields(GUEST_CS_AR_BYTES=AR_CODE & ~0x8000), "G must be 1"),
    ("ss-type", fields(GUEST_SS_AR_BYTES=0xC091), "SS type 1"),
    ("ss-type-code", fields(GUEST_SS_AR_BYTES=0xC09B), "SS type 11"),
    ("ds-not-accessed", fields(GUEST_DS_AR_BYTES=0xC092), "accessed"),
    ("es-exec-only-code", fields(GUEST_ES_AR_BYTES=0xC099), "readable"),
    ("fs-s", fields(GUEST_FS_AR_BYTES=0xC083), "S must be 1"),
    ("gs-p", fields(GUEST_GS_AR_BYTES=0xC013), "P must be 1"),
    ("ds-g", fields(GUEST_DS_LIMIT=0xFFFFF000), "G must be 0"),
    ("tr-unusable", fields(GUEST_TR_AR_BYTES=AR_UNUSABLE), "TR must be usable"),
    ("tr-type-available", fields(GUEST_TR_AR_BYTES=0x89), "busy TSS"),
    ("tr-s", fields(GUEST_TR_AR_BYTES=0x9B), "busy TSS"),
    ("tr-p", fields(GUEST_TR_AR_BYTES=0x0B), "P must be 1"),
    ("ldtr-type", fields(GUEST_LDTR_AR_BYTES=0x83), "LDT"),
    ("ldtr-g", fields(GUEST_LDTR_AR_BYTES=AR_LDTR | 0x8000, GUEST_LDTR_LIMIT=0xFF), "G must be 0"),
    ("cs-dpl-vs-ss-dpl", fields(GUEST_CS_AR_BYTES=AR_CODE | 0x60, GUEST_CS_SELECTOR=0x0B),
     "must equal SS's DPL"),
    ("cs-dpl-vs-ss-dpl-unrestricted", fields(GUEST_CS_AR_BYTES=AR_CODE | 0x20),
     "must equal SS's DPL"),
    ("cs-conforming-dpl", fields(GUEST_CS_AR_BYTES=0xC09F | 0x40), "must not exceed SS's DPL"),
    ("cs-type-3-dpl", fields(GUEST_CS_AR_BYTES=0xC093 | 0x20, GUEST_SS_AR_BYTES=AR_DATA | 0x20),
     "type-3 CS must have DPL 0"),
    ("ss-dpl-vs-rpl-restricted", both(restricted, fields(GUEST_SS_AR_BYTES=AR_DATA | 0x60,
                                                         GUEST_CS_AR_BYTES=0xC09F)),
     "must equal SS's RPL"),
    ("ss-dpl-real-mode", fields(GUEST_CR0=0x30, GUEST_SS_AR_BYTES=AR_DATA | 0x60,
                                GUEST_CS_AR_BYTES=0xC09F), "CR0.PE=0"),
    ("ds-dpl-below-rpl-restricted", both(restricted, fields(GUEST_DS_SELECTOR=0x13)),
     "less than the selector's RPL"),
    ("gdtr-limit", fields(GUEST_GDTR_LIMIT=0x10000), "GUEST_GDTR_LIMIT"),
    ("idtr-limit", fields(GUEST_IDTR_LIMIT=0x1FFFF), "GUEST_IDTR_LIMIT"),
    ("activity-state-range", fields(GUEST_ACTIVITY_STATE=4), "not a valid activity state"),
    ("activity-state-shutdown", fields(GUEST_ACTIVITY_STATE=2), "supports only"),
    ("hlt-needs-ss-dpl-0", fields(GUEST_ACTIVITY_STATE=1, GUEST_SS_AR_BYTES=AR_DATA | 0x60,
                                  GUEST_CS_AR_BYTES=0xC09F), "SS.DPL 0"),
    ("hlt-with-sti-blocking", fields(GUEST_ACTIVITY_STATE=1, GUEST_RFLAGS=0x202,
                                     GUEST_INTERRUPTIBILITY_INFO=1), "must be active"),
    ("hlt-inject-gp", fields(GUEST_ACTIVITY_STATE=1, VM_ENTRY_INTR_INFO_FIELD=0x80000B0D),
     "HLT activity state"),
    ("intr-reserved", fields(GUEST_INTERRUPTIBILITY_INFO=0x20), "reserved bits"),
    ("intr-sti-and-mov-ss", fields(GUEST_INTERRUPTIBILITY_INFO=3, GUEST_RFLAGS=0x202),
     "cannot both"),
    ("intr-sti-with-if-0", fields(GUEST_INTERRUPTIBILITY_INFO=1), "RFLAGS.IF=1"),
    ("intr-ext-intr-under-mov-ss", fields(GUEST_INTERRUPTIBILITY_INFO=2, GUEST_RFLAGS=0x202,
                                          VM_ENTRY_INTR_INFO_FIELD=0x80000020),
     "external interrupt cannot be injected"),
    ("intr-nmi-under-mov-ss", fields(GUEST_INTERRUPTIBILITY_INFO=2,
                                     VM_ENTRY_INTR_INFO_FIELD=0x80000202), "NMI cannot"),
    ("intr-smi", fields(GUEST_INTERRUPTIBILITY_INFO=4), "SMM"),
]


def test_the_bench_vmcs_enters() -> None:
    b = Bench("hlt")
    assert b.enter(), b.vmx.entry_failure
    assert b.vmx.entry_failure == ""
    assert b.read(F.VM_INSTRUCTION_ERROR) == 0


@pytest.mark.parametrize(("breaks", "words"), [c[1:] for c in GUEST_STATE_CHECKS],
                         ids=[c[0] for c in GUEST_STATE_CHECKS])
def test_guest_state_check(breaks: Callable[[Bench], None], words: str) -> None:
    b = Bench("hlt")
    breaks(b)
    rip = b.read(F.GUEST_RIP)
    assert b.enter() is False
    assert b.read(F.VM_EXIT_REASON) == 0x80000021  # bit 31 + 33 (invalid guest state)
    assert not b.vmx.entry_fail_valid
    assert b.vmx.last_exit.reason == 0x80000021
    assert words in b.vmx.entry_failure, b.vmx.entry_failure
    assert b.read(F.EXIT_QUALIFICATION) == 0
    assert not b.vmcs.launched  # still clear: the VMM may fix the state and VMLAUNCH again
    assert not b.vmx.guest_mode
    assert b.read(F.GUEST_RIP) == rip  # nothing was loaded or saved


# Variations that must enter (the checks must not be stricter than the SDM).
VALID = [
    ("unusable-data-segments", fields(GUEST_DS_AR_BYTES=AR_UNUSABLE, GUEST_ES_AR_BYTES=AR_UNUSABLE,
                                      GUEST_FS_AR_BYTES=AR_UNUSABLE, GUEST_GS_AR_BYTES=AR_UNUSABLE)),
    ("usable-ldtr", fields(GUEST_LDTR_SELECTOR=0x20, GUEST_LDTR_AR_BYTES=AR_LDTR,
                           GUEST_LDTR_LIMIT=0xFF)),
    ("16-bit-busy-tss", fields(GUEST_TR_AR_BYTES=0x83)),
    ("ss-type-7", fields(GUEST_SS_AR_BYTES=0xC097)),
    ("readable-code-in-ds", fields(GUEST_DS_AR_BYTES=0xC09B)),
    ("conforming-cs", fields(GUEST_CS_AR_BYTES=0xC09F)),
    ("real-mode-unrestricted", fields(GUEST_CR0=0x30, GUEST_CS_AR_BYTES=0x93, GUEST_CS_LIMIT=0xFFFF,
                                      GUEST_CS_SELECTOR=0xF000, GUEST_CS_BASE=0xF0000,
                                      GUEST_SS_AR_BYTES=0x93, GUEST_SS_LIMIT=0xFFFF,
                                      GUEST_SS_SELECTOR=0)),
    ("rpl-mismatch-unrestricted", fields(GUEST_SS_SELECTOR=0x13, GUEST_DS_SELECTOR=0x13)),
    ("paged-restricted", restricted),
    ("hlt-state", fields(GUEST_ACTIVITY_STATE=1)),
    ("hlt-inject-ext-intr", fields(GUEST_ACTIVITY_STATE=1, GUEST_RFLAGS=0x202,
                                   VM_ENTRY_INTR_INFO_FIELD=0x80000020)),
    ("sti-blocking", fields(GUEST_INTERRUPTIBILITY_INFO=1, GUEST_RFLAGS=0x202)),
    ("inject-nmi", fields(VM_ENTRY_INTR_INFO_FIELD=0x80000202)),
    ("limit-4k-granular", fields(GUEST_DS_LIMIT=0x00FFFFFF)),
    ("limit-byte-granular", fields(GUEST_DS_LIMIT=0x000FFFFF, GUEST_DS_AR_BYTES=0x4093)),
]


@pytest.mark.parametrize("change", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_variations_enter(change: Callable[[Bench], None]) -> None:
    b = Bench("hlt")
    change(b)
    assert b.enter(), b.vmx.entry_failure


CONTROL_CHECKS = [
    ("ug-without-ept", fields(SECONDARY_VM_EXEC_CONTROL=SECONDARY_EXEC_UNRESTRICTED_GUEST),
     "requires enable EPT"),
    ("cr3-target-count", fields(CR3_TARGET_COUNT=5), "CR3_TARGET_COUNT"),
    ("inject-reserved-type", fields(VM_ENTRY_INTR_INFO_FIELD=0x80000120), "reserved"),
    ("inject-nmi-vector", fields(VM_ENTRY_INTR_INFO_FIELD=0x80000203), "vector 2"),
    ("inject-exception-vector", fields(VM_ENTRY_INTR_INFO_FIELD=0x80000320), "vector 0-31"),
    ("inject-gp-without-code", fields(VM_ENTRY_INTR_INFO_FIELD=0x8000030D), "deliver-error-code"),
    ("inject-ud-with-code", fields(VM_ENTRY_INTR_INFO_FIELD=0x80000B06), "deliver-error-code"),
    ("inject-gp-real-mode-with-code",
     fields(GUEST_CR0=0x30, VM_ENTRY_INTR_INFO_FIELD=0x80000B0D), "real mode"),
    ("inject-reserved-bits", fields(VM_ENTRY_INTR_INFO_FIELD=0x80001306), "reserved bits 30:12"),
    ("inject-error-code-bits", fields(VM_ENTRY_INTR_INFO_FIELD=0x80000B0D,
                                      VM_ENTRY_EXCEPTION_ERROR_CODE=0x10000), "bits 31:15"),
    ("inject-soft-length-0", fields(VM_ENTRY_INTR_INFO_FIELD=0x80000480), "1-15"),
    ("inject-soft-length-16", fields(VM_ENTRY_INTR_INFO_FIELD=0x80000603,
                                     VM_ENTRY_INSTRUCTION_LEN=16), "1-15"),
]


@pytest.mark.parametrize(("breaks", "words"), [c[1:] for c in CONTROL_CHECKS],
                         ids=[c[0] for c in CONTROL_CHECKS])
def test_control_check_is_vmfailvalid_7(breaks: Callable[[Bench], None], words: str) -> None:
    b = Bench("hlt")
    breaks(b)
    b.vmcs.write(F.VM_EXIT_REASON, 12)  # from an earlier exit: must stay as it was
    assert b.enter() is False
    assert b.read(F.VM_INSTRUCTION_ERROR) == 7
    assert b.read(F.VM_EXIT_REASON) == 12  # VMfailValid is not a VM exit
    assert b.vmx.entry_fail_valid
    assert words in b.vmx.entry_failure, b.vmx.entry_failure
    assert not b.vmcs.launched


def test_secondary_controls_ignored_when_not_activated() -> None:
    b = Bench("hlt")
    b.vmcs.write(F.SECONDARY_VM_EXEC_CONTROL, SECONDARY_EXEC_UNRESTRICTED_GUEST)  # no EPT
    b.controls(clear=CPU_BASED_ACTIVATE_SECONDARY_CONTROLS)
    b.vmcs.write(F.GUEST_CR0, 0x80000031)  # not unrestricted: needs PG and PE
    assert b.enter(), b.vmx.entry_failure
    b2 = Bench("hlt")
    b2.vmcs.write(F.SECONDARY_VM_EXEC_CONTROL, UG)
    b2.controls(clear=CPU_BASED_ACTIVATE_SECONDARY_CONTROLS)
    assert not b2.enter()  # CR0 0x31 needs the (inactive) unrestricted-guest control
    assert "GUEST_CR0" in b2.vmx.entry_failure


def test_vmresume_needs_a_launched_vmcs() -> None:
    b = Bench("hlt")
    assert b.enter(launch=False) is False
    assert b.read(F.VM_INSTRUCTION_ERROR) == 5
    assert b.vmx.entry_fail_valid
    assert "VMRESUME" in b.vmx.entry_failure
    assert not b.vmcs.launched


def test_vmlaunch_needs_a_clear_vmcs() -> None:
    b = Bench("hlt")
    assert b.enter(launch=True)
    b.vmx.run(10)
    assert b.enter(launch=True) is False
    assert b.read(F.VM_INSTRUCTION_ERROR) == 4
    assert "VMLAUNCH" in b.vmx.entry_failure
    assert b.enter(launch=False), b.vmx.entry_failure  # VMRESUME is the way back in


def test_failed_entry_then_fixed_state_launches() -> None:
    b = Bench("hlt")
    b.vmcs.write(F.GUEST_CR4, 0)
    assert not b.enter(launch=True)
    b.vmcs.write(F.GUEST_CR4, 0x2000)
    assert b.enter(launch=True), b.vmx.entry_failure
    assert b.vmx.entry_failure == ""


# -- the check's memo: a pass is remembered by the values it read (_GUEST_PASS_FIELDS) -------

def _unmemoized(b: Bench) -> str:
    """check_guest_state as a VMX that has never passed an entry finds it."""
    vmx = b.vmx
    saved = vmx._guest_checked, vmx._guest_passed
    vmx._guest_checked = vmx._guest_passed = None
    try:
        return vmx.check_guest_state(b.vmcs)
    finally:
        vmx._guest_checked, vmx._guest_passed = saved


@pytest.mark.parametrize("change", [c[1] for c in GUEST_STATE_CHECKS + VALID],
                         ids=[c[0] for c in GUEST_STATE_CHECKS + VALID])
def test_a_remembered_pass_never_hides_a_change(change: Callable[[Bench], None]) -> None:
    """After a pass, each breaking change fails and each valid variation passes, with the
    words a fresh check gives: the memo holds only while what the checks read holds."""
    b = Bench("hlt")
    assert b.vmx.check_guest_state(b.vmcs) == ""
    change(b)
    assert b.vmx.check_guest_state(b.vmcs) == _unmemoized(b)
    assert b.vmx.check_guest_state(b.vmcs) == _unmemoized(b)  # (and again, remembered)


@pytest.mark.parametrize(("other", "words"), [(fields(VM_ENTRY_INTR_INFO_FIELD=0x80000020),
                                                "IF must be 1"),
                                               (fields(GUEST_INTERRUPTIBILITY_INFO=1), "RFLAGS.IF")])
def test_a_remembered_pass_rereads_rflags_if(other: Callable[[Bench], None], words: str) -> None:
    """RFLAGS changes at every exit, so only the bits the checks read are remembered: IF,
    which an external interrupt's injection and STI blocking need, is one."""
    b = Bench("hlt")
    b.vmcs.write(F.GUEST_RFLAGS, 0x202)
    other(b)
    assert b.vmx.check_guest_state(b.vmcs) == ""
    b.vmcs.write(F.GUEST_RFLAGS, 0x2 | 0x8D5)  # IF clear; CF PF AF ZF SF OF set: not read
    assert words in b.vmx.check_guest_state(b.vmcs)


# Fields the guest-state checks read, others they must not depend on, and RFLAGS bits
# either way: written in random order with values near the valid ones.
_MEMO_FIELDS = [F.GUEST_CR0, F.GUEST_CR4, F.GUEST_RFLAGS, F.VM_ENTRY_INTR_INFO_FIELD,
                F.GUEST_ACTIVITY_STATE, F.GUEST_INTERRUPTIBILITY_INFO, F.GUEST_CS_AR_BYTES,
                F.GUEST_SS_AR_BYTES, F.GUEST_SS_SELECTOR, F.GUEST_DS_LIMIT, F.GUEST_TR_AR_BYTES,
                F.GUEST_LDTR_SELECTOR, F.GUEST_GDTR_LIMIT, F.VMCS_LINK_POINTER,
                F.SECONDARY_VM_EXEC_CONTROL, F.VM_ENTRY_CONTROLS, F.GUEST_IA32_PAT,
                F.GUEST_RIP, F.GUEST_RSP, F.GUEST_CS_BASE]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(_MEMO_FIELDS), st.integers(0, 7),
                          st.integers(0, 31)), max_size=12))
def test_remembered_passes_agree_with_fresh_checks(writes: list[tuple[F, int, int]]) -> None:
    b = Bench("hlt")
    for field, how, bit in writes:
        old = b.read(field)
        value = {0: old ^ (1 << bit), 1: old, 2: 0, 3: old | (1 << bit),
                 4: old & ~(1 << bit), 5: 0x202, 6: 0x80000020, 7: 1}[how]
        b.vmcs.write(field, value)
        assert b.vmx.check_guest_state(b.vmcs) == _unmemoized(b), (field.name, hex(value))
