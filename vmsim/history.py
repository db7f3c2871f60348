"""Steps backwards (issue 12): the session's history of its run, in-memory checkpoints
with page-granular RAM deltas, and deterministic replay (docs/stepping-backwards.md).

A point of the run is its *position*: how many times the session stepped the simulated
threads (`VirtualMachine.step`) since the VM was built. What a step does depends on the
state and on the vCPUs' BATCH (the guest instructions a vCPU runs between two yields:
1 for step_instruction, Session.RUN_BATCH for run_for, SimVcpu.BATCH for run), so the
history records the batch of every step; replaying the same steps with the same batches
from a state the run had reproduces the run exactly (the simulation is deterministic).

Checkpoints are VirtualMachine.save_state at rebuildable points, RAM left out and kept
as 4 KiB pages shared with the previous checkpoint where unchanged. Going back to
position p rebuilds the VM from the newest checkpoint at or before p (a fresh Machine and
VirtualMachine from the session's assembled GuestImage, VirtualMachine.load_state) and
replays the steps up to p with the front end's listeners and serial sink muted, so the
events come out with the same numbers into the same counters and nobody sees them twice.
"""

from __future__ import annotations

import bisect
import ctypes
import mmap
import os
import pickle
import zlib
from array import array
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmsim.events import CATALOGUE, Event, event_maker

if TYPE_CHECKING:
    from collections.abc import Callable

    from vmsim.events import EventStream
    from vmsim.hw.memory import PhysicalMemory
    from vmsim.session import Session
    from vmsim.vmm.machine import Machine

PAGE = 4096
# RAM is compared with the last checkpoint's a MiB at a time first, then the chunks that
# differ 64 KiB at a time, then page by page: a few dozen memcmp calls for the usual few
# changed pages, rather than one Python iteration per page.
CHUNKS = (256 * PAGE, 16 * PAGE, PAGE)
# A checkpoint is taken at the first rebuildable point after this much guest work
# (instructions retired, exceptions delivered: Session._work) or this many steps since
# the last one, whichever comes first: the most a step back has to replay.
CHECKPOINT_WORK = 10_000
CHECKPOINT_STEPS = 100
# ... and further apart on a larger RAM: a checkpoint saves the state (about 1-2 ms) and
# holds a list of every page (8 bytes each), and one the write log cannot serve compares
# the whole RAM (about 1 ms per 16 MiB: after RAM was loaded whole), so that recording
# costs the run a few percent, the gap is at least this much work per 4 KiB page of RAM
# (16 MiB: 262,144 instructions; 4 MiB: 65,536), or that work's worth of steps, a step
# weighing as much as CHECKPOINT_WORK_PER_STEP instructions (16 MiB: 2,048 steps). A step
# that is an exit to userspace costs the host about as much as that many instructions:
# counted as one, a guest that lives on exits (a serial console) would take a checkpoint
# every few milliseconds of its run and spend more time in them than running. Where
# checkpoints are changes only how far a step back replays, never what it finds (the
# replay is exact).
CHECKPOINT_WORK_PER_PAGE = 64
CHECKPOINT_WORK_PER_STEP = 128
# Going back, the replay also leaves checkpoints in the last REPLAY_WINDOW steps before
# its target, one every REPLAY_STEPS steps or REPLAY_WORK work: the next step back (a front
# end walking backwards) then replays a few steps instead of a whole interval.
REPLAY_WINDOW = 100
REPLAY_STEPS = 20
REPLAY_WORK = 2_000
REPLAY_CHECKPOINTS = 2  # at most this many per replay (each saves the state)
# A replay longer than these distances also leaves a checkpoint about that far before its
# target (where no checkpoint is within half of it): a front end that keeps walking back
# past the window's checkpoints then replays up to half the distance to the next one,
# not a whole interval (2,048 steps at 16 MiB: a click in 17 took 30-60 ms in the window).
REPLAY_FAR = (200, 400, 800, 1600)
# What the checkpoints may hold (RAM pages, the rest of the state, the page tables of
# the checkpoints, the disk's undo log, COM1's output); past it, older checkpoints are
# thinned out (History._thin), the newest NEAR never.
BUDGET = 160 << 20
NEAR = 24
# The events numbered in every run: the VM-level kinds (`--trace-level vm`, what stepping
# listens to). The history listens to them for the session's whole life, so a front end
# subscribing for a while never changes which events get a number.
HISTORY_KINDS = [k for k in CATALOGUE if k not in ("tlb_hit", "tlb_miss", "walk_step")]
EXIT_KINDS = ["kvm_exit", "kvm_userspace_exit"]  # the ones whose positions it keeps
ZERO_PAGE = bytes(PAGE)
# (a writable buffer, as ctypes takes its address; never written, so its pages stay the
# kernel's shared zero page: no memory, and always in the cache)
_ZERO_BLOCK_BUF = bytearray(CHUNKS[0])


def _memcmp():
    """libc's memcmp through ctypes (RAM against the last checkpoint's copy without
    copying it), or None where there is no libc to load."""
    try:
        f = ctypes.CDLL(None).memcmp
    except (OSError, AttributeError):
        return None
    f.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    f.restype = ctypes.c_int
    return f


_MEMCMP = _memcmp()
# Tests (tests/conftest.py): every diff the write log gives is checked against the scan of
# the whole RAM, so that a write the log missed fails the test that made it.
CHECK_WRITE_LOG = False


@dataclass(eq=False)
class Checkpoint:
    pos: int
    work: int
    parts: dict[str, bytes] | None  # the VM state without RAM, pickled part by part
    pages: tuple[bytes, ...]  # RAM page by page (the same bytes object as the previous one's
    #                     where the page did not change)
    extra: dict[str, Any]  # the session's own: COM1's output, the event counters
    new_pages: dict[int, bytes] = field(default_factory=dict)  # the pages it brought
    new_parts: dict[str, bytes] = field(default_factory=dict)

    def size(self) -> int:
        return (sum(map(len, self.new_pages.values())) + sum(map(len, self.new_parts.values()))
                + 8 * len(self.pages) + 200)


def _split(d: dict[str, Any]) -> dict[str, bytes]:
    """The VM state as pickled parts: each top-level entry, each vCPU's entries apart,
    the VMCS's MSR bitmap (large, set once) apart again. Pickle is only the in-memory
    copy of this process's own plain data (compact, and equal parts compare as bytes);
    nothing pickled ever leaves the process or comes from a file (snapshot files are
    JSON sections: vmsim/snapshot_format.py)."""
    out = {}
    for k, v in d.items():
        if k == "vcpus":
            for i, vd in enumerate(v):
                for kk, vv in vd.items():
                    if kk == "vmcs":
                        vv = dict(vv)
                        out[f"vcpus/{i}/msr_bitmap"] = _pickled_bitmap(vv.pop("msr_bitmap"))
                    out[f"vcpus/{i}/{kk}"] = pickle.dumps(vv, 5)
        else:
            out[k] = pickle.dumps(v, 5)
    return out


_PICKLED: dict[int, tuple[Any, bytes]] = {}


def _pickled_bitmap(pairs: Any) -> bytes:
    """The MSR bitmap's pairs pickled, once per list (Vmcs.state gives the same list
    while the bitmap is the same set)."""
    hit = _PICKLED.get(id(pairs))
    if hit is None or hit[0] is not pairs:
        if len(_PICKLED) > 64:
            _PICKLED.clear()
        hit = _PICKLED[id(pairs)] = (pairs, _bitmap_bytes(pairs))
        if len(_BITMAPS) > 64:
            _BITMAPS.clear()
        _BITMAPS[id(hit[1])] = (hit[1], pairs)  # unpickled: the very list (_join)
    return hit[1]


def _bitmap_bytes(pairs: list[list[Any]] | None) -> bytes:
    """The pairs as 64-bit ints (msr << 1 | is_write) after a b"Q": a fifth of pickling
    them as lists (None is pickled: its first byte is pickle's PROTO, never Q)."""
    if pairs is None:
        return pickle.dumps(None, 5)
    return b"Q" + array("Q", [m << 1 | w for m, w in pairs]).tobytes()


def _bitmap_pairs(b: bytes) -> list[list[Any]] | None:
    if b[:1] != b"Q":
        return pickle.loads(b)
    return [[x >> 1, bool(x & 1)] for x in array("Q", b[1:])]


# The MSR bitmaps as unpickled from a part (the same object each time, which
# Vmcs.load_state recognises): only read, never changed.
_BITMAPS: dict[int, tuple[bytes, Any]] = {}


def _join(parts: dict[str, bytes]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    vcpus: dict[int, dict[str, Any]] = {}
    bitmaps: dict[int, Any] = {}
    for k, b in parts.items():
        if k.startswith("vcpus/"):
            _, i, kk = k.split("/", 2)
            if kk == "msr_bitmap":
                hit = _BITMAPS.get(id(b))
                if hit is None or hit[0] is not b:
                    if len(_BITMAPS) > 64:
                        _BITMAPS.clear()
                    hit = _BITMAPS[id(b)] = (b, _bitmap_pairs(b))
                bitmaps[int(i)] = hit[1]
            else:
                vcpus.setdefault(int(i), {})[kk] = pickle.loads(b)
        else:
            d[k] = pickle.loads(b)
    for i, mb in bitmaps.items():
        vcpus[i]["vmcs"]["msr_bitmap"] = mb
    d["vcpus"] = [vcpus[i] for i in sorted(vcpus)]
    return d


class History:
    """The run so far, per position: the batch of each step, the virtual time, the guest
    instructions and the event counter after it, where each kvm_exit and
    kvm_userspace_exit came; checkpoints; the disk's undo log; COM1's whole output."""

    def __init__(self, session: Session):
        self.s = session
        self._events = session.events
        self.on_replay_event = None  # reverse_continue's breakpoint watch
        self._digest_events = False
        self._unlisten_rest: Callable[[], None] | None = None
        self.digest = 0
        self._nev_base = 0
        self._clear()
        # Every event of HISTORY_KINDS is numbered and counted (nev) for the whole life of
        # the session; only the exits are built and heard for their positions.
        self._uncount = session.events.count(HISTORY_KINDS)
        self._unlisten = session.events.subscribe(self._on_event, EXIT_KINDS,
                                                  lines=self._exit_fire)

    def unsubscribe(self) -> None:
        self._unlisten()
        if self._unlisten_rest is not None:
            self._unlisten_rest()
            self._unlisten_rest = None
        self._uncount()

    @property
    def nev(self) -> int:
        """Events of HISTORY_KINDS so far (step_event's events)."""
        return self._events.counted - self._nev_base

    @nev.setter
    def nev(self, value: int) -> None:
        self._nev_base = self._events.counted - value

    @property
    def digest_events(self) -> bool:
        """Tests: fold every event of HISTORY_KINDS into `digest` (they are all heard)."""
        return self._digest_events

    @digest_events.setter
    def digest_events(self, on: bool) -> None:
        if on and self._unlisten_rest is None:
            self._unlisten_rest = self._events.subscribe(
                self._on_event, [k for k in HISTORY_KINDS if k not in EXIT_KINDS])
        elif not on and self._unlisten_rest is not None:
            self._unlisten_rest()
            self._unlisten_rest = None
        self._digest_events = on

    def listen_replay(self) -> None:
        """While replaying (the front end's listeners muted, the counts kept): hear every
        event when the digest or reverse_continue's watch needs them."""
        if self._digest_events or self.on_replay_event is not None:
            self._events.hear_only(self._on_event, HISTORY_KINDS)

    def _clear(self) -> None:
        self.replaying = False  # steps the record holds already: nothing new is recorded
        self.muted = False  # ... and the front end saw their events and output already
        self.pos = 0
        self.nev = 0
        # Per position: nev after it, the batch, the virtual time, the instructions, the
        # event counter. Emptied in place: the VM's recorder holds their appends.
        if not hasattr(self, "time"):
            self.evc, self.batch, self.time, self.instr, self.seq = (
                array("q", [0]) for _ in range(5))
        else:
            for a in (self.evc, self.batch, self.time, self.instr, self.seq):
                a[:] = array("q", [0])
        self.exit_pos = array("q")
        self.exit_time = array("q")
        self.exit_reason: list[str] = []
        self.uexit_pos = array("q")
        self.uexit_time = array("q")
        self.edits: dict[int, list[tuple[str, tuple]]] = {}  # writes by a front end
        self.undo: list[tuple[int, int, bytes, int]] = []  # (step, offset, old, old length)
        self.undo_bytes = 0
        self.serial_all = bytearray()  # COM1's output from its byte serial_base on
        self.serial_base = 0
        self.checkpoints: list[Checkpoint] = []
        self.bytes = 0  # what the checkpoints hold (Checkpoint.size)
        self.thinned = 0
        self._prev: mmap.mmap | None = None  # RAM as the newest checkpoint has it
        self._prev_ck: Checkpoint | None = None
        # The write log (PhysicalMemory.log_writes): RAM was `pages` when the memories
        # started logging; None when it cannot say what changed (never started).
        self._log: tuple[tuple[bytes, ...], tuple[PhysicalMemory, ...]] | None = None
        self._ck_work = 0
        self._ck_pos = 0
        self._gap_work = CHECKPOINT_WORK  # (set for the RAM's size by _set_gaps)
        self._gap_steps = CHECKPOINT_STEPS

    def _set_gaps(self) -> None:
        """The checkpoints' spacing for the machine's RAM (CHECKPOINT_WORK_PER_PAGE)."""
        pages = len(self.s.machine.ram) // PAGE
        self._gap_work = max(CHECKPOINT_WORK, CHECKPOINT_WORK_PER_PAGE * pages)
        self._gap_steps = max(CHECKPOINT_STEPS, self._gap_work // CHECKPOINT_WORK_PER_STEP)

    # -- recording ---------------------------------------------------------------------------
    @property
    def last(self) -> int:
        """The latest position recorded (beyond `pos` after going back)."""
        return len(self.time) - 1

    def attach(self) -> None:
        """The VM is built: position 0 and the first checkpoint (a fresh build)."""
        s = self.s
        ev = s.events
        self._set_gaps()
        self.time[0], self.seq[0], self.evc[0] = s.vm.sched.now, ev.seq, self.nev
        pages = self._built_pages(s.machine)
        ck = Checkpoint(0, 0, None, tuple(pages), {"events": (ev.seq, ev.time, ev.thread),
                                            "digest": self.digest, "serial": (0, 0)})
        ck.new_pages = {i: p for i, p in enumerate(pages) if p is not ZERO_PAGE}
        self.checkpoints.append(ck)
        self._log_writes(s.machine, ck.pages)
        self.bytes += ck.size()

    def reset(self) -> None:
        """The session's state was replaced (Session.from_state, a snapshot loaded): the
        history starts again there, its first checkpoint that state."""
        s = self.s
        self._clear()
        self._set_gaps()
        self.time[0], self.seq[0], self.instr[0] = s.vm.sched.now, s.events.seq, s.instructions
        self.serial_base = s.serial_total - len(s.serial)
        self.serial_all = bytearray(s.serial)
        self.checkpoints.append(Checkpoint(0, 0, {}, (ZERO_PAGE,) * (len(s.machine.ram) // PAGE),
                                           {}))
        self._checkpoint(s._work())
        del self.checkpoints[0]
        self._ck_pos = 0

    def wire(self, machine: Machine, vm) -> None:
        vm.after_step = self._recorder(vm)
        vm.records_passes = True  # (a step passed in place is a position as any other)
        blk = machine.blk
        if blk is not None:
            write = blk.pwrite

            def pwrite(offset: int, data: bytes) -> int:
                if not self.replaying:
                    self._fork()
                old = os.pread(blk.fd, len(data), offset) if blk.fd is not None else b""
                self.undo.append((self.pos + 1, offset, old, blk.length))
                self.undo_bytes += len(old) + 64
                return write(offset, data)
            blk.pwrite = pwrite

    def _fork(self) -> None:
        """The run goes on from a point it had gone back to: the old future is gone."""
        if self.pos >= self.last:
            return
        p = self.pos
        for a in (self.batch, self.time, self.instr, self.seq, self.evc):
            del a[p + 1:]
        n = bisect.bisect_right(self.exit_pos, p)
        del self.exit_pos[n:], self.exit_time[n:], self.exit_reason[n:]
        n = bisect.bisect_right(self.uexit_pos, p)
        del self.uexit_pos[n:], self.uexit_time[n:]
        for k in [k for k in self.edits if k > p]:
            del self.edits[k]
        while self.checkpoints[-1].pos > p:
            self._drop(len(self.checkpoints) - 1)
        del self.serial_all[self.s.serial_total - self.serial_base:]
        ck = self.checkpoints[-1]
        self._ck_work, self._ck_pos = ck.work, ck.pos

    def _on_event(self, ev: Event) -> None:
        if self._digest_events:
            self.digest = zlib.crc32(repr((ev.seq, ev.time, ev.kind, ev.source,
                                           sorted(ev.fields.items()))).encode(), self.digest)
        if self.replaying:
            if self.on_replay_event is not None:
                self.on_replay_event(ev)
            return
        if ev.kind == "kvm_exit":
            if self.pos < len(self.time) - 1:  # (_fork's test: an exit or two per exit)
                self._fork()
            self.exit_pos.append(self.pos + 1)
            self.exit_time.append(ev.time)
            self.exit_reason.append(str(ev.get("exit_reason")))
        elif ev.kind == "kvm_userspace_exit":
            if self.pos < len(self.time) - 1:
                self._fork()
            self.uexit_pos.append(self.pos + 1)
            self.uexit_time.append(ev.time)

    def _exit_fire(self, stream: EventStream, kind: str, layer: str, names: tuple[str, ...],
                   counted: bool) -> Callable[..., None] | None:
        """Where the history alone hears an exit kind (EventStream.subscribe's `lines`):
        its tracepoint numbers the event as emit would and records the position from the
        values, with no Event built (two a VM exit to userspace: 3% of it). While replaying
        or digesting, the Event is built for _on_event."""
        if kind == "kvm_exit":
            if "exit_reason" not in names:
                return None
            at = names.index("exit_reason")
        elif kind != "kvm_userspace_exit":
            return None
        event = event_maker(kind, layer, names)
        on_event = self._on_event

        def fire(source: str, *values: Any) -> None:
            if counted:
                stream.counted += 1
            stream.seq = seq = stream.seq + 1
            if self.replaying or self._digest_events:
                on_event(event(seq, stream.time, source, values))
                return
            if self.pos < len(self.time) - 1:
                self._fork()
            if kind == "kvm_exit":
                self.exit_pos.append(self.pos + 1)
                self.exit_time.append(stream.time)
                self.exit_reason.append(str(values[at]))
            else:
                self.uexit_pos.append(self.pos + 1)
                self.uexit_time.append(stream.time)

        return fire

    def serial_written(self, data: bytes) -> None:
        if not self.replaying:
            self._fork()
            # (serial_total already counts data)
            del self.serial_all[self.s.serial_total - len(data) - self.serial_base:]
            self.serial_all += data

    def edit(self, kind: str, args: tuple) -> None:
        """A front end changed the guest's state between two steps (registers, memory):
        replays do it again at the same position."""
        if self.replaying:
            return
        self._fork()
        self.edits.setdefault(self.pos, []).append((kind, args))

    def _recorder(self, vm: Any) -> Callable[[], None]:
        """`vm`'s after_step hook (wire): where each step ended is a position (its batch,
        virtual time, instructions, event counter and count), with a checkpoint where the
        last is far enough behind; replaying, the step is checked against the record. What
        it reads is looked up here, once per VM: six steps an exit to userspace."""
        s = self.s
        vcpu, now, ev = vm.cpus[0].vcpu, vm.sched.time_now, self._events
        cpus = [c.vcpu.cpu for c in vm.cpus if hasattr(c.vcpu, "cpu")]  # (Session.cpus)
        batch, time, instr_, seq, evc = (self.batch.append, self.time.append,
                                         self.instr.append, self.seq.append, self.evc.append)
        times = self.time
        h = self

        def after_step() -> None:
            if h.replaying:
                h._replayed_step(now())
                return
            pos = h.pos + 1
            if pos < len(times):
                h._fork()
            h.pos = pos
            batch(vcpu.BATCH)
            time(now())
            # Session.instructions and Session._work in one pass over the CPUs.
            instr = deliveries = 0
            for c in cpus:
                instr += c.icount
                deliveries += c.deliveries
            instr_(instr)
            seq(ev.seq)
            evc(ev.counted - h._nev_base)  # (nev)
            work = instr + deliveries
            if ((work - h._ck_work >= h._gap_work or pos - h._ck_pos >= h._gap_steps)
                    and s.outcome is None and vm.at_rebuildable_point()):
                h._checkpoint(work)

        return after_step

    def _replayed_step(self, now: int) -> None:
        self.pos += 1
        if self.time[self.pos] != now or self.evc[self.pos] != self.nev:
            raise RuntimeError(f"replay diverged at step {self.pos}: virtual time "
                               f"{now}, recorded {self.time[self.pos]}")
        if self.pos in self.edits:
            self._apply_edits(self.pos)

    # -- checkpoints ---------------------------------------------------------------------------
    def _built_pages(self, machine: Machine) -> list[bytes]:
        """RAM as the build left it, page by page. A fresh machine's RAM is zero and its
        memory logged the build's writes (Session._build_vm, log_writes): only those
        pages are read. Reading every page of a fresh mapping faults each in (~20 ms for
        16 MiB, most of a session's start-up with the history)."""
        written = machine.mem.written
        if written is None:
            return self._all_pages(machine)
        ram = machine.ram
        out = [ZERO_PAGE] * (len(ram) // PAGE)
        for i in written:
            if i < len(out):
                p = ram[i * PAGE:(i + 1) * PAGE]
                out[i] = ZERO_PAGE if p == ZERO_PAGE else p
        if CHECK_WRITE_LOG and out != self._all_pages(machine):
            raise AssertionError("the build wrote RAM past its memory's write log")
        return out

    def _all_pages(self, machine: Machine) -> list[bytes]:
        ram = machine.ram
        out = []
        for a in range(0, len(ram), PAGE):
            p = ram[a:a + PAGE]
            out.append(ZERO_PAGE if p == ZERO_PAGE else p)
        return out

    def _ram_of(self, base: Checkpoint) -> mmap.mmap:
        """`_prev` made a copy of base's RAM: from the copy it was, only the pages whose
        objects differ are written (unchanged pages are the same bytes objects)."""
        n = len(base.pages) * PAGE
        if self._prev is None or len(self._prev) != n or self._prev_ck is None:
            # Anonymous memory reads as zeros and takes host pages only where written:
            # base's pages that are not all zero are copied in, the rest never touched
            # (the diff compares chunks that are zero in base with a zero buffer).
            prev = self._prev = mmap.mmap(-1, n)
            for i, p in enumerate(base.pages):
                if p is not ZERO_PAGE:
                    prev[i * PAGE:(i + 1) * PAGE] = p
        elif self._prev_ck is not base:
            prev = self._prev
            for i, (x, y) in enumerate(zip(self._prev_ck.pages, base.pages, strict=True)):
                if x is not y:
                    prev[i * PAGE:(i + 1) * PAGE] = y
        self._prev_ck = base
        return self._prev

    def _memories(self, machine: Machine) -> tuple[PhysicalMemory, ...]:
        """The objects that write the machine's RAM: QEMU's (DMA, loading) and kvm.ko's
        (the vCPUs'), each with its own frame kinds."""
        mems = [machine.mem]
        for c in self.s.cpus:
            if all(c.mem is not m for m in mems):
                mems.append(c.mem)
        return tuple(mems)

    def _log_writes(self, machine: Machine, pages: tuple[bytes, ...]) -> None:
        """RAM is `pages` now: note the frames written from here on."""
        mems = self._memories(machine)
        for m in mems:
            m.log_writes()
        self._log = (pages, mems)

    def _logged(self, machine: Machine, base: Checkpoint) -> set[int] | None:
        """The pages that may differ from `base`'s (a superset), from the write log: the
        frames written since it started, and the pages whose objects differ between base
        and RAM as the log started (the same object is the same bytes). None when the
        log cannot tell (RAM was loaded whole, or these memories never started one)."""
        log = self._log
        if log is None:
            return None
        pages, mems = log
        now = self._memories(machine)
        if len(now) != len(mems) or any(a is not b for a, b in zip(now, mems, strict=True)):
            return None
        out: set[int] = set()
        for m in mems:
            if m.written is None:
                return None
            out |= m.written
        if pages is not base.pages:
            out.update(i for i, (x, y) in enumerate(zip(pages, base.pages, strict=True))
                       if x is not y)
        return out

    def _changed_pages(self, machine: Machine, base: Checkpoint,
                       maybe: set[int] | None = None) -> list[int]:
        """Indices of the pages that differ from `base`'s (among `maybe` where given)."""
        ram = machine.ram
        prev = self._ram_of(base)
        if maybe is not None:
            out = [i for i in sorted(maybe)
                   if ram[i * PAGE:(i + 1) * PAGE] != prev[i * PAGE:(i + 1) * PAGE]]
            if CHECK_WRITE_LOG:
                full = self._changed_pages(machine, base)
                if out != full:
                    raise AssertionError(f"the write log missed pages {sorted(set(full) - set(out))}")
            return out
        if _MEMCMP is None:
            return [i for i, a in enumerate(range(0, len(ram), PAGE))
                    if ram[a:a + PAGE] != prev[a:a + PAGE]]
        ra = ctypes.addressof(ctypes.c_char.from_buffer(ram))
        pa = ctypes.addressof(ctypes.c_char.from_buffer(prev))
        za = ctypes.addressof(ctypes.c_char.from_buffer(_ZERO_BLOCK_BUF))
        pages = base.pages
        memcmp = _MEMCMP
        out: list[int] = []

        def scan(lo: int, hi: int, level: int, zero: bool) -> None:
            size = CHUNKS[level]
            for b in range(lo, hi, size):
                m = min(size, hi - b)
                if level == 0:
                    # A chunk all zero in base is compared with a zero buffer that stays
                    # in the cache: half the memory traffic of comparing with the copy.
                    i = b // PAGE
                    k = m // PAGE
                    zero = pages[i:i + k].count(ZERO_PAGE) == k
                if memcmp(ra + b, za if zero else pa + b, m):
                    if size == PAGE:
                        out.append(b // PAGE)
                    else:
                        scan(b, b + m, level + 1, zero)

        scan(0, len(ram), 0, False)
        return out

    def _checkpoint(self, work: int, at: int | None = None) -> None:
        """A checkpoint of the current state: the newest (at None), or inserted at index
        `at` (a replay's, between two older ones)."""
        s = self.s
        vm = s.vm
        base = self.checkpoints[-1 if at is None else at - 1]
        parts = _split(vm.save_state(ram=False))
        new_parts = {}
        if base.parts is not None:
            for k, b in parts.items():
                old = base.parts.get(k)
                if old is not None and old == b:
                    parts[k] = old
                else:
                    new_parts[k] = b
        else:
            new_parts = dict(parts)
        changed = self._changed_pages(s.machine, base, self._logged(s.machine, base))
        pages = list(base.pages)
        ram = s.machine.ram
        new_pages = {}
        for i in changed:
            a = i * PAGE
            p = ram[a:a + PAGE]
            self._prev[a:a + PAGE] = p
            pages[i] = new_pages[i] = ZERO_PAGE if p == ZERO_PAGE else p
        ev = s.events
        extra = {"events": (ev.seq, ev.time, ev.thread), "digest": self.digest,
                 "serial": (s.serial_total - len(s.serial), s.serial_total)}
        # A tuple of bytes: the garbage collector stops visiting it after its first look.
        ck = Checkpoint(self.pos, work, parts, tuple(pages), extra, new_pages, new_parts)
        self._prev_ck = ck
        self._log_writes(s.machine, ck.pages)
        self.bytes += ck.size()
        if at is None:
            self.checkpoints.append(ck)
            self._ck_work, self._ck_pos = work, self.pos
        else:
            self.checkpoints.insert(at, ck)
        if self.memory() > BUDGET:
            self._thin()

    def memory(self) -> int:
        """Bytes the history holds by its own count: checkpoints, the disk's undo log,
        COM1's output, the per-step arrays, and the copy of RAM the diff compares with."""
        arrays = 8 * (len(self.time) * 5 + len(self.exit_pos) * 3 + len(self.uexit_pos) * 2)
        return (self.bytes + self.undo_bytes + len(self.serial_all) + arrays
                + (len(self._prev) if self._prev is not None else 0))

    def _drop(self, k: int) -> None:
        """Forget checkpoint k (not the first); the next one takes over what they share."""
        ck = self.checkpoints.pop(k)
        self.bytes -= ck.size()
        later = self.checkpoints[k:]
        # What it brought and a later one still uses is now that one's to count.
        for i, p in ck.new_pages.items():
            for nxt in later:
                if nxt.pages[i] is p:
                    self.bytes += len(p)
                    nxt.new_pages[i] = p
                    break
        for key, b in ck.new_parts.items():
            for nxt in later:
                if nxt.parts is not None and nxt.parts.get(key) is b:
                    self.bytes += len(b)
                    nxt.new_parts[key] = b
                    break

    def _thin(self) -> None:
        """Over the budget: drop the checkpoint whose going costs least, the gap it leaves
        weighed against how far back it is (old checkpoints thin out, so the replay
        distance stays short near the present and grows with the age of the target)."""
        while self.memory() > BUDGET * 0.9 and len(self.checkpoints) > NEAR + 2:
            cks = self.checkpoints
            now = cks[-1].work
            best, best_cost = None, None
            for k in range(1, len(cks) - NEAR):
                gap = cks[k + 1].work - cks[k - 1].work
                cost = gap / max(1, now - cks[k].work)
                if best_cost is None or cost < best_cost:
                    best, best_cost = k, cost
            self._drop(best)
            self.thinned += 1

    # -- going back ----------------------------------------------------------------------------
    def goto(self, p: int) -> None:
        """Make the session's state the one the run had at position p (0 <= p <= last)."""
        s = self.s
        if not 0 <= p <= self.last:
            raise ValueError(f"position {p} is not in the history (0 to {self.last})")
        if p == self.pos and s.outcome is None:
            return
        i = bisect.bisect_right([c.pos for c in self.checkpoints], p) - 1
        ck = self.checkpoints[i]
        if s.outcome is not None or not ck.pos <= self.pos <= p:
            self._restore(ck)
        self._replay_to(p, leave_checkpoints=True)

    def prepare_back(self) -> bool:
        """For a front end with nothing to do (its user looks at a paused or finished run):
        leave the checkpoints that a step back from the present would leave on its way,
        so that the first one replays at most REPLAY_WINDOW steps, not up to a whole
        interval. The present is replayed from the last checkpoint as any step back
        replays (every step checked); a finished run is then finished again as it was
        (the finished state comes after its last step, and the run is deterministic).
        The state is the present's again. Only at the end of the history, and not inside
        a step paused at an event. True if it replayed."""
        s = self.s
        p = self.last
        if self.pos != p or self.replaying or s._partial is not None:
            return False
        ck = self.checkpoints[bisect.bisect_right([c.pos for c in self.checkpoints], p) - 1]
        if p - ck.pos <= REPLAY_WINDOW:
            return False  # (what a step back from here replays at most: prepared)
        outcome = s.outcome
        self._restore(ck)
        self._replay_to(p, leave_checkpoints=True)
        if outcome is not None:
            self._finish_again(outcome)
        return True

    def _finish_again(self, outcome) -> None:
        """After a replay to the last step of a finished run: finish it as it finished
        (Session._finish_vm), the front end's listeners and output muted, every step it
        takes checked against the recorded ones."""
        s = self.s
        if not (s.machine.stop_requested or s.vm.budget_ended()):
            # Nothing could run any more (halted for good): the run's last recorded step
            # found that, and there is nothing after it. Finishing again would take that
            # step once more.
            if not outcome.halted:
                raise RuntimeError(f"the replayed run can go on where it had finished ({outcome})")
            s.outcome = outcome
            return
        ev = s.events
        saved = ev.mute(keep_counted=True)
        self.listen_replay()
        self.replaying = self.muted = True
        try:
            s._finish_vm()
        finally:
            self.replaying = self.muted = False
            ev.unmute(saved)
        if s.outcome != outcome or self.pos != self.last:
            raise RuntimeError(f"finishing the replayed run again diverged: {s.outcome}, "
                               f"recorded {outcome}")

    def _restore(self, ck: Checkpoint) -> None:
        s = self.s
        old = s.machine
        blk = old.blk
        while self.undo and self.undo[-1][0] > ck.pos:
            _, offset, data, length = self.undo.pop()
            self.undo_bytes -= len(data) + 64
            if blk is not None and blk.fd is not None:
                os.pwrite(blk.fd, data, offset)
                if length < blk.length:
                    os.ftruncate(blk.fd, length)
                    blk.length = length
        # On the old machine's RAM mapping (its pages are mapped in already): only the
        # pages that differ from the checkpoint's are written. Which may differ: what the
        # old machine's write log noted, and what the rebuild wrote (the guest image).
        maybe = self._logged(old, ck)
        machine, vm = s._build_vm(quiet=True, ram=old.ram, log_writes=maybe is not None)
        if maybe is not None:
            maybe |= machine.mem.written  # type: ignore[operator]
        ram = machine.ram
        want = self._ram_of(ck)
        for i in self._changed_pages(machine, ck, maybe):
            ram[i * PAGE:(i + 1) * PAGE] = want[i * PAGE:(i + 1) * PAGE]
        ev = s.events
        if ck.parts is None:
            ev.seq, ev.time, ev.thread = ck.extra["events"]
        else:
            d = _join(ck.parts)
            d["ram"] = None
            vm.load_state(d)
            for c in vm.cpus:  # the batch of the step it was taken in is no state
                with suppress(AttributeError):  # (not __dict__.pop: session._own says why)
                    del c.vcpu.BATCH
        old.close()
        start, total = ck.extra["serial"]
        s.serial[:] = self.serial_all[start - self.serial_base:total - self.serial_base]
        s.serial_total = total
        self.digest = ck.extra["digest"]
        self.pos = ck.pos
        self.nev = self.evc[ck.pos]
        s.outcome = None
        self._install_vm(machine, vm)
        self._log_writes(machine, ck.pages)
        if ck.pos in self.edits:
            self._apply_edits(ck.pos)

    def _install_vm(self, machine: Machine, vm) -> None:
        s = self.s
        s.machine, s.vm = machine, vm
        s.events._changed()  # the new models read which kinds are wanted

    def _apply_edits(self, p: int) -> None:
        was, self.replaying = self.replaying, True
        try:
            for kind, args in self.edits.get(p, ()):
                getattr(self.s, kind)(*args)
        finally:
            self.replaying = was

    def _replay_to(self, p: int, watch=None, leave_checkpoints: bool = False) -> None:
        """Step from the current position to p as the run did: the same batches, the front
        end's listeners and serial output muted (the history's own still count). With
        leave_checkpoints, checkpoints are left on the way near p (REPLAY_WINDOW)."""
        if self.pos == p:
            return
        s = self.s
        positions = [c.pos for c in self.checkpoints]
        k = bisect.bisect_right(positions, self.pos)  # where a new one would go
        last_pos = positions[k - 1]
        last_work = self.checkpoints[k - 1].work
        budget = REPLAY_CHECKPOINTS
        far = sorted(p - d for d in REPLAY_FAR if p - d > self.pos) if leave_checkpoints else []
        # Up to `acts` (where this loop may leave a checkpoint, or watch every step), a
        # vCPU's steps pass in place (VirtualMachine.passing) as the recorded run's did:
        # the next goes on in its generator with its recorded batch, and the history
        # counts it as any other (its recorder, as on_pass). With every step handed back
        # to this loop, a replay took ~8% longer.
        window = p - REPLAY_WINDOW if leave_checkpoints else p
        acts = [self.pos if watch is not None else min([window, *far[:1]])]  # (as far shrinks)
        batch, edits = self.batch, self.edits
        ev = s.events
        saved = ev.mute(keep_counted=True)
        self.listen_replay()
        self.replaying = self.muted = True
        vcpus = [c.vcpu for c in s.vm.cpus]

        def hand_back() -> object | None:
            """Asked as a step ends (its position is pos + 1, counted next): None lets
            the one after it pass in place."""
            nxt = self.pos + 2
            if nxt >= acts[0] or nxt - 1 in edits:
                return True
            b = batch[nxt]
            for v in vcpus:
                v.BATCH = b
            return None

        try:
            with s.vm.passing(hand_back):
                while self.pos < p:
                    b = batch[self.pos + 1]
                    for v in vcpus:
                        v.BATCH = b
                    s.vm.step()
                    if watch is not None:
                        watch()
                    while far and self.pos >= far[0]:
                        j = bisect.bisect_right(positions, self.pos)
                        if self.pos - positions[j - 1] < (p - far[0]) // 2:
                            far.pop(0)  # the last checkpoint passed is close enough
                            continue
                        if not s.vm.at_rebuildable_point():
                            break  # (the next step may be)
                        work = s._work()
                        self._checkpoint(work, at=j)
                        positions = [c.pos for c in self.checkpoints]  # (thinned, maybe)
                        k = bisect.bisect_right(positions, self.pos)
                        last_pos, last_work = self.pos, work
                        far.pop(0)
                    if watch is None:
                        acts[0] = min([window, *far[:1]])
                    if leave_checkpoints and budget and p - self.pos <= REPLAY_WINDOW:
                        if k < len(positions) and positions[k] <= self.pos:
                            last_pos, last_work = positions[k], self.checkpoints[k].work
                            k += 1
                            continue
                        work = s._work()
                        if ((self.pos - last_pos >= REPLAY_STEPS or work - last_work >= REPLAY_WORK)
                                and s.vm.at_rebuildable_point()):
                            self._checkpoint(work, at=k)
                            budget -= 1
                            positions = [c.pos for c in self.checkpoints]  # (thinned, maybe)
                            k = bisect.bisect_right(positions, self.pos)
                            last_pos, last_work = self.pos, work
        finally:
            self.replaying = self.muted = False
            for v in vcpus:
                with suppress(AttributeError):  # (not __dict__.pop: session._own says why)
                    del v.BATCH
            ev.unmute(saved)

    # -- where to go ---------------------------------------------------------------------------
    def _limit(self) -> int:
        """The latest position strictly before now (now itself when the run finished:
        the finished state comes after the last recorded step)."""
        return self.pos if self.s.outcome is not None else self.pos - 1

    def mark_before(self, what: str, limit: int | None = None) -> int:
        """The latest position before now (at most `limit` if given) right after a step
        that retired an instruction ("instruction"), emitted an event ("event"), a kvm_exit
        ("vmexit") or a kvm_userspace_exit ("userspace_exit"); 0 (the start) if none."""
        if limit is None:
            limit = self._limit()
        if limit < 0:
            return 0
        if what in ("vmexit", "userspace_exit"):
            pos = self.exit_pos if what == "vmexit" else self.uexit_pos
            k = bisect.bisect_right(pos, limit)
            return pos[k - 1] if k else 0
        values = self.instr if what == "instruction" else self.evc
        for p in range(limit, 0, -1):
            if values[p] != values[p - 1]:
                return p
        return 0

    def event_at(self, n: int) -> tuple[int, int]:
        """Where the run stood right after its n-th event (of HISTORY_KINDS, counted from
        the history's start): (position, k), the k-th event of the step after that
        position (step_event pauses there); (0, 0) for the events before the first step
        (those of the VM's build)."""
        if n <= self.evc[0]:
            return 0, 0
        q = bisect.bisect_left(self.evc, n)  # the step that emitted it
        if q > self.last:
            raise ValueError(f"event {n} is not in the history")
        return q - 1, n - self.evc[q - 1]

    def position_at_time(self, t: int) -> int:
        """The last recorded position at or before virtual time t (0 before the start)."""
        return max(0, bisect.bisect_right(self.time, t) - 1)

    def previous_hit(self, bp) -> tuple[int, str] | None:
        """The latest position before now where one of the breakpoints `bp` (Session's
        Breakpoints) was hit, and its name as run_for gives it; None if there is none.
        Each checkpoint interval is replayed watching, the newest first."""
        end = self._limit()
        j = bisect.bisect_left([c.pos for c in self.checkpoints], end) - 1
        while j >= 0 and end >= 1:
            ck = self.checkpoints[j]
            seg_end = min(end, self.checkpoints[j + 1].pos if j + 1 < len(self.checkpoints)
                          else end)
            hits = [h for h in self._hits(ck, seg_end, bp) if h[0] <= seg_end]
            if hits:
                return max(hits, key=lambda h: h[0])
            end = ck.pos
            j -= 1
        return None

    def _hits(self, ck: Checkpoint, seg_end: int, bp) -> list[tuple[int, str]]:
        """Replay from checkpoint ck to seg_end, noting where breakpoints are hit."""
        s = self.s
        self.goto(ck.pos)
        hits: list[tuple[int, str]] = []

        def on_event(ev: Event) -> None:
            why = (bp.matches_exit(ev) if ev.kind == "kvm_exit" else "") or bp.matches_event(ev)
            if why:
                hits.append((self.pos + 1, why))

        c = s.cpus[0]
        last = [(c.eip, c.icount)]

        def watch() -> None:
            c = s.cpus[0]
            now = (c.eip, c.icount)
            if now[0] in bp.addresses and now != last[0]:
                hits.append((self.pos, f"address {now[0]:#x}"))
            last[0] = now

        self.on_replay_event = on_event
        try:
            self._replay_to(seg_end, watch if bp.addresses else None)
        finally:
            self.on_replay_event = None
        return hits
