"""What must drop translated blocks: between two executions of the same code a CR3 load,
INVLPG, paging switched off or on, a segment-class change and a memory-accessor rebuild
(a listener for the MMU's events) must make the second execution see the new mapping,
the new bytes or the new segment, exactly as the per-instruction path does.

The guests call a routine at one linear address X several times in a loop (the first
call decodes it, the later ones run its translated block) and change what X means in
between. Physical page P1 holds "add esi, 1" twice, P2 "add esi, 0x100" twice, and the
identity-mapped page X itself "add esi, 0x10000" twice (what runs with paging off).
"""

from __future__ import annotations

import pytest

from tests.diff.blocks import HANDLERS, PT, Twin, has_blocks
from tests.diff.harness import CODE, DATA, STACK_TOP, Start

X = 0x160000  # the linear address of the routine
P1, P2 = 0x150000, 0x151000
PD2, PT2 = 0x398000, 0x399000  # a second address space: X -> P2
SCRATCH = DATA + 0x40
CR0_PG = 0x80000000


def _routine(step: int) -> bytes:
    add = b"\x81\xc6" + step.to_bytes(4, "little")  # add esi, imm32
    return add + add + b"\xc3"  # ret


def _twin(code: bytes, **kw) -> Twin:
    twin = Twin(code, Start([0, 0, 0, 0, STACK_TOP, 0, 0, 0]), paging=True, **kw)
    for cpu in (twin.fast, twin.slow):
        mem = cpu.mem
        mem.load(P1, _routine(1))
        mem.load(P2, _routine(0x100))
        mem.load(X, _routine(0x10000))
        mem.load(PT + (X >> 12) * 4, (P1 | 3).to_bytes(4, "little"))  # PD: X -> P1
        mem.load(PD2, (PT2 | 3).to_bytes(4, "little"))
        mem.load(PT2, bytes(mem.ram[PT:PT + 0x1000]))
        mem.load(PT2 + (X >> 12) * 4, (P2 | 3).to_bytes(4, "little"))  # PD2: X -> P2
    return twin


def _loop(label: str) -> str:
    return f"""
        mov ecx, 4
    {label}:
        call X
        loop {label}
    """


# Each call adds twice the routine's step: 4 calls per loop.
MAPPINGS = f"""
        bits 32
        org {CODE:#x}
        X equ {X:#x}
        xor esi, esi
        {_loop("l1")}                       ; X -> P1: 4 * 2
        mov eax, {PD2:#x}
        mov cr3, eax
        {_loop("l2")}                       ; CR3 loaded, X -> P2: 4 * 0x200
        mov dword [{PT2 + (X >> 12) * 4:#x}], {P1 | 3:#x}
        invlpg [X]
        {_loop("l3")}                       ; INVLPG after the PTE write, X -> P1: 4 * 2
        mov eax, cr0
        and eax, ~{CR0_PG:#x}
        mov cr0, eax
        {_loop("l4")}                       ; paging off, X is X: 4 * 0x20000
        or eax, {CR0_PG:#x}
        mov cr0, eax
        {_loop("l5")}                       ; paging on again, X -> P1: 4 * 2
        hlt
"""
MAPPINGS_ESI = 8 + 0x800 + 8 + 0x80000 + 8


@pytest.mark.parametrize("how", ["blocks", "free", "budgets"])
def test_cr3_invlpg_and_paging_changes_are_seen(nasm, how: str):
    code = nasm(MAPPINGS, "mappings")
    twin = _twin(code, events="mmu", record=how == "free")
    if how == "blocks":
        twin.run_blocks(max_steps=1000)
    elif how == "free":
        twin.run_budgets([100_000])
    else:
        twin.run_budgets([1, 2, 64, 5, 70, 3, 100] * 100)
    assert twin.fast.halted
    assert twin.fast.r[6] == MAPPINGS_ESI, f"esi={twin.fast.r[6]:#x}"
    twin.compare_saved_state()
    if has_blocks() and how == "blocks":
        assert twin.blocks_run


def test_pte_write_without_invlpg_agrees(nasm):
    """A PTE rewritten with no INVLPG: the TLB may keep the old translation (SDM Vol. 3A
    4.10.4.3), so either routine is architecturally right; blocks on and off must pick
    the same one (vmsim keeps the TLB entry and the decoded code)."""
    code = nasm(MAPPINGS.replace("invlpg [X]", "nop"), "stale")
    for how in ("blocks", "free"):
        twin = _twin(code, events="mmu")
        if how == "blocks":
            twin.run_blocks(max_steps=1000)
        else:
            twin.run_budgets([100_000])
        assert twin.fast.halted
        twin.compare_saved_state()


SEGMENTS = f"""
        bits 32
        org {CODE:#x}
        xor esi, esi
        mov ecx, 4
    l1:
        call w
        loop l1
        mov ax, SEL
        mov ds, ax
        call w                  ; #GP(0) at the store (read-only or null DS)
        hlt
    w:
        add esi, 1
        mov [{SCRATCH:#x}], esi
        add esi, 1
        ret
"""


@pytest.mark.parametrize("selector", [0x18, 0x00], ids=["read-only DS", "null DS"])
@pytest.mark.parametrize("how", ["blocks", "free"])
def test_segment_class_change_is_seen(nasm, selector: int, how: str):
    code = nasm(SEGMENTS.replace("SEL", hex(selector)), "segments")
    twin = _twin(code)
    if how == "blocks":
        twin.run_blocks(max_steps=1000)
    else:
        twin.run_budgets([100_000])
    f = twin.fast
    assert f.halted and f.eip == HANDLERS + 13 * 16 + 1, f"eip={f.eip:#x}"  # the #GP handler
    store = CODE + code.index(bytes.fromhex("8935"))  # mov [disp32], esi
    frame = [int.from_bytes(f.mem.ram[f.r[4] + 4 * i:f.r[4] + 4 * i + 4], "little")
             for i in range(2)]
    assert frame == [0, store]  # error code 0, the faulting store's EIP
    assert f.r[6] == 4 * 2 + 1
    twin.compare_saved_state()


def test_accessor_rebuild_mid_run(nasm):
    """Subscribing to the MMU's per-access events between two runs of the same code
    rebuilds the memory accessors (traced ones): the blocks built on the old ones must
    go, and the TLB hits of the second run are reported alike."""
    code = nasm(MAPPINGS, "mappings_rebuild")
    twin = _twin(code, events="hw")
    twin.run_budgets([12])  # l1's calls: X decoded
    twin.pretranslate()
    twin.subscribe(["tlb_hit", "tlb_miss", "walk_step"])
    twin.run_budgets([30])
    twin.subscribe(["tlb_flush"])
    twin.run_budgets([100_000])
    assert twin.fast.halted and twin.fast.r[6] == MAPPINGS_ESI
    assert any(e[0] == "tlb_hit" for e in twin.fast_events)
    twin.compare_saved_state()
