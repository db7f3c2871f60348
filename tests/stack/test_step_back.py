"""Steps backwards land exactly on the state the forward run had (issue 12).

For each sample guest and configuration, a forward run takes a random mix of steps
(step_instruction, step_event, step_vmexit, step_userspace_exit, run_for with an
instruction budget; fixed seeds) and records Session.state_dump() after every scheduler
step (the history's positions) and the registers and event number at every event (where
step_event and step_back_event stop, mid-way through a step): every vCPU's registers and
kvm.ko state, the VMCS, RAM, QEMU's devices, kvm.ko's VM, the clock and the threads'
positions, the event counters and a digest of every event, COM1's output, the exits by
reason. Then it steps back at each granularity, down to the start, and every landing
point must be the one the granularity names (computed here from the forward run's own
record) with exactly the recorded state. Going back then forward again repeats the same
states; reverse_continue lands on the previous breakpoint hit; seek_time on the last
point at or before the time; a run cut by a step back and run on to the end ends as the
uncut run does (serial, exit status, the trace's tail with its event numbers).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from vmsim.events import CATALOGUE
from vmsim.session import Session
from vmsim.vmm.machine import MachineConfig

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_guests"
BUDGET = 3_000_000
OPS = 36  # forward steps per case
BACKS = 40  # steps back per case (then straight to the start)
KINDS = sorted(set(CATALOGUE) - {"walk_step", "tlb_hit", "tlb_miss"})

CASES = {
    "hello": ("hello", {}, "ept"),
    "timer-kernel": ("timer", {"irqchip": "kernel"}, "ept"),
    "timer-userspace": ("timer", {"irqchip": "userspace"}, "ept"),
    "smp4": ("smp", {"smp": 4}, "ept"),
    "apic2": ("apic", {"smp": 2}, "ept"),
    "virtio_blk": ("virtio_blk", {"disk": True}, "ept"),
    "paging-shadow": ("paging", {}, "shadow"),
    "vga-coalesced": ("vga", {"coalesced_mmio": True}, "ept"),  # stores queued in the ring
}


def _session(case: str, tmp: Path, tag: str = "") -> Session:
    name, opts, paging = CASES[case]
    o = dict(opts, memory_mib=4)
    if o.pop("disk", False):
        path = tmp / f"disk{tag}.img"
        path.write_bytes(random.Random(11).randbytes(64 * 512))
        o["disk"] = str(path)
    s = Session(str(SAMPLES / f"{name}.asm"), "sim", config=MachineConfig(**o),
                max_instructions=BUDGET, paging=paging)
    s.history.digest_events = True
    return s


class Recorder:
    """The forward run's own record, per position: the state, and what happened in the
    step that led there (instructions retired, events, exits) as a listener saw it."""

    def __init__(self, s: Session):
        self.s = s
        h = s.history
        self.dumps = {0: s.state_dump()}
        self.instr = {0: s.instructions}
        self.seq = {0: s.events.seq}
        self.time = {0: s.virtual_time}
        self.exits: list[int] = []
        self.uexits: list[int] = []
        self.nev = {0: 0}  # events (KINDS) after each position
        self.at_event: list[tuple] = []  # per event: (seq, registers of every vCPU)

        def on_event(ev) -> None:
            if ev.kind == "kvm_exit":
                self.exits.append(h.pos + 1)
            elif ev.kind == "kvm_userspace_exit":
                self.uexits.append(h.pos + 1)
            self.at_event.append((ev.seq, [s.registers(i) for i in range(len(s.vm.cpus))]))
        self.unsubscribe = s.events.subscribe(on_event, KINDS)
        self._wrap()

    def _wrap(self) -> None:
        s = self.s
        vm = s.vm
        inner = vm.after_step

        def after() -> None:
            inner()
            if s.history.replaying:
                return
            p = s.history.pos
            self.dumps[p] = s.state_dump()
            self.instr[p], self.seq[p], self.time[p] = (s.instructions, s.events.seq,
                                                        s.virtual_time)
            self.nev[p] = len(self.at_event)
        vm.after_step = after

    def rewrap(self) -> None:
        """After going back the session's VM is a new object: watch its steps too."""
        self._wrap()

    def event_before(self, now: tuple[int, int], finished: bool) -> tuple[int, int]:
        """Where step_back_event lands: right after the event before the last one."""
        p, k = now
        j = (self.nev[max(self.nev)] + 1 if finished else self.nev[p] + k) - 1
        if j <= 0:
            return 0, 0
        q = min(q for q in self.nev if self.nev[q] >= j)
        return q - 1, j - self.nev[q - 1]

    def mark_before(self, what: str, now: int, finished: bool, mid: bool = False) -> int:
        limit = now if finished or mid else now - 1
        if what in ("vmexit", "userspace_exit"):
            marks = [p for p in (self.exits if what == "vmexit" else self.uexits) if p <= limit]
            return marks[-1] if marks else 0
        values = self.instr if what == "instruction" else self.seq
        for p in range(limit, 0, -1):
            if values[p] != values[p - 1]:
                return p
        return 0


def _forward(s: Session, rng: random.Random, ops: int) -> list[str]:
    done = []
    for _ in range(ops):
        op = rng.choice(["instruction", "event", "vmexit", "userspace_exit", "run_for"])
        if op == "run_for":
            o = s.run_for(None, instructions=rng.choice([1, 7, 50, 400, 3000]))
        else:
            o = getattr(s, f"step_{op}")()
        done.append(op)
        if o.finished:
            break
    return done


def _same(a: dict, b: dict, where: str) -> None:
    for key in a:
        assert a[key] == b[key], f"{where}: {key} differs"


STEP_BACK = {"instruction": "step_back_instruction", "event": "step_back_event",
             "vmexit": "step_back_vmexit", "userspace_exit": "step_back_userspace_exit"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_step_back_lands_on_the_forward_runs_state(case: str, tmp_path: Path) -> None:
    s = _session(case, tmp_path)
    rec = Recorder(s)
    rng = random.Random(f"step back {case}")
    _forward(s, rng, OPS)
    h = s.history
    assert h.pos > 20, f"{case}: the forward run made only {h.pos} steps"
    assert set(rec.dumps) == set(range(h.pos + 1))
    visited = 0
    while s.can_step_back() and visited < BACKS:
        what = rng.choice(sorted(STEP_BACK))
        now, finished = s.event_position, s.outcome is not None
        if what == "event":
            want = rec.event_before(now, finished)
        else:
            want = rec.mark_before(what, now[0], finished, s.mid_step), 0
        o = getattr(s, STEP_BACK[what])()
        assert not o.finished and s.outcome is None
        assert s.event_position == want, \
            f"{case}: {what} back from {now} landed at {s.event_position}, not {want}"
        if want[1]:  # mid-way through a step: the event and the registers there
            seq, regs = rec.at_event[rec.nev[want[0]] + want[1] - 1]
            assert s.events.seq == seq, f"{case}: back to {want}: at event {s.events.seq}"
            assert [s.registers(i) for i in range(len(s.vm.cpus))] == regs, \
                f"{case}: back to {want}: the registers differ"
            if rng.random() < 0.3:  # and the state at the end of that step
                s.finish_step()
                _same(rec.dumps[want[0] + 1], s.state_dump(), f"{case}: the step after {want}")
        else:
            _same(rec.dumps[want[0]], s.state_dump(), f"{case}: back to {want} by {what}")
        visited += 1
    assert visited > 5
    o = s.reverse_continue()  # no breakpoints: to the start
    assert (o.reason, h.pos) == ("start", 0)
    _same(rec.dumps[0], s.state_dump(), f"{case}: back to the start")
    s.machine.close()


# Two machines (one with a disk in flight): every machine's landings are checked above.
@pytest.mark.parametrize("case", ["hello", "virtio_blk"])
def test_back_then_forward_again_repeats_the_run(case: str, tmp_path: Path) -> None:
    s = _session(case, tmp_path)
    rec = Recorder(s)
    rng = random.Random(f"again {case}")
    marks = [(0, 0)]
    ops = []
    regs = [s.registers()]
    for _ in range(30):
        op = rng.choice(["instruction", "event", "vmexit", "run_for"])
        o = s.run_for(None, instructions=200) if op == "run_for" else getattr(s, f"step_{op}")()
        ops.append(op)
        marks.append(s.event_position)  # mid-way through a step after a step_event
        regs.append(s.registers())
        if o.finished:
            break
    first = dict(rec.dumps)
    # From the ends of ops that stopped between two steps (a step_event stops mid-step).
    starts = [k for k in range(len(ops)) if marks[k][1] == 0]
    for k in sorted(rng.sample(starts, min(3, len(starts))), reverse=True):
        p = marks[k][0]
        s.seek_time(rec.time[p])  # back to the end of op k (or a step after it
        s.history.goto(p)  # that took no virtual time), then exactly there
        rec.rewrap()
        _same(first[p], s.state_dump(), f"{case}: back at op {k}")
        for i, op in enumerate(ops[k:], start=k):  # the same ops again
            o = s.run_for(None, instructions=200) if op == "run_for" else \
                getattr(s, f"step_{op}")()
            assert s.event_position == marks[i + 1]
            if o.finished:  # the state after the end: no step's (the threads ended)
                break
            if s.mid_step:  # (state_dump would finish the step)
                assert s.registers() == regs[i + 1], f"{case}: op {i} again"
            else:
                _same(first[marks[i + 1][0]], s.state_dump(), f"{case}: op {i} again")
        rec.dumps = dict(first)
    s.machine.close()


def _trace(s: Session) -> list[str]:
    out: list[str] = []

    def on_rewind(seq: int) -> None:  # a front end drops what did not happen after all
        while out and json.loads(out[-1])["seq"] > seq:
            out.pop()
    s.on_rewind.append(on_rewind)
    s.events.subscribe(lambda ev: out.append(json.dumps(ev.to_dict(), sort_keys=True,
                                                        default=str)), KINDS)
    return out


@pytest.mark.parametrize("case", ["hello", "timer-kernel", "virtio_blk", "apic2"])
def test_a_run_cut_by_a_step_back_ends_as_the_uncut_one(case: str, tmp_path: Path) -> None:
    # The same steps in both, then run() to the end; b is cut in that run (where the
    # batches are run()'s: a cut earlier would go on with other batches than a's).
    ends = []
    for tag in "ab":
        s = _session(case, tmp_path, tag)
        trace = _trace(s)
        rng = random.Random(f"cut {case}")
        for _ in range(12):
            getattr(s, f"step_{rng.choice(['instruction', 'event', 'vmexit'])}")()
        start = s.history.pos, s.virtual_time
        end = s.run()
        ends.append((s, trace, end, start))
    (a, trace_a, end_a, _), (b, trace_b, _, (cut_from, cut_time)) = ends
    final_a = a.state_dump()
    image_a = Path(a.machine.blk.path).read_bytes() if a.machine.blk is not None else None
    rng = random.Random(f"cut {case}")
    h = b.history
    for _ in range(3):  # back a long way, then by a few steps, then to the end again
        b.seek_time(rng.randrange(cut_time, b.timeline()["end"]))
        for _ in range(rng.randrange(1, 6)):
            if h.pos <= cut_from + 1:
                break
            b.step_back_event()
        assert h.pos > cut_from and b.outcome is None
        end_b = b.run()
        assert (end_b.exit_status, end_b.reason) == (end_a.exit_status, end_a.reason)
        assert bytes(b.serial) == bytes(a.serial)
        _same(final_a, b.state_dump(), f"{case}: the end after a cut")
        assert trace_b == trace_a
        if image_a is not None:
            assert Path(b.machine.blk.path).read_bytes() == image_a
    a.machine.close()
    b.machine.close()


def test_reverse_continue_lands_on_the_previous_hit(tmp_path: Path) -> None:
    s = _session("timer-kernel", tmp_path)
    h = s.history
    start = s.state_dump()
    for bp_kind in ("address", "exit", "event"):
        bp = s.breakpoints
        bp.addresses.clear(), bp.exit_reasons.clear(), bp.events.clear()
        if bp_kind == "address":  # after each tick's `sti; hlt`
            bp.addresses.add(s.image.symbols["entry.after_hlt"])
        elif bp_kind == "exit":
            bp.exit_reasons.add("IO_INSTRUCTION")
        else:
            bp.events.add("kvm_inj_virq")
        while h.pos > 0:  # from the start each time
            s.reverse_continue()
        hits = []
        for _ in range(4):
            o = s.run_for(None, instructions=100_000)
            if o.reason != "breakpoint":
                break
            hits.append((h.pos, o.breakpoint, s.state_dump()))
        s.run_for(None, instructions=2_000)
        assert len(hits) >= 2, f"{bp_kind}: hits {hits}"
        for pos, name, dump in reversed(hits):
            o = s.reverse_continue()
            assert (o.reason, o.breakpoint, h.pos) == ("breakpoint", name, pos), bp_kind
            _same(dump, s.state_dump(), f"reverse_continue to {name}")
        o = s.reverse_continue()
        assert (o.reason, h.pos) == ("start", 0)
        _same(start, s.state_dump(), "reverse_continue to the start")
    s.machine.close()


def test_seek_time_and_the_timeline(tmp_path: Path) -> None:
    s = _session("apic2", tmp_path)
    rec = Recorder(s)
    rewinds = []
    s.on_rewind.append(rewinds.append)
    _forward(s, random.Random("seek"), 40)
    s.finish_step()  # (a seek would: the end is the step's)
    h = s.history
    tl = s.timeline()
    assert tl["start"] == 0 and tl["now"] == tl["end"] == s.virtual_time
    assert tl["exits"] == sorted(tl["exits"]) and len(tl["exits"]) == len(rec.exits)
    assert len(tl["userspace_exits"]) == len(rec.uexits)
    rng = random.Random(5)
    last = h.pos
    for t in [rng.randrange(tl["end"] + 1) for _ in range(5)] + [0, tl["end"]]:
        s.seek_time(t)
        want = max(p for p in range(last + 1) if rec.time[p] <= t)
        assert h.pos == want, f"seek_time({t})"
        assert s.virtual_time <= t
        _same(rec.dumps[want], s.state_dump(), f"seek_time({t})")
        assert s.timeline()["end"] == tl["end"]  # the future is still there
    assert rewinds and all(isinstance(x, int) for x in rewinds)
    # Past the end: the run goes on to that time.
    s.seek_time(tl["end"] + 50_000)
    assert s.virtual_time >= tl["end"] or s.outcome is not None
    s.machine.close()


def test_other_backends_cannot_step_back() -> None:
    s = Session(str(SAMPLES / "hello.asm"), "bare")
    assert not s.can_step_back()
    for name in ("step_back_instruction", "step_back_event", "step_back_vmexit",
                 "step_back_userspace_exit", "reverse_continue", "timeline"):
        with pytest.raises(ValueError, match="simulated backend"):
            getattr(s, name)()
    with pytest.raises(ValueError, match="simulated backend"):
        s.seek_time(0)


def test_a_step_back_undoes_the_disk_writes(tmp_path: Path) -> None:
    s = _session("virtio_blk", tmp_path)
    path = Path(s.machine.blk.path)
    before = path.read_bytes()
    s.run()
    assert path.read_bytes() != before, "the guest wrote nothing"
    while s.can_step_back():
        s.reverse_continue()
    assert path.read_bytes() == before


def test_checkpoints_share_unchanged_pages(tmp_path: Path) -> None:
    s = _session("smp4", tmp_path)
    s.run()
    h = s.history
    assert len(h.checkpoints) > 5
    a, b = h.checkpoints[-2], h.checkpoints[-1]
    shared = sum(x is y for x, y in zip(a.pages, b.pages, strict=True))
    assert shared > len(a.pages) - 64
    assert h.memory() < 40 << 20


def _out_loop(loops: int):
    import sys

    bench = str(ROOT / "benchmarks")
    sys.path.insert(0, bench)
    try:
        import exit_bench  # its out_loop.asm: an exit to userspace per loop
    finally:
        sys.path.remove(bench)
    return exit_bench.load("out_loop", loops)


def test_walking_back_replays_less_than_an_interval(monkeypatch) -> None:
    """A front end walking back exit by exit past the checkpoints each replay leaves near
    its target: with the checkpoints a long replay also leaves further back
    (history.REPLAY_FAR), no step back after the first replays half a checkpoint interval
    (2,048 steps at 16 MiB), where without them one in ~17 replays most of one; and the
    landing states are the same either way (the replay is exact wherever it starts)."""
    from vmsim import history

    image = _out_loop(1000)
    replay = history.History._replay_to

    def walk(far: tuple[int, ...]) -> tuple[list[int], list[dict], int]:
        monkeypatch.setattr(history, "REPLAY_FAR", far)
        lengths: list[int] = []

        def measured(self, p, *args, **kwargs):
            lengths.append(p - self.pos)
            return replay(self, p, *args, **kwargs)

        monkeypatch.setattr(history.History, "_replay_to", measured)
        s = Session(image, "sim", config=MachineConfig(memory_mib=16))
        s.history.digest_events = True
        assert s.run().finished
        dumps = []
        for k in range(90):
            s.step_back_vmexit()
            if k % 15 == 0:
                dumps.append(s.state_dump())
        return lengths, dumps, s.history._gap_steps

    lengths, dumps, interval = walk(history.REPLAY_FAR)
    assert interval == 2048
    assert max(lengths[1:]) < interval // 2, lengths
    lengths, window_only, _ = walk(())
    assert max(lengths[1:]) > interval // 2, lengths  # (what the far checkpoints spare)
    assert dumps == window_only


@pytest.mark.parametrize("finished", [False, True], ids=["paused", "finished"])
def test_a_prepared_step_back_replays_from_near_the_present(monkeypatch, finished) -> None:
    """A front end with nothing to do prepares the first step back from a paused or a
    finished run (Session.prepare_step_back): the present is replayed from the last
    checkpoint, leaving checkpoints on the way, and stays the present (every part of the
    state, the outcome of a finished run too). The first step back then replays at most
    history.REPLAY_WINDOW steps, where it replayed most of a checkpoint interval, and
    lands where the unprepared one lands."""
    from vmsim import history

    image = _out_loop(3_000 if finished else 10_000)
    replay = history.History._replay_to
    lengths: list[int] = []

    def measured(self, p, *args, **kwargs):
        lengths.append(p - self.pos)
        return replay(self, p, *args, **kwargs)

    monkeypatch.setattr(history.History, "_replay_to", measured)
    landed = []
    for prepare in (False, True):
        s = Session(image, "sim", config=MachineConfig(memory_mib=16))
        s.history.digest_events = True
        if finished:
            assert s.run().finished
        else:
            s.run_for(None, instructions=12_000)
            assert s.outcome is None
        h = s.history
        assert h.pos == h.last
        gap = h.pos - h.checkpoints[-1].pos
        assert gap > 2 * history.REPLAY_WINDOW  # (else there is little to prepare)
        if prepare:
            before = s.state_dump()
            lengths.clear()
            assert s.prepare_step_back()
            assert lengths == [gap] and s.state_dump() == before
            assert not s.prepare_step_back()  # prepared: nothing left to do
        lengths.clear()
        s.step_back_vmexit()
        assert len(lengths) == 1
        landed.append((lengths[0], s.state_dump()))
        assert not s.prepare_step_back()  # not at the history's end: nothing to prepare
    (unprepared, there), (prepared, here) = landed
    assert unprepared > history.REPLAY_WINDOW >= prepared
    assert here == there


# Runs that end otherwise than by isa-debug-exit, each after 300 exits to userspace.
_ENDINGS = {
    "halted": "cli\n        hlt",
    "triple_fault": "lidt [bad]\n        int 3\nbad:    dw 0\n        dd 0",
    "internal_error": "mov eax, 0x80000000\n        jmp eax  ; (no memory there: no progress)",
}


@pytest.mark.parametrize("guest", [*sorted(p.name for p in SAMPLES.glob("*.asm")
                                           if p.name != "virtio_blk.asm"), *_ENDINGS])
def test_preparing_the_first_step_back_leaves_each_finished_run_as_it_was(monkeypatch, guest,
                                                                          tmp_path) -> None:
    """Every sample guest run to its end, and stopped by the instruction limit, and runs
    that halt for good, triple-fault or stop with an internal error: after the
    preparation (here replaying from every run's last checkpoint), the state is the
    finished run's in every part, its outcome included."""
    from vmsim import history

    monkeypatch.setattr(history, "REPLAY_WINDOW", 2)
    path = SAMPLES / guest
    if guest in _ENDINGS:
        path = tmp_path / f"{guest}.asm"
        path.write_text("bits 32\norg 0x100000\n        mov ecx, 300\n.l:     mov dx, 0x80\n"
                        "        out dx, al\n        dec ecx\n        jnz .l\n"
                        f"        {_ENDINGS[guest]}\n")
    for limit in (None, 2_000):
        s = Session(str(path), "sim", max_instructions=limit)
        s.history.digest_events = True
        out = s.run()
        assert out.finished
        before = s.state_dump()
        if s.history.last - s.history.checkpoints[-1].pos <= 2:
            continue
        assert s.prepare_step_back()
        assert s.state_dump() == before and s.outcome == out
        if limit is None and guest in _ENDINGS:
            assert guest.replace("_", " ") in out.reason.replace("_", " ").lower(), out
