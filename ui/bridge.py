"""SessionBridge: the one QObject between a vmsim Session and the widgets.

User actions call its methods, which call the session; what the session reports comes
back as Qt signals. Two modes, as in Ripes:

- stepping: the bridge subscribes to every event kind (page walks included), so each
  step's events reach the diagram, the event log and the page-table panel;
- running: fine-grained subscriptions are dropped; a QTimer advances the session in
  time-boxed batches (`Session.run_for`) and the views repaint from state at a bounded
  rate. Only coarse events (VM exits and entries, exits to userspace, device accesses,
  interrupts, kicks, the main loop and the BQL), a few per exit, are still collected for
  statistics and logs.

The machine's vCPUs (`smp`) and irqchip mode are chosen with `set_machine`, and its disk
image with `set_disk`; each starts the guest again, as `vmsim run --smp N --irqchip MODE
--disk FILE[,readonly]`.

Steps backwards (issue 12) go through the session too (`Session.step_back_*`,
`reverse_continue`, `seek_time`). When the session went back it calls `on_rewind` with the
seq of the last event that still happened; the bridge then drops the later events, the
later serial output and the later exits from its statistics, and emits `rewound` so each
view drops what it kept of them. Events a replay emits again (the same seq) are not taken
twice. The session's machine, VM and CPUs may be new objects after a step back: nothing
here or in the views keeps them.
"""

from __future__ import annotations

import bisect
import gc
import operator
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import islice

from PySide6.QtCore import QObject, QTimer, Signal

from ui import text as T
from ui.i18n import tr
from ui.text import event_breakpoint_name
from vmsim.asm.image import GuestImage
from vmsim.events import CATALOGUE, Event, EventStream
from vmsim.history import HISTORY_KINDS
from vmsim.kvm.kvm_main import SimVcpu
from vmsim.session import Outcome, Session
from vmsim.stats import ExitStats, StatsRecord, stats_record
from vmsim.vmm.machine import MachineConfig

FINE_KINDS = list(CATALOGUE)  # stepping: everything, walks and TLB included
# ... but not where the session can step back: an event gets its number (seq) only if
# someone listens to its kind, and the per-access MMU kinds (tlb_hit, tlb_miss, walk_step,
# which also switch on the MMU's tracing and with it ept_step and tlb_flush) are not among
# those a step back's replay listens to (vmsim.history.HISTORY_KINDS). Listening to them
# would number the forward run's events apart from the replayed ones, and the seq that
# Session.on_rewind gives would not name the same event.
FINE_KINDS_REPLAYABLE = list(HISTORY_KINDS)
COARSE_KINDS = ["kvm_exit", "kvm_entry", "kvm_userspace_exit", "kvm_run_exit", "kvm_vcpu_ioctl",
                "bql", "device_access", "io_unclaimed", "exception", "triple_fault",
                "unsupported", "not_in_subset", "vmentry_failed", "thread",
                # issue 10: interrupts on their way, kicks, the main loop (a few per tick)
                "kvm_inj_virq", "kvm_set_irq", "qemu_set_irq", "pic_interrupt", "kvm_apic_ipi",
                "kvm_vcpu_kick", "qemu_cpu_kick", "kvm_vcpu_block", "kvm_vcpu_wakeup",
                "main_loop_wait", "qemu_timer", "qemu_fd_handler",
                # issue 11: a virtio request's kick, disk I/O and completion (a few each)
                "virtio_queue_notify", "virtio_blk_handle_read", "virtio_blk_handle_write",
                "virtio_blk_req_complete", "virtio_notify", "virtio_mmio_write_offset",
                # ... its eventfds and the iothread
                "ioeventfd_write", "irqfd_inject", "aio_poll", "virtio_notify_irqfd"]
# What shows the main loop at work (its box lights).
MAIN_LOOP_KINDS = frozenset({"main_loop_wait", "qemu_timer", "qemu_fd_handler"})
MAIN_LOOP_THREAD = "main-loop"
KIND_OF = operator.attrgetter("kind")  # an event's kind (a C call)
SOURCE_OF = operator.attrgetter("source")
# A repaint shows the main loop as running if it ran this long ago in virtual time (100 us)
# or since the last repaint: it runs for microseconds, a repaint comes every FRAME_MS.
MAIN_LOOP_GLOW = 300_000  # cycles at vmsim.costs.NOMINAL_HZ
FRAME_MS = 33  # repaint at most ~30 times a second while running
# ... and, while running at full speed, only while the GUI thread's time outside the
# simulation since the last repaint (that repaint, Qt painting the views, the events taken)
# is at most PAINT_SHARE of the time since: views that are slow to repaint get fewer frames
# rather than a slower guest (benchmarks/gui_bench.py); at least every FRAME_GAP_MAX.
PAINT_SHARE = 0.1
PAINT_SHARE_QUIET = 0.05  # ... with the window's animation off (issue 15: >= 80% of headless)
FRAME_GAP_MAX = 1.0  # seconds: a repaint at least this often, however slow
# Guest instructions per scheduler step in the window's Session.run_for: as Session.run
# takes them (the vCPU's own BATCH), not run_for's smaller default, so a run in the window
# takes the same steps and history checkpoints as a headless one (a fifth of run_for's
# 4,000-instruction steps' cost on a compute loop: benchmarks/gui_bench.py).
RUN_BATCH = SimVcpu.BATCH
BATCH_S = 0.015  # wall time the simulation may take per timer tick at full speed
# ... with the window's animation off: a longer box, fewer ticks (each costs the event
# loop a turn, run_for its set-up); a pause still waits for one box at most.
BATCH_QUIET_S = 0.03
# Speed slider 0..SPEED_MAX: below FULL_SPEED, one event per tick at a slowing interval
# (slow motion: the diagram animates each one); FULL_SPEED: time-boxed batches.
SPEED_MAX = 10
EVENT_INTERVALS_MS = [900, 600, 400, 250, 150, 90, 50, 25, 10, 0]
# Scheduler steps a single step may take looking for its event (each runs up to
# SimVcpu.BATCH guest instructions): a guest looping with no exit must not hang the window.
STEP_LIMIT = 60
# Exit events between copies of the statistics: a step back counts again up to this many
# (2048 was ~1 ms of each step back in the window); a copy (~1 KB) is ~2% of what the
# records of its 512 events take.
STATS_CHECKPOINT = 512
# A paused window left alone this long has settled: the cycle collector's turn (_settle).
SETTLE_MS = 1000
# ... and after this long, the first step back from where it stands is prepared (_prepare):
# a user who stops a run to look back clicks later than this.
PREPARE_MS = 150
# New objects between two collections of the young generation while the window runs (the
# interpreter's default is 700).
RUN_GC_YOUNG = 10_000


def describe_run_loop() -> str:
    """The run loop's rules in a line (benchmarks print it beside their figures)."""
    return (f"Session.run_for({BATCH_S} s, {BATCH_QUIET_S} s with animation off) per timer tick, "
            f"{RUN_BATCH} guest instructions per scheduler step; a repaint every {FRAME_MS} ms at most, "
            f"once the time outside the simulation since the last is at most {PAINT_SHARE:.0%} "
            f"({PAINT_SHARE_QUIET:.0%} with animation off), at least every {FRAME_GAP_MAX} s")


class StatsHistory:
    """The exit statistics (`vmsim.stats.ExitStats`) as they stood after any event of the
    recorded run: the events ExitStats counts, in seq order (as their StatsRecords), with a
    copy of the statistics every STATS_CHECKPOINT of them. The run's recorded future stays
    after a step back (the session may go forward through it again without emitting its
    events: a seek replays muted); an event that differs from the recorded one at its seq
    (the run took another way) drops that future. `at(seq)` gives the statistics after
    event `seq`, as a forward run had them there.

    The event stream appends to `pending` (a C call, no Python frame per event: a guest
    that exits often emits thousands a second); they are counted in one pass when the
    statistics are read (`at`, at most once per repaint) or `flush`ed."""

    def __init__(self) -> None:
        self.full = ExitStats()  # after every recorded event
        self.seqs: list[int] = []
        self.events: list[StatsRecord] = []
        self.copies: list[ExitStats] = [self.full.copy()]  # before event k * STATS_CHECKPOINT
        self._at: tuple[int, ExitStats] | None = None  # the last at() of the past: (n, stats)
        self.pending: list[Event] = []  # taken, not counted yet (in the order emitted)

    def add(self, ev: Event) -> None:
        self.pending.append(ev)

    def flush(self) -> None:
        """Count the pending events, in order."""
        pending = self.pending
        if not pending:
            return
        evs = pending[:]
        del pending[:]
        seqs = self.seqs
        new = list(map(_SEQ, evs))
        if (not seqs or new[0] > seqs[-1]) and all(map(operator.lt, new, islice(new, 1, None))):
            # All new, in order (a run forward, no replay among them): counted in one
            # pass between two copies of the statistics.
            done = 0
            while done < len(evs):
                room = STATS_CHECKPOINT * len(self.copies) - len(seqs)
                if room == 0:
                    self.copies.append(self.full.copy())
                    continue
                part = evs if done == 0 and room >= len(evs) else evs[done:done + room]
                self.full.count(part, self.events)
                seqs += new[done:done + room] if part is not evs else new
                done += len(part)
            return
        events = self.events
        for ev in evs:
            rec = stats_record(ev)
            if seqs and ev.seq <= seqs[-1]:  # a replay's, or another future
                i = bisect.bisect_left(seqs, ev.seq)
                if seqs[i] == ev.seq and events[i] == rec:
                    continue  # the recorded future happening again
                self._truncate(i)
            if len(seqs) == STATS_CHECKPOINT * len(self.copies):
                self.copies.append(self.full.copy())
            seqs.append(ev.seq)
            events.append(rec)
            self.full.count_record(rec)

    def _truncate(self, n: int) -> None:
        del self.seqs[n:], self.events[n:]
        del self.copies[n // STATS_CHECKPOINT + 1:]
        self.full = self._replay(n)
        self._at = None

    def _replay(self, n: int) -> ExitStats:
        """The statistics after the first n recorded events."""
        k = n // STATS_CHECKPOINT
        stats = self.copies[k].copy()
        for rec in self.events[k * STATS_CHECKPOINT:n]:
            stats.count_record(rec)
        return stats

    def at(self, seq: int) -> ExitStats:
        self.flush()
        n = bisect.bisect_right(self.seqs, seq)
        if n == len(self.seqs):
            return self.full
        if self._at is None or self._at[0] != n:
            self._at = (n, self._replay(n))
        return self._at[1]


_SEQ = operator.attrgetter("seq")  # (Event.__getitem__ reads its fields)


class SessionBridge(QObject):
    stateChanged = Signal()  # repaint views from session state
    # Events since the last delivery (list[Event]). `object`, not `list`: a list signal
    # converts every element to a QVariant and back, ~0.75 us each (a pause after an
    # exits-heavy run hands over thousands); `object` passes the list itself.
    eventsArrived = Signal(object)
    serialOutput = Signal(bytes)
    runningChanged = Signal(bool)
    stopped = Signal(str)  # why a run or a step stopped (breakpoint, finished ...)
    sessionReset = Signal()  # a new Session (reset, re-assembled, opened)
    rewound = Signal(int)  # the session went back: the seq of the last event that still happened
    gdbChanged = Signal(str)  # a debugger drives the session: what to say ("" once it left)
    _gdbStopped = Signal()  # from the stub's thread: the guest stopped (queued to the GUI)
    _gdbEnded = Signal(object)  # from the stub's thread: the stub, once the debugger left
    settled = Signal()  # the paused window settled and the cycle collector had its turn
    prepared = Signal()  # the paused window's first step back was prepared (_prepare)

    def __init__(self, guest: str | GuestImage, backend: str = "sim", paging: str = "ept",
                 parent: QObject | None = None, *, smp: int = 1, irqchip: str = "kernel",
                 disk: str | None = None, disk_readonly: bool = False, ioeventfd: bool = True,
                 coalesced_mmio: bool = True):
        super().__init__(parent)
        self.guest = guest
        self.backend = backend
        self.paging = paging
        self.smp = smp
        self.irqchip = irqchip
        self.disk = disk  # a raw image for virtio-blk (MachineConfig.disk), or None
        self.disk_readonly = disk_readonly
        self.ioeventfd = ioeventfd  # False: QueueNotify is an MMIO exit (--no-ioeventfd)
        self.coalesced_mmio = coalesced_mmio  # the VGA window coalesced (False: --no-coalesced-mmio)
        self.event_breakpoints: set[str] = set()  # Breakpoints.events specs (EVENT_BREAKPOINTS)
        self.break_event: Event | None = None  # the event an event breakpoint stopped at
        self.main_loop_seen = False  # the main loop ran since the last delivery
        self.main_loop_last: int | None = None  # virtual time of its last event
        self.line_breakpoints: set[int] = set()  # source lines (1-based)
        self.address_breakpoints: set[int] = set()
        self.exit_breakpoints: set[str] = set()
        self.port_breakpoints: set[int] = set()
        self.speed = SPEED_MAX
        self.animate = True  # the window animates event paths (View > Animate event paths)
        self.running = False
        self.serial_input = b""
        self._pending: list[Event] = []
        self._raw: list[Event] = []  # events appended as they come while running at full speed
        self._serial: bytearray = bytearray()
        self._unsubscribe: Callable[[], None] | None = None
        self._last_paint = 0.0
        self._sim_time = 0.0  # seconds in Session.run_for since the last repaint
        self.frames = 0  # repaints while running (tests measure the frame rate with it)
        self.history: deque[Event] = deque(maxlen=5000)  # what the event log may show
        # Events a step back undid, in seq order: the session may go forward through them
        # again without emitting them (a seek replays muted); they are shown again then.
        self.future: deque[Event] = deque(maxlen=5000)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._tick)
        self._settle_timer = QTimer(self)
        self._settle_timer.setSingleShot(True)
        self._settle_timer.setInterval(SETTLE_MS)
        self._settle_timer.timeout.connect(self._settle)
        self._prepare_timer = QTimer(self)
        self._prepare_timer.setSingleShot(True)
        self._prepare_timer.setInterval(PREPARE_MS)
        self._prepare_timer.timeout.connect(self._prepare)
        self._gc_threshold: tuple[int, ...] | None = None  # the collector's, while a run changes it
        self.gdb = None  # the GdbServer while a debugger is awaited or attached
        self.gdb_lock = threading.Lock()
        self._gdbStopped.connect(self._gdb_stopped)
        self._gdbEnded.connect(self._gdb_ended)
        self.session: Session
        self.stats_history: StatsHistory
        # Who makes the sessions, when not the bridge from its guest and machine: a lesson
        # step's (issue 14: Lesson.session, its guest and machine), called as
        # factory(image, serial_out=..., events=...) with the image to run (None: the
        # step's own). None again once the user picks another guest or machine.
        self.factory: Callable[..., Session] | None = None
        # Called with each new session's EventStream before the session is built (a lesson
        # records its events from its construction: KVM_CREATE_VM ...).
        self.stream_hook: Callable[[EventStream], None] | None = None
        self.outcome: Outcome | None = None
        self.last_seq = 0  # the last event taken (a replay's events up to it are not new)
        self._stats_key: tuple | None = None
        self._stats: ExitStats | None = None
        self._build()

    # -- the session -------------------------------------------------------------------------
    def _build(self, snapshot: str | None = None) -> None:
        """A new session: the guest from its start, or (`snapshot`) a session reopened
        from a snapshot file (Session.load_snapshot), whose guest and machine then become
        the bridge's."""
        events = EventStream()
        stats = StatsHistory()
        # Before the VM exists, as `vmsim run --stats` attaches its ExitStats.
        events.subscribe(stats.pending.append, list(ExitStats.KINDS))
        if self.stream_hook is not None:
            self.stream_hook(events)
        # What building the session emits (the KVM API calls from KVM_GET_API_VERSION to
        # KVM_SET_REGS, lesson 2's subject): kept for the views, taken once it is built. The
        # kinds a step back's replay numbers alike, as stepping listens to them.
        early: list[Event] = []
        unsubscribe_early = events.subscribe(early.append, FINE_KINDS_REPLAYABLE)
        old = getattr(self, "session", None)
        made = snapshot is not None or self.factory is not None  # their guest and machine
        if snapshot is not None:
            session = Session.load_snapshot(snapshot, serial_out=self._on_serial, events=events)
        elif self.factory is not None:
            session = self.factory(self.guest if isinstance(self.guest, GuestImage) else None,
                                   serial_out=self._on_serial, events=events)
        else:
            config = MachineConfig(serial_in=self.serial_input, smp=self.smp, irqchip=self.irqchip,
                                   disk=self.disk, disk_readonly=self.disk_readonly,
                                   ioeventfd=self.ioeventfd, coalesced_mmio=self.coalesced_mmio)
            session = Session(self.guest, self.backend, config,
                              serial_out=self._on_serial, events=events, paging=self.paging)
        unsubscribe_early()
        session.RUN_BATCH = RUN_BATCH
        if old is not None:  # a step it paused at an event ends as it would have (nobody
            old.finish_step()  # hears of it: what it says is cleared below)
        self._serial.clear()
        self.session = session
        self.stats_history = stats
        if old is not None:  # its disk image's descriptor: the new machine opened its own
            old.machine.close()
        if made:  # the snapshot's (the lesson's) guest and machine are the bridge's now
            c = session.machine.config
            self.guest, self.backend, self.paging = session.image, session.backend, session.paging
            self.smp, self.irqchip, self.ioeventfd = c.smp, c.irqchip, c.ioeventfd
            self.coalesced_mmio = c.coalesced_mmio
            self.disk, self.disk_readonly = c.disk, c.disk_readonly
            if snapshot is not None:
                self._serial.extend(session.serial)  # what COM1 had sent when it was saved
        if isinstance(self.guest, str):
            self.guest = self.session.image
        session.on_rewind.append(self._on_rewind)
        self.last_seq = session.events.seq
        self.outcome = None
        self.break_event = None
        self.main_loop_seen = False
        self.main_loop_last = None
        self.history.clear()
        self.future.clear()
        self._pending.clear()
        for ev in early:  # the construction's events first in the log
            self._take(ev)
        self.last_seq = session.events.seq
        # VMX non-root: the last VM transition was an entry (a snapshot's vCPU may stand
        # in the guest already)
        self._transitions()
        self._unsubscribe = None
        self._subscribe(self.fine_kinds)
        self._apply_breakpoints()

    @property
    def fine_kinds(self) -> list[str]:
        """What stepping listens to: every kind, or where the session keeps a history to
        step back in, every kind a replay numbers alike (FINE_KINDS_REPLAYABLE)."""
        return FINE_KINDS if self.session.history is None else FINE_KINDS_REPLAYABLE

    @property
    def walks_traced(self) -> bool:
        """Page walks reach the views as events (walk_step, ept_step): not where the
        session can step back (see FINE_KINDS_REPLAYABLE)."""
        return "walk_step" in self.fine_kinds

    @property
    def stats(self) -> ExitStats:
        """The exit statistics of the run up to the session's present point (its last
        event), as `vmsim run --stats` reports them had the run ended there: an exit still
        being handled counts (ExitStats.finish: it has no time yet), with the
        instructions and virtual time now. Every view reads these."""
        s = self.session
        key = (id(s), s.events.seq, s.instructions, s.virtual_time)
        if self._stats_key != key:
            st = self.stats_history.at(s.events.seq).copy()
            st.finish(s.instructions, s.virtual_time)
            self._stats_key, self._stats = key, st
        return self._stats

    def reset(self, image: GuestImage | None = None) -> None:
        """Start again from the entry state (with a new image if given)."""
        self.pause()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if image is not None:
            self.guest = image
        self._build()
        self.sessionReset.emit()
        self._deliver(force=True)

    def set_machine(self, smp: int | None = None, irqchip: str | None = None) -> None:
        """Another machine for the same guest: `smp` vCPUs (1 to 8), the irqchip in kvm.ko
        ("kernel") or in QEMU ("userspace"); the guest starts again."""
        from vmsim.vmm.machine import IRQCHIP_MODES, MAX_SMP

        smp = self.smp if smp is None else smp
        irqchip = self.irqchip if irqchip is None else irqchip
        if not 1 <= smp <= MAX_SMP:
            raise ValueError(f"smp {smp}: 1 to {MAX_SMP} vCPUs")
        if irqchip not in IRQCHIP_MODES:
            raise ValueError(f"irqchip {irqchip!r}: choose one of {', '.join(IRQCHIP_MODES)}")
        self.smp, self.irqchip = smp, irqchip
        self.factory = None  # the user's machine now, no longer a lesson step's
        self.reset()

    def set_disk(self, path: str | None, readonly: bool = False) -> None:
        """Give the machine another disk image (None: none), as `vmsim run --disk`; the
        guest starts again. A path that cannot be opened raises BlockOpenError (a
        ValueError, one line) and leaves the session as it was."""
        from vmsim.vmm.block import BlockBackend

        if path is not None:
            BlockBackend(path, readonly).close()  # refused here, before the reset
        self.disk, self.disk_readonly = path, readonly
        self.factory = None
        self.reset()

    def load_snapshot(self, path: str) -> None:
        """Reopen the session a snapshot file holds (guest, machine, state): raises
        SnapshotError, ValueError or OSError (one line) and then leaves the session as it
        was. Breakpoints on source lines are dropped (the guest may be another)."""
        self.pause()
        unsubscribe = self._unsubscribe
        self._build(snapshot=path)  # a refusal raises before anything here changed
        self.factory = None
        if unsubscribe is not None:
            unsubscribe()
        self.line_breakpoints.clear()
        self._apply_breakpoints()
        self.sessionReset.emit()
        self._deliver(force=True)

    def save_snapshot(self, path: str, on_stop_event: Callable[[Event], None] | None = None) -> str:
        """Write the session to a snapshot file (Session.save_snapshot, which may first
        step on to the next point it can rebuild); returns its one-line summary. Raises
        SnapshotError, ValueError or OSError (one line). `on_stop_event` sees the events of
        QEMU's stop path (KVM_GET_*), which run on a copy of the simulated VM."""
        self.pause()
        try:
            if on_stop_event is not None:
                return self.session.save_snapshot(path, on_stop_event=on_stop_event)
            return self.session.save_snapshot(path)
        finally:
            self._deliver(force=True)  # the views follow any steps it took

    def open(self, path: str) -> None:
        """Load another guest (raises AsmError / GuestLoadError, leaving the old one)."""
        from vmsim.vmm.machine import load_guest_file

        image = load_guest_file(path)
        self.line_breakpoints.clear()
        self.factory = None
        self.reset(image)

    def _subscribe(self, kinds: list[str], raw: bool = False) -> None:
        """Listen to `kinds`: each event through _on_event, or (`raw`, running at full
        speed) appended to a list as it comes (a C call: no Python frame per event) and
        taken in one pass after the batch (_drain)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._drain()
        self._unsubscribe = self.session.events.subscribe(self._raw.append if raw else self._on_event,
                                                          kinds)

    def _drain(self) -> None:
        """Take the events appended while running at full speed, as _on_event would have
        one by one: the views get the same events, in the same order."""
        raw = self._raw
        if not raw:
            return
        evs = raw[:]
        del raw[:]
        if self.future or evs[0].seq <= self.last_seq:  # a replay's, or a recorded future
            for ev in evs:
                self._on_event(ev)
            return
        self.last_seq = evs[-1].seq
        for ev in reversed(evs):  # the last VM transition
            if ev.kind == "kvm_entry":
                self.in_guest = True
                break
            if ev.kind == "kvm_exit":
                self.in_guest = False
                break
        # (A guest with no timer has none; one that exits to QEMU takes the BQL twice an
        # exit on its vCPU's thread: the sources, a C pass, say whether the main loop did.)
        if not MAIN_LOOP_KINDS.isdisjoint(map(KIND_OF, evs)) \
                or MAIN_LOOP_THREAD in set(map(SOURCE_OF, evs)):
            for ev in reversed(evs):
                if ev.kind in MAIN_LOOP_KINDS or (ev.source == MAIN_LOOP_THREAD and ev.kind == "bql"):
                    self.main_loop_seen = True
                    self.main_loop_last = ev.time
                    break
        self.history.extend(evs)
        pending = self._pending
        pending.extend(evs)
        if len(pending) > 20000:  # nobody is draining (a long run with no repaint)
            del pending[:-10000]
        # The statistics count this batch now, not at the next repaint: the same work, but a
        # pause after seconds without a repaint (an exits-heavy guest) need not count
        # thousands of events before it shows.
        self.stats_history.flush()

    def _on_event(self, ev: Event) -> None:
        if ev.seq <= self.last_seq:
            return  # emitted again (a replay): the views have it
        future = self.future
        while future and future[0].seq < ev.seq:  # the session passed them silently (a seek)
            self._take(future.popleft())
        if future and future[0].seq == ev.seq:
            if (future[0].kind, future[0].time) != (ev.kind, ev.time):
                future.clear()  # the run takes another way: the recorded future is gone
            else:
                future.popleft()
        self._take(ev)

    def _take(self, ev: Event) -> None:
        self.last_seq = ev.seq
        if ev.kind == "kvm_entry":
            self.in_guest = True
        elif ev.kind == "kvm_exit":
            self.in_guest = False
        if ev.kind in MAIN_LOOP_KINDS or (ev.source == MAIN_LOOP_THREAD and ev.kind == "bql"):
            self.main_loop_seen = True
            self.main_loop_last = ev.time
        self._pending.append(ev)
        self.history.append(ev)
        if len(self._pending) > 20000:  # nobody is draining (a long run with no repaint)
            del self._pending[:10000]

    def _on_serial(self, data: bytes) -> None:
        self._serial.extend(data)

    def feed_serial(self, data: bytes) -> None:
        """Bytes typed into the console go to the UART's receive FIFO."""
        self.session.feed_serial(data)  # recorded: a step back's replay feeds it again

    # -- breakpoints ---------------------------------------------------------------------------
    def _apply_breakpoints(self) -> None:
        bp = self.session.breakpoints
        bp.addresses = set(self.address_breakpoints)
        for line in self.line_breakpoints:
            addr = self.address_of_line(line)
            if addr is not None:
                bp.addresses.add(addr)
        bp.exit_reasons = set(self.exit_breakpoints)
        bp.ports = set(self.port_breakpoints)
        bp.events = set(self.event_breakpoints)

    def address_of_line(self, line: int) -> int | None:
        img = self.session.image
        for sl in img.lines:
            if sl.line == line and sl.size:
                return sl.address
        return None

    def toggle_line_breakpoint(self, line: int) -> bool:
        """Set or clear a breakpoint on a source line; False if the line has no code."""
        if line in self.line_breakpoints:
            self.line_breakpoints.discard(line)
        elif self.address_of_line(line) is None:
            return False
        else:
            self.line_breakpoints.add(line)
        self._apply_breakpoints()
        return True

    def set_breakpoints(self, addresses: set[int] | None = None, exits: set[str] | None = None,
                        ports: set[int] | None = None, events: set[str] | None = None) -> None:
        """Replace the breakpoints of each kind given; `events` are Breakpoints.events
        specs ("kvm_inj_virq", "bql:action=wait": see ui.text.EVENT_BREAKPOINTS, whose
        keys hold several specs between "|")."""
        if events is not None:
            self.event_breakpoints = set(events)
        if addresses is not None:
            self.address_breakpoints = set(addresses)
        if exits is not None:
            self.exit_breakpoints = set(exits)
        if ports is not None:
            self.port_breakpoints = set(ports)
        self._apply_breakpoints()

    # -- stepping (driven by events) -------------------------------------------------------------
    def _step(self, fn: Callable[[], Outcome]) -> Outcome | None:
        if self.outcome is not None and self.outcome.finished:
            self.stopped.emit(self.outcome.reason)
            return self.outcome
        self.pause()
        out = fn()
        if out.reason == "max steps":
            self.stopped.emit(tr("no such event yet: the guest runs on without one (run, or pause later)"))
        if out.finished:
            self.outcome = self.session.run() if self.session.vm is not None else out
            self.stopped.emit(self.outcome.reason or tr("finished"))
        self._deliver(force=True)
        return out

    def step_instruction(self) -> Outcome | None:
        return self._step(self.session.step_instruction)

    def step_event(self) -> Outcome | None:
        return self._step(lambda: self.session.step_event(STEP_LIMIT))

    def step_vmexit(self) -> Outcome | None:
        return self._step(lambda: self.session.step_vmexit(STEP_LIMIT))

    def step_userspace_exit(self) -> Outcome | None:
        return self._step(lambda: self.session.step_userspace_exit(STEP_LIMIT))

    # -- steps backwards (issue 12) -------------------------------------------------------------
    def back_refusal(self) -> str:
        """Why the session cannot step back now ("" if it can): the tooltip of the back
        actions while they are off."""
        s = self.session
        if self.gdb is not None:
            return T.NO_BACK_GDB
        if s.backend == "kvm":
            return T.NO_BACK_KVM
        if s.vm is None:
            return T.NO_BACK_BARE
        if s.history is None:
            return T.NO_BACK_HISTORY
        if not s.can_step_back():
            return T.NO_BACK_START
        return ""

    def _step_back(self, fn: Callable[[], Outcome], what: Callable[[Outcome], str] | None = None
                   ) -> Outcome | None:
        self.pause()
        why = self.back_refusal()
        if why:
            self.stopped.emit(why)
            return None
        try:
            out = fn()
        except ValueError as e:  # the session's one line (nothing earlier, a backend without)
            self.stopped.emit(" ".join(str(e).split()))
            self._deliver(force=True)
            return None
        self._after_rewind()
        self.stopped.emit(what(out) if what is not None else
                          T.BACK_STOPPED.get(out.reason) or
                          T.BACK_DONE.format(time=self.session.virtual_time, seq=self.last_seq))
        self._deliver(force=True)
        return out

    def step_back_instruction(self) -> Outcome | None:
        return self._step_back(self.session.step_back_instruction)

    def step_back_event(self) -> Outcome | None:
        return self._step_back(self.session.step_back_event)

    def step_back_vmexit(self) -> Outcome | None:
        return self._step_back(self.session.step_back_vmexit)

    def step_back_userspace_exit(self) -> Outcome | None:
        return self._step_back(self.session.step_back_userspace_exit)

    def reverse_continue(self) -> Outcome | None:
        def what(out: Outcome) -> str:
            if out.breakpoint:
                return T.REVERSE_HIT.format(what=self._breakpoint_words(out.breakpoint))
            return T.REVERSE_START
        return self._step_back(self.session.reverse_continue, what)

    def timeline(self) -> dict | None:
        """Session.timeline(), or None where there is none (kvm, bare); its exit times as
        the history's own arrays, to be read only (the views take it at every repaint:
        Session.timeline() makes lists of every exit's time, ~7 ms per repaint after
        60,000 exits, and more the longer the run)."""
        s = self.session
        h = s.history
        if h is None:  # kvm, bare, or a session made without one
            return None
        now = s.virtual_time
        return {"start": h.time[0], "end": max(h.time[-1], now), "now": now,
                "exits": h.exit_time, "userspace_exits": h.uexit_time}

    def seek(self, t: int) -> Outcome | None:
        """Go to the last recorded point at or before virtual time `t` (past the end: run
        forward to it), as the timeline's click or drag asks."""
        if self.gdb is not None or self.timeline() is None:
            return None
        self.pause()
        try:
            out = self.session.seek_time(int(t))
        except ValueError as e:
            self.stopped.emit(" ".join(str(e).split()))
            self._deliver(force=True)
            return None
        self._caught_up()
        self._after_rewind()
        self.stopped.emit(T.SEEK_DONE.format(time=self.session.virtual_time, asked=int(t)))
        self._deliver(force=True)
        return out

    def _on_rewind(self, seq: int) -> None:
        """Session.on_rewind: the session went back; event `seq` is the last that happened.
        Drop what came after it, here and (through `rewound`) in the views."""
        self.last_seq = seq
        undone: dict[int, Event] = {}
        for evs in (self.history, self._pending):  # (both in seq order: only their ends)
            for ev in reversed(evs):
                if ev.seq <= seq:
                    break
                undone[ev.seq] = ev
        undone.update((ev.seq, ev) for ev in self.future if ev.seq > seq)
        keep = sorted(undone)[:self.future.maxlen]  # the nearest: a seek shows those first
        self.future = deque((undone[k] for k in keep), maxlen=self.future.maxlen)
        self._pending = [ev for ev in self._pending if ev.seq <= seq]
        while self.history and self.history[-1].seq > seq:
            self.history.pop()
        self._serial.clear()  # a replay's output: the console reads session.serial instead
        self._transitions()
        self.rewound.emit(seq)

    def _caught_up(self) -> None:
        """After the session went forward without emitting (a seek through its recorded
        future): the events seen before up to where it is now happened again."""
        seq = self.session.events.seq
        while self.future and self.future[0].seq <= seq:
            ev = self.future.popleft()
            if ev.seq > self.last_seq:
                self._take(ev)
        self.last_seq = max(self.last_seq, seq)
        self._serial.clear()  # the console reads session.serial instead
        self._transitions()

    def _transitions(self) -> None:
        """in_guest and the main loop's last run, from the events that happened."""
        self.in_guest = False
        for ev in reversed(self.history):  # the last VM transition that still happened
            if ev.kind in ("kvm_entry", "kvm_exit"):
                self.in_guest = ev.kind == "kvm_entry"
                break
        else:
            vmx = getattr(self.session.vm.cpus[0].vcpu, "vmx", None) if self.session.vm else None
            self.in_guest = bool(getattr(vmx, "guest_mode", False))
        self.main_loop_last = None if MAIN_LOOP_KINDS.isdisjoint(map(KIND_OF, self.history)) \
            else next(ev.time for ev in reversed(self.history) if ev.kind in MAIN_LOOP_KINDS)
        self.main_loop_seen = False

    def _after_rewind(self) -> None:
        self.outcome = self.session.outcome  # None again when it went back before the end
        self.break_event = None

    # -- running (time-boxed batches, repaint from state) -----------------------------------------
    def set_speed(self, speed: int) -> None:
        self.speed = max(0, min(SPEED_MAX, speed))
        if self.running:
            self._configure_run()

    def _configure_run(self) -> None:
        full = self.speed >= SPEED_MAX
        self._subscribe(COARSE_KINDS if full else self.fine_kinds, raw=full)
        self._timer.setInterval(0 if full else EVENT_INTERVALS_MS[self.speed])

    def run(self) -> None:
        if self.running or (self.outcome is not None and self.outcome.finished):
            return
        self.running = True
        self.break_event = None
        # What exists now (the window, the session, its history) is out of the cycle
        # collector's sight while the guest runs: the events a run keeps for the views
        # make it collect often, and each full collection scanned the whole window again
        # (tens of ms each, in the middle of a batch). Back in its sight once the window
        # settles after the pause (_settle).
        self._settle_timer.stop()
        self._prepare_timer.stop()
        gc.freeze()
        # ... and its young generation is collected every RUN_GC_YOUNG new objects, not 700:
        # most of what a run makes are the events the views keep, which each collection
        # scanned again on their way to the old generation (3-5% of an exits-heavy run,
        # half of it full collections the settle makes anyway).
        if self._gc_threshold is None:
            self._gc_threshold = gc.get_threshold()
            gc.set_threshold(RUN_GC_YOUNG, *self._gc_threshold[1:])
        self._configure_run()
        self._last_paint = 0.0
        self._timer.start()
        self.runningChanged.emit(True)

    def pause(self) -> None:
        if not self.running:
            return
        self._timer.stop()
        self.running = False
        self._restore_gc()
        self._subscribe(self.fine_kinds)
        self.runningChanged.emit(False)
        self._deliver(force=True)

    def toggle_run(self) -> None:
        if self.running:
            self.pause()
        else:
            self.run()

    def _tick(self) -> None:
        if self.speed >= SPEED_MAX:
            t0 = time.perf_counter()
            out = self.session.run_for(BATCH_S if self.animate else BATCH_QUIET_S)
            self._sim_time += time.perf_counter() - t0
            self._drain()
        else:
            out = self.session.step_event(1)
            bp = self.session.breakpoints
            if not out.finished and bp.addresses \
                    and self.session.cpus and self.session.cpus[0].eip in bp.addresses:
                out = Outcome(False, breakpoint=f"address {self.session.cpus[0].eip:#x}")
            elif not out.finished and bp.events:
                why = next((w for w in map(bp.matches_event, out.events) if w), "")
                if why:
                    out = Outcome(False, breakpoint=why)
            if out.finished:
                out = self.session.run()
        if out.finished:
            self.outcome = out
            self.pause()
            self.stopped.emit(out.reason or tr("finished"))
        elif out.breakpoint:
            self.pause()
            self.stopped.emit(tr("breakpoint: {what}").format(what=self._breakpoint_words(out.breakpoint)))
        else:
            self._deliver(force=self.speed < SPEED_MAX)

    def main_loop_active(self) -> bool:
        """The main loop runs now, ran since the last repaint, or ran within
        MAIN_LOOP_GLOW cycles of virtual time (what its diagram box shows)."""
        if self.main_loop_seen:
            return True
        loop = self.session.threads().get("main_loop")
        if loop is not None and loop["running"]:
            return True
        last = self.main_loop_last
        return last is not None and self.session.virtual_time - last <= MAIN_LOOP_GLOW

    def _breakpoint_words(self, why: str) -> str:
        """An event breakpoint in words, with the event that hit it ("interrupt injected:
        vcpu0: inject interrupt 32"); others as the session says them."""
        spec = why.removeprefix("event ")
        if spec == why:
            return why
        bp = self.session.breakpoints
        self.break_event = next((ev for ev in reversed(self.history)
                                 if bp.matches_event(ev) == why), None)
        words = event_breakpoint_name(spec)
        if self.break_event is None:
            return words
        try:
            what = self.break_event.describe()
        except (KeyError, ValueError, TypeError):
            what = self.break_event.kind
        return f"{words}: {self.break_event.source}: {what}"

    def _deliver(self, force: bool = False) -> None:
        """Hand pending events and output to the views, at most every FRAME_MS when running."""
        self._drain()
        now = time.perf_counter()
        since = now - self._last_paint
        share = PAINT_SHARE if self.animate else PAINT_SHARE_QUIET
        busy = since - self._sim_time > share * since  # the views' share was too large
        if not force and (since < FRAME_MS / 1000 or (busy and since < FRAME_GAP_MAX)):
            return
        self._last_paint = now
        self._sim_time = 0.0
        if self.running:
            self.frames += 1
        if self._serial:
            data = bytes(self._serial)
            self._serial.clear()
            self.serialOutput.emit(data)
        if self._pending:
            evs = self._pending
            self._pending = []
            self.eventsArrived.emit(evs)
        self.stateChanged.emit()
        self.main_loop_seen = False
        if not self.running:  # a step, a step back, a pause ...: settled again later
            self._prepare_timer.start()
            self._settle_timer.start()

    def _prepare(self) -> None:
        """The window is paused and nobody stepped for PREPARE_MS: the first step back from
        here need not replay up to a whole interval of the history (tens of ms in the
        window): Session.prepare_step_back replays it now, and the state stays."""
        if self.running or self.back_refusal():
            return
        if self.session.prepare_step_back():
            self.prepared.emit()

    def _settle(self) -> None:
        """The window is paused and nobody stepped for SETTLE_MS: the cycle collector sees
        the whole heap once, frees what the steps since the last time left (each step back
        replaces the VM, ~700 objects in cycles), and what is left goes out of its sight
        again (gc.freeze). While the user steps, a collection then scans only what the
        steps made: a full one of the whole window took 40-70 ms, and landed in one step
        back in 30 or so (docs/stepping-backwards.md)."""
        if self.running:
            return
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.settled.emit()

    def release_heap(self) -> None:
        """The window closes: everything is in the cycle collector's sight again, and
        nothing is frozen later (a process that opens another window, the tests')."""
        self._settle_timer.stop()
        self._prepare_timer.stop()
        self._restore_gc()
        gc.unfreeze()

    def _restore_gc(self) -> None:
        if self._gc_threshold is not None:
            gc.set_threshold(*self._gc_threshold)
            self._gc_threshold = None

    # -- gdb (File > Wait for gdb: vmsim.gdbstub, as `vmsim run --gdb PORT`) --------------------
    def wait_for_gdb(self, port: int) -> int:
        """Serve the GDB remote protocol on 127.0.0.1:`port` (0: any free port) from a
        thread; the window's own run and step controls stay off until the debugger leaves,
        and the views repaint whenever the guest stops. Returns the port; OSError if it
        cannot listen. The stub holds `gdb_lock` while it uses the session."""
        from vmsim.gdbstub import GdbServer

        self.pause()
        self.session.finish_step()  # the stub's thread cannot resume a step paused here
        server = GdbServer(port)
        self.gdb = server
        self._subscribe(COARSE_KINDS)  # the debugger runs the guest: no per-access events
        threading.Thread(target=self._serve_gdb, args=(server,), daemon=True,
                         name="gdbstub").start()
        self.gdbChanged.emit(tr("waiting for gdb on 127.0.0.1:{port} (target remote :{port})").format(
            port=server.port))
        return server.port

    def _serve_gdb(self, server) -> None:  # the stub's thread: only signals reach the GUI
        stub = None
        try:
            stub = server.serve(self.session, self.gdb_lock, self._gdbStopped.emit)
        except OSError:  # stop_gdb() closed the listener before a debugger came
            pass
        finally:
            server.close()
            self._gdbEnded.emit(stub)

    def stop_gdb(self) -> None:
        """Stop waiting for a debugger (one that is attached stays until it detaches)."""
        if self.gdb is not None:
            self.gdb.close()

    def _gdb_stopped(self) -> None:
        if self.gdb_lock.acquire(blocking=False):  # else the stub runs again already
            try:
                self.gdbChanged.emit(tr("gdb attached: the guest is stopped"))
                self._deliver(force=True)
            finally:
                self.gdb_lock.release()

    def _gdb_ended(self, stub) -> None:
        self.gdb = None
        self._subscribe(self.fine_kinds)
        if stub is not None and stub.ended is not None:
            self.outcome = stub.ended
            self.stopped.emit(stub.ended.reason or tr("finished"))
        elif stub is not None and stub.killed:
            self.stopped.emit(tr("killed by the debugger (gdb kill): reset to start again"))
            self.outcome = Outcome(True, reason="killed by the debugger")
        self.gdbChanged.emit("")
        self._deliver(force=True)

    # -- views --------------------------------------------------------------------------------
    def current_line(self) -> int | None:
        s = self.session
        if not s.cpus:
            return None
        sl = s.image.line_at(s.registers(0)["EIP"])  # EIP as Registers has it
        return sl.line if sl is not None else None

    @property
    def finished(self) -> bool:
        return self.outcome is not None and self.outcome.finished
