"""The whole stack (vmsim's VMM, the simulated kvm.ko, VMX) with blocks on and off
(`Cpu.USE_BLOCKS`, what VMSIM_BLOCKS=0 sets): the same traces byte for byte, and
breakpoints, single steps and exits on exactly the same instruction through
vmsim.session.Session.

The guest runs a loop whose middle makes VM exits now and then (an OUT nobody claims, a
store to the VGA buffer: MMIO, CPUID), rewrites one of its own immediates, stores to
pages it never touched (an EPT violation, or a shadow-paging fault, on a store inside
a block), then single-steps itself (POPF setting EFLAGS.TF, a #DB handler counting the
traps), and exits through isa-debug-exit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmsim.asm import assemble
from vmsim.hw import blocks as blocks_module
from vmsim.hw.cpu import Cpu
from vmsim.session import Session

GUEST = r"""
bits 32
org 0x100000

DEBUG_EXIT  equ 0x501
DATA        equ 0x200000
FRESH       equ 0x300000                ; pages first touched in the loop
PD          equ 0x700000

start:
        mov esp, 0x90000
        lgdt [gdt_descriptor]
        lidt [idt_descriptor]
PAGING_SETUP
        xor esi, esi
        xor edi, edi
        mov ecx, ITERATIONS
.loop:
        add esi, ecx
.mid1:  mov eax, esi
        and eax, 0xFF
        mov [DATA + eax*4], esi
        cmp eax, 0x17
        jne .no_exit
        out 0x80, al                    ; port I/O exit (nobody claims 0x80)
.mid2:  mov [0xB8000], ax               ; MMIO exit (VGA) in straight-line code
        push ecx
        mov eax, 1
        cpuid                           ; CPUID exit
        pop ecx
.no_exit:
        mov edx, ecx
        and edx, 0x1FF
        jnz .no_smc
        mov byte [.patch + 2], cl       ; rewrite an immediate of the loop
.no_smc:
.patch: add edi, strict byte 1
        mov edx, ecx
        and edx, 0x3F
        jnz .no_touch
        mov edx, ecx
        shl edx, 10
        mov [FRESH + edx], ecx          ; a page never touched: EPT violation / shadow #PF
.mid3:  add edi, [FRESH + edx]
.no_touch:
        dec ecx
        jnz .loop

        ; POPF sets TF: each instruction then traps to the #DB handler, which counts.
        pushfd
        or dword [esp], 0x100
        popfd
        mov ecx, 5
.traced:
        add esi, ecx
        dec ecx
        jnz .traced
        pushfd
        and dword [esp], ~0x100
        popfd

        mov eax, esi
        xor eax, edi
        mov [DATA], eax
        mov al, 0
        mov dx, DEBUG_EXIT
        out dx, al
        hlt

db_handler:
        inc dword [DATA + 0x800]
        iretd

        align 8
gdt:    dq 0
        dq 0x00CF9A000000FFFF           ; 0x08 flat code
        dq 0x00CF92000000FFFF           ; 0x10 flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
idt:    dq 0
        dw db_handler - $$, 0x08        ; vector 1 (#DB): an interrupt gate
        db 0, 0x8E
        dw 0x0010                       ; offset 31:16 (the image sits at 0x100000)
idt_end:
idt_descriptor:
        dw idt_end - idt - 1
        dd idt
"""

# Identity-map the low 8 MiB with 4-KiB pages and turn paging on (as crc32.asm does).
PAGING = r"""
        mov edi, PD + 0x1000
        mov eax, 0x003
        mov ecx, 2048
.fill:  mov [edi], eax
        add eax, 0x1000
        add edi, 4
        loop .fill
        mov dword [PD], PD + 0x1000 + 0x003
        mov dword [PD + 4], PD + 0x2000 + 0x003
        mov eax, PD
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
"""
TRAPS = 1 + 3 * 5 + 3  # MOV, five times ADD/DEC/JNZ, PUSHFD, AND, the POPF clearing TF


def source(paging: bool, iterations: int = 1500) -> str:
    return (GUEST.replace("PAGING_SETUP", PAGING if paging else "")
            .replace("ITERATIONS", str(iterations)))


@pytest.fixture
def blocks_switch(monkeypatch):
    """set(on): what VMSIM_BLOCKS=0 (off) or its default (on) make of every new CPU;
    counts the blocks translated."""
    translated = [0]
    real = blocks_module.translate

    def counting(*a, **kw):
        translated[0] += 1
        return real(*a, **kw)

    monkeypatch.setattr(blocks_module, "translate", counting)

    def set_(on: bool) -> list[int]:
        monkeypatch.setattr(Cpu, "USE_BLOCKS", on)
        translated[0] = 0
        return translated
    return set_


# (level, paging mode or "bare": no hypervisor, guest paging)
TRACES = [("vm", "ept", False), ("insn", "ept", True), ("insn", "shadow", False),
          ("all", "shadow", True), ("all", "ept", False), ("insn", "bare", False),
          ("all", "bare", True)]


@pytest.mark.parametrize(("level", "mmu", "paging"), TRACES,
                         ids=[f"{lv}-{m}-{'paging' if p else 'flat'}" for lv, m, p in TRACES])
def test_trace_is_the_same_with_blocks_on_and_off(tmp_path: Path, capsysbinary, blocks_switch,
                                                  level: str, mmu: str, paging: bool):
    """`vmsim run --trace`: the whole event stream (kinds, fields, order, virtual times)
    and at level insn every executed instruction, byte for byte."""
    from vmsim.cli import main

    guest = tmp_path / "loops.asm"
    guest.write_text(source(paging, 600 if level == "all" else 1500))
    traces = {}
    for on in (True, False):
        translated = blocks_switch(on)
        out = tmp_path / f"{on}.jsonl"
        how = ["--backend", "bare"] if mmu == "bare" else ["--paging", mmu]
        status = main(["run", "--trace", str(out), "--trace-level", level, *how, str(guest)])
        assert status == 1, f"the guest ended with status {status}"
        traces[on] = out.read_bytes()
        assert bool(translated[0]) is on, "blocks were translated" if not on else \
            "no block was translated (vmsim.hw.blocks.translate is counted here)"
    on, off = traces[True].splitlines(), traces[False].splitlines()
    for i, (a, b) in enumerate(zip(on, off, strict=False)):
        assert a == b, f"trace line {i}:\n  blocks on:  {a[:300]}\n  blocks off: {b[:300]}"
    assert len(on) == len(off)
    assert b'"exit_reason":"EPT_VIOLATION"' in traces[True] or mmu != "ept"


def _session(blocks_switch, on: bool, paging: bool = False, iterations: int = 1500,
             mmu: str = "ept") -> Session:
    blocks_switch(on)
    image = assemble(source(paging, iterations), "loops.asm")
    return Session(image, "sim", paging=mmu)


def _where(s: Session) -> tuple:
    cpu = s.cpus[0]
    return (cpu.eip, cpu.icount, tuple(cpu.r), cpu.eflags, s.virtual_time)


def _both(blocks_switch, fn, **kw) -> list:
    runs = []
    for on in (True, False):
        s = _session(blocks_switch, on, **kw)
        runs.append(fn(s))
    assert runs[0] == runs[1]
    return runs[0]


def test_address_breakpoints_in_block_middles(blocks_switch):
    """Breakpoints on instructions in the middle of the loop's blocks stop there, at the
    same (EIP, icount) each time, blocks on or off."""
    image = assemble(source(False), "loops.asm")
    mids = {image.symbols[f"start.mid{i}"] for i in (1, 2, 3)}

    def hits(s: Session) -> list:
        s.breakpoints.addresses = mids
        out = []
        for _ in range(40):
            o = s.run_for(seconds=None)
            if o.finished:
                break
            assert o.breakpoint == f"address {s.cpus[0].eip:#x}"
            out.append(_where(s))
        return out

    got = _both(blocks_switch, hits)
    assert len(got) == 40 and {w[0] for w in got} <= mids
    assert len({w[0] for w in got}) >= 2


def test_exit_breakpoints_and_whole_run(blocks_switch):
    """Breakpoints on the exits made inside the loop (I/O, the MMIO EPT violation, CPUID)
    stop at the same instruction and state; the run ends the same, with the #DB handler
    having counted every single-step trap."""
    def stops(s: Session) -> list:
        s.breakpoints.exit_reasons = {"IO_INSTRUCTION", "EPT_VIOLATION", "CPUID"}
        out = []
        while True:
            o = s.run_for(seconds=None)
            if o.finished:
                break
            out.append((o.breakpoint, *_where(s)))
        cpu = s.cpus[0]
        traps = int.from_bytes(cpu.mem.ram[0x200800:0x200804], "little")
        out.append(("end", o.exit_status, traps, *_where(s)))
        return out

    got = _both(blocks_switch, stops)
    assert {b for b, *_ in got[:-1]} == {"exit IO_INSTRUCTION", "exit EPT_VIOLATION",
                                         "exit CPUID"}
    assert got[-1][1:3] == (1, TRAPS)


@pytest.mark.parametrize("mmu", ["ept", "shadow"])
def test_run_for_instructions_stops_at_the_same_states(blocks_switch, mmu: str):
    """run_for(instructions=k) for many k (blocks cut short by the budget anywhere):
    the same states, one after the other, to the end."""
    ks = [1, 2, 3, 5, 7, 13, 63, 64, 65, 100, 127, 128, 255, 1000, 4000]

    def states(s: Session) -> list:
        out = []
        i = 0
        while True:
            o = s.run_for(seconds=None, instructions=ks[i % len(ks)])
            i += 1
            out.append(_where(s))
            if o.finished:
                return out

    _both(blocks_switch, states, paging=True, iterations=400, mmu=mmu)


def test_instruction_steps_are_the_same(blocks_switch):
    """step_instruction() and single_step() one instruction at a time through the
    exits and the guest's own single-stepping (a free run between them translates
    blocks): the same (EIP, icount) sequence."""
    def steps(s: Session) -> list:
        out = []
        for round_ in range(6):
            for _ in range(150):
                o = s.single_step() if round_ % 2 else s.step_instruction()
                out.append(_where(s))
                if o.finished:
                    return out
            s.run_for(seconds=None, instructions=700)
        while not s.run_for(seconds=None, instructions=5000).finished:
            pass
        for _ in range(40):  # nothing left: the session says so the same way
            out.append(_where(s))
        return out

    _both(blocks_switch, steps, iterations=300)


def test_steps_back_land_on_the_same_states(blocks_switch):
    """The session's history replays from checkpoints (with blocks, when on): stepping
    back by instructions and by exits gives the same states as with blocks off."""
    def back(s: Session) -> list:
        out = []
        s.run_for(seconds=None, instructions=3000)
        out.append(_where(s))
        for _ in range(4):
            s.step_back_instruction()
            out.append(_where(s))
        s.step_back_vmexit()
        out.append(_where(s))
        s.run_for(seconds=None, instructions=777)
        out.append(_where(s))
        s.step_back_instruction()
        out.append(_where(s))
        return out

    _both(blocks_switch, back, iterations=400)


CROSS = r"""
bits 32
org 0x100000
start:
        cmp esp, 0x100000               ; vCPU 0 (ENTRY_ESP); vCPU 1 starts 64 KiB lower
        jne other
        xor esi, esi
        mov ecx, 30000
.l:     add esi, strict dword 1         ; vCPU 1 rewrites this immediate meanwhile
        dec ecx
        jnz .l
        mov [0x200000], esi
        mov al, 0
        mov dx, 0x501
        out dx, al
other:
        mov ecx, 3000
.w:     dec ecx
        jnz .w
        mov dword [start.l + 2], 2
.h:     hlt
        jmp .h
"""


def test_cross_modifying_code_two_vcpus(tmp_path: Path, capsysbinary, blocks_switch):
    """--smp 2: vCPU 1 rewrites the immediate of the loop vCPU 0 runs from a translated
    block (between two of vCPU 0's batches): the same trace with blocks on and off, and
    vCPU 0 sees the new immediate (its sum grows by 2 a turn from then on)."""
    from vmsim.cli import main

    guest = tmp_path / "cross.asm"
    guest.write_text(CROSS)
    traces = {}
    for on in (True, False):
        blocks_switch(on)
        out = tmp_path / f"{on}.jsonl"
        assert main(["run", "--smp", "2", "--trace", str(out), str(guest)]) == 1
        traces[on] = out.read_bytes()
    assert traces[True] == traces[False]
    assert b'"kind":"smc"' in traces[True]
    from vmsim.vmm.machine import MachineConfig

    sums = []
    for on in (True, False):
        blocks_switch(on)
        s = Session(assemble(CROSS, "cross.asm"), "sim", config=MachineConfig(smp=2),
                    history=False)
        assert s.run().exit_status == 1
        sums.append(s.cpus[0].r[6])
    assert sums[0] == sums[1] and 30000 < sums[0] < 60000, sums


def test_whole_program_by_instruction_steps(blocks_switch):
    """The whole guest (a short loop) by step_instruction() alone, exits and the guest's
    own single-stepping included: the same (EIP, icount) at every step."""
    def steps(s: Session) -> list:
        out = []
        for _ in range(20_000):
            o = s.step_instruction()
            out.append(_where(s))
            if o.finished:
                break
        assert o.finished and o.exit_status == 1
        return out

    got = _both(blocks_switch, steps, iterations=70)
    assert len(got) > 1000
