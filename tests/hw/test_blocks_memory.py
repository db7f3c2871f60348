"""What a run leaves behind: nothing. A CPU, its machine and its guest RAM are freed once
nobody refers to them, even after blocks stopped on stores into decoded code (each such
stop raises an exception; one shared instance raised again kept every traceback, and
every CPU that raised it, alive)."""

from __future__ import annotations

import gc
import weakref

from tests.hw.test_blocks_stack import source
from vmsim.asm import assemble
from vmsim.session import Session


def _run_once(mmu: str) -> tuple[weakref.ref, int]:
    s = Session(assemble(source(paging=True, iterations=1200), "loops.asm"), "sim",
                paging=mmu, history=False)
    smc = [0]
    s.events.subscribe(lambda e: smc.__setitem__(0, smc[0] + 1), {"smc"})
    assert s.run().exit_status == 1
    return weakref.ref(s.cpus[0]), smc[0]


def test_cpus_are_freed_after_runs_with_smc_exits():
    refs = []
    for mmu in ("ept", "shadow"):
        ref, smc = _run_once(mmu)
        assert smc > 0  # the guest rewrote its own code inside its loop
        refs.append(ref)
    gc.collect()
    assert [r() is None for r in refs] == [True, True]
