"""A guest that loads CR3 every few instructions, with blocks on and off (`Cpu.USE_BLOCKS`,
what VMSIM_BLOCKS=0 sets), under EPT, shadow paging and bare metal.

A CR3 load empties the icache but keeps decoded instructions and translated blocks: each
instruction is fetched again before it runs (a walk after the TLB flush), and a block
kept from an earlier address space comes back only where that is exactly what the
one-instruction path would do. The loop switches between two address spaces; in each,
a short loop runs a block that stores to a user page that is not present every few
turns (a #PF in the middle of the block, which the guest's handler fixes by writing the
PTE: under shadow paging a write-protected page-table write that kvm.ko emulates,
flushing the TLB but not the icache), then runs the block again. Compared: the whole trace at level all
(walk steps, TLB misses and flushes, faults, exits, in order), `--stats-json`, and after
every run of k instructions the CPU's whole state (registers, the TLB, the decoded
instructions and which of them are in the icache, RAM) and the walk count.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hw.test_blocks_stack import blocks_switch  # noqa: F401  (a fixture)
from vmsim.asm import assemble
from vmsim.session import Session

# Both guests end with the same descriptor tables (a #PF gate at vector 14).
TABLES = r"""
        align 8
gdt:    dq 0
        dq 0x00CF9A000000FFFF
        dq 0x00CF92000000FFFF
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
        align 8
idt:    times 14 dq 0
        dw pf_handler - $$, 0x08        ; vector 14 (#PF): an interrupt gate
        db 0, 0x8E
        dw 0x0010                       ; offset 31:16 (the image sits at 0x100000)
idt_end:
idt_descriptor:
        dw idt_end - idt - 1
        dd idt
"""

# Both guests: two address spaces sharing an identity-mapped kernel page table, each
# with its own user page table, and paging about to be turned on in the first.
SETUP = r"""
bits 32
org 0x100000

DEBUG_EXIT  equ 0x501
PD0         equ 0x200000
PD1         equ 0x201000
PT_K        equ 0x202000                ; identity map of 0-4 MiB, shared
PT_U0       equ 0x203000                ; each address space's user page table
PT_U1       equ 0x204000
FRAMES      equ 0x300000                ; user frames
USER        equ 0x40000000

start:
        mov esp, 0x90000
        lgdt [gdt_descriptor]
        lidt [idt_descriptor]
        mov edi, PT_K
        mov eax, 0x003
        mov ecx, 1024
.k:     mov [edi], eax
        add eax, 0x1000
        add edi, 4
        loop .k
        mov dword [PD0], PT_K + 3
        mov dword [PD1], PT_K + 3
        mov dword [PD0 + 256*4], PT_U0 + 3
        mov dword [PD1 + 256*4], PT_U1 + 3
        mov dword [PT_U0], FRAMES + 3
        mov dword [PT_U1], FRAMES + 0x2000 + 3
        mov eax, PD0
        mov cr3, eax
        mov eax, cr0
"""

GUEST = SETUP + r"""        or eax, 0x80010000              ; PG and WP
        mov cr0, eax
        xor esi, esi
        mov ecx, ITERATIONS
.loop:  mov eax, PD0
        mov cr3, eax                    ; address space 0
        mov edi, 3
.a:     add [USER], ecx                 ; three turns: a block from the second on
        mov ebx, [USER]
        lea edx, [ebx + ecx*2]
        xor esi, edx
        mov [USER + 0x1000], ecx        ; not present every few turns: #PF mid-block
        add esi, [USER + 0x1000]
        dec edi
        jnz .a
        mov eax, PD1
        mov cr3, eax                    ; address space 1
        mov edi, 2
.b:     add [USER], esi
        mov ebx, [USER]
        xor esi, ebx
        mov [USER + 0x1000], esi        ; the same, in the other address space
        sub esi, ecx
        dec edi
        jnz .b
        test ecx, 3
        jnz .keep
        mov dword [PT_U0 + 4], 0        ; unmap both pages again (PTE writes)
        mov dword [PT_U1 + 4], 0
.keep:  dec ecx
        jnz .loop
        mov [0x1000], esi
        mov al, 0
        mov dx, DEBUG_EXIT
        out dx, al
        hlt

; #PF: map the faulting user page in the current address space and retry
pf_handler:
        push eax
        push ebx
        mov eax, cr3
        mov ebx, PT_U0
        cmp eax, PD0
        je .map
        mov ebx, PT_U1
.map:   mov eax, cr2
        shr eax, 12
        and eax, 0x3FF
        lea eax, [ebx + eax*4]
        mov ebx, [esp]
        mov dword [eax], FRAMES + 0x1000 + 3
        pop ebx
        pop eax
        add esp, 4                      ; the error code
        iretd

""" + TABLES

MODES = ["ept", "shadow", "bare"]


def source(iterations: int) -> str:
    return GUEST.replace("ITERATIONS", str(iterations))


@pytest.mark.parametrize("mmu", MODES)
@pytest.mark.parametrize("which", ["loops", "redirect"])
def test_trace_and_stats_are_the_same(tmp_path: Path, capsysbinary, blocks_switch,  # noqa: F811
                                      mmu: str, which: str):
    """`vmsim run --trace F --trace-level all --stats-json S`: byte for byte the same with
    blocks on and off; blocks were translated with them on; the guest's #PF handler ran.
    ("redirect" is the guest further down.)"""
    from vmsim.cli import main

    guest = tmp_path / "cr3.asm"
    guest.write_text(source(60) if which == "loops" else REDIRECT.replace("ITERATIONS", "24"))
    out = {}
    for on in (True, False):
        translated = blocks_switch(on)
        trace, stats = tmp_path / f"{on}.jsonl", tmp_path / f"{on}.json"
        how = ["--backend", "bare"] if mmu == "bare" else ["--paging", mmu]
        status = main(["run", "--trace", str(trace), "--trace-level", "all",
                       "--stats-json", str(stats), *how, str(guest)])
        assert status == 1, f"the guest ended with status {status}"
        out[on] = trace.read_bytes(), stats.read_bytes()
        assert bool(translated[0]) is on
    on, off = out[True][0].splitlines(), out[False][0].splitlines()
    for i, (a, b) in enumerate(zip(on, off, strict=False)):
        assert a == b, f"trace line {i}:\n  blocks on:  {a[:300]}\n  blocks off: {b[:300]}"
    assert len(on) == len(off)
    assert out[True][1] == out[False][1]
    assert b'"kind":"walk_step"' in out[True][0]
    assert b'"vector":14' in out[True][0]


def _states(blocks_switch, on: bool, mmu: str, budgets: list[int]) -> list:  # noqa: F811
    blocks_switch(on)
    backend = "bare" if mmu == "bare" else "sim"
    s = Session(assemble(source(40), "cr3.asm"), backend,
                **({} if mmu == "bare" else {"paging": mmu}), history=False)
    out = []
    for i in range(10_000):
        o = s.run_for(seconds=None, instructions=budgets[i % len(budgets)])
        cpu = s.cpus[0]
        out.append((cpu.state(), cpu.mmu.walks, s.virtual_time))
        if o.finished:
            assert o.exit_status == 1  # isa-debug-exit: (0 << 1) | 1
            return out
    raise AssertionError("the guest did not finish")


@pytest.mark.parametrize("mmu", MODES)
@pytest.mark.parametrize("budgets", [[1, 5, 3, 64, 7, 100], [200, 64, 1000]],
                         ids=["cut", "free"])
def test_state_after_every_run_is_the_same(blocks_switch, mmu: str,  # noqa: F811
                                           budgets: list[int]):
    """run_for(instructions=k) again and again (blocks cut short by the budget, or run
    freely): after each, the whole CPU state, the walks made and the virtual time agree."""
    on = _states(blocks_switch, True, mmu, budgets)
    off = _states(blocks_switch, False, mmu, budgets)
    assert len(on) == len(off)
    for i, (a, b) in enumerate(zip(on, off, strict=True)):
        if a != b:
            keys = [k for k in a[0] if a[0][k] != b[0].get(k)]
            raise AssertionError(f"run {i}: differs in {keys or 'walks/time'}: "
                                 f"{a[1:]} vs {b[1:]}")


# A block kept from an earlier address space is found again where its first instruction
# is in the icache but the others are not: that instruction faulted (a #PF in this
# address space) and the guest's handler resumed elsewhere, which jumps back to it.
# The one-instruction path would fetch each of the others again (and keep them in the
# icache; after a TLB flush, walk for them): the kept block may not run them unfetched.
REDIRECT = SETUP + r"""        or eax, 0x80010000
        mov cr0, eax
        xor esi, esi
        xor edi, edi
        mov ecx, ITERATIONS
.loop:  mov eax, PD0
        test ecx, 1
        jz .sw
        mov eax, PD1
.sw:    mov cr3, eax
        mov ebp, 2
        xor ebx, ebx
.h:     mov [USER], ecx                 ; #PF where USER is unmapped: resumed at .again
.h1:    add esi, ecx
        inc edi
        dec ebp
        jnz .h
        test ebx, ebx
        jnz .on
        inc ebx
        mov ebp, 1
        jmp elsewhere                   ; back at .h1, the block's middle, one at a time
.on:    test ecx, 3
        jnz .keep
        mov dword [PT_U0], 0            ; unmap USER in both address spaces
        mov dword [PT_U1], 0
.keep:  dec ecx
        jnz .loop
        mov [0x1000], esi
        mov al, 0
        mov dx, DEBUG_EXIT
        out dx, al
        hlt
.again: nop                             ; (runs with EFLAGS.RF set: one step)
        jmp .h

pf_handler:
        push eax
        push edx
        mov eax, cr3
        mov edx, PT_U0
        cmp eax, PD0
        je .map
        mov edx, PT_U1
.map:   mov dword [edx], FRAMES + 3      ; a frame mapped before (no EPT violation)
        mov dword [esp + 12], start.again   ; the saved EIP: resume at .again
        pop edx
        pop eax
        add esp, 4
        iretd

        align 4096
elsewhere:
        mov [0xB8000], ax               ; MMIO: under EPT kvm.ko emulates it, flushing the TLB
        jmp start.h1                    ; the first fetch from the loop's page after it

""" + TABLES


@pytest.mark.parametrize("mmu", MODES)
def test_kept_block_after_a_redirected_fault(blocks_switch, mmu: str):  # noqa: F811
    """The guest above, run freely and compared after every 64 to 100 instructions: the
    same state (the icache above all) and walks, blocks on and off."""
    source_ = REDIRECT.replace("ITERATIONS", "24")
    runs = []
    for on in (True, False):
        blocks_switch(on)
        backend = "bare" if mmu == "bare" else "sim"
        s = Session(assemble(source_, "redirect.asm"), backend,
                    **({} if mmu == "bare" else {"paging": mmu}), history=False)
        out = []
        k = 0
        while True:
            k += 1  # budgets of 64 to 100: blocks translate, the states sampled at all phases
            o = s.run_for(seconds=None, instructions=64 + k % 37)
            cpu = s.cpus[0]
            out.append((cpu.state(), cpu.mmu.walks, s.virtual_time))
            if o.finished:
                assert o.exit_status == 1
                break
        runs.append(out)
    on, off = runs
    assert len(on) == len(off)
    for i, (a, b) in enumerate(zip(on, off, strict=True)):
        if a != b:
            keys = [k for k in a[0] if a[0][k] != b[0].get(k)]
            raise AssertionError(f"run {i}: differs in {keys or 'walks/time'}")


TWIN_LOOP = """
bits 32
org 0x100000
        mov ecx, 24
.l:     mov eax, cr3
        mov cr3, eax                    ; the TLB flushed, the icache emptied
        add [0x200010], ecx             ; data walks inside the block that follows
        mov ebx, [0x201010]
        lea edx, [ebx + ecx]
        xor esi, edx
        mov [0x202020], esi
        inc edi
        test ecx, 1
        jz .skip
        mov eax, cr3
        mov cr3, eax
.skip:  add esi, 3
        dec ecx
        jnz .l
"""


@pytest.mark.parametrize("how", ["blocks", "budgets"])
@pytest.mark.parametrize("redecode", [False, True])
def test_cr3_loop_block_by_block(how: str, redecode: bool):
    """The CPU alone (tests/diff/blocks.py's Twin): a loop loading CR3 twice a turn, with
    paging on, compared after every block (or every run of an arbitrary budget): the
    registers, RAM, the TLB, the walks and every MMU event (tlb_miss, walk_step,
    tlb_flush), then the saved state (which instructions are in the icache)."""
    from tests.diff.blocks import Twin, has_blocks
    from tests.diff.harness import STACK_TOP, Start

    code = assemble(TWIN_LOOP, "twin.asm").data
    twin = Twin(code, Start([0] * 4 + [STACK_TOP] + [0] * 3), paging=True, events="mmu",
                redecode=redecode)
    if how == "blocks":
        twin.run_blocks(max_steps=3000, passes=2)
        # Decoded ahead, the loop runs in blocks after each CR3 load (else one at a time:
        # nothing is fetched again yet where a block would start).
        assert twin.blocks_run > 50 or not (redecode and has_blocks())
    else:
        twin.run_budgets([64, 1, 100, 7, 65, 3, 200, 13] * 60, max_steps=3000, passes=2)
    twin.compare_saved_state()
    assert twin.fast.mmu.walks > 50
