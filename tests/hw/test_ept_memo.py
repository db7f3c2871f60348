"""The EPT walker remembers its successful walks (Ept._memo) and those that end in a
misconfiguration (Ept._misconfigs, kvm.ko's MMIO entries), and the decoder remembers
what it decoded (Cpu.decode_memo). Neither may change what a user sees: a remembered
walk counts the same references, and any change to kvm.ko's tables (an entry written,
a page freed, the pages put back by a state restore) or to the EPTP must be walked anew,
so a mapping removed gives its EPT violation and a permission taken away its denial.
"""

from __future__ import annotations

import pytest

from vmsim.hw.ept import EPT_LARGE, EPT_R, EPT_RWX, EPT_W, Ept, build_identity_ept
from vmsim.hw.hostmem import HostPages
from vmsim.hw.intercept import InterceptExit
from vmsim.hw.mmu import FETCH, READ, WRITE

GPA = 0x123456


def _walker() -> tuple[HostPages, Ept, int]:
    host = HostPages()
    eptp = build_identity_ept(host, 4 << 20)
    pd = host.read(host.read(eptp & ~0xFFF, 8) & ~0xFFF, 8) & ~0xFFF  # PML4[0] -> PDPT[0] -> PD
    return host, Ept(host, eptp), pd


def _kind(ept: Ept, gpa: int, access: int) -> str:
    return _exit(ept, gpa, access)[0]


def _exit(ept: Ept, gpa: int, access: int, la: int | None = GPA) -> tuple:
    try:
        ept.translate(gpa, access, la, True)
    except InterceptExit as x:
        return x.info.kind, x.info.linear, x.info.extra
    return ("ok",)


def test_a_remembered_walk_counts_the_same_references():
    _, ept, _ = _walker()
    assert ept.translate(GPA, READ, GPA, True) == GPA & ~0xFFF
    first = ept.refs
    assert ept.translate(GPA, WRITE, GPA, True) == GPA & ~0xFFF
    assert ept.translate(GPA | 0xFFF, FETCH, None, False) == GPA & ~0xFFF
    assert ept.refs == 3 * first == 9  # PML4E, PDPTE, a 2-MiB PDE each time


def test_walks_recorded_step_by_step_match_the_remembered_ones():
    _, ept, _ = _walker()
    ept.translate(GPA, READ, GPA, True)
    steps: list = []
    assert ept.translate(GPA, READ, GPA, True, steps) == GPA & ~0xFFF
    assert [s.outcome for s in steps] == ["table", "table", "2M page"]


def test_an_entry_written_is_walked_again():
    host, ept, pd = _walker()
    assert _kind(ept, GPA, WRITE) == "ok"
    host.write(pd, 8, EPT_R | EPT_LARGE | (6 << 3))  # the 2-MiB leaf for 0-2 MiB: read only
    assert _kind(ept, GPA, READ) == "ok"
    assert _kind(ept, GPA, WRITE) == "ept_violation"
    host.write(pd, 8, 0)  # not present
    assert _kind(ept, GPA, READ) == "ept_violation"


def test_pages_put_back_by_a_restore_are_walked_again():
    host, ept, pd = _walker()
    saved = [(hpa, bytes(page)) for hpa, page in host.pages.items()]
    host.write(pd, 8, 0)
    assert _kind(ept, GPA, READ) == "ept_violation"
    # What kvm.ko's load_state does: the pool's pages replaced in place.
    host.pages.clear()
    host.pages.update((hpa, bytearray(page)) for hpa, page in saved)
    assert _kind(ept, GPA, READ) == "ok"
    host.pages.clear()
    assert _kind(ept, GPA, READ) == "ept_violation"


def test_a_new_eptp_is_walked_again():
    host, ept, _ = _walker()
    assert _kind(ept, GPA, READ) == "ok"
    empty = host.alloc()
    ept.eptp = empty | (3 << 3) | 6
    assert [_kind(ept, GPA, READ) for _ in range(2)] == ["ept_violation"] * 2


@pytest.mark.parametrize("access", [READ, WRITE, FETCH])
def test_a_denied_access_is_never_served_from_memory(access):
    host, ept, pd = _walker()
    leaf = host.read(pd, 8)
    need = (1, 2, 4)[access]
    host.write(pd, 8, (leaf & ~EPT_RWX) | (EPT_RWX & ~need if need != EPT_R else 0))
    for other in (READ, WRITE, FETCH):
        _kind(ept, GPA, other)  # whatever succeeds is remembered
    refs = ept.refs
    assert _kind(ept, GPA, access) in ("ept_violation", "ept_misconfig")
    assert ept.refs > refs  # walked, not looked up


@pytest.mark.parametrize("first", [READ, WRITE, FETCH])
def test_a_misconfiguration_remembered_exits_as_the_walk_does(first):
    host, ept, pd = _walker()
    host.write(pd, 8, EPT_W | EPT_LARGE | (6 << 3))  # writable, not readable: misconfigured
    walked = _exit(ept, GPA, first)
    assert walked == ("ept_misconfig", GPA, {"gpa": GPA})
    refs = ept.refs
    assert refs == 3  # PML4E, PDPTE, the PDE it stopped at
    for access in (READ, WRITE, FETCH):  # the same exit, whatever the access, counted alike
        assert _exit(ept, GPA + 8, access, la=0x400008) == \
            ("ept_misconfig", 0x400008, {"gpa": GPA + 8})
        assert ept.refs - refs == 3
        refs = ept.refs
    steps: list = []
    with pytest.raises(InterceptExit):
        ept.translate(GPA, READ, GPA, True, steps)  # recorded: walked, step by step
    assert [s.outcome for s in steps] == ["table", "table", "misconfig"]
    host.write(pd, 8, 0)  # not present now: walked again, each time
    assert [_kind(ept, GPA, READ) for _ in range(2)] == ["ept_violation"] * 2
    host.write(pd, 8, EPT_RWX | EPT_LARGE | (6 << 3))  # mended
    assert [_kind(ept, GPA, WRITE) for _ in range(2)] == ["ok"] * 2


def test_a_misconfiguration_is_forgotten_with_its_eptp():
    host, ept, pd = _walker()
    other = build_identity_ept(host, 4 << 20)  # (built first: nothing written after)
    host.write(pd, 8, EPT_W | EPT_LARGE | (6 << 3))
    assert _kind(ept, GPA, READ) == "ept_misconfig"
    ept.eptp = other
    assert [_kind(ept, GPA, READ) for _ in range(2)] == ["ok"] * 2
