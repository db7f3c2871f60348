"""The write log the history's checkpoints diff with (PhysicalMemory.log_writes): every RAM
frame whose bytes change is in `written`, whichever path wrote it (the CPU's store fast
paths, the slow path, a load or DMA), a frame holding decoded code still reaches the
self-modifying-code hook, and the history uses the log only where it can tell what
changed. (tests/conftest.py also checks every log-based diff of the whole suite against a
scan of all of RAM.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vmsim.history
from vmsim.history import History
from vmsim.hw.cpu import Cpu
from vmsim.hw.memory import CLEAN, CODE, OTHER, PAGE_SIZE, PhysicalMemory
from vmsim.session import Session
from vmsim.vmm.machine import MachineConfig

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 16
HOLE = 6  # a frame that is no RAM
MMIO = 9  # a device's frame inside RAM's range


class _Device:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


_addr = st.integers(0, FRAMES * PAGE_SIZE - 1)
_op = st.one_of(
    st.tuples(st.just("store"), st.sampled_from((1, 2, 4)), _addr, st.integers(0, 0xFFFFFFFF)),
    st.tuples(st.just("write"), st.sampled_from((1, 2, 4)), _addr, st.integers(0, 0xFFFFFFFF)),
    st.tuples(st.just("load"), _addr, st.binary(min_size=1, max_size=2 * PAGE_SIZE)),
    st.tuples(st.just("code"), st.integers(0, FRAMES - 1)),
    st.tuples(st.just("restart")),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_op, max_size=40))
def test_every_changed_frame_is_logged_and_code_frames_still_reach_the_hook(ops) -> None:
    mem = PhysicalMemory(FRAMES * PAGE_SIZE,
                         holes=((HOLE * PAGE_SIZE, (HOLE + 1) * PAGE_SIZE),))
    mem.add_mmio(MMIO * PAGE_SIZE, PAGE_SIZE, _Device())
    cpu = Cpu(mem)
    fns = cpu.memfns
    store = {1: fns.wr8, 2: fns.wr16, 4: fns.wr32}
    hooked: list[tuple[int, int]] = []
    # (in place of the CPU's, to see every call)
    mem.code_write_hook = lambda pa, size: hooked.append((pa, size))
    mem.log_writes()
    start = bytes(mem.ram)
    touched: set[int] = set()
    code: set[int] = set()
    for op in ops:
        hooked.clear()
        if op[0] == "restart":
            mem.log_writes()
            start, touched = bytes(mem.ram), set()
            continue
        if op[0] == "code":
            f = op[1]
            if mem.kind[f] != OTHER:
                cpu.note_code(f * PAGE_SIZE, [f], lambda: 0)
                code.add(f)
            continue
        if op[0] == "load":
            pa, data = op[1], op[2][:FRAMES * PAGE_SIZE - op[1]]
            mem.load(pa, data)
            frames = range(pa // PAGE_SIZE, (pa + len(data) - 1) // PAGE_SIZE + 1)
            span = (pa, pa + len(data))
        else:
            _, size, pa, value = op
            size = min(size, FRAMES * PAGE_SIZE - pa)
            value &= (1 << 8 * size) - 1
            if op[0] == "store":
                store[size](pa, value)
            else:
                mem.write(pa, size, value)
            frames = range(pa // PAGE_SIZE, (pa + size - 1) // PAGE_SIZE + 1)
            span = (pa, pa + size)
        ram_frames = [f for f in frames if mem.kind[f] != OTHER]
        # (a load writes the bytes under a hole too: they are part of the RAM compared)
        touched.update(frames if op[0] == "load" else ram_frames)
        # A write to a frame with decoded code is heard, clean or not (and only then).
        assert sorted({pa // PAGE_SIZE for pa, _ in hooked}) == \
            sorted(f for f in ram_frames if f in code)
        # ... with the part of the write inside the frame, all of it.
        for pa, n in hooked:
            f = pa // PAGE_SIZE
            assert (pa, pa + n) == (max(span[0], f * PAGE_SIZE), min(span[1], (f + 1) * PAGE_SIZE))
        code.difference_update(ram_frames)
        for f in ram_frames:  # (the hook stands in for the CPU's, which drops the CODE bit)
            mem.kind[f] &= ~CODE
        changed = {f for f in range(FRAMES)
                   if mem.ram[f * PAGE_SIZE:(f + 1) * PAGE_SIZE]
                   != start[f * PAGE_SIZE:(f + 1) * PAGE_SIZE]}
        assert changed <= mem.written <= touched
        for f in range(FRAMES):
            k = mem.kind[f]
            if f in (HOLE, MMIO):
                assert k == OTHER  # (never CLEAN: every access there takes the slow path)
            else:
                assert bool(k & CLEAN) == (f not in mem.written), f
                assert bool(k & CODE) == (f in code), f


def _logged_results(monkeypatch) -> list[bool]:
    """Whether each diff of a checkpoint (or a restore) found the write log usable."""
    used: list[bool] = []
    real = History._logged

    def logged(self, machine, base):
        out = real(self, machine, base)
        used.append(out is not None)
        return out

    monkeypatch.setattr(History, "_logged", logged)
    return used


@pytest.mark.parametrize("guest", ["hello.asm", "virtio_blk.asm", "paging.asm"])
def test_checkpoints_and_replays_diff_only_the_logged_pages(guest, monkeypatch, tmp_path) -> None:
    used = _logged_results(monkeypatch)
    config = None
    if guest == "virtio_blk.asm":  # (DMA: QEMU's side writes RAM)
        disk = tmp_path / "disk.img"
        disk.write_bytes(bytes(range(256)) * 128)
        config = MachineConfig(disk=str(disk))
    s = Session(str(ROOT / "sample_guests" / guest), "sim", config=config,
                serial_out=lambda data: None, max_instructions=2_000_000)
    h = s.history
    h._gap_work, h._gap_steps = 20_000, 80  # many checkpoints on a short run (a replay
    # leaves some within its last REPLAY_WINDOW steps)
    while not s.run_for(None, instructions=1 << 40).finished:
        pass
    recorded = len(used)
    assert recorded >= 3 and all(used), used  # (tests/conftest.py: each equals a scan)
    h.goto(h.last // 2)  # a restore, then a replay leaving checkpoints near its target
    h.goto(h.last // 2 - 3)
    assert len(used) > recorded and all(used[recorded:]), used


def test_ram_loaded_whole_is_scanned_again(monkeypatch) -> None:
    s = Session(str(ROOT / "sample_guests" / "hello.asm"), "sim", serial_out=lambda data: None)
    s.run_for(None, instructions=300)
    s.advance_to_rebuildable_point()
    h = s.history
    assert h._logged(s.machine, h.checkpoints[-1]) is not None
    s.machine.load_ram(bytes(s.machine.ram))  # (as a loaded state does, behind the log)
    assert h._logged(s.machine, h.checkpoints[-1]) is None
    h._checkpoint(s._work())  # a scan; the log starts again after it
    assert h._logged(s.machine, h.checkpoints[-1]) == set()


def test_the_log_diffs_against_any_older_checkpoint() -> None:
    # Against a checkpoint older than the one the log started at: the pages that changed
    # between the two count as well as the frames written since.
    s = Session(str(ROOT / "sample_guests" / "paging.asm"), "sim", serial_out=lambda data: None)
    h = s.history
    h._gap_work, h._gap_steps = 2_000, 20
    s.run_for(None, instructions=60_000)
    assert len(h.checkpoints) >= 4
    for base in h.checkpoints[:-1]:
        maybe = h._logged(s.machine, base)
        assert maybe is not None
        changed = h._changed_pages(s.machine, base, maybe)
        assert changed == h._changed_pages(s.machine, base) != []


def test_a_fresh_session_reads_only_the_pages_its_build_wrote(monkeypatch) -> None:
    # (a fresh mapping's pages fault in when read: the first checkpoint reads only those
    # the build wrote, the guest image, and takes the rest as zero)
    monkeypatch.setattr(vmsim.history, "CHECK_WRITE_LOG", False)

    def every_page(self, machine):
        raise AssertionError("the first checkpoint read every page of RAM")

    monkeypatch.setattr(History, "_all_pages", every_page)
    s = Session(str(ROOT / "sample_guests" / "hello.asm"), "sim", serial_out=lambda data: None)
    first = s.history.checkpoints[0]
    assert b"".join(first.pages) == bytes(s.machine.ram)
    assert 0 < len(first.new_pages) < len(first.pages)
