"""Which stores drop decoded code (Cpu._code_bytes): only those that write a byte of an
instruction some CPU on the memory decoded, and for each CPU exactly its own frames that
were hit. Stores beside the code (data in a code page: counters, locks) drop nothing.

A model keeps, per CPU, the byte ranges of the instructions it noted; hypothesis mixes
instructions noted by up to three CPUs on one memory (some running into the next page)
with stores through the CPUs' accessors, slow-path writes and loads (DMA), and after
every step the model and the CPUs agree on what each has decoded, on the `smc` events,
and on which frames memory still checks (CODE). A CPU's state, put back into a new
CPU, drops code for the same stores as the one it was taken from.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vmsim.events import EventStream
from vmsim.hw.cpu import Cpu
from vmsim.hw.memory import CODE, PAGE_SIZE, PhysicalMemory

FRAMES = 4


def _handler() -> int:
    return 0


_insn = st.tuples(st.just("insn"), st.integers(0, 2), st.integers(0, FRAMES * PAGE_SIZE - 16),
                  st.integers(1, 15))
_store = st.tuples(st.sampled_from(("store", "write")), st.integers(0, 2),
                   st.integers(0, FRAMES * PAGE_SIZE - 4), st.sampled_from((1, 2, 4)))
_load = st.tuples(st.just("load"), st.integers(0, 2), st.integers(0, FRAMES * PAGE_SIZE - 64),
                  st.integers(1, 64))


def _frames(eip: int, n: int) -> list[int]:
    return sorted({eip // PAGE_SIZE, (eip + n - 1) // PAGE_SIZE})


def _setup(ncpus: int) -> tuple[PhysicalMemory, EventStream, list[Cpu]]:
    mem = PhysicalMemory(FRAMES * PAGE_SIZE, holes=())
    ev = EventStream()
    cpus = [Cpu(mem, events=ev, name=f"cpu{i}") for i in range(ncpus)]
    return mem, ev, cpus


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3), st.lists(st.one_of(_insn, _store, _load), max_size=60))
def test_only_stores_into_decoded_bytes_drop_code(ncpus: int, ops) -> None:
    mem, ev, cpus = _setup(ncpus)
    smc: list[tuple[str, int]] = []
    ev.subscribe(lambda e: smc.append((e.source, e.fields["frame"])), ["smc"])
    # The model: per CPU, frame -> the instructions (eip, length) noted from it.
    model: list[dict[int, set[tuple[int, int]]]] = [{} for _ in cpus]
    for op in ops:
        kind, who, pa, n = op
        c = cpus[who % ncpus]
        if kind == "insn":
            c.note_code(pa, _frames(pa, n), _handler, n)
            for f in _frames(pa, n):
                model[who % ncpus].setdefault(f, set()).add((pa, n))
            continue
        smc.clear()
        if kind == "store":
            {1: c.memfns.wr8, 2: c.memfns.wr16, 4: c.memfns.wr32}[n](pa, 0x5A5A5A5A & (1 << 8 * n) - 1)
        elif kind == "write":
            mem.write(pa, n, 0xA5A5A5A5 & (1 << 8 * n) - 1)
        else:
            mem.load(pa, bytes(n))
        hit = set(range(pa, pa + n))
        want = []
        for i, frames in enumerate(model):
            for f in sorted({a // PAGE_SIZE for a in hit}):
                insns = frames.get(f, set())
                if any(hit & set(range(e, e + k)) for e, k in insns):
                    # The whole frame's code goes (an instruction running into the next
                    # page stays noted there).
                    want.append((f"cpu{i}", f * PAGE_SIZE))
                    del frames[f]
        assert sorted(smc) == sorted(want)
        for i, c in enumerate(cpus):
            assert set(c._code_frames) == set(model[i])
            assert set(c.icache) == {e for insns in model[i].values() for e, _ in insns}
            for f, insns in model[i].items():
                covered = {a for e, k in insns for a in range(e, e + k)
                           if a // PAGE_SIZE == f}
                got = c._code_bytes[f]
                assert {f * PAGE_SIZE + o for o in range(PAGE_SIZE) if got[o]} == covered
        for f in range(FRAMES):
            assert bool(mem.kind[f] & CODE) == any(f in m for m in model), f


def test_a_state_put_back_drops_code_for_the_same_stores() -> None:
    """code_bytes keeps the bytes of instructions the state itself does not carry (decoded
    in another address space): a store there drops the frame in the original CPU and in
    one rebuilt from its state alike."""
    mem, _, (cpu,) = _setup(1)
    mem.load(0x1000, b"\x90" * 16)  # two NOPs that decode, at 0x1000 and 0x1008
    cpu.note_code(0x1000, [1], _handler, 1)
    cpu.note_code(0x1008, [1], _handler, 1)
    cpu.icache.pop(0x1008)  # (as after a CR3 load: decoded, not in this address space)
    state = cpu.state()
    assert [f for f, _ in state["code_bytes"]] == [1]

    mem2 = PhysicalMemory(FRAMES * PAGE_SIZE, holes=())
    mem2.load(0, bytes(mem.ram))
    again = Cpu(mem2, events=EventStream())
    again.load_state(state)
    assert again._code_bytes == cpu._code_bytes
    for c, m in ((cpu, mem), (again, mem2)):
        m.write(0x1004, 4, 0)  # beside both: nothing dropped
        assert 1 in c._code_frames
        m.write(0x1008, 1, 0x90)  # the byte of the one the state did not carry
        assert 1 not in c._code_frames and not m.kind[1] & CODE
