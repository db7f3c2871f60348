"""Self-modifying code on the translated (basic-block) path, as the hardware runs it.

SDM Vol. 3A 11.6: a store to an instruction that follows takes effect for that
instruction; a store to one that already ran takes effect the next time it runs. Blocks
are translated from decoded code, so each guest first runs its loop with the store aimed
at data (the code gets decoded, then translated) and aims it at code only in a later
iteration, when the store runs inside a translated block:

- "same block": the store rewrites the next instruction of its own block;
- "next block": it rewrites the block the current one jumps to;
- "across a page": the rewritten instruction straddles two pages, the store hits the
  second page (the block's own first page is not written);
- "already executed": it rewrites an instruction of its block that already ran (no
  effect until the next iteration runs it);
- "every iteration": a loop body on one page rewrites the immediate of a subroutine on
  another page on every iteration (the caller's block stays translated);
- "every iteration, same page": the body rewrites its own next instruction every time;
- "alias" (paging on): the store goes through a second linear mapping of the code.

Each guest's ESI is checked against the value worked out from the bytes (in the case's
comment), against unicorn running the same bytes, and blocks on against blocks off:
full state and the CPU events (the `smc` events included), block by block and freely.
"""

from __future__ import annotations

import pytest

from tests.diff.blocks import Twin, has_blocks
from tests.diff.harness import CODE, DATA, STACK_TOP, Start

SCRATCH = DATA + 0x40

# Each: (source, expected ESI). ECX counts the iterations down (LOOP); EDX is the store's
# address, SCRATCH (data) until the iteration that aims it at code.
CASES = {
    # Iterations 3, 2, 1: the last one stores 7 over `add esi, 1`'s immediate, the next
    # instruction of the store's own block: 1 + 1 + 7.
    "same block": ("""
        mov ecx, 3
        xor esi, esi
    top:
        mov edx, SCRATCH
        cmp ecx, 1
        jne keep
        mov edx, target + 2
    keep:
        mov byte [edx], 7
    target:
        add esi, strict byte 1
        loop top
    """, 9),
    # The store ends its block (JMP); the block it jumps to was translated with the old
    # immediate: 1 + 1 + 7.
    "next block": ("""
        mov ecx, 3
        xor esi, esi
    top:
        mov edx, SCRATCH
        cmp ecx, 1
        jne keep
        mov edx, nextb + 2
    keep:
        mov byte [edx], 7
        jmp nextb
    nextb:
        add esi, strict byte 1
        loop top
    """, 9),
    # `add esi, 0x100` (81 C6 imm32) starts 3 bytes before a page boundary: its opcode
    # and ModRM on the first page, the imm32's bytes 1..3 on the second. The last
    # iteration stores 2 into imm32 byte 1 (on the second page): 0x100 + 0x100 + 0x200.
    "across a page": ("""
        mov ecx, 3
        xor esi, esi
    top:
        mov edx, SCRATCH
        cmp ecx, 1
        jne keep
        mov edx, target + 3
    keep:
        mov byte [edx], 2
        jmp near target
        times 0x1000 - 3 - ($ - $$) db 0x90
    target:
        add esi, strict dword 0x100
        dec ecx
        jnz near top
    """, 0x400),
    # Iteration 2 rewrites `add esi, 1` AFTER it ran in that iteration (same block): no
    # effect then, 7 the next time: 1 + 1 + 7.
    "already executed": ("""
        mov ecx, 3
        xor esi, esi
    top:
        mov edx, SCRATCH
        cmp ecx, 2
        jne first
        mov edx, first + 2
    first:
        add esi, strict byte 1
        mov byte [edx], 7
        add edi, 1
        loop top
    """, 9),
    # The body (first page) stores CL into the subroutine's immediate (second page)
    # before each call: 5 + 4 + 3 + 2 + 1.
    "every iteration": ("""
        mov ecx, 5
        xor esi, esi
    top:
        mov ebx, sub + 2
        mov [ebx], cl
        call sub
        loop top
        jmp done
        times 0x1000 - ($ - $$) db 0x90
    sub:
        add esi, strict byte 0x7F
        ret
    done:
    """, 15),
    # The store is the 64th and last instruction of its block (the translator's limit),
    # aimed (without a branch) at the next block's immediate in the last iteration; the
    # loop makes the two blocks one region: 1 + 1 + 7.
    "last of a full block": ("""
        mov ecx, 3
        xor esi, esi
    top:
        cmp ecx, 1
        sete al
        movzx eax, al
        imul eax, eax, target + 2 - SCRATCH
        lea edx, [SCRATCH + eax]
        times 58 nop
        mov byte [edx], 7
    target:
        add esi, strict byte 1
        loop top
    """, 9),
    # The same with the last store run by its handler (XCHG with memory) and by an
    # inline read-modify-write (ADD to memory: 1 + 6).
    "last of a full block, xchg": ("""
        mov ecx, 3
        xor esi, esi
        mov bl, 7
    top:
        cmp ecx, 1
        sete al
        movzx eax, al
        imul eax, eax, target + 2 - SCRATCH
        lea edx, [SCRATCH + eax]
        mov al, bl
        times 57 nop
        xchg [edx], al
    target:
        add esi, strict byte 1
        loop top
    """, 9),
    "last of a full block, add": ("""
        mov ecx, 3
        xor esi, esi
    top:
        cmp ecx, 1
        sete al
        movzx eax, al
        imul eax, eax, target + 2 - SCRATCH
        lea edx, [SCRATCH + eax]
        times 58 nop
        add byte [edx], 6
    target:
        add esi, strict byte 1
        loop top
    """, 9),
    # CALL's push (the last instruction of its block) lands on the immediate of the
    # block it calls, in the last iteration (ESP aimed there without a branch): the
    # return address is what that block then adds. The blocks loop: one region.
    "call pushes into the callee": ("""
        mov ecx, 3
        xor esi, esi
    top:
        cmp ecx, 1
        sete al
        movzx eax, al
        imul eax, eax, callee + 6 - (SCRATCH + 0x100)
        lea esp, [SCRATCH + 0x100 + eax]
        call callee
    callee:
        add esi, strict dword 1
        add esp, 4
        dec ecx
        jnz top
    """, None),
    # The flags of a CMP are still in the block's locals when the store hits code: the
    # block stops after the store and ADC, decoded anew, reads CF. Iterations 3, 2: CF 0,
    # +1 each; iteration 1: CF 1 and the new immediate 7: +8.
    "flags across the exit": ("""
        mov ecx, 3
        xor esi, esi
    top:
        mov edx, SCRATCH
        cmp ecx, 1
        jne keep
        mov edx, target + 2
    keep:
        cmp ecx, 2
        mov byte [edx], 7
    target:
        adc esi, strict byte 1
        loop top
    """, 10),
    # Each iteration stores CL into the immediate of its own next instruction.
    "every iteration, same page": ("""
        mov ecx, 5
        xor esi, esi
    top:
        mov ebx, target + 2
        mov [ebx], cl
    target:
        add esi, strict byte 0x7F
        loop top
    """, 15),
}


def _source(body: str) -> str:
    return f"bits 32\norg {CODE:#x}\nSCRATCH equ {SCRATCH:#x}\n{body}\n"


def _unicorn_esi(code: bytes) -> int:
    """The same bytes on unicorn (QEMU's precise self-modifying-code handling)."""
    unicorn = pytest.importorskip("unicorn")
    from unicorn import x86_const as U

    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    uc.mem_map(CODE, 0x10000)
    uc.mem_map(DATA, 0x10000)
    uc.mem_map(STACK_TOP - 0x8000, 0x10000)
    uc.mem_write(CODE, code)
    uc.reg_write(U.UC_X86_REG_ESP, STACK_TOP)
    uc.emu_start(CODE, CODE + len(code), count=100_000)
    return uc.reg_read(U.UC_X86_REG_ESI)


def _twin(code: bytes, paging: bool = False, **kw) -> Twin:
    return Twin(code, Start([0, 0, 0, 0, STACK_TOP, 0, 0, 0]), paging=paging, **kw)


@pytest.mark.parametrize("name", list(CASES))
def test_self_modifying_code_in_blocks(nasm, name: str):
    body, expected = CASES[name]
    code = nasm(_source(body), name.replace(" ", "_").replace(",", ""))
    if expected is None:  # the callee's address, pushed as the return address, is added
        callee = CODE + code.index(b"\x81\xc6\x01\x00\x00\x00")
        expected = 2 + callee
    assert _unicorn_esi(code) == expected
    for paging in (False, True):
        # Block by block, the harness asking for each block (translated from what ran).
        twin = _twin(code, paging)
        twin.run_blocks(max_steps=500)
        assert twin.fast.eip == twin.end
        assert twin.fast.r[6] == expected, f"esi={twin.fast.r[6]:#x}"
        twin.compare_saved_state()
        if has_blocks() and name != "every iteration, same page":
            # (That one's store drops its own page's decoded code every time round: the
            # loop never runs from a block, which is right, and is checked all the same.)
            assert twin.blocks_run, "no block ran"
        # Freely: the CPUs translate as a free run does.
        twin = _twin(code, paging, events="mmu" if paging else "hw")
        twin.run_budgets([10_000])
        assert twin.fast.halted and twin.fast.eip == twin.end + 1
        assert twin.fast.r[6] == expected
        twin.compare_saved_state()


@pytest.mark.parametrize("name", list(CASES))
def test_self_modifying_code_with_the_recorder(nasm, name: str):
    """The same guests with the instruction recorder on (a trace at level insn): each
    event (an `smc`, a TLB miss) comes when exactly the instructions before it are
    recorded, as a trace writes the column out before each event."""
    body, _ = CASES[name]
    code = nasm(_source(body), "rec_" + name.replace(" ", "_").replace(",", ""))
    twin = _twin(code, True, events="mmu", record=True)
    twin.run_budgets([10_000])
    assert twin.fast.halted
    twin.compare_saved_state()


def test_store_through_an_alias_mapping(nasm):
    """Paging on, the code's physical page mapped twice: at its own address and 4 MiB
    up (a 4-MiB page over the first 4 MiB). The last iteration rewrites the next
    instruction of its block through the alias: the physical frame is what matters."""
    body = """
        mov ecx, 3
        xor esi, esi
    top:
        mov edx, SCRATCH
        cmp ecx, 1
        jne keep
        mov edx, target + 2 + 0x400000
    keep:
        mov byte [edx], 7
    target:
        add esi, strict byte 1
        loop top
    """
    code = nasm(_source(body), "alias")
    for how in ("blocks", "free"):
        twin = _twin(code, paging=True)
        for cpu in (twin.fast, twin.slow):  # PDE 1: a 4-MiB page at physical 0
            from tests.diff.blocks import PD
            cpu.mem.load(PD + 4, (0x83).to_bytes(4, "little"))
        if how == "blocks":
            twin.run_blocks(max_steps=500)
            assert twin.fast.eip == twin.end
        else:
            twin.run_budgets([10_000])
        assert twin.fast.r[6] == 9
        twin.compare_saved_state()


@pytest.mark.parametrize("blocks", [True, False], ids=["blocks on", "blocks off"])
def test_self_modifying_code_with_two_cpus_on_one_memory(nasm, blocks: bool):
    """SMP (--smp 2): two CPUs share guest memory. The first one runs the "same block"
    guest; its own stores into its own code must be seen by it, whichever CPU was
    created last (PhysicalMemory has one code-write hook)."""
    from vmsim.hw import Cpu

    body, expected = CASES["same block"]
    code = nasm(_source(body), "smp_smc")
    twin = _twin(code)
    cpu = twin.fast
    cpu.use_blocks = blocks
    Cpu(cpu.mem, name="cpu1")  # the second vCPU, created after the first
    cpu.run(10_000)
    assert cpu.halted and cpu.r[6] == expected, f"esi={cpu.r[6]}"
