"""The decoded-instruction cache stays bounded (issue 8), and eviction keeps it correct.

A guest that runs through zeroed memory (a 1-byte guest: 00 00 is `add [eax], al`) decodes
a new instruction every 2 bytes; each decoded instruction costs about 1.3 KB, so an
unbounded cache grew by GBs a minute. The counts asserted here are entry counts, not
timings: Cpu.ICACHE_LIMIT is lowered so a short run crosses it many times.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guests.cpubench import CODE, Bench
from vmsim.asm import assemble
from vmsim.hw.cpu import Cpu, StopReason

LIMIT = 2048  # entries; a 4 KiB frame of the sled holds 2048 instructions
RUN = 30_000  # instructions: 60 KB of zeroed RAM, some 15 frames


@pytest.fixture
def peak(monkeypatch) -> list[int]:
    """Lower the cache limit and record the largest entry count seen after any decode."""
    monkeypatch.setattr(Cpu, "ICACHE_LIMIT", LIMIT)
    seen = [0]
    note = Cpu.note_code

    def counting(self, eip, frames, handler, length=15):
        note(self, eip, frames, handler, length)
        seen[0] = max(seen[0], len(self.icache))

    monkeypatch.setattr(Cpu, "note_code", counting)
    return seen


@pytest.mark.parametrize("backend", ["sim", "bare"])
def test_zero_sled_through_the_cli_keeps_the_cache_bounded(peak, tmp_path: Path, backend):
    from vmsim.cli import main

    guest = tmp_path / "zero.bin"
    guest.write_bytes(b"\0")  # one byte: the sled is the zeroed RAM after it
    status = main(["run", "--backend", backend, "--memory", "16",
                   "--max-instructions", str(RUN), str(guest)])
    assert status == 124  # the budget ran out (the guest never ends by itself)
    assert 0 < peak[0] <= LIMIT


def test_zero_sled_runs_on_past_evictions(peak):
    b = Bench(mib=16)
    b.cpu.reset_flat(0x100000, 0x100000)
    assert b.run(RUN) is StopReason.LIMIT
    assert b.cpu.eip == 0x100000 + 2 * RUN  # every `add [eax], al` ran, none twice
    assert peak[0] <= LIMIT
    assert len(b.cpu.icache) <= LIMIT
    # The frames evicted are no longer watched for self-modifying code.
    assert len(b.cpu._code_frames) <= LIMIT // 2048 + 1


def test_evicted_code_is_decoded_again_and_smc_is_still_seen(peak):
    """A loop decoded first, then a long NOP sled that evicts it, then the loop again after
    its code was rewritten: the rewritten instruction is what runs (SDM Vol. 3A 11.6)."""
    sled = 3 * LIMIT
    code = assemble(f"""bits 32
org {CODE:#x}
        mov ecx, 3
again:  mov eax, 1              ; patched below to mov eax, 2
        add ebx, eax
        dec ecx
        jnz again
        cmp edx, 1
        je done
        mov edx, 1
        jmp sled
sled:   times {sled} nop
        mov byte [again + 1], 2
        mov ecx, 3
        jmp again
done:   hlt
""", "<smc after eviction>").data
    b = Bench(code, mib=4)
    assert b.run(sled + 100) is StopReason.HLT
    assert b.cpu.r[3] == 3 * 1 + 3 * 2
    assert peak[0] <= LIMIT
