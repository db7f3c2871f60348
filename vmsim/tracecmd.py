"""The `text` trace format (`vmsim run --trace FILE --trace-format text`): kvm.ko's events
as `trace-cmd report` prints a real host's, so that the two can be laid side by side.

One line per event of Linux's `kvm` and `kvmmmu` trace systems:

    qemu-system-x86-1001    [000]     0.000123: kvm_exit: vcpu 0 reason IO_INSTRUCTION ...

task and thread id, CPU, time in seconds, event name, and the fields as the tracepoint's
TP_printk formats them (Linux arch/x86/kvm/trace.h, arch/x86/kvm/mmu/mmutrace.h,
include/trace/events/kvm.h, as of commit 029e8c8ad655 of arch/x86/kvm/trace.h). What
vmsim cannot know of a real host is nominal and documented in docs/trace-format.md: the
thread ids (QEMU_PID + 1 + the vCPU index), the CPU (the vCPU's index: each vCPU thread
pinned to its own CPU) and the clock (virtual cycles at vmsim.costs.NOMINAL_HZ). Events
with no kernel tracepoint (the VMM's, the CPU's) are not written: a host's trace-cmd
would not show them either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import IO, Any

from vmsim.costs import NOMINAL_HZ
from vmsim.events import Event, EventStream
from vmsim.files import GuardedOutput, OutputError

TASK = "qemu-system-x86"  # QEMU's comm, cut to 15 characters as the kernel keeps it
QEMU_PID = 1000  # nominal: the main thread; vCPU n's thread is QEMU_PID + 1 + n

# __print_symbolic tables of the tracepoints.
_EXCEPTIONS = {0: "#DE", 1: "#DB", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM",
               8: "#DF", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF",
               17: "#AC", 18: "#MC"}  # kvm_trace_sym_exc
_USERSPACE_EXITS = {0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 3: "HYPERCALL", 4: "DEBUG",
                    5: "HLT", 6: "MMIO", 7: "IRQ_WINDOW_OPEN", 8: "SHUTDOWN",
                    9: "FAIL_ENTRY", 10: "INTR", 11: "SET_TPR", 12: "TPR_ACCESS",
                    13: "S390_SIEIC", 14: "S390_RESET", 15: "DCR", 16: "NMI",
                    17: "INTERNAL_ERROR", 18: "OSI"}  # kvm_trace_exit_reason
_PFERR = ((1, "P"), (2, "W"), (4, "U"), (8, "RSVD"), (16, "F"))  # kvm_mmu_trace_pferr_flags
EINTR = 4


def _symbolic(value: int, table: Mapping[int, str]) -> str:
    """__print_symbolic: the name, or the value in hex when the table has none."""
    return table.get(value, f"{value:#x}")


def _flags(value: int) -> str:
    """__print_flags(value, "|", kvm_mmu_trace_pferr_flags)."""
    return "|".join(name for bit, name in _PFERR if value & bit)


def _sp(f: Mapping[str, Any]) -> str:
    """KVM_MMU_PAGE_PRINTK. vmsim's shadow pages: generation 0, quadrant 0 (its shadow
    entries are 4 bytes, like the guest's), every access, EFER.NX off, A/D bits on, sync."""
    return (f"sp gen 0 gfn {f['gfn']:x} l{f['level']} 4-byte q0"
            f"{' direct' if f['direct'] else ''} wux !nxe ad root {f['root_count']} sync")


def _userspace_exit(f: Mapping[str, Any]) -> str:
    errno = f["errno"]
    if errno < 0:
        return f"reason {'restart' if errno == -EINTR else 'error'} ({-errno})"
    n = f["reason_number"]
    name = _USERSPACE_EXITS.get(n)
    return f"reason {'KVM_EXIT_' + name if name else f'{n:#x}'} ({n})"


# TP_printk of each tracepoint vmsim models, over the event's fields.
TP_PRINTK: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "kvm_entry": lambda f: f"vcpu {f['vcpu_id']}, rip {f['rip']:#x}",
    "kvm_exit": lambda f: (
        f"vcpu {f['vcpu_id']} reason {f['exit_reason']} rip {f['guest_rip']:#x} "
        f"info1 0x{f['info1']:016x} info2 0x{f['info2']:016x} "
        f"intr_info 0x{f['intr_info']:08x} error_code 0x{f['error_code']:08x}"),
    "kvm_pio": lambda f: (
        f"pio_{'write' if f['rw'] else 'read'} at {f['port']:#x} size {f['size']} "
        f"count {f['count']} val {f['val']:#x} {'(...)' if f['count'] > 1 else ''}"),
    "kvm_mmio": lambda f: f"mmio {f['type']} len {f['len']} gpa {f['gpa']:#x} val {f['val']:#x}",
    "kvm_cr": lambda f: f"cr_{'write' if f['rw'] else 'read'} {f['cr']:x} = {f['val']:#x}",
    "kvm_cpuid": lambda f: (
        f"func {f['function']:x} idx {f['index']:x} rax {f['rax']:x} rbx {f['rbx']:x} "
        f"rcx {f['rcx']:x} rdx {f['rdx']:x}, cpuid entry "
        f"{'found' if f['found'] else 'not found'}"
        f"{', used max basic' if f['used_max_basic'] else ''}"),
    "kvm_msr": lambda f: (f"msr_{'write' if f['write'] else 'read'} {f['ecx']:x} = "
                          f"{f['data']:#x}{' (#GP)' if f['exception'] else ''}"),
    "kvm_hypercall": lambda f: (f"nr {f['nr']:#x} a0 {f['a0']:#x} a1 {f['a1']:#x} "
                                f"a2 {f['a2']:#x} a3 {f['a3']:#x}"),
    "kvm_page_fault": lambda f: f"address {f['fault_address']:x} error_code {f['error_code']:x}",
    "kvm_inj_virq": lambda f: (f"{'Soft/INTn' if f['soft'] else 'IRQ'} {f['irq']:#x}"
                               f"{' [reinjected]' if f['reinjected'] else ''}"),
    "kvm_set_irq": lambda f: f"gsi {f['gsi']} level {f['level']} source {f['irq_source_id']}",
    "kvm_pic_set_irq": lambda f: (
        f"chip {f['chip']} pin {f['pin']} "
        f"({'level' if f['elcr'] >> f['pin'] & 1 else 'edge'}"
        f"{'|masked' if f['imr'] >> f['pin'] & 1 else ''})"
        f"{' (coalesced)' if f['coalesced'] else ''}"),
    "kvm_apic": lambda f: f"apic_{'write' if f['rw'] else 'read'} {f['reg']:#x} = {f['val']:#x}",
    "kvm_apic_ipi": lambda f: (f"dst {f['dest_id']:x} vec {f['icr_low'] & 0xFF} "
                               f"(icr_low {f['icr_low']:#x})"),
    "kvm_apic_accept_irq": lambda f: (f"apicid {f['apicid']:x} vec {f['vec']} "
                                      f"(dm {f['dm']:#x}|{'level' if f['tm'] else 'edge'})"),
    "kvm_eoi": lambda f: f"apicid {f['apicid']:x} vector {f['vector']}",
    "kvm_vcpu_wakeup": lambda f: (f"{'wait' if f['waited'] else 'poll'} time {f['ns']} ns, "
                                  f"polling {'valid' if f['valid'] else 'invalid'}"),
    "kvm_inj_exception": lambda f: (f"{_symbolic(f['exception'], _EXCEPTIONS)} "
                                    f"({f['error_code'] if f['has_error'] else 0:#x})"),
    "kvm_emulate_insn": lambda f: (
        f"{f['csbase']:x}:{f['rip']:x}:{' '.join(f['insn'][i:i + 2] for i in range(0, len(f['insn']), 2))}"
        f" ({f['mode']}){' failed' if f['failed'] else ''}"),
    "kvm_userspace_exit": _userspace_exit,
    "kvm_mmu_get_page": lambda f: f"{_sp(f)} {'new' if f['created'] else 'existing'}",
    "kvm_mmu_prepare_zap_page": _sp,
    "kvm_mmu_pagetable_walk": lambda f: (f"addr {f['addr']:x} pferr {f['pferr']:x} "
                                         f"{_flags(f['pferr'])}"),
    "kvm_mmu_paging_element": lambda f: f"pte {f['pte']:x} level {f['level']}",
}


def format_line(ev: Event) -> str | None:
    """The `trace-cmd report` line of an event, or None for one no kernel tracepoint has."""
    printk = TP_PRINTK.get(ev.kind)
    if printk is None:
        return None
    index = int(ev.source[4:]) if ev.source.startswith("vcpu") else -1
    tid = QEMU_PID + 1 + index if index >= 0 else QEMU_PID
    cpu = max(index, 0)
    seconds = ev.time / NOMINAL_HZ
    return f"{TASK:>16}-{tid:<7} [{cpu:03d}] {seconds:12.6f}: {ev.kind}: {printk(ev.fields)}"


class TextTraceWriter(GuardedOutput):
    """Writes the kvm events as `trace-cmd report` lines as they happen; the same
    interface as vmsim.trace.TraceWriter (no instruction records: a host's trace has
    none)."""

    def __init__(self, events: EventStream, out: IO[str], path: str = "<trace>"):
        super().__init__(out, path)
        self._unsubscribe: Callable[[], None] | None = events.subscribe(self._write, list(TP_PRINTK))

    def add_column(self, col: Any) -> None:
        pass  # instructions are not part of this format

    def flush_instructions(self) -> None:
        pass

    def _write(self, ev: Event) -> None:
        line = format_line(ev)
        if line is None:
            return

        def put() -> None:
            self.out.write(line + "\n")
            self.lines += 1
        self._guarded(put)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        try:
            self.out.flush()
        except OSError as e:
            raise OutputError(self.path, e) from None
