"""VM entry and exit read many VMCS fields at once, to see whether they changed since the
last entry or exit (vmsim.hw.vmx: one itemgetter call where every field is written). A
field nobody wrote must read as it did through `fields.get`: None in a key, 0 where a
VMREAD gives it. Here every such read is made to fall back to `get` (the code these reads
replaced) and the two runs must agree on everything the entries and exits did."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vmsim.hw.vmx as vmx_mod
from tests.vmx.harness import Bench
from vmsim.hw.vmcs import F

# (taker, the fields it reads)
READS = [(vmx_mod._take_load, vmx_mod._LOAD_FIELDS),
         (vmx_mod._take_segments, vmx_mod._CPU_SEGMENT_FIELD_LIST),
         (vmx_mod._take_host_load, vmx_mod._HOST_LOAD_FIELDS),
         (vmx_mod._take_host_check, vmx_mod._HOST_CHECK_FIELDS)]
READ_FIELDS = sorted({f for _take, fs in READS for f in fs} | set(vmx_mod._GUEST_PASS_FIELDS))
PROGRAM = """
    start: mov eax, 0x41
    mov dx, 0x3F8
    out dx, al
    inc eax
    out dx, al
    hlt
"""


@pytest.mark.parametrize(("take", "encodings"), READS)
def test_each_read_takes_its_fields_in_order(take, encodings) -> None:
    fields = {enc: i * 7 + 1 for i, enc in enumerate(encodings)}
    assert take(fields) == tuple(fields[e] for e in encodings)
    some = dict(list(fields.items())[::2])
    assert vmx_mod._read_fields(some, take, encodings) == tuple(map(some.get, encodings))


def _never(_fields):
    raise KeyError("forced")


def _entries_and_exits(deleted: list[int], monkeypatch: pytest.MonkeyPatch | None) -> list:
    """Enter, run to the first OUT exit, delete `deleted`, resume twice: what each step
    gave, and the VMCS and CPU state at the end."""
    if monkeypatch is not None:
        for name in ("_take_load", "_take_segments", "_take_host_load", "_take_host_check",
                     "_take_pass"):
            monkeypatch.setattr(vmx_mod, name, _never)
    b = Bench(PROGRAM)
    for enc in READ_FIELDS:  # every field written, as kvm.ko's VMCS has them: the fast reads
        b.vmcs.write(enc, b.vmcs.read(enc))
    b.vmcs.fields.pop(vmx_mod._GUEST_IA32_PAT)  # (read apart: kvm.ko never writes it)
    if monkeypatch is None:
        for take, encodings in READS:
            assert len(take(b.vmcs.fields)) == len(encodings)
    seen = [b.enter(), b.vmx.entry_failure]
    e = b.vmx.run(100)
    seen.append(None if e is None else (e.reason, e.qualification))
    for enc in deleted:
        b.vmcs.fields.pop(enc, None)
    for _ in range(2):
        r = b.vmcs.read
        b.vmcs.write(F.GUEST_RIP, r(F.GUEST_RIP) + r(F.VM_EXIT_INSTRUCTION_LEN))
        ok = b.enter()
        seen += [ok, b.vmx.entry_failure]
        if ok:
            e = b.vmx.run(100)
            seen.append(None if e is None else (e.reason, e.qualification))
    cpu = b.cpu
    seen += [sorted(b.vmcs.fields.items()), list(cpu.r), cpu.eip, cpu.eflags, list(cpu.seg),
             cpu.gdtr, cpu.idtr, dict(cpu.msr), cpu.tsc_offset]
    return seen


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(READ_FIELDS), max_size=6, unique=True))
def test_unwritten_fields_read_as_get_reads_them(deleted: list[int]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        slow = _entries_and_exits(deleted, mp)
    assert _entries_and_exits(deleted, None) == slow


def test_the_pass_memo_still_sees_a_field_written_after_being_unwritten() -> None:
    """An entry that passed with VM_ENTRY_INTR_INFO_FIELD never written (a key of the fast
    reads) must not pass again once an invalid injection is written there."""
    b = Bench("hlt")
    for enc in vmx_mod._GUEST_PASS_FIELDS:  # all written (the fast read) but that one
        b.vmcs.write(enc, b.vmcs.read(enc))
    b.vmcs.write(F.GUEST_RFLAGS, 0x2)
    b.vmcs.fields.pop(F.VM_ENTRY_INTR_INFO_FIELD.value, None)
    assert b.vmx.check_guest_state(b.vmcs) == ""
    b.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, 0x80000020)
    assert "IF must be 1" in b.vmx.check_guest_state(b.vmcs)
