"""Every sample and benchmark guest recorded at level insn with blocks on and off
(`Cpu.USE_BLOCKS`): the same trace, byte for byte.

Blocks record their instructions in groups that carry the deltas into them. A region
keeps track of which of its blocks ran last only where a block's predecessors end at
different EIPs; elsewhere (a loop whose blocks are each entered from one branch) each
group has one delta into it. These guests have regions of both kinds, and the test
checks that they do, so both ways of recording are compared with the one-instruction
path. In regions of the second kind a block that records one group as it ends is
followed by copies of its successors, which record both blocks in one group: the test
checks that some guest's regions have them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmsim.hw import blocks as blocks_module
from vmsim.hw.cpu import Cpu

ROOT = Path(__file__).resolve().parents[2]
GUESTS = sorted((ROOT / "sample_guests").glob("*.asm")) + sorted(
    (ROOT / "benchmarks" / "guests").glob("*.asm"))
LIMIT = "400000"  # instructions per run: every guest's loops, in a few seconds in all

# A guest with regions of both kinds (checked below, so that both are compared).
BOTH = "pages.asm"
# A guest whose loops of short blocks run as a block and copies of its successors.
COPIES = "pages.asm"


@pytest.fixture
def region_kinds(monkeypatch) -> dict[str, int]:
    """How many recording variants of regions were compiled: with `lg`, and without."""
    kinds = {"lg": 0, "one edge": 0, "copies": 0}
    real = blocks_module._compile

    def compiling(cpu, src, eip, ns):
        if src.startswith("def region_rec("):
            kinds["lg" if "\n    lg = 0\n" in src else "one edge"] += 1
            # A block followed by a copy of its successor (its own dispatch is further in).
            kinds["copies"] += "\n                if pc == " in src
        return real(cpu, src, eip, ns)

    monkeypatch.setattr(blocks_module, "_compile", compiling)
    return kinds


@pytest.mark.parametrize("guest", GUESTS, ids=[g.name for g in GUESTS])
def test_insn_trace_is_the_same_with_blocks_on_and_off(tmp_path: Path, monkeypatch,
                                                       capsysbinary, region_kinds,
                                                       guest: Path) -> None:
    from vmsim.cli import main

    traces = {}
    for on in (True, False):
        monkeypatch.setattr(Cpu, "USE_BLOCKS", on)
        out = tmp_path / f"{on}.jsonl"
        main(["run", "--max-instructions", LIMIT, "--trace", str(out), "--trace-level", "insn",
              str(guest)])
        traces[on] = out.read_bytes()
    on, off = traces[True].splitlines(), traces[False].splitlines()
    for i, (a, b) in enumerate(zip(on, off, strict=False)):
        assert a == b, f"trace line {i}:\n  blocks on:  {a[:300]}\n  blocks off: {b[:300]}"
    assert len(on) == len(off)
    if guest.name == BOTH:
        assert region_kinds["lg"] and region_kinds["one edge"], region_kinds
    if guest.name == COPIES:
        assert region_kinds["copies"], region_kinds
