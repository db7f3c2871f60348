"""The VMCS's write generations (Vmcs.host_gen, Vmcs.seg_gen) and what the processor
skips by them: while no VMWRITE reached the host-state area (with the VM-exit and
VM-entry controls) or the guest's segment registers, a VM entry does not read those fields
again to see that its last host check and the segments it built still hold, nor a VM exit
to see that the host state it loaded does. Every way the fields can change must show:
a VMWRITE to any field of the group, a state loaded into the VMCS, and the processor's
own stores of the segments a guest loaded itself."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.vmx.harness import AR_DATA, Bench
from tests.vmx.test_entry_checks import GUEST_STATE_CHECKS, _unmemoized
from tests.vmx.test_host_state import HOST_CHECKS
from vmsim.hw.exceptions import Unsupported
from vmsim.hw.vmcs import GUEST_SEGMENT_FIELDS, HOST_GEN_FIELDS, F, Vmcs
from vmsim.hw.vmx import (
    _CPU_SEGMENT_FIELD_LIST,
    _GUEST_PASS_FIELDS,
    _GUEST_PASS_OTHER,
    _HOST_CHECK_FIELDS,
    _HOST_LOAD_FIELDS,
    CPU_SEGMENTS,
    SEGMENTS,
)

CANONICAL_HIGH = 0xFFFF800000001000


def _fresh(b: Bench) -> None:
    """Forget where the memos were read, and the last pass of the guest-state checks, whose
    key has the segment generation (as a processor that reads every field each time)."""
    b.vmx._host_checked_at = b.vmx._host_values_at = b.vmx._seg_loaded_at = None
    b.vmx._guest_passed = None


def _exit_and_back(b: Bench) -> None:
    """A good entry, the guest's HLT exit: the memos now hold."""
    assert b.run() is not None
    assert b.read(F.VM_EXIT_REASON) == 12  # HLT


@pytest.mark.parametrize(("breaks", "words"), [c[1:] for c in HOST_CHECKS],
                         ids=[c[0] for c in HOST_CHECKS])
def test_a_host_field_written_after_an_exit_is_checked_at_the_next_entry(
        breaks: Callable[[Bench], None], words: str) -> None:
    b = Bench("hlt\nhlt")
    _exit_and_back(b)
    gen = b.vmcs.host_gen
    breaks(b)
    assert b.vmcs.host_gen > gen
    assert b.enter() is False
    assert b.read(F.VM_INSTRUCTION_ERROR) == 8
    assert words in b.vmx.entry_failure, b.vmx.entry_failure


@pytest.mark.parametrize(("name", "value", "seen"), [
    ("HOST_RIP", CANONICAL_HIGH, lambda h: h.rip),
    ("HOST_RSP", CANONICAL_HIGH + 0x800, lambda h: h.rsp),
    ("HOST_CR3", 0x5000, lambda h: h.cr3),
    ("HOST_FS_BASE", CANONICAL_HIGH + 0x40, lambda h: h.segments["fs"].base),
    ("HOST_IA32_SYSENTER_EIP", CANONICAL_HIGH + 0x80, lambda h: h.sysenter_eip),
])
def test_a_host_field_written_between_two_exits_is_what_the_second_loads(
        name: str, value: int, seen: Callable) -> None:
    b = Bench("hlt\nhlt\nhlt")
    _exit_and_back(b)
    assert seen(b.vmx.host_cpu) != value
    b.vmcs.write(F[name], value)
    assert b.resume() is not None
    assert seen(b.vmx.host_cpu) == value


def _segment_writes() -> list[tuple[str, int]]:
    """(field, value) for each CPU segment: a base, a limit and a selector kvm.ko might
    write (KVM_SET_SREGS). CS keeps its base and selector: the guest's code runs on."""
    out = []
    for name in CPU_SEGMENTS:
        sel, base, limit, _ar = SEGMENTS[name]
        out.append((limit.name, 0xFFFFF))
        if name != "cs":
            out += [(base.name, 0x4000), (sel.name, 0x20)]
    return out


def _register(b: Bench, field: str) -> int:
    """The part of the CPU's segment register `field` sets."""
    for i, name in enumerate(CPU_SEGMENTS):
        sel, base, limit, _ar = SEGMENTS[name]
        seg = b.cpu.seg[i]
        if field == sel.name:
            return seg.selector
        if field == base.name:
            return seg.base
        if field == limit.name:
            return seg.limit
    raise KeyError(field)


@pytest.mark.parametrize(("field", "value"), _segment_writes(),
                         ids=[w[0] for w in _segment_writes()])
def test_a_segment_field_written_after_an_exit_is_loaded_at_the_next_entry(
        field: str, value: int) -> None:
    b = Bench("hlt\nhlt")
    _exit_and_back(b)
    gen = b.vmcs.seg_gen
    b.vmcs.write(F[field], value)
    assert b.vmcs.seg_gen > gen
    assert b.enter(), b.vmx.entry_failure
    assert _register(b, field) == value
    if "BASE" in field:
        return  # (vmsim's CPU runs flat segments only: the guest would stop here)
    # ... and the next exit stores the register the guest ran with.
    assert b.vmx.run(10) is not None
    assert b.read(F[field]) == value


def test_a_segment_the_guest_loaded_itself_is_what_the_next_entry_loads() -> None:
    # The exit stores DS = null, written by the processor (not a VMWRITE): the next entry
    # must load that, not the registers it built at the last entry.
    b = Bench("xor eax, eax\nmov ds, ax\nhlt\nhlt\nhlt")
    _exit_and_back(b)
    assert b.read(F.GUEST_DS_SELECTOR) == 0
    assert b.resume() is not None
    assert b.cpu.seg[CPU_SEGMENTS.index("ds")].selector == 0
    # kvm.ko puts the flat data segment back: the entry after that loads it.
    for part, value in (("SELECTOR", 0x10), ("BASE", 0), ("LIMIT", 0xFFFFFFFF),
                        ("AR_BYTES", AR_DATA)):
        b.vmcs.write(F[f"GUEST_DS_{part}"], value)
    assert b.resume() is not None
    assert b.cpu.seg[CPU_SEGMENTS.index("ds")].selector == 0x10


def test_a_state_loaded_into_the_vmcs_is_what_the_next_entry_loads_and_checks() -> None:
    b = Bench("xor eax, eax\nmov ds, ax\nhlt\nhlt\nhlt")
    start = b.vmcs.state()  # DS flat data, not launched
    _exit_and_back(b)  # DS null now, in the fields and in what the entry built
    bad = dict(start, fields=[[enc, 1 << 47 if enc == F.HOST_RIP else v]
                              for enc, v in start["fields"]])
    b.vmcs.load_state(bad)
    assert b.enter() is False and "HOST_RIP" in b.vmx.entry_failure
    b.vmcs.load_state(start)
    assert b.enter(), b.vmx.entry_failure
    assert b.cpu.seg[CPU_SEGMENTS.index("ds")].selector == 0x10


_SEGMENT_CHECKS = [c for c in GUEST_STATE_CHECKS
                   if any(w in c[0] for w in ("cs-", "ss-", "ds-", "es-", "fs-", "gs-", "tr-",
                                              "ldtr-"))]


@pytest.mark.parametrize("change", [c[1] for c in _SEGMENT_CHECKS],
                         ids=[c[0] for c in _SEGMENT_CHECKS])
def test_a_remembered_pass_sees_a_segment_write(change: Callable[[Bench], None]) -> None:
    """The guest-state checks' memo keys the segment registers by their generation: a
    VMWRITE to one after a pass is checked again. (Every field the checks read written,
    as kvm.ko leaves them: the memo's path when none reads as unwritten.)"""
    b = Bench("hlt")
    b.vmcs.write(F.GUEST_IA32_EFER, 0)
    assert b.vmx.check_guest_state(b.vmcs) == ""
    change(b)
    assert b.vmx.check_guest_state(b.vmcs) == _unmemoized(b) != ""


def test_each_memo_reads_only_fields_its_generation_counts() -> None:
    # What makes a generation enough: every field a memo keyed by it reads is in its group.
    assert set(_HOST_CHECK_FIELDS) | set(_HOST_LOAD_FIELDS) <= HOST_GEN_FIELDS
    assert set(_CPU_SEGMENT_FIELD_LIST) <= GUEST_SEGMENT_FIELDS
    assert set(_GUEST_PASS_FIELDS) - set(_GUEST_PASS_OTHER) <= GUEST_SEGMENT_FIELDS


def _reference_read(fields: dict[int, int], enc: int) -> int:
    """VMREAD as the SDM has it: the high access of a 64-bit field reads bits 63:32."""
    if enc & 1 and (enc >> 13) & 3 == 1:
        return fields.get(enc & ~1, 0) >> 32
    return fields.get(enc, 0)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.one_of(st.sampled_from([int(f) for f in F]),
                                    st.integers(0, 0x1FFFF), st.integers(-4, 4)),
                          st.integers(0, (1 << 70) - 1)), max_size=20))
def test_vmread_and_vmwrite_by_any_encoding(writes: list[tuple[int, int]]) -> None:
    v = Vmcs()
    ref: dict[int, int] = {}
    for enc, value in writes:
        v.write(enc, value)
        if enc & 1 and (enc >> 13) & 3 == 1:
            full = enc & ~1
            ref[full] = (value & 0xFFFFFFFF) << 32 | (ref.get(full, 0) & 0xFFFFFFFF)
        else:
            ref[enc] = value & (0xFFFF, (1 << 64) - 1, 0xFFFFFFFF, (1 << 64) - 1)[(enc >> 13) & 3]
        assert v.fields == ref
        for e in (enc, enc ^ 1, enc + 0x8000):
            assert v.read(e) == _reference_read(ref, e)


def test_a_state_with_a_high_access_as_a_field_is_refused() -> None:
    v = Vmcs()
    v.write(F.EPT_POINTER, 0x1234)
    state = v.state()
    state["fields"].append([int(F.EPT_POINTER) + 1, 5])
    with pytest.raises(ValueError, match="0x201b: the high access"):
        Vmcs().load_state(state)


def test_the_generations_count_their_groups_only() -> None:
    v = Vmcs()
    v.write(F.GUEST_RIP, 1)
    v.write(F.CPU_BASED_VM_EXEC_CONTROL, 2)
    v.write(F.VM_EXIT_REASON, 3)
    assert (v.host_gen, v.seg_gen) == (0, 0)
    v.write(F.HOST_IA32_PAT + 1, 7)  # the high half of a 64-bit host field
    v.write(F.VM_ENTRY_CONTROLS, 0)
    v.write(F.VM_EXIT_CONTROLS, 0)
    assert v.host_gen == 3
    for n, enc in enumerate(sorted(GUEST_SEGMENT_FIELDS), 1):
        v.write(enc, 0)
        assert v.seg_gen == n
    assert v.host_gen == 3
    assert len(GUEST_SEGMENT_FIELDS) == 8 * 4  # ES CS SS DS FS GS LDTR TR


# Random VMWRITEs between exits and entries: what the processor does with its memos kept by
# generation is what it does reading every field each time.
_FIELDS = [F.HOST_RIP, F.HOST_CR0, F.HOST_CR4, F.HOST_CS_SELECTOR, F.HOST_TR_SELECTOR,
           F.HOST_FS_BASE, F.HOST_IA32_PAT, F.VM_EXIT_CONTROLS, F.VM_ENTRY_CONTROLS,
           F.GUEST_DS_SELECTOR, F.GUEST_DS_BASE, F.GUEST_ES_LIMIT, F.GUEST_SS_AR_BYTES,
           F.GUEST_FS_SELECTOR, F.GUEST_GS_BASE, F.GUEST_RIP, F.GUEST_CR0]
_PROGRAM = "xor eax, eax\nmov fs, ax\n" + "hlt\n" * 12


def _observe(b: Bench) -> tuple:
    h = b.vmx.host_cpu
    return (b.vmx.entry_failure, b.vmx.entry_fail_valid, tuple(b.cpu.seg), b.cpu.eip,
            None if h is None else repr(h), sorted(b.vmcs.fields.items()))


def _run(b: Bench) -> str | None:
    """Run to the next exit: None, or why vmsim's CPU stopped (a segment base not 0)."""
    try:
        b.vmx.run(10)
    except Unsupported as e:
        return str(e)
    return None


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.lists(st.tuples(st.sampled_from(_FIELDS), st.integers(0, 3),
                                   st.integers(0, 47)), max_size=3), min_size=1, max_size=8))
def test_generations_never_change_what_the_processor_does(
        rounds: list[list[tuple[F, int, int]]]) -> None:
    kept, fresh = Bench(_PROGRAM), Bench(_PROGRAM)
    for writes in rounds:
        for b in (kept, fresh):
            for field, how, bit in writes:
                old = b.read(field)
                b.vmcs.write(field, {0: old ^ (1 << bit), 1: old, 2: 0, 3: 0x10}[how])
        _fresh(fresh)
        results = [b.enter() for b in (kept, fresh)]
        assert results[0] == results[1]
        assert _observe(kept) == _observe(fresh)
        if not results[0]:
            return
        _fresh(fresh)
        ran = [_run(b) for b in (kept, fresh)]
        assert ran[0] == ran[1]
        assert _observe(kept) == _observe(fresh)
        if ran[0] is not None:
            return
        for b in (kept, fresh):
            b.vmcs.write(F.GUEST_RIP, b.read(F.GUEST_RIP) + b.read(F.VM_EXIT_INSTRUCTION_LEN))
