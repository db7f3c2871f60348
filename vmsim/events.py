"""The event stream every layer writes to (DESIGN.md "Events").

An event is a small immutable record: sequence number, virtual time, layer, source, kind
and typed fields. Kinds are declared once in CATALOGUE with their fields and a one-line
format. A kind nobody subscribes to costs one dict lookup at the emitting site
(`stream.wants(kind)`), which hot paths hoist out of their loops.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from json.encoder import JSONEncoder, encode_basestring_ascii
from types import MappingProxyType
from typing import Any, NamedTuple

try:
    from _json import make_encoder as c_make_encoder
except ImportError:  # (a Python without the C accelerator)
    c_make_encoder = None

LAYERS = ("guest", "hw", "kvm", "vmm")


@dataclass(frozen=True)
class EventKind:
    name: str
    layer: str
    fields: tuple[str, ...]
    fmt: str  # str.format template over the fields


CATALOGUE: dict[str, EventKind] = {}


def _declare(name: str, layer: str, fields: str, fmt: str) -> None:
    CATALOGUE[name] = EventKind(name, layer, tuple(fields.split()), fmt)


# Hardware: the CPU and its MMU.
_declare("exception", "hw", "vector name error_code eip",
         "{name} (vector {vector}) at {eip:#x}, error code {error_code}")
_declare("triple_fault", "hw", "eip", "triple fault at {eip:#x}: shutdown")
_declare("unsupported", "hw", "eip what", "unsupported at {eip:#x}: {what}")
_declare("not_in_subset", "hw", "eip text bytes",
         "{text} at {eip:#x} is not in vmsim's x86 subset: #UD")
_declare("tlb_hit", "hw", "linear physical access", "TLB hit {linear:#x} -> {physical:#x}")
_declare("tlb_miss", "hw", "linear access", "TLB miss {linear:#x} ({access})")
_declare("walk_step", "hw", "linear level table index entry_address entry outcome",
         "{level}[{index}] @ {entry_address:#x} = {entry:#010x}: {outcome}")
_declare("ept_step", "hw", "linear gpa level table index entry_address entry outcome",
         "EPT {level}[{index}] for {gpa:#x} @ {entry_address:#x} = {entry:#018x}: {outcome}")
_declare("tlb_flush", "hw", "scope linear", "TLB flush ({scope})")
_declare("smc", "hw", "frame", "self-modifying code: decoded instructions in frame {frame:#x} dropped")
_declare("io_unclaimed", "vmm", "space address size is_write",
         "unclaimed {space} {address:#x} size {size} {is_write}")

# VM transitions, named after Linux's tracepoints (arch/x86/kvm/trace.h) with their
# fields; vmsim's extra fields follow them. Emitted where VMX enters and leaves the guest.
_declare("kvm_entry", "hw", "vcpu_id rip launch", "VM entry at {rip:#x} (launch={launch})")
_declare("vmentry_failed", "hw", "reason check", "VM entry failed ({reason:#x}): {check}")
_declare("kvm_exit", "hw", "vcpu_id exit_reason exit_reason_number guest_rip isa info1 info2 "
         "intr_info error_code instruction_len guest_linear_address guest_physical_address",
         "VM exit {exit_reason} ({exit_reason_number}) at {guest_rip:#x}, info1 {info1:#x}")

# kvm.ko (arch/x86/kvm/trace.h, mmu/mmutrace.h, include/trace/events/kvm.h where Linux
# has the tracepoint; vmsim's own names where it has none).
_declare("kvm_inj_exception", "kvm", "exception name has_error error_code type",
         "inject {name} (vector {exception}, error code {error_code:#x})")
_declare("kvm_inj_virq", "kvm", "irq soft reinjected", "inject interrupt {irq}")
_declare("kvm_handler", "kvm", "handler outcome", "{handler}: {outcome}")
_declare("kvm_emulate_insn", "kvm", "csbase rip insn mode failed instruction outcome",
         "emulate {instruction}: {outcome}")
_declare("kvm_pio", "kvm", "rw port size count val",
         "PIO port {port:#x} size {size} count {count} write={rw} val {val:#x}")
_declare("kvm_mmio", "kvm", "type len gpa val", "MMIO {type} {gpa:#x} len {len} val {val:#x}")
_declare("kvm_cr", "kvm", "rw cr val", "CR{cr} write={rw} value {val:#x}")
_declare("kvm_cpuid", "kvm", "function index rax rbx rcx rdx found used_max_basic",
         "CPUID leaf {function:#x}.{index:#x} -> {rax:#x} {rbx:#x} {rcx:#x} {rdx:#x}")
_declare("kvm_msr", "kvm", "write ecx data exception", "MSR {ecx:#x} write={write} data {data:#x}")
_declare("kvm_hypercall", "kvm", "nr a0 a1 a2 a3 ret", "hypercall {nr} -> {ret}")
_declare("kvm_page_fault", "kvm", "fault_address error_code gpa action",
         "guest #PF at {fault_address:#x} (error code {error_code:#x}): {action}")
_declare("kvm_mmu_get_page", "kvm", "gfn level direct spt created root_count",
         "shadow page for gfn {gfn:#x} level {level} direct={direct} at {spt:#x}")
_declare("kvm_mmu_prepare_zap_page", "kvm", "gfn level direct spt root_count",
         "zap shadow page for gfn {gfn:#x} level {level} direct={direct} at {spt:#x}")
_declare("kvm_mmu_pagetable_walk", "kvm", "addr pferr",
         "shadow MMU walks the guest tables for {addr:#x}")
_declare("kvm_mmu_paging_element", "kvm", "pte level", "guest PTE {pte:#x} at level {level}")
_declare("pte_write", "kvm", "gpa gfn index", "guest page-table write at {gpa:#x}: shadow zapped")
_declare("tdp_map", "kvm", "gfn hpa new_tables mmio",
         "EPT: gfn {gfn:#x} -> {hpa:#x} ({new_tables} new tables, mmio={mmio})")
# Interrupts in kvm.ko: Linux's tracepoints (include/trace/events/kvm.h, arch/x86/kvm/trace.h).
_declare("kvm_set_irq", "kvm", "gsi level irq_source_id", "GSI {gsi} level {level}")
_declare("kvm_pic_set_irq", "kvm", "chip pin elcr imr coalesced",
         "PIC {chip} pin {pin} (IMR {imr:#04x}, ELCR {elcr:#04x})")
_declare("kvm_apic", "kvm", "rw reg val", "APIC {rw} {reg:#x} = {val:#x}")
_declare("kvm_apic_ipi", "kvm", "icr_low dest_id", "IPI: ICR {icr_low:#x} to {dest_id}")
_declare("kvm_apic_accept_irq", "kvm", "apicid dm tm vec",
         "APIC {apicid} accepts vector {vec} (delivery mode {dm})")
_declare("kvm_eoi", "kvm", "apicid vector", "APIC {apicid} EOI for vector {vector}")
_declare("kvm_vcpu_wakeup", "kvm", "ns waited valid",
         "vCPU woke after {ns} ns (waited={waited}, interrupt={valid})")
# Eventfds (virt/kvm/eventfd.c): named after the functions (Linux has no tracepoint there).
_declare("ioeventfd_write", "kvm", "addr len val fd",
         "ioeventfd: write {val:#x} to {addr:#x} completed in the kernel, {fd} signalled")
_declare("irqfd_inject", "kvm", "gsi fd", "irqfd {fd}: inject GSI {gsi}")
# Coalesced MMIO (virt/kvm/coalesced_mmio.c, QEMU's kvm_flush_coalesced_mmio_buffer):
# named after the functions (neither has a tracepoint).
_declare("coalesced_mmio_write", "kvm", "addr len val first last",
         "coalesced MMIO: write {val:#x} to {addr:#x} queued in the ring ({first}..{last})")
# vmsim's names: no tracepoint marks these in Linux, but the seed names them.
_declare("kvm_signal_check", "kvm", "vcpu_id pending requests",
         "signal_pending before VM entry: {pending}")
_declare("kvm_vcpu_kick", "kvm", "vcpu_id mode how", "kick vcpu{vcpu_id} ({how})")
_declare("kvm_vcpu_block", "kvm", "vcpu_id", "vcpu{vcpu_id} blocks in kvm_vcpu_block (HLT)")
_declare("kvm_irq_window", "kvm", "vcpu_id enable", "interrupt-window exiting {enable}")
_declare("host_timer", "kvm", "name cpu", "host timer {name} fired")
# Written by the VMM when KVM_RUN returns, from struct kvm_run (so on every backend).
_declare("kvm_userspace_exit", "kvm", "reason reason_number errno", "KVM_RUN returned {reason}")

# The VMM (QEMU's trace-events: accel/kvm/trace-events; vmsim's names where it has none).
_declare("kvm_ioctl", "vmm", "type name detail", "ioctl {name} {detail}")
_declare("kvm_vm_ioctl", "vmm", "type name detail", "VM ioctl {name} {detail}")
_declare("kvm_vcpu_ioctl", "vmm", "cpu_index type name detail", "vCPU ioctl {name} {detail}")
_declare("kvm_run_exit", "vmm", "cpu_index reason name", "kvm_cpu_exec: exit reason {name}")
_declare("bql", "vmm", "action holder waited held", "BQL {action}")
# QEMU's main loop (util/main-loop.c) and interrupt delivery (hw/intc/trace-events for the
# PIC's; vmsim's names where QEMU has no trace event).
_declare("main_loop_wait", "vmm", "woken_by timers fds",
         "main loop wakes ({woken_by})")
_declare("qemu_timer", "vmm", "name expire_time", "QEMU timer {name} runs")
_declare("qemu_fd_handler", "vmm", "name bytes", "fd handler {name}: {bytes} bytes")
_declare("qemu_set_irq", "vmm", "line irq level", "IRQ line {line} {irq} level {level}")
_declare("pic_interrupt", "vmm", "irq intno", "PIC: IRQ {irq} -> vector {intno}")
_declare("qemu_cpu_kick", "vmm", "cpu_index why", "kick vCPU {cpu_index}: {why}")
# Stop and cont (system/runstate.c's trace events runstate_set and vm_state_notify; the
# others are named after the functions in system/cpus.c and target/i386/kvm/kvm.c).
_declare("runstate_set", "vmm", "current_state new_state",
         "run state {current_state} -> {new_state}")
_declare("vm_state_notify", "vmm", "running reason",
         "vm_state_notify running={running} ({reason})")
_declare("pause_all_vcpus", "vmm", "vcpus", "pause_all_vcpus: stop and kick {vcpus} vCPU(s)")
_declare("resume_all_vcpus", "vmm", "vcpus", "resume_all_vcpus: {vcpus} vCPU(s) may run")
_declare("qemu_cpu_stop", "vmm", "cpu_index", "vCPU {cpu_index} stopped (parked)")
_declare("kvm_arch_get_registers", "vmm", "cpu_index",
         "vCPU {cpu_index}: state copied out of kvm.ko (KVM_GET_*)")
_declare("kvm_arch_put_registers", "vmm", "cpu_index level",
         "vCPU {cpu_index}: state written to kvm.ko ({level}, KVM_SET_*)")
_declare("kvm_arch_pre_run", "vmm", "cpu_index injected request_interrupt_window",
         "pre_run: inject {injected}, window {request_interrupt_window}")
_declare("kvm_flush_coalesced_mmio_buffer", "vmm", "entries first last",
         "QEMU applies {entries} coalesced MMIO writes (ring {first}..{last})")
_declare("device_access", "vmm", "space address size is_write value",
         "{space} {address:#x} size {size} is_write={is_write} value {value:#x}")
# virtio (QEMU's hw/virtio/trace-events and hw/block/trace-events, with the queue index
# for `vq` and the chain's head index for `elem`/`req` where QEMU prints pointers).
_declare("virtio_mmio_read", "vmm", "offset size value register",
         "virtio_mmio_read offset {offset:#x} ({register}) = {value:#x}")
_declare("virtio_mmio_write_offset", "vmm", "offset value size register",
         "virtio_mmio_write offset {offset:#x} ({register}) value {value:#x}")
_declare("virtio_mmio_setting_irq", "vmm", "level irq", "virtio_mmio setting IRQ {level}")
_declare("virtio_set_status", "vmm", "val", "virtio status {val:#x}")
_declare("virtio_queue_notify", "vmm", "n", "queue {n} notified (kick)")
_declare("virtqueue_pop", "vmm", "vq elem in_num out_num",
         "vq {vq} pop head {elem}: in_num {in_num} out_num {out_num}")
_declare("virtqueue_fill", "vmm", "vq elem len idx", "vq {vq} fill head {elem} len {len}")
_declare("virtqueue_flush", "vmm", "vq count", "vq {vq} flush count {count}")
_declare("virtio_notify", "vmm", "vq", "vq {vq}: notify the driver (used buffer)")
_declare("virtio_error", "vmm", "message", "virtio error: {message} (DEVICE_NEEDS_RESET)")
_declare("virtio_blk_handle_read", "vmm", "req sector nsectors",
         "req {req}: read sector {sector} nsectors {nsectors}")
_declare("virtio_blk_handle_write", "vmm", "req sector nsectors",
         "req {req}: write sector {sector} nsectors {nsectors}")
_declare("virtio_blk_req_complete", "vmm", "req status", "req {req} complete, status {status}")
_declare("thread", "vmm", "state detail", "{state} {detail}")
# The iothread (iothread.c, util/aio-posix.c) and virtio-blk's dataplane on it.
_declare("aio_poll", "vmm", "what", "aio_poll wakes: {what}")
_declare("virtio_blk_data_plane_start", "vmm", "queues",
         "dataplane start: {queues} ioeventfd(s) in the iothread")
_declare("virtio_blk_data_plane_stop", "vmm", "queues", "dataplane stop")
_declare("virtio_notify_irqfd", "vmm", "vq", "vq {vq}: notify the driver through the irqfd")
_declare("run_end", "vmm", "instructions virtual_time",
         "run ended: {instructions} guest instructions, {virtual_time} cycles")


# Tracepoints with more fields than their kind declares (EventStream.tp): the fields
# `kvm_userspace_exit` adds from struct kvm_run for the two common exits.
SHAPES: dict[str, tuple[str, tuple[str, ...]]] = {}


def _shape(name: str, kind: str, fields: str) -> None:
    SHAPES[name] = (kind, tuple(fields.split()))


_shape("kvm_userspace_exit_io", "kvm_userspace_exit",
       "reason reason_number errno direction size port count data")
_shape("kvm_userspace_exit_mmio", "kvm_userspace_exit",
       "reason reason_number errno phys_addr len is_write data")


_new_event = tuple.__new__


class _EventTuple(NamedTuple):
    seq: int
    time: int
    layer: str
    source: str
    kind: str
    names: tuple[str, ...]  # the fields' names, in order
    values: tuple[Any, ...]  # ... and their values


_NO_VALUES: Any = object()


class Event(_EventTuple):
    """One event: a tuple, immutable, built in one C call (an exit to userspace makes about
    a dozen; a frozen dataclass's field-by-field __init__ showed up). Its fields are kept as
    names and values; `fields`, the read-only mapping, is made when asked. A listener that
    keeps events, as the window's log does while a guest runs, seldom looks at most of
    them: a dict and its proxy for each were more than half of what building one cost.
    Event(seq, time, layer, source, kind, fields) takes the fields as a mapping."""

    __slots__ = ()

    def __new__(cls, seq: int, time: int, layer: str, source: str, kind: str,
                fields: Any, values: Any = _NO_VALUES) -> Event:
        if values is _NO_VALUES:  # (fields: a mapping; else names, as copy and pickle give)
            fields, values = tuple(fields), tuple(fields.values())
        return _new_event(cls, (seq, time, layer, source, kind, fields, values))

    @property
    def fields(self) -> MappingProxyType:
        return MappingProxyType(dict(zip(self.names, self.values, strict=True)))

    def __getitem__(self, name: str) -> Any:  # type: ignore[override]
        """The value of field `name` (KeyError if it has none)."""
        try:
            return self.values[self.names.index(name)]
        except ValueError:
            raise KeyError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        names = self.names
        return self.values[names.index(name)] if name in names else default

    def describe(self) -> str:
        return CATALOGUE[self.kind].fmt.format(**dict(zip(self.names, self.values, strict=True)))

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "layer": self.layer, "source": self.source,
                "kind": self.kind, **dict(zip(self.names, self.values, strict=True))}


# json.dumps(obj, separators=(",", ":")) without building a JSONEncoder per call: the same
# C encoder with the same settings (ensure_ascii, allow_nan, insertion order, the same
# TypeError for a value JSON cannot hold); only the check for circular containers is off
# (an event's fields hold none).
_iterencode = c_make_encoder(None, JSONEncoder().default, encode_basestring_ascii, None,
                             ":", ",", False, False, True) if c_make_encoder else None


def event_json(ev: Event) -> str:
    """The event as one compact JSON object: exactly json.dumps(ev.to_dict(),
    separators=(",", ":")) (the JSON Lines trace's record)."""
    if _iterencode is None:
        return json.dumps(ev.to_dict(), separators=(",", ":"))
    return "".join(_iterencode(ev.to_dict(), 0))


Listener = Callable[[Event], None]
# A line sink's factory (EventStream.subscribe's `lines`): for the stream, a kind, its
# layer, a tracepoint's field names and whether the kind is counted too, the tracepoint's
# `fire`: a function of (source, *values) that numbers the event as emit would (seq, and
# `counted` if counted) and does what the listener would do with it; or None (the listener
# takes Events only).
LineFactory = Callable[["EventStream", str, str, tuple[str, ...], bool],
                       Callable[..., None] | None]
# Tracepoints deliver through emit() (as before they existed) while this is False: a
# benchmark's pieces, and the tests that compare the two.
DIRECT = True
# Fires of a tracepoint before its own function is made from source (and, where the trace
# writer alone hears it, events before the writer makes its line function): making one
# takes about as long as 250 events save with it (0.35 ms), so a short run (hello.asm: 80
# exits) does not pay for the kinds it seldom fires.
COMPILE_AFTER = 256


class Tracepoint:
    """One shape of event emitted at fixed sites, as Linux's trace_<event>() is: `fire(source,
    *values)` (the values in the order of `names`) does what emit(kind, source, **fields)
    does, with no field mapping built where nobody needs one. The stream re-arms `fire`
    whenever who hears the kind changes: where a line sink alone hears it (the JSON Lines
    trace), the values go straight to the sink's line function (made from source after
    COMPILE_AFTER events, as the listeners' `fire` is: their first fires build Events as
    emit does). Sites call `fire` after build(kind) said True, as they call emit."""

    __slots__ = ("fire", "kind", "left", "names")

    def __init__(self, kind: str, names: tuple[str, ...]):
        self.kind = kind
        self.names = names
        self.left = COMPILE_AFTER  # fires that build Events as emit does, before its own
        self.fire: Callable[..., None] = _no_fire


def _no_fire(*values: Any) -> None:
    raise RuntimeError("a tracepoint not armed by its stream")


def _via_emit(stream: EventStream, tp: Tracepoint, counting: bool) -> Callable[..., None]:
    """A `fire` that emits as emit() does; `counting`: it delivers in place (as emit, without
    its keyword arguments packed again: the tracepoint's first fires, where their listeners
    are known), counts down `tp.left`, and the last re-arms the tracepoint. Otherwise it
    calls the stream's emit, wrapped or not, looked up at each call."""
    kind, names = tp.kind, tp.names
    if not counting:
        def fire(source: str, *values: Any) -> None:
            stream.emit(kind, source, **dict(zip(names, values, strict=True)))
        return fire
    layer, listeners, counted = stream._deliver[kind]

    def counting_fire(source: str, *values: Any) -> None:
        if len(values) != len(names):
            raise TypeError(f"{kind}: {len(values)} values for {len(names)} fields")
        if counted:
            stream.counted += 1
        stream.seq = seq = stream.seq + 1
        ev = _new_event(Event, (seq, stream.time, layer, source, kind, names, values))
        for fn in listeners:
            fn(ev)
        tp.left -= 1
        if tp.left <= 0:
            stream._arm(tp)

    return counting_fire


def event_maker(kind: str, layer: str, names: tuple[str, ...]
                ) -> Callable[[int, int, str, tuple], Event]:
    """For a line sink that hands some events on as Events (EventStream.subscribe's
    `lines`): the Event of a tracepoint's (seq, time, source, values)."""
    def event(seq: int, time: int, source: str, values: tuple) -> Event:
        return _new_event(Event, (seq, time, layer, source, kind, names, values))
    return event


class _Tracepoints(dict):
    """EventStream.tp: tracepoints by name (a catalogue kind, or a name in SHAPES), made and
    armed when first asked for."""

    def __init__(self, stream: EventStream):
        super().__init__()
        self.stream = stream

    def __missing__(self, name: str) -> Tracepoint:
        if name in SHAPES:
            kind, names = SHAPES[name]
        elif name in CATALOGUE:
            kind, names = name, CATALOGUE[name].fields
        else:
            raise KeyError(f"unknown tracepoint {name!r}")
        tp = self[name] = Tracepoint(kind, names)
        self.stream._arm(tp)
        return tp


_FIRE_MAKERS: dict[tuple[str, ...], Callable[..., Callable[..., None]]] = {}


def _fire_maker(names: tuple[str, ...]) -> Callable[..., Callable[..., None]]:
    """The function that makes a tracepoint's `fire` that builds the Event and delivers it
    to `listeners`, made from source once per field names (a fixed number of positional
    values: no *args tuple)."""
    maker = _FIRE_MAKERS.get(names)
    if maker is not None:
        return maker
    vs = "".join(f", v{i}" for i in range(len(names)))
    values = "(" + "".join(f"v{i}, " for i in range(len(names))) + ")"
    src = f"""def make(stream, kind, layer, listeners, counted):
    def fire(source{vs}):
        if counted:
            stream.counted += 1
        stream.seq = seq = stream.seq + 1
        ev = new(Event, (seq, stream.time, layer, source, kind, names, {values}))
        for fn in listeners:
            fn(ev)
    return fire
"""
    ns = {"new": _new_event, "Event": Event, "names": names}
    exec(compile(src, f"<tracepoint {' '.join(names)}>", "exec"), ns)  # from the names alone
    maker = _FIRE_MAKERS[names] = ns["make"]
    return maker


class EventStream:
    """Fan-out of events to subscribers, by kind (or "*" for all)."""

    def __init__(self) -> None:
        self.seq = 0
        self.time = 0
        # The simulated thread whose step is emitting ("vcpu0", "main-loop", "iothread0",
        # "(timers)"), set by the VM's scheduler: a device's events name the device as
        # source, and a timeline puts them on the track of the thread that ran them.
        self.thread = ""
        self._listeners: dict[str, list[Listener]] = {}
        self._all: list[Listener] = []
        # Kinds numbered without being built (count()): `counted` counts them.
        self._counted: frozenset[str] = frozenset()
        self._count_refs: dict[str, int] = {}
        self.counted = 0
        self._wanted: frozenset[str] = frozenset()  # what wants() says yes to (_rewant)
        self._heard: frozenset[str] = frozenset()  # what build() says yes to (_rewant)
        # For each kind heard: its layer, every listener in the order they hear it (those
        # of all kinds first), and whether it is counted too (_rewant).
        self._deliver: dict[str, tuple[str, tuple[Listener, ...], bool]] = {}
        self.on_change: list[Callable[[], None]] = []  # producers re-read wants() here
        self._sinks: dict[Listener, LineFactory] = {}  # listeners that take lines too
        self.tp: dict[str, Tracepoint] = _Tracepoints(self)

    def subscribe(self, listener: Listener, kinds: Iterable[str] | None = None,
                  lines: LineFactory | None = None) -> Callable[[], None]:
        """Call `listener` for events of `kinds` (all if None); returns an unsubscribe.
        `lines`: where `listener` alone hears a kind, its tracepoints call the function
        this makes in place of building an Event for `listener` (see Tracepoint)."""
        if lines is not None:
            self._sinks[listener] = lines
        if kinds is None:
            self._all.append(listener)
            targets = [self._all]
        else:
            targets = []
            for k in kinds:
                if k not in CATALOGUE:
                    raise KeyError(f"unknown event kind {k!r}")
                targets.append(self._listeners.setdefault(k, []))
                targets[-1].append(listener)
        self._changed()

        def unsubscribe() -> None:
            for t in targets:
                if listener in t:
                    t.remove(listener)
            if lines is not None:
                self._sinks.pop(listener, None)
            self._changed()

        return unsubscribe

    def count(self, kinds: Iterable[str]) -> Callable[[], None]:
        """Number events of `kinds` as a listener would see them (each takes a seq, and
        wants() is true for it) and count them in `counted`, without building an Event
        when nobody else listens; returns the undo."""
        kinds = list(kinds)
        for k in kinds:
            if k not in CATALOGUE:
                raise KeyError(f"unknown event kind {k!r}")
        refs = self._count_refs
        for k in kinds:
            refs[k] = refs.get(k, 0) + 1
        self._counted = frozenset(refs)
        self._changed()

        def uncount() -> None:
            for k in kinds:
                if refs.get(k, 0) > 1:
                    refs[k] -= 1
                else:
                    refs.pop(k, None)
            self._counted = frozenset(refs)
            self._changed()

        return uncount

    def mute(self, keep_counted: bool = False) -> tuple:
        """Nobody hears (or, unless keep_counted, numbers) what is emitted until
        unmute(the value returned): rebuilding a state makes no new events."""
        saved = (self._listeners, self._all, self._counted)
        self._listeners, self._all = {}, []
        if not keep_counted:
            self._counted = frozenset()
        self._rewant()
        return saved

    def unmute(self, saved: tuple) -> None:
        self._listeners, self._all, self._counted = saved
        self._rewant()

    def hear_only(self, listener: Listener, kinds: Iterable[str]) -> None:
        """While muted: `listener` alone hears `kinds` (a replay's own listener); unmute()
        puts everyone back."""
        self._listeners = {k: [listener] for k in kinds}
        self._rewant()

    def _rewant(self) -> None:
        self._heard = frozenset(CATALOGUE) if self._all else \
            frozenset([k for k, lst in self._listeners.items() if lst])
        self._wanted = self._heard | self._counted
        alls, counted = tuple(self._all), self._counted
        self._deliver = {k: (CATALOGUE[k].layer, alls + tuple(self._listeners.get(k, ())),
                             k in counted) for k in self._heard}
        for tp in self.tp.values():
            self._arm(tp)

    def rearm(self) -> None:
        """Re-arm the tracepoints: after emit is wrapped or unwrapped (they deliver through
        it while it is), or a line sink's line function changed."""
        self._rewant()

    def _arm(self, tp: Tracepoint) -> None:
        kind = tp.kind
        layer, listeners, counted = self._deliver.get(kind, (CATALOGUE[kind].layer, (), False))
        # (Not `"emit" in self.__dict__`: reading __dict__ makes CPython 3.11 give the
        # instance a real dict, and every attribute access of emit and build slower.)
        direct = DIRECT and getattr(self.emit, "__func__", None) is type(self).emit
        if direct and len(listeners) == 1:
            lines = self._sinks.get(listeners[0])
            fire = lines(self, kind, layer, tp.names, counted) if lines is not None else None
            if fire is not None:
                tp.fire = fire
                return
        if not direct or not listeners or tp.left > 0:
            # (Nobody hears it: emit's own rules, where a counted kind takes its number.)
            tp.fire = _via_emit(self, tp, direct and bool(listeners) and tp.left > 0)
            return
        tp.fire = _fire_maker(tp.names)(self, kind, layer, listeners, counted)

    def _changed(self) -> None:
        self._rewant()
        for cb in self.on_change:
            cb()

    def wants(self, kind: str) -> bool:
        return kind in self._wanted

    def build(self, kind: str) -> bool:
        """For a producer about to emit `kind`, in place of wants(): True if a listener
        hears it (build its fields and emit it). An event that is only counted (count())
        is numbered here, as emit would number it, and False comes back, as for a kind
        nobody wants: its fields need not be worked out. Call emit once after True."""
        if kind in self._heard:
            return True
        if kind in self._counted:
            self.counted += 1
            self.seq += 1
        return False

    def emit(self, kind: str, source: str, **fields: Any) -> None:
        d = self._deliver.get(kind)
        if d is None:  # nobody hears it
            if kind in self._counted:
                self.counted += 1
                self.seq += 1
            elif self._all:
                raise KeyError(kind)  # (an unknown kind, where every kind is heard)
            return
        layer, listeners, counted = d
        if counted:
            self.counted += 1
        self.seq = seq = self.seq + 1
        ev = _new_event(Event, (seq, self.time, layer, source, kind, tuple(fields),
                                tuple(fields.values())))
        for fn in listeners:
            fn(ev)
