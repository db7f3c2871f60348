"""kvm.ko's instruction emulator for MMIO and string I/O (LNX arch/x86/kvm/emulate.c and
x86.c: x86_emulate_instruction, emulator_pio_in_out, emulator_read/write_emulated).

vmsim does not decode twice: the emulator replays the exiting instruction on the vCPU's
own interpreter with the guest-physical trap and the port bus pointed at itself, so an
MMIO or port access is served from what userspace already answered, or recorded for
userspace. What userspace sees follows Linux:

- an MMIO read exits (KVM_EXIT_MMIO, is_write 0); on the next KVM_RUN the instruction is
  replayed with the answer from the read cache;
- an MMIO write completes the instruction, then exits with the data;
- a REP string instruction is emulated one iteration at a time; each MMIO access and each
  OUTS element is its own exit (count 1), while INS reads ahead: one exit for
  min(ECX, the rest of the page, 1024 bytes) elements, consumed without further exits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import iced_x86

from vmsim.costs import COSTS
from vmsim.hw import exceptions as X
from vmsim.hw.cpu import Intercept, InterceptExit, StopReason
from vmsim.hw.decode import format_instruction
from vmsim.hw.exceptions import CpuException
from vmsim.hw.flags import DF, TF
from vmsim.hw.insn.string import address_mask
from vmsim.hw.memory import PAGE_SIZE
from vmsim.hw.vmcs import INTR_INFO_VALID_MASK, F
from vmsim.kvm.api import (
    KVM_EXIT_INTERNAL_ERROR,
    KVM_EXIT_IO,
    KVM_EXIT_IO_IN,
    KVM_EXIT_IO_OUT,
    KVM_EXIT_MMIO,
    KVM_EXIT_SHUTDOWN,
    KVM_INTERNAL_ERROR_EMULATION,
    KVM_PIO_PAGE_OFFSET,
)
from vmsim.kvm.refused import linux_emulator_refuses

if TYPE_CHECKING:
    from vmsim.kvm.kvm_main import SimVcpu

IO_READ_CACHE_BYTES = 1024  # sizeof(struct read_cache.data) in the emulator

_LATE: tuple | None = None


def _late() -> tuple:
    """x86 and kvm_main (they import this module), bound on first use: an import
    statement in the emulator's callbacks cost a microsecond at every MMIO exit (3-6 us in
    the GUI, where PySide's import hook takes each import statement)."""
    global _LATE
    import vmsim.kvm.kvm_main as kvm_main
    import vmsim.kvm.x86 as x86

    _LATE = (x86, kvm_main)
    return _LATE


class Emulation:
    """One instruction being emulated (struct x86_emulate_ctxt), kept across exits."""

    def __init__(self, v: SimVcpu, eip: int):
        self.v = v
        self.eip = eip
        self.mem_read: list[int] = []  # answers to MMIO reads, in access order
        self.mem_pos = 0
        self.io_read: list[int] = []  # read-ahead PIO IN elements
        self.io_pos = 0
        self.pending_read: tuple | None = None
        self.pio_out: tuple[int, int, int] | None = None
        self.text = ""
        self.insn = b""
        self.refused = ""  # why Linux's emulator refuses the instruction (vmsim.kvm.refused)
        self.lmsw: int | None = None  # an LMSW's source: kvm_lmsw once the state is stored
        # LGDT, LIDT, SGDT and SIDT move their operand with read_std / write_std, which
        # address guest memory as ordinary RAM, as does a descriptor table's read (the CPU's
        # table_read). Outside the memory slots they give X86EMUL_IO_NEEDED without
        # mmio_needed: no exit to userspace, the instruction not retired, RIP where it was.
        self.std = False
        self.io_needed = False

    def intercept(self, info: Intercept) -> bool:
        """The replay's VMX seam: an LMSW (from MMIO) writes CR0 as em_lmsw does, through
        kvm.ko's kvm_set_cr0, not through the CPU, which would keep the bits kvm.ko owns."""
        if info.kind != "lmsw":
            return False
        self.lmsw = info.extra["source"]
        return True

    # -- served to the interpreter while it replays the instruction ---------------------
    def _not_ram(self) -> None:
        """An access an *_std accessor makes outside the memory slots: X86EMUL_IO_NEEDED."""
        self.io_needed = True
        raise InterceptExit(Intercept("emulator_io_needed", self.eip))

    def mmio_read(self, gpa: int, size: int) -> int:
        if self.std or self.v.cpu.table_read:
            self._not_ram()
        kernel_mmio_read = (_LATE or _late())[0].kernel_mmio_read
        value = kernel_mmio_read(self.v, gpa, size)
        if value is not None:
            return value  # an in-kernel device (the local APIC): no exit
        if self.mem_pos < len(self.mem_read):
            v = self.mem_read[self.mem_pos]
            self.mem_pos += 1
            return v
        self.pending_read = ("mmio", gpa, size)
        raise InterceptExit(Intercept("emulator_needs_data", self.eip))

    def mmio_write(self, gpa: int, size: int, value: int) -> None:
        if self.std:
            self._not_ram()
        if not (self.io_read and self.rep and not self.v.cpu.sysflags & DF):
            kernel_mmio_write = (_LATE or _late())[0].kernel_mmio_write
            if kernel_mmio_write(self.v, gpa, size, value):
                return
        # (A REP INS batch's elements go to the devices as one write once it is in:
        # x86_emulate_instruction, _mem_str_fragments.)
        self.v.mmio_fragments.append((gpa, size, value.to_bytes(size, "little")))

    def read(self, port: int, size: int) -> int:  # the port bus: IN/INS
        kernel_pio_read = (_LATE or _late())[0].kernel_pio_read
        value = kernel_pio_read(self.v, port, size)
        if value is not None:
            return value
        if self.io_pos < len(self.io_read):
            v = self.io_read[self.io_pos]
            self.io_pos += 1
            return v
        cpu = self.v.cpu
        count = 1
        if self.rep:
            # pio_in_emulated's read-ahead: min(RCX, in_page, 1024 / size) elements, at least
            # one. Linux counts in_page in bytes, not elements, and with DF set it is the
            # offset of RDI in its page (the room below it): the host's KVM agrees.
            offset = cpu.r[7] & (PAGE_SIZE - 1)
            in_page = offset if cpu.sysflags & DF else PAGE_SIZE - offset
            count = max(1, min(self.ecx, in_page, IO_READ_CACHE_BYTES // size))
        self.pending_read = ("pio", port, size, count)
        raise InterceptExit(Intercept("emulator_needs_data", self.eip))

    def write(self, port: int, size: int, value: int) -> None:  # OUT/OUTS
        kernel_pio_write = (_LATE or _late())[0].kernel_pio_write
        if not kernel_pio_write(self.v, port, size, value):
            self.pio_out = (port, size, value)

    # -- one iteration -------------------------------------------------------------------------
    rep = False
    ecx = 0

    def step(self) -> str:
        """Replay one iteration: "done", "restart" (REP continues), "read" (needs userspace)."""
        GuestTables = (_LATE or _late())[1].GuestTables
        v, mmu = self.v, self.v.cpu.mmu
        # The emulator walks the guest's tables in software, reading them by gfn through
        # the memory slots (a table outside them fails the walk with #PF, never an MMIO
        # access), and addresses guest memory by guest-physical address, not through EPT.
        saved_tables = mmu.tables
        mmu.tables = GuestTables(v.vm.mem, mmu)
        try:
            if v.vm.shadow is not None:
                # vcpu->arch.walk_mmu: the guest's own tables, not the write-protected
                # shadows: run the replay with the guest's CR0/CR3/CR4.
                saved = (mmu.cr0, mmu.cr3, mmu.cr4)
                mmu.cr0, mmu.cr3, mmu.cr4 = v.guest_cr0, v.guest_cr3, v.guest_cr4
                mmu.flush(scope="emulation")
                try:
                    return self._step_or_fault()
                finally:
                    mmu.cr0, mmu.cr3, mmu.cr4 = saved
                    mmu.flush(scope="emulation")
            ept = mmu.ept
            if ept is None:
                return self._step_or_fault()
            # Its translations must not outlive it.
            ept.software = True
            mmu.flush(scope="emulation")
            try:
                return self._step_or_fault()
            finally:
                ept.software = False
                mmu.flush(scope="emulation")
        finally:
            mmu.tables = saved_tables

    def _step_or_fault(self) -> str:
        try:
            return self._step()
        except CpuException as e:
            # The fetch faulted (its walk met a table outside the memory slots): the
            # guest gets the fault, delivered with the emulator's view of memory.
            stop = self.v.cpu.exception(e.vector, e.error_code, e.cr2)
            if stop is StopReason.SHUTDOWN:
                return "shutdown"  # and delivering it faulted twice more
            return "failed" if stop is StopReason.INTERCEPT else "done"

    def _step(self) -> str:
        v, cpu = self.v, self.v.cpu
        try:
            gpa = cpu.mmu.probe(self.eip)
        except CpuException:  # the fetch's walk met a table outside the memory slots
            raise CpuException(X.PF, 0, cr2=self.eip) from None
        if gpa is None or not v.vm.mem.is_ram(gpa):
            return "fetch-mmio"
        # (self.insn: the bytes the decoder read, ctxt->fetch, for the tracepoint)
        ins, self.text, self.insn, self.refused, self.std = _decode(cpu, self.eip)
        if self.refused:
            return "failed"
        self.rep = ins.is_string_instruction and (ins.has_rep_prefix or ins.has_repne_prefix)
        # (CX with a 16-bit address size; only a REP counts)
        self.ecx = cpu.r[1] & address_mask(ins) if self.rep else cpu.r[1]
        if self.rep and self.ecx == 0:
            cpu.eip = ins.next_ip32
            return "done"
        self.mem_pos = 0  # each replay consumes the MMIO answers from the first
        trap, ports, seam = v.vm.trap, cpu.io, cpu.intercept
        trap.emulator, cpu.io, cpu.intercept = self, self, self.intercept
        # The replay is kvm.ko's emulator, not the CPU: no single-step trap inside it
        # (x86_emulate_instruction traces the instruction itself, ctxt->tf).
        tf, deliveries = cpu.sysflags & TF, cpu.deliveries
        cpu.sysflags &= ~TF
        # One iteration of a REP: RCX counts down when its element completes, as Linux's
        # writeback does; an element that faults or needs userspace leaves it as it was.
        chunk, cpu.rep_chunk = cpu.rep_chunk, 1
        try:
            stop = cpu.run(1)
        finally:
            cpu.rep_chunk = chunk
            trap.emulator, cpu.io, cpu.intercept = None, ports, seam
            if cpu.deliveries == deliveries:  # an exception delivered cleared TF itself
                cpu.sysflags |= tf
        if self.lmsw is not None:  # (stopped at its CR0 write, which kvm_lmsw makes)
            cpu.retire(ins.next_ip32)
            return "done"
        if self.io_needed:
            return "io-needed"
        if stop is StopReason.INTERCEPT:  # the replay needs an answer from userspace
            return "read" if self.pending_read is not None else "failed"
        if stop is StopReason.UNSUPPORTED:
            return "failed"
        if stop is StopReason.SHUTDOWN:
            return "shutdown"  # the fault the replay raised could not be delivered
        # Not REP, the last iteration (or CMPS / SCAS ending on ZF: string_insn_completed),
        # or the iteration faulted into the guest's handler: done; else it restarts.
        if not self.rep or cpu.deliveries != deliveries or cpu.eip != self.eip:
            return "done"
        return "restart"


# Their memory operand goes through segmented_read_std / segmented_write_std (em_lgdt_lidt's
# read_descriptor, em_sgdt / em_sidt), not the emulated accessors.
_STD_OPERAND = frozenset((iced_x86.Mnemonic.LGDT, iced_x86.Mnemonic.LIDT,
                          iced_x86.Mnemonic.SGDT, iced_x86.Mnemonic.SIDT))


# Instructions the emulator decoded, by address and the bytes fetched there: an MMIO loop
# replays the same few instructions at every exit. Only looked up after the same fetch
# (decode_instruction's: its walk, #PF and TLB fill happen as before); an instruction that
# runs into the next page is decoded as decode_instruction does, every time.
_DECODED: dict[tuple[int, bytes], tuple[iced_x86.Instruction, str, bytes, str, bool]] = {}
_DECODED_MAX = 4096


def _decode(cpu, eip: int) -> tuple[iced_x86.Instruction, str, bytes, str, bool]:
    """decode_instruction(cpu, eip), the instruction's text, its bytes, why Linux's
    emulator refuses it ("" where it does not: vmsim.kvm.refused), and whether its operand
    goes through the _std accessors (_STD_OPERAND)."""
    data, _ = cpu.fetch_bytes(eip)
    key = (eip, data)
    hit = _DECODED.get(key)
    if hit is not None:
        return hit
    decoder = iced_x86.Decoder(32, data, ip=eip)
    ins = decoder.decode()
    if decoder.last_error == iced_x86.DecoderError.NO_MORE_BYTES and len(data) < 15:
        more, _ = cpu.fetch_more(eip, len(data))  # (decode_instruction's second fetch)
        data += more
        ins = iced_x86.Decoder(32, data, ip=eip).decode()
        return (ins, format_instruction(ins), data[:ins.len], linux_emulator_refuses(ins),
                ins.mnemonic in _STD_OPERAND)
    if len(_DECODED) >= _DECODED_MAX:
        _DECODED.clear()
    hit = _DECODED[key] = (ins, format_instruction(ins), data[:ins.len],
                           linux_emulator_refuses(ins), ins.mnemonic in _STD_OPERAND)
    return hit


def x86_emulate_instruction(v: SimVcpu, trap_ud: bool = False) -> int:
    """Emulate the instruction at the guest's RIP. 1: resume the guest; 0: kvm_run filled."""
    vmx, cpu, run = v.vmx, v.cpu, v.kvm_run
    vmx.load_guest_state(v.vmcs)
    if trap_ud:
        # handle_ud: an instruction this CPU raised #UD for is one the emulator lacks too.
        from vmsim.kvm.vmx import kvm_queue_exception

        vmx.save_guest_state(v.vmcs)
        kvm_queue_exception(v, X.UD)
        return 1
    v.stat["insn_emulation"] += 1
    v.handler_cost += COSTS["emulate"]
    emu = v.emulator
    if emu is None or emu.eip != cpu.eip:
        emu = v.emulator = Emulation(v, cpu.eip)
        _drop_requeued_event(v)
    tf, deliveries = cpu.sysflags & TF, cpu.deliveries  # ctxt->tf
    while True:
        try:
            outcome = emu.step()
        except CpuException as e:  # (raised before the emulator could deliver it)
            cpu.exception(e.vector, e.error_code, e.cr2)
            outcome = "done"
        ev = v.events
        if ev is not None and ev.build("kvm_emulate_insn"):
            # kvm:kvm_emulate_insn (csbase:rip:bytes (mode)), with vmsim's decoded text and
            # what the iteration came to.
            ev.tp["kvm_emulate_insn"].fire(
                v.name, v.vmcs.read(F.GUEST_CS_BASE), emu.eip, emu.insn.hex(), "prot32",
                outcome in ("failed", "fetch-mmio"), emu.text, outcome)
        if outcome == "shutdown":
            # A triple fault while emulating: KVM_REQ_TRIPLE_FAULT -> KVM_EXIT_SHUTDOWN.
            v.emulator = None
            cpu.shut_down = False
            vmx.save_guest_state(v.vmcs)
            run.exit_reason = KVM_EXIT_SHUTDOWN
            return 0
        if outcome == "fetch-mmio":
            vmx.save_guest_state(v.vmcs)
            return _emulation_failed(v, emu.eip, None)
        if outcome == "failed":
            v.emulator = None
            vmx.save_guest_state(v.vmcs)
            return _emulation_failed(v, emu.eip, emu.text, emu.refused)
        if outcome == "read":
            vmx.save_guest_state(v.vmcs)
            return _exit_for_read(v, emu)
        mem_str = bool(emu.io_read) and emu.rep and not cpu.sysflags & DF
        if v.mmio_fragments and mem_str and outcome == "restart" and emu.io_pos < len(emu.io_read):
            # REP INS forwards: Linux stores the whole read-ahead batch as one memory
            # operand (OP_MEM_STR), so its MMIO write leaves only once the batch is in.
            emu.mem_read, emu.mem_pos = [], 0
            continue
        if v.mmio_fragments and mem_str:
            # The batch is one write: for each page's part, vcpu_mmio_write offers it to
            # the in-kernel devices (an ioeventfd, a coalesced zone) 8 bytes at a time, up
            # to the first piece none takes; the rest of that part leaves for userspace.
            kernel_mmio_write = (_LATE or _late())[0].kernel_mmio_write
            left, page = [], None
            for gpa, n, data in _mem_str_fragments(v.mmio_fragments):
                if gpa >> 12 != page:
                    page, refused = gpa >> 12, False
                refused = refused or not kernel_mmio_write(v, gpa, n,
                                                           int.from_bytes(data, "little"))
                if refused:
                    left.append((gpa, n, data))
            v.mmio_fragments = left
        if v.mmio_fragments or emu.pio_out is not None:
            # Writes leave when the iteration has completed (vcpu->mmio_needed / pio.count).
            v.emulator = None
            vmx.save_guest_state(v.vmcs)
            if emu.pio_out is not None:
                port, size, value = emu.pio_out
                run.set_io(KVM_EXIT_IO_OUT, size, port, 1)
                base = KVM_PIO_PAGE_OFFSET * PAGE_SIZE
                run.buf[base:base + size] = value.to_bytes(size, "little")
                run.exit_reason = KVM_EXIT_IO
                return 0
            return _exit_for_write_fragment(v)
        if outcome == "restart":
            left_in_cache = emu.io_pos < len(emu.io_read)
            used_cache = len(emu.io_read) > 0
            if (used_cache or cpu.r[1] & 0x3FF) and (not used_cache or left_in_cache):
                emu.mem_read, emu.mem_pos = [], 0
                continue  # EMULATION_RESTART: the next iteration, still in the kernel
        v.emulator = None
        vmx.save_guest_state(v.vmcs)
        if emu.lmsw is not None:
            (_LATE or _late())[0].kvm_lmsw(v, emu.lmsw)
        if tf and cpu.deliveries == deliveries:
            # r == 1 and ctxt->tf: kvm_vcpu_do_singlestep. Only on this path: an emulated
            # MMIO write or OUTS exits to userspace (r = 0) and its trap is lost, as in Linux
            # ("FIXME: return into emulator if single-stepping").
            from vmsim.kvm.vmx import kvm_vcpu_do_singlestep

            kvm_vcpu_do_singlestep(v)
        return 1


def _drop_requeued_event(v: SimVcpu) -> None:
    """An exit during the delivery of an exception or software interrupt re-queued it
    (vmx_complete_interrupts). The replay re-executes the instruction that raised it and
    delivers it itself (through MMIO where the stack or IDT is), so the queued copy is
    dropped, or the guest would get it twice (as kvm.ko's emulator, which performs an
    INT n itself, does not also re-inject it)."""
    info = v.vmcs.read(F.VM_ENTRY_INTR_INFO_FIELD)
    if info & INTR_INFO_VALID_MASK and (info >> 8) & 7 in (3, 4, 5, 6):
        v.vmcs.write(F.VM_ENTRY_INTR_INFO_FIELD, info & ~INTR_INFO_VALID_MASK)


def _mem_str_fragments(frags: list[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]]:
    """One write of the elements' bytes, cut as emulator_read_write cuts it: at page
    boundaries, then into the 8-byte pieces userspace gets (complete_emulated_mmio)."""
    runs: list[tuple[int, bytearray]] = []
    for gpa, _, data in frags:
        if runs and runs[-1][0] + len(runs[-1][1]) == gpa:
            runs[-1][1].extend(data)
        else:
            runs.append((gpa, bytearray(data)))
    out = []
    for gpa, data in runs:
        at = 0
        while at < len(data):
            n = min(8, len(data) - at, PAGE_SIZE - ((gpa + at) & (PAGE_SIZE - 1)))
            out.append((gpa + at, n, bytes(data[at:at + n])))
            at += n
    return out


def _exit_for_read(v: SimVcpu, emu: Emulation) -> int:
    run = v.kvm_run
    kind = emu.pending_read[0]
    if kind == "mmio":
        _, gpa, size = emu.pending_read
        run.set_mmio(gpa, b"", size, 0)
        run.exit_reason = KVM_EXIT_MMIO
        v.stat["mmio_exits"] += 1
        v.complete_userspace_io = complete_emulated_mmio_read
    else:
        _, port, size, count = emu.pending_read
        run.set_io(KVM_EXIT_IO_IN, size, port, count)
        run.exit_reason = KVM_EXIT_IO
        v.complete_userspace_io = complete_emulated_pio_in
    return 0


def _exit_for_write_fragment(v: SimVcpu) -> int:
    gpa, size, data = v.mmio_fragments.pop(0)
    run = v.kvm_run
    run.set_mmio(gpa, data, size, 1)
    run.exit_reason = KVM_EXIT_MMIO
    v.stat["mmio_exits"] += 1
    v.complete_userspace_io = complete_emulated_mmio_write
    return 0


def complete_emulated_mmio_read(v: SimVcpu) -> int:
    _, data, size, _ = v.kvm_run.mmio()
    emu = v.emulator
    emu.mem_read.append(int.from_bytes(data[:size], "little"))
    emu.pending_read = None
    return x86_emulate_instruction(v)  # EMULTYPE_NO_DECODE: replay with the answer


def complete_emulated_mmio_write(v: SimVcpu) -> int:
    if v.mmio_fragments:
        return _exit_for_write_fragment(v)
    return 1


def complete_emulated_pio_in(v: SimVcpu) -> int:
    run = v.kvm_run
    _, size, _, count, offset = run.io()
    emu = v.emulator
    emu.io_read = [int.from_bytes(run.buf[offset + i * size:offset + (i + 1) * size], "little")
                   for i in range(count)]
    emu.io_pos = 0
    emu.pending_read = None
    return x86_emulate_instruction(v)


def _emulation_failed(v: SimVcpu, eip: int, text: str | None, why: str = "") -> int:
    """KVM_EXIT_INTERNAL_ERROR, suberror KVM_INTERNAL_ERROR_EMULATION, for the instruction
    at `eip` (`text`: None where it could not be fetched, from MMIO); `why`: Linux's
    reason to refuse it, where that is the cause (SimVcpu.explain_stop words it)."""
    v.emulator = None
    v.emulation_failure = (eip, text, why)
    v.kvm_run.set_internal(KVM_INTERNAL_ERROR_EMULATION, [])
    v.kvm_run.exit_reason = KVM_EXIT_INTERNAL_ERROR
    return 0
