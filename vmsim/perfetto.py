"""A timeline of a run (`vmsim run --trace FILE.json --trace-format perfetto`): the Chrome
trace-event JSON that ui.perfetto.dev and chrome://tracing open.

The format ("Trace Event Format", Google, the document chrome://tracing and Perfetto's
JSON importer follow): one JSON object `{"traceEvents": [...], "displayTimeUnit": "ns"}`;
each event has `name`, `ph` (phase), `ts` (microseconds), `pid`, `tid`; vmsim writes
complete slices (`ph` "X", with `dur`), instants ("i", with `s` "t"), counters ("C",
numeric `args`) and metadata ("M": `process_name`, `thread_name`).

One track per simulated thread of QEMU's process: each vCPU thread ("CPU n/KVM", as QEMU
names them) and the main loop. On a vCPU's track, slices nest as the thread's calls do:

    KVM_RUN                    kvm_vcpu_ioctl(KVM_RUN) .. kvm_userspace_exit
      guest                    kvm_entry .. kvm_exit
      exit REASON              kvm_exit .. kvm_entry (kvm.ko handling; by reason)
    KVM_EXIT_*                 kvm_userspace_exit .. the next KVM_RUN (QEMU's handling)
      BQL wait, BQL held       bql wait .. lock, lock .. unlock
        device access          instants, named after the device

      kvm_vcpu_block           kvm_vcpu_block .. kvm_vcpu_wakeup (HLT in kvm.ko)

with instants for injected interrupts and kicks; on the main loop's track, "main loop"
slices from each wake-up (main_loop_wait) to its return to ppoll (the BQL released), with
timers and fd handlers as instants; an "IO iothread0" track for the virtio dataplane
(aio_poll, virtqueue_pop, the block I/O, the completion); a "kvm.ko (host)" track for what runs outside any
thread (hrtimers, kvm_set_irq). A counter track "VM exits" counts exits per reason. Time
is virtual: cycles at vmsim.costs.NOMINAL_HZ, as in the `text` format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from vmsim.costs import NOMINAL_HZ
from vmsim.events import Event, EventStream
from vmsim.files import GuardedOutput

PID = 1000  # nominal, as in the text format (vmsim.tracecmd.QEMU_PID)
KINDS = ["kvm_vcpu_ioctl", "kvm_entry", "kvm_exit", "vmentry_failed", "kvm_userspace_exit",
         "bql", "device_access", "io_unclaimed", "thread", "run_end", "kvm_vcpu_block",
         "kvm_vcpu_wakeup", "kvm_inj_virq", "qemu_cpu_kick", "main_loop_wait", "qemu_timer",
         "qemu_fd_handler", "kvm_set_irq", "host_timer", "aio_poll", "virtio_queue_notify",
         "virtqueue_pop", "virtio_blk_handle_read", "virtio_blk_handle_write",
         "virtio_blk_req_complete", "virtio_notify", "virtio_notify_irqfd", "ioeventfd_write",
         "irqfd_inject", "coalesced_mmio_write", "kvm_flush_coalesced_mmio_buffer"]


def _us(cycles: int) -> float:
    return cycles * 1_000_000 / NOMINAL_HZ


@dataclass
class _Track:
    tid: int
    stack: list[tuple[str, str, int, dict[str, Any]]] = field(default_factory=list)
    last: int = 0  # the latest time seen on this thread


class PerfettoWriter(GuardedOutput):
    """Writes the timeline as the run goes (slices when they end); the same interface as
    vmsim.trace.TraceWriter."""

    def __init__(self, events: EventStream | None, out: IO[str], path: str = "<trace>"):
        """Listens to `events`; with None, feed it events with `feed` (an export)."""
        super().__init__(out, path)
        self.tracks: dict[str, _Track] = {}
        self.bql_owner: str | None = None
        self.running = "main-loop"
        self.exits: dict[str, int] = {}
        self._first = True
        self._closed = False
        self._guarded(lambda: self.out.write('{"displayTimeUnit": "ns", "traceEvents": [\n'))
        self._put({"name": "process_name", "ph": "M", "pid": PID, "tid": PID,
                   "args": {"name": "qemu-system-x86"}})
        self.stream = events
        self._unsubscribe: Callable[[], None] | None = (
            events.subscribe(self._on_event, KINDS) if events is not None else None)

    # -- the TraceWriter interface -------------------------------------------------------------
    def add_column(self, col: Any) -> None:
        pass  # instructions are not drawn

    def flush_instructions(self) -> None:
        pass

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._closed:
            return
        self._closed = True
        for name, track in self.tracks.items():  # what was still open when the run ended
            while track.stack:
                self._end(name, track.last)
        self._guarded(lambda: (self.out.write("\n]}\n"), self.out.flush()))

    # -- writing -----------------------------------------------------------------------------
    def _put(self, record: dict[str, Any]) -> None:
        text = ("" if self._first else ",\n") + json.dumps(record, separators=(",", ":"))
        self._first = False
        self.lines += 1
        self._guarded(lambda: self.out.write(text))

    def _track(self, thread: str) -> _Track:
        t = self.tracks.get(thread)
        if t is None:
            if thread.startswith("vcpu") and thread[4:].isdigit():
                tid, label = PID + 1 + int(thread[4:]), f"CPU {thread[4:]}/KVM"
            elif thread == "main-loop":
                tid, label = PID, "qemu-system-x86 (main loop)"
            elif thread.startswith("iothread"):
                tid, label = PID + 50, f"IO {thread}"  # as QEMU names an iothread's thread
            else:
                tid, label = PID + 100, "kvm.ko (host)"
            t = self.tracks[thread] = _Track(tid)
            self._put({"name": "thread_name", "ph": "M", "pid": PID, "tid": tid,
                       "args": {"name": label}})
        return t

    def _begin(self, thread: str, name: str, cat: str, time: int, **args: Any) -> None:
        t = self._track(thread)
        t.last = max(t.last, time)
        t.stack.append((name, cat, time, args))

    def _end(self, thread: str, time: int) -> None:
        t = self._track(thread)
        t.last = max(t.last, time)
        name, cat, start, args = t.stack.pop()
        self._put({"name": name, "cat": cat, "ph": "X", "ts": _us(start),
                   "dur": _us(max(time, start) - start), "pid": PID, "tid": t.tid,
                   **({"args": args} if args else {})})

    def _close_to(self, thread: str, names: tuple[str, ...], time: int) -> None:
        """End open slices down to (and including) the innermost whose name starts with one
        of `names`, if one is open."""
        t = self._track(thread)
        if any(n.startswith(names) for n, *_ in t.stack):
            while t.stack:
                top = t.stack[-1][0]
                self._end(thread, time)
                if top.startswith(names):
                    return

    def _instant(self, thread: str, name: str, cat: str, time: int, **args: Any) -> None:
        t = self._track(thread)
        t.last = max(t.last, time)
        self._put({"name": name, "cat": cat, "ph": "i", "s": "t", "ts": _us(time), "pid": PID,
                   "tid": t.tid, **({"args": args} if args else {})})

    def feed(self, ev: Event) -> None:
        if ev.kind in KINDS:
            self._on_event(ev)

    # -- events -> slices ----------------------------------------------------------------------
    def _on_event(self, ev: Event) -> None:
        k, src, now = ev.kind, ev.source, ev.time
        if self.stream is not None and self.stream.thread:
            # Live: the scheduler says which simulated thread is emitting.
            self.running = self.stream.thread if _is_thread(self.stream.thread) else "kvm"
        elif _is_thread(src):
            # An export of recorded events: one thread runs at a time, so a device's event
            # belongs to the thread whose events came last.
            self.running = src
        if k == "kvm_vcpu_ioctl":
            if ev["name"] == "KVM_RUN":
                self._close_to(src, ("KVM_EXIT_",), now)
                self._begin(src, "KVM_RUN", "ioctl", now)
            else:
                self._instant(src, ev["name"], "ioctl", now)
        elif k == "kvm_entry":
            self._close_to(src, ("exit ",), now)
            self._begin(src, "guest", "guest", now, rip=hex(ev["rip"]))
        elif k == "kvm_exit":
            self._close_to(src, ("guest",), now)
            reason = ev["exit_reason"]
            self._begin(src, f"exit {reason}", "kvm", now, info1=hex(ev["info1"]))
            self.exits[reason] = self.exits.get(reason, 0) + 1
            self._put({"name": "VM exits", "ph": "C", "ts": _us(now), "pid": PID,
                       "args": dict(self.exits)})
        elif k == "vmentry_failed":
            self._instant(src, "VM entry failed", "hw", now, check=ev["check"])
        elif k == "kvm_userspace_exit":
            self._close_to(src, ("KVM_RUN",), now)
            self._begin(src, ev["reason"], "vmm", now)
        elif k == "bql":
            if ev["action"] == "wait":
                self._begin(src, "BQL wait", "lock", now)
            elif ev["action"] == "lock":
                self._close_to(src, ("BQL wait",), now)
                self.bql_owner = src
                self._begin(src, "BQL held", "lock", now)
            else:
                self.bql_owner = None
                self._close_to(src, ("main loop",) if src == "main-loop" else ("BQL held",),
                               now)
        elif k in ("device_access", "io_unclaimed"):
            # A device model runs on the thread that holds the BQL for it.
            thread = self.bql_owner or "main-loop"
            what = "write" if ev["is_write"] else "read"
            self._instant(thread, f"{src if k == 'device_access' else 'unclaimed'} {what}",
                          "device", now, space=ev["space"], address=hex(ev["address"]),
                          size=ev["size"], **({"value": hex(ev["value"])}
                                              if k == "device_access" else {}))
        elif k == "thread":
            self._instant(src, f"thread {ev['state']}", "thread", now, detail=ev["detail"])
        elif k == "kvm_vcpu_block":
            self._begin(src, "kvm_vcpu_block", "kvm", now)
        elif k == "kvm_vcpu_wakeup":
            self._close_to(src, ("kvm_vcpu_block",), now)
        elif k == "kvm_inj_virq":
            self._instant(src, f"inject irq {ev['irq']}", "irq", now,
                          reinjected=ev["reinjected"])
        elif k == "qemu_cpu_kick":
            self._instant(src, "kick (SIG_IPI)", "irq", now, why=ev["why"])
        elif k == "main_loop_wait":
            self._close_to(src, ("main loop",), now)
            self._begin(src, "main loop", "vmm", now, woken_by=ev["woken_by"])
        elif k in ("qemu_timer", "qemu_fd_handler", "host_timer"):
            self._instant(src, f"{k} {ev['name']}", "timer", now)
        elif k == "kvm_set_irq":
            self._instant(src, f"GSI {ev['gsi']} level {ev['level']}", "irq", now)
        elif k == "aio_poll":
            self._instant(src, f"aio_poll: {ev['what']}", "iothread", now)
        elif k in ("virtio_queue_notify", "virtqueue_pop", "virtio_blk_handle_read",
                   "virtio_blk_handle_write", "virtio_blk_req_complete", "virtio_notify",
                   "virtio_notify_irqfd", "ioeventfd_write", "irqfd_inject"):
            # The virtio path, on the thread it runs in (the iothread, a vCPU under the
            # BQL, or kvm.ko for the eventfds).
            self._instant(src if _is_thread(src) else self.running, k, "virtio", now)
        elif k == "coalesced_mmio_write":  # (kvm.ko queues it: no exit to QEMU)
            self._instant(src if _is_thread(src) else self.running,
                          f"coalesced MMIO write {ev['addr']:#x}", "mmio", now)
        elif k == "kvm_flush_coalesced_mmio_buffer":
            self._instant(src if _is_thread(src) else self.running,
                          f"coalesced MMIO flush ({ev['entries']} writes)", "mmio", now)
        elif k == "run_end":
            for name, track in self.tracks.items():
                while track.stack:
                    self._end(name, max(track.last, now))


def _is_thread(source: str) -> bool:
    return source.startswith(("vcpu", "iothread")) or source == "main-loop"


def write_timeline(events: Iterable[Event], out: IO[str], path: str = "<timeline>") -> int:
    """The timeline of events already recorded (the GUI's File > Export timeline); returns
    how many trace events were written. Raises OutputError naming `path`."""
    w = PerfettoWriter(None, out, path)
    for ev in events:
        w.feed(ev)
    w.close()
    return w.lines
