"""The translated (basic-block) path against the per-instruction path, in lock-step.

`Twin` loads one guest into two machines: `fast`, a CPU with `use_blocks=True`, and
`slow`, one with `use_blocks=False` (the per-instruction path). `step_block()` asks the
fast CPU for the block at its EIP and runs exactly that many instructions on both
(`cpu.run(block.n)`; one instruction when no block starts there), then compares FULL
state: the GPRs, EIP, EFLAGS (materialized), icount, CR0/2/3/4, the segment registers,
GDTR/IDTR, DR6, the interrupt shadow, halted/shutdown, exceptions delivered, the last
intercept, the stop reason and message, the TLB and the walk counters (walks cost
virtual time), the whole of RAM, and every event the CPU emitted (kind and fields, in
order). `run_budgets()` instead runs both with the same arbitrary budgets (blocks cut
short by the budget, a fault or an exit in their middle).

The machine: 4 MiB of RAM, the code at CODE, data/stack/low windows as tests/diff's
harness (so gen.py's programs fit), a flat GDT with the selectors gen_blocks.py uses, an
IDT whose every handler is a HLT at its own address (so a delivered exception ends the
run with its frame on the stack), and page tables identity-mapping the 4 MiB (some data
pages not present or read-only when asked; CR0.WP set, so CPL-0 writes to them fault).
CR3 always points at them; `paging=True` starts with CR0.PG set.

Before the block translator exists `use_blocks` and `translate_block` are absent and
both CPUs run the per-instruction path (the harness then checks itself).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from tests.diff.harness import CODE, DATA, LOW, STACK, Start
from vmsim.events import EventStream
from vmsim.hw import Cpu, PhysicalMemory, StopReason
from vmsim.hw.exceptions import CpuException
from vmsim.trace import _BIAS, InstructionColumn

RAM_SIZE = 4 << 20
GDT, IDT, HANDLERS = 0x380000, 0x381000, 0x382000
PD, PT = 0x390000, 0x391000
IDT_VECTORS = 48
CR0_PG, CR0_WP = 0x80000000, 0x10000
CR4_PSE = 0x10

# Flat descriptors (base 0, limit 4 GiB, 32-bit): null, code (execute/read), data RW,
# data read-only, code execute-only, code execute/read, and one not-present data segment.
GDT_ENTRIES = (0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF, 0x00CF90000000FFFF,
               0x00CF98000000FFFF, 0x00CF9A000000FFFF, 0x00CF12000000FFFF)

# Event kinds a bare CPU emits. "mmu" adds the per-walk ones (which change the memory
# accessors), "all" every kind (TLB hits too: the traced accessors).
HW_KINDS = ("exception", "triple_fault", "unsupported", "not_in_subset", "tlb_flush", "smc")
MMU_KINDS = (*HW_KINDS, "tlb_miss", "walk_step")


def has_blocks() -> bool:
    """Does this vmsim have the block translator (Cpu.translate_block)?"""
    return hasattr(Cpu, "translate_block")


def build_machine(code: bytes, start: Start, *, paging: bool = False,
                  not_present: tuple[int, ...] = (), read_only: tuple[int, ...] = (),
                  code_at: int = CODE) -> PhysicalMemory:
    """RAM with the guest, the windows, GDT, IDT, HLT handlers and the page tables.
    `not_present` / `read_only`: physical addresses of 4-KiB pages to map so."""
    mem = PhysicalMemory(RAM_SIZE)
    # HLTs after the code: a program that jumps past its end (its own stores may have
    # made it a jump) stops there instead of running through zeros.
    mem.load(code_at, code + b"\xf4" * 0x1000)
    mem.load(DATA, start.data)
    mem.load(STACK, start.stack)
    mem.load(LOW, start.low)
    for i, d in enumerate(GDT_ENTRIES):
        mem.load(GDT + 8 * i, d.to_bytes(8, "little"))
    for v in range(IDT_VECTORS):
        off = HANDLERS + 16 * v
        mem.load(HANDLERS + 16 * v, b"\xf4\xeb\xfd")  # hlt; jmp hlt
        gate = (0x08 << 16) | (off & 0xFFFF) | ((off & 0xFFFF0000) | 0x8E00) << 32
        mem.load(IDT + 8 * v, gate.to_bytes(8, "little"))
    mem.load(PD, (PT | 0x3).to_bytes(4, "little"))
    pt = bytearray()
    for i in range(RAM_SIZE >> 12):
        pa = i << 12
        flags = 0 if pa in not_present else 0x1 if pa in read_only else 0x3
        pt += (pa | flags).to_bytes(4, "little")
    mem.load(PT, bytes(pt))
    return mem


def make_cpu(mem: PhysicalMemory, start: Start, blocks: bool, *, paging: bool = False,
             entry: int = CODE, events: EventStream | None = None,
             intercept_exceptions: bool = False) -> Cpu:
    cpu = Cpu(mem, events=events)
    cpu.use_blocks = blocks  # an attribute the per-instruction-only CPU ignores
    cpu.reset_flat(entry=entry, esp=start.regs[4])
    cpu.r[:] = [v & 0xFFFFFFFF for v in start.regs]
    cpu.eflags = start.eflags
    cpu.gdtr = (GDT, 8 * len(GDT_ENTRIES) - 1)
    cpu.idtr = (IDT, 8 * IDT_VECTORS - 1)
    cpu.set_control(4, CR4_PSE)
    cpu.set_control(3, PD)
    cpu.set_control(0, cpu.cr0 | CR0_WP | (CR0_PG if paging else 0))
    if intercept_exceptions:
        cpu.intercept = lambda info: info.kind == "exception"
    return cpu


def cpu_view(cpu: Cpu) -> dict:
    """Everything about a CPU a user can see or a resumed run depends on, cheap to take."""
    mmu = cpu.mmu
    return {
        "r": [f"{v:08x}" for v in cpu.r], "eip": f"{cpu.eip:08x}",
        "eflags": f"{cpu.eflags:08x}", "icount": cpu.icount,
        "cr0": mmu.cr0, "cr2": cpu.cr2, "cr3": mmu.cr3, "cr4": mmu.cr4,
        "seg": list(cpu.seg), "gdtr": cpu.gdtr, "idtr": cpu.idtr,
        "dr6": cpu.dr6, "dr7": cpu.dr7, "shadow": (cpu.shadow_bits, cpu.shadow_icount),
        "halted": cpu.halted, "shut_down": cpu.shut_down, "deliveries": cpu.deliveries,
        "stop_message": cpu.stop_message, "stop_requested": cpu.stop_requested,
        "last_intercept": cpu.last_intercept, "tsc": cpu.tsc(),
        "tlb": dict(mmu.tlb), "tlb_w": dict(mmu.tlb_w), "walks": mmu.walks, "refs": mmu.refs,
        "global": set(mmu.global_pages),
    }


def first_ram_difference(a, b) -> str:
    a, b = bytes(a), bytes(b)
    i = next(i for i in range(len(a)) if a[i] != b[i])
    j = max(k for k in range(i, min(len(a), i + 4096)) if a[k] != b[k])
    return f"RAM {i:#x}..{j:#x}: fast {a[i:j + 1][:24].hex()} slow {b[i:j + 1][:24].hex()}"


class Mismatch(AssertionError):
    """The translated path and the per-instruction path disagree."""


@dataclass
class Twin:
    """One guest on two machines: `fast` runs blocks, `slow` one instruction at a time."""

    code: bytes
    start: Start
    paging: bool = False
    not_present: tuple[int, ...] = ()
    read_only: tuple[int, ...] = ()
    intercept_exceptions: bool = False
    events: str | None = "hw"  # None, "hw", "mmu" or "all": which CPU events are compared
    end: int = 0
    code_at: int = CODE
    # The instruction recorder on both: True, an array of EIPs; "column", the trace's
    # InstructionColumn (its groups' lanes), drained as the trace writer drains it.
    record: bool | str = False
    redecode: bool = False  # decode ahead (decode_from) wherever the fast CPU has not
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.end:
            self.end = self.code_at + len(self.code)
        self.fast_events: list = []
        self.slow_events: list = []
        self.streams: list[EventStream] = []  # fast's, slow's (when events is not None)
        self.fast = self._make(True, self.fast_events)
        self.slow = self._make(False, self.slow_events)
        self.stops: list[StopReason] = []
        self.passes_left = 1
        self.blocks_run = 0  # steps that ran a block of more than one instruction

    def _make(self, blocks: bool, sink: list) -> Cpu:
        mem = build_machine(self.code, self.start, paging=self.paging,
                            not_present=self.not_present, read_only=self.read_only,
                            code_at=self.code_at)
        ev = None
        column = (InstructionColumn("cpu") if self.record == "column"
                  else array("I") if self.record else None)
        if self.events is not None:
            ev = EventStream()
            kinds = {"hw": HW_KINDS, "mmu": MMU_KINDS, "all": None}[self.events]
            ev.subscribe(self.recorder(sink, column), kinds)
            self.streams.append(ev)
        cpu = make_cpu(mem, self.start, blocks, paging=self.paging, entry=self.code_at,
                       events=ev, intercept_exceptions=self.intercept_exceptions)
        cpu.recorder = column
        return cpu

    @staticmethod
    def recorder(sink: list, column: array | InstructionColumn | None):
        """An event listener keeping each event, and with a recorder, how many EIPs were
        recorded when it came (a trace writes the column out before each event: what
        runs inside an instruction must find exactly the instructions so far recorded)."""
        if column is None:
            return lambda e: sink.append((e.kind, e.source, dict(e.fields)))
        if isinstance(column, InstructionColumn):
            return lambda e: sink.append((e.kind, e.source, dict(e.fields),
                                          column.count + column.waiting()))
        return lambda e: sink.append((e.kind, e.source, dict(e.fields), len(column)))

    def subscribe(self, kinds) -> None:
        """Listen to more event kinds on both CPUs from now on (a listener for the MMU's
        kinds rebuilds the memory accessors: translated blocks must be dropped)."""
        for ev, sink, cpu in zip(self.streams, (self.fast_events, self.slow_events),
                                 (self.fast, self.slow), strict=True):
            ev.subscribe(self.recorder(sink, cpu.recorder), kinds)

    # -- running -------------------------------------------------------------------------
    def predecode(self) -> None:
        """Decode every instruction of the code on both CPUs, as a first pass through it
        would (blocks are translated from decoded instructions only)."""
        self.decode_from(self.code_at)

    def decode_from(self, eip: int) -> None:
        """Decode on both CPUs from `eip` on, up to the first instruction decoded already
        (or the end of the code, or a fetch that faults)."""
        from vmsim.hw.decode import decode_at

        for cpu in (self.fast, self.slow):
            at = eip
            while self.code_at <= at < self.end and at not in cpu.icache:
                try:
                    decode_at(cpu, at)
                except CpuException:
                    break
                at += cpu.decoded[at][0].len
        self.compare()

    def pretranslate(self) -> None:
        """A block at every decoded address of the fast CPU (blocks starting mid-way)."""
        if has_blocks() and self.fast.use_blocks:
            for eip in sorted(self.fast.icache):
                self.fast.translate_block(eip)

    def block_at_eip(self):
        """The fast CPU's block at its EIP, or None (no translator, none starts here). Asked
        only where the instruction is decoded already: translate_block would fetch it,
        which the slow CPU does only when it runs it."""
        f = self.fast
        tb = getattr(f, "translate_block", None)
        if tb is None or not getattr(f, "use_blocks", False) or f.halted or f.shut_down:
            return None
        if f.eip not in f.icache and self.redecode:
            self.decode_from(f.eip)
        if f.eip not in f.icache:
            return None
        b = tb(f.eip)
        if b is not None:
            if b.eips[0] != f.eip or len(b.eips) != b.n or b.n < 1:
                raise Mismatch(f"block at {f.eip:#x}: n={b.n} eips={[hex(e) for e in b.eips]}")
        return b

    def step_block(self) -> StopReason:
        b = self.block_at_eip()
        n = 1 if b is None else b.n
        if n > 1:
            self.blocks_run += 1
        what = f"block {[hex(e) for e in b.eips]}" if b is not None else "one instruction"
        return self.run_both(n, what)

    def run_both(self, n: int, what: str = "") -> StopReason:
        eip = self.fast.eip
        rf = self.fast.run(n)
        rs = self.slow.run(n)
        self.log.append(f"{eip:08x} run({n}) {what} -> {rf.name}")
        if rf != rs:
            raise self._mismatch(f"stop reason: fast {rf} slow {rs}")
        self.stops.append(rf)
        self.compare()
        return rf

    def finished(self, stop: StopReason) -> bool:
        """Stopped for good, or at the end of the code (then, with passes left, the code
        starts again from the top on both: the second time round it is decoded)."""
        f = self.fast
        if stop is not StopReason.LIMIT or f.halted or f.shut_down:
            return True
        if f.eip == self.end:
            self.passes_left -= 1
            if self.passes_left <= 0:
                return True
            self.fast.eip = self.slow.eip = self.code_at
        return False

    def run_blocks(self, max_steps: int = 400, passes: int = 1) -> int:
        """Block by block until the code ends (`passes` times), the CPU stops or
        `max_steps`; the steps taken."""
        self.passes_left = passes
        for i in range(max_steps):
            if self.finished(self.step_block()):
                return i + 1
        return max_steps

    def run_budgets(self, budgets, max_steps: int = 400, passes: int = 1) -> None:
        """cpu.run(n) on both for each n of `budgets` (a run of 64 or more translates
        blocks itself, as a free run does)."""
        self.passes_left = passes
        for i, n in enumerate(budgets):
            if i >= max_steps or self.finished(self.run_both(n)):
                return

    # -- comparing -----------------------------------------------------------------------
    def compare(self) -> None:
        a, b = cpu_view(self.fast), cpu_view(self.slow)
        diffs = [f"{k}: fast {a[k]!r} slow {b[k]!r}" for k in a if a[k] != b[k]]
        fr, sr = recorded(self.fast.recorder), recorded(self.slow.recorder)
        if fr is not None and fr != sr:
            i = next((i for i, (x, y) in enumerate(zip(fr, sr, strict=False)) if x != y),
                     min(len(fr), len(sr)))
            diffs.append(f"recorded EIPs from #{i}: fast {[hex(e) for e in fr[i:i + 4]]} "
                         f"slow {[hex(e) for e in sr[i:i + 4]]} (lengths {len(fr)} {len(sr)})")
        if self.fast.mem.ram != self.slow.mem.ram:
            diffs.append(first_ram_difference(self.fast.mem.ram, self.slow.mem.ram))
        if self.fast_events != self.slow_events:
            i = next((i for i, (x, y) in enumerate(zip(self.fast_events, self.slow_events,
                                                          strict=False))
                      if x != y), min(len(self.fast_events), len(self.slow_events)))
            diffs.append(f"event {i}: fast {self.fast_events[i:i + 2]} "
                         f"slow {self.slow_events[i:i + 2]}")
        if diffs:
            raise self._mismatch("\n  ".join(diffs))

    def compare_saved_state(self) -> None:
        """cpu.state() as a snapshot saves it (the decoded-code bookkeeping included:
        which frames hold decoded code decides which later writes are `smc` events)."""
        a, b = self.fast.state(), self.slow.state()
        diffs = [f"{k}: fast {a[k]!r} slow {b[k]!r}" for k in a if a[k] != b[k]]
        if diffs:
            raise self._mismatch("saved state differs:\n  " + "\n  ".join(diffs))

    def _mismatch(self, what: str) -> Mismatch:
        recent = "\n    ".join(self.log[-10:])
        return Mismatch(f"{what}\nfast: eip={self.fast.eip:#x} icount={self.fast.icount}"
                        f"\nslow: eip={self.slow.eip:#x} icount={self.slow.icount}"
                        f"\nlast steps:\n    {recent}")


def recorded(recorder: array | InstructionColumn | None) -> array | None:
    """Every EIP a recorder has taken so far. A column is drained as the trace writer's
    _drain drains it (its lanes when it keeps lanes, else its EIPs), into `taken`."""
    if not isinstance(recorder, InstructionColumn):
        return recorder
    taken = recorder.__dict__.setdefault("taken", array("I"))
    run = recorder.take_lanes()
    if run is not None:
        e, lanes = run
        taken.append(e)
        for lane in memoryview(lanes[4:]).cast("I"):
            e += lane - _BIAS
            taken.append(e)
        recorder.count += len(lanes) >> 2
    else:
        eips = recorder.eips
        taken.extend(eips)
        recorder.count += len(eips)
        del eips[:]
    return taken
