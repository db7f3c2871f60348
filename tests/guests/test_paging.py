"""32-bit paging on the bare MMU and CPU (SDM Vol. 3A 4.3, 4.7, 4.8, 4.10).

#PF error codes and CR2, A and D bits in memory, the TLB (INVLPG, CR3 loads, global
pages), and the walk as the event stream reports it, level by level.
"""

from __future__ import annotations

import pytest

from tests.guests.cpubench import CODE, PD, STACK, Bench
from vmsim.events import EventStream
from vmsim.hw import exceptions as X
from vmsim.hw.cpu import StopReason
from vmsim.hw.exceptions import CpuException
from vmsim.hw.memory import PhysicalMemory
from vmsim.hw.mmu import CR0_PG, CR0_WP, CR4_PGE, CR4_PSE, FETCH, READ, WRITE, Mmu

PT = 0x101000
LA = 0x00400000 | 0x5000 | 0x123  # PDE index 1, PTE index 5
P, RW, A, D, PS, G = 1, 2, 0x20, 0x40, 0x80, 0x100


def mmu_with(pde: int | None, pte: int | None = None, wp: bool = True, pse: bool = True,
             pge: bool = False, events: EventStream | None = None) -> Mmu:
    mem = PhysicalMemory(4 << 20)
    mmu = Mmu(mem, events)
    if events is not None:
        mmu.trace = True
    mmu.cr0 = 0x11 | CR0_PG | (CR0_WP if wp else 0)
    mmu.cr3 = PD
    mmu.cr4 = (CR4_PSE if pse else 0) | (CR4_PGE if pge else 0)
    if pde is not None:
        mem.write(PD + 4 * (LA >> 22), 4, pde)
    if pte is not None:
        mem.write(PT + 4 * ((LA >> 12) & 0x3FF), 4, pte)
    return mmu


def pde_of(mmu: Mmu) -> int:
    return mmu.mem.read(PD + 4 * (LA >> 22), 4)


def pte_of(mmu: Mmu) -> int:
    return mmu.mem.read(PT + 4 * ((LA >> 12) & 0x3FF), 4)


def fault(mmu: Mmu, access: int) -> CpuException:
    with pytest.raises(CpuException) as e:
        mmu.translate(LA, access)
    assert e.value.vector == X.PF
    return e.value


# -- error codes and CR2 ------------------------------------------------------------------------

@pytest.mark.parametrize("pde, pte, access, wp, code", [
    (0, None, READ, True, 0x0),                  # PDE not present, read
    (0, None, WRITE, True, 0x2),                 # PDE not present, write
    (0, None, FETCH, True, 0x0),                 # fetch: no I/D bit without NX/SMEP
    (PT | P | RW, 0, READ, True, 0x0),           # PTE not present
    (PT | P | RW, 0, WRITE, True, 0x2),
    (PT | P | RW, 0x300000 | P, WRITE, True, 0x3),   # PTE read-only, WP=1
    (PT | P, 0x300000 | P | RW, WRITE, True, 0x3),   # PDE read-only, WP=1
    (0x00200000 | PS | P | RW, None, READ, True, 0x9),   # 4 MiB, bit 21 reserved
    (0x00200000 | PS | P | RW, None, WRITE, True, 0xB),
    (0x00000000 | PS | P, None, WRITE, True, 0x3),       # 4 MiB read-only
])
def test_pf_error_code_and_cr2(pde, pte, access, wp, code):
    e = fault(mmu_with(pde, pte, wp=wp), access)
    assert e.error_code == code  # U/S=0: CPL 0
    assert e.cr2 == LA


@pytest.mark.parametrize("pde, pte", [
    (PT | P | RW, 0x300000 | P),      # read-only PTE
    (PT | P, 0x300000 | P | RW),      # read-only PDE
    (PS | P, None),                   # read-only 4-MiB page
])
def test_wp0_lets_cpl0_write_and_sets_dirty(pde, pte):
    mmu = mmu_with(pde, pte, wp=False)
    base = mmu.translate(LA, WRITE)
    assert base == ((0x300000 if pte else 0) | (0 if pte else LA & 0x3FF000))
    leaf = pte_of(mmu) if pte else pde_of(mmu)
    assert leaf & (A | D) == A | D


def test_pse_off_ignores_ps():
    # CR4.PSE=0: PS is ignored and the PDE points at a page table (SDM 4.3)
    mmu = mmu_with(PT | PS | P | RW, 0x300000 | P | RW, pse=False)
    assert mmu.translate(LA, READ) == 0x300000


def test_protection_fault_sets_no_a_or_d():
    mmu = mmu_with(PT | P | RW | A, 0x300000 | P)
    fault(mmu, WRITE)
    assert pte_of(mmu) == 0x300000 | P


def test_reserved_bit_fault_leaves_entry():
    mmu = mmu_with(0x00200000 | PS | P | RW, None)
    fault(mmu, READ)
    assert pde_of(mmu) == 0x00200000 | PS | P | RW


# -- accessed and dirty bits ----------------------------------------------------------------

def test_accessed_and_dirty_4k():
    mmu = mmu_with(PT | P | RW, 0x300000 | P | RW)
    assert mmu.translate(LA, READ) == 0x300000
    assert pde_of(mmu) & (A | D) == A  # PDE: A only; its bit 6 is ignored (never D)
    assert pte_of(mmu) & (A | D) == A
    mmu.translate(LA, WRITE)  # a write after a read fill walks again to set D
    assert pte_of(mmu) & (A | D) == A | D
    assert pde_of(mmu) & D == 0


def test_accessed_and_dirty_4m():
    mmu = mmu_with(0x00C00000 | PS | P | RW, None)
    assert mmu.translate(LA, READ) == 0x00C00000 | (LA & 0x3FF000)
    assert pde_of(mmu) & (A | D) == A
    mmu.translate(LA, WRITE)
    assert pde_of(mmu) & (A | D) == A | D


def test_write_alone_sets_a_and_d():
    mmu = mmu_with(PT | P | RW, 0x300000 | P | RW)
    mmu.translate(LA, WRITE)
    assert pte_of(mmu) & (A | D) == A | D


def test_read_fill_does_not_allow_write_without_walk():
    """A read fills the TLB for reads only: the first write walks again (to set D)."""
    b = Bench(kinds=("tlb_miss",))
    b.paging()
    b.map(0x400000, 0x300000 | P | RW)
    b.cpu.memfns.rd32(0x400010)
    b.cpu.memfns.wr32(0x400010, 7)
    b.cpu.memfns.wr32(0x400014, 8)
    misses = [(m["linear"], m["access"]) for m in b.kinds("tlb_miss")]
    assert misses == [(0x400010, "read"), (0x400010, "write")]
    assert b.r32(PD + 0x2000) & (A | D) == A | D


# -- the walk, level by level -----------------------------------------------------------------

def walk(pde, pte, access=READ, **kw):
    ev = EventStream()
    seen: list = []
    ev.subscribe(seen.append, ["walk_step", "tlb_miss"])
    mmu = mmu_with(pde, pte, events=ev, **kw)
    try:
        mmu.translate(LA, access)
    except CpuException:
        pass
    return [(e.kind, dict(e.fields)) for e in seen]


def test_walk_steps_4k():
    steps = walk(PT | P | RW, 0x300000 | P | RW)
    assert steps[0] == ("tlb_miss", {"linear": LA, "access": "read"})
    assert steps[1] == ("walk_step", {
        "linear": LA, "level": "PDE", "table": PD, "index": 1, "entry_address": PD + 4,
        "entry": PT | P | RW | A, "outcome": "table"})
    assert steps[2] == ("walk_step", {
        "linear": LA, "level": "PTE", "table": PT, "index": 5, "entry_address": PT + 20,
        "entry": 0x300000 | P | RW | A, "outcome": "4K page"})
    assert len(steps) == 3


@pytest.mark.parametrize("pde, pte, access, outcomes", [
    (0x00C00000 | PS | P | RW, None, WRITE, [("PDE", "4M page")]),
    (0, None, READ, [("PDE", "not present")]),
    (PT | P | RW, 0, READ, [("PDE", "table"), ("PTE", "not present")]),
    (PT | P | RW, 0x300000 | P, WRITE, [("PDE", "table"), ("PTE", "write protected")]),
    (0x00200000 | PS | P, None, READ, [("PDE", "reserved bit")]),
    (PS | P, None, WRITE, [("PDE", "write protected")]),
])
def test_walk_outcomes(pde, pte, access, outcomes):
    steps = [f for k, f in walk(pde, pte, access) if k == "walk_step"]
    assert [(s["level"], s["outcome"]) for s in steps] == outcomes
    if outcomes[0] == ("PDE", "4M page"):
        assert steps[0]["entry"] & (A | D) == A | D  # the value after the update


# -- the TLB ------------------------------------------------------------------------------------

def tlb_bench(pge: bool = False) -> Bench:
    b = Bench()
    b.paging(pge=pge)
    b.map(0x400000, 0x300000 | P | RW)
    b.map(0x401000, 0x301000 | P | RW | G)
    b.map(0x402000, 0x302000 | P | RW)
    for i, la in enumerate((0x400000, 0x401000, 0x402000)):
        b.w32(0x300000 + 0x1000 * i, 0x1111 * (i + 1))
        assert b.cpu.memfns.rd32(la) == 0x1111 * (i + 1)
    return b


def test_invlpg_drops_one_entry():
    b = tlb_bench()
    tlb = b.cpu.mmu.tlb
    assert {0x400, 0x401, 0x402} <= tlb.keys()
    b.cpu.invlpg(0x401ABC)
    assert 0x401 not in tlb and {0x400, 0x402} <= tlb.keys()


def test_invlpg_drops_a_whole_4m_page():
    b = Bench(mib=8)
    b.paging(pse=True)
    b.w32(PD + 4 * 2, 0x00000083)  # linear 0x800000: 4 MiB -> physical 0
    b.w32(0x5000, 0x1111)
    b.w32(0x405000, 0x2222)
    assert b.cpu.memfns.rd32(0x805000) == 0x1111
    assert b.cpu.memfns.rd32(0x806000) == 0
    b.w32(PD + 4 * 2, 0x00400083)
    b.cpu.invlpg(0x806000)  # another 4 KiB of the same 4-MiB page
    assert b.cpu.memfns.rd32(0x805000) == 0x2222
    assert not any(k >> 10 == 2 and k != 0x805 for k in b.cpu.mmu.tlb)


def test_cr3_load_flushes_non_global_keeps_global_with_pge():
    b = tlb_bench(pge=True)
    b.cpu.set_control(3, PD)
    assert set(b.cpu.mmu.tlb) == {0x401}
    # with the entry changed in memory, the global translation is still the one used
    b.map(0x401000, 0x302000 | P | RW | G)
    assert b.cpu.memfns.rd32(0x401000) == 0x2222
    # INVLPG drops a global entry too (SDM 4.10.4.1)
    b.cpu.invlpg(0x401000)
    assert b.cpu.memfns.rd32(0x401000) == 0x3333


def test_cr3_load_flushes_global_without_pge():
    b = tlb_bench(pge=False)
    b.cpu.set_control(3, PD)
    assert not b.cpu.mmu.tlb


def test_toggling_pge_flushes_global_entries():
    b = tlb_bench(pge=True)
    b.cpu.set_control(4, b.cpu.cr4 & ~CR4_PGE)
    assert not b.cpu.mmu.tlb and not b.cpu.mmu.global_pages


def test_changing_wp_flushes():
    b = tlb_bench()
    b.cpu.set_control(0, b.cpu.cr0 & ~CR0_WP)
    assert not b.cpu.mmu.tlb


def test_tlb_hit_events():
    b = Bench(kinds=("tlb_hit", "tlb_miss"))
    b.paging()
    b.map(0x400000, 0x300000 | P | RW)
    b.cpu.memfns.rd32(0x400004)
    b.cpu.memfns.rd32(0x400008)
    kinds = [(e.kind, e["linear"]) for e in b.seen]
    assert kinds == [("tlb_miss", 0x400004), ("tlb_hit", 0x400008)]
    assert b.seen[1]["physical"] == 0x300008


# -- through the CPU: #PF delivery, INVLPG and MOV CR3 as instructions ------------------------

def test_pf_delivery_pushes_error_code_and_sets_cr2():
    b = Bench(b"\xA1\x34\x12\xC0\x00")  # mov eax,[0xC01234]
    b.all_gates()
    b.paging()
    assert b.run() is StopReason.HLT and b.cpu.eip == b.handler(X.PF) + 1
    assert b.stack(3) == [0, CODE, 0x08]
    assert b.cpu.r[4] == STACK - 16
    assert b.cpu.cr2 == 0xC01234


def test_fetch_fault_saves_target_eip():
    b = Bench(b"\xB8\x10\x00\xC0\x00\xFF\xE0")  # mov eax,0xC00010; jmp eax
    b.all_gates()
    b.paging()
    assert b.run() is StopReason.HLT and b.cpu.eip == b.handler(X.PF) + 1
    assert b.stack(2) == [0, 0xC00010]
    assert b.cpu.cr2 == 0xC00010


def test_cross_page_fault_reports_second_page_start():
    # mov eax,[0x3FFFFE]: 0x3FF000 is mapped, 0x400000 is not
    b = Bench(b"\xA1\xFE\xFF\x3F\x00")
    b.all_gates()
    b.paging()
    assert b.run() is StopReason.HLT and b.cpu.eip == b.handler(X.PF) + 1
    assert b.cpu.cr2 == 0x400000


def test_invlpg_and_mov_cr3_instructions():
    # mov eax,[0x400000]; mov dword [PTE],0x301003; invlpg [0x400000]; mov ebx,[0x400000]
    # mov dword [PTE],0x302003; mov ecx,cr3; mov cr3,ecx; mov edx,[0x400000]; hlt
    b = Bench()
    b.paging()
    pte = b.map(0x400000, 0x300003)
    for i in range(3):
        b.w32(0x300000 + 0x1000 * i, 0xA0 + i)
    code = (b"\xA1\x00\x00\x40\x00"
            + b"\xC7\x05" + pte.to_bytes(4, "little") + (0x301003).to_bytes(4, "little")
            + b"\x0F\x01\x3D\x00\x00\x40\x00"
            + b"\x8B\x1D\x00\x00\x40\x00"
            + b"\xC7\x05" + pte.to_bytes(4, "little") + (0x302003).to_bytes(4, "little")
            + b"\x0F\x20\xD9\x0F\x22\xD9"
            + b"\x8B\x15\x00\x00\x40\x00"
            + b"\xF4")
    b.mem.load(CODE, code)
    assert b.run() is StopReason.HLT
    assert [b.cpu.r[i] for i in (0, 3, 2)] == [0xA0, 0xA1, 0xA2]


def test_smc_store_to_next_instruction():
    # mov byte [CODE+8],0x42; mov al,0x11; hlt -> the mov al sees 0x42
    b = Bench(b"\xC6\x05" + (CODE + 8).to_bytes(4, "little") + b"\x42" + b"\xB0\x11\xF4",
              kinds=("smc",))
    assert b.run() is StopReason.HLT
    assert b.cpu.r[0] & 0xFF == 0x42
    # The `mov al` had not been decoded when the store rewrote it: nothing to drop.
    assert b.kinds("smc") == []


def test_smc_drops_decoded_code_only_when_its_bytes_are_written():
    """A store to the bytes of an instruction decoded before (the second time round the
    loop) drops the frame's decoded code, once; stores to data in the same page (a
    counter, as small guests keep) drop nothing, and the rewritten instruction runs."""
    from vmsim.asm import assemble

    code = assemble(f"""bits 32
org {CODE:#x}
        mov ecx, 3
        xor ebx, ebx
top:    cmp ecx, 2
        jne run
        mov byte [target + 1], 0x42     ; the second time round: rewrites the mov al
run:
target: mov al, 0x11
        add bl, al
        mov [counter], ebx              ; beside the code, every time round
        inc dword [counter + 4]
        loop top
        hlt
counter: dd 0, 0
""", "<smc beside code>").data
    b = Bench(code, kinds=("smc",))
    assert b.run() is StopReason.HLT
    assert b.cpu.r[3] & 0xFF == 0x11 + 0x42 + 0x42
    assert b.mem.read(CODE + len(code) - 8, 4) == 0x11 + 0x42 + 0x42
    assert b.mem.read(CODE + len(code) - 4, 4) == 3
    assert [e.fields["frame"] for e in b.kinds("smc")] == [CODE & ~0xFFF]
