"""Why the host's KVM stopped a guest, in words a student can act on.

Userspace sees only `struct kvm_run` and what KVM_GET_* return, so this is what QEMU's
kvm_handle_internal_error and its register dump tell a user, made specific: the guest
instruction at RIP (read from guest memory, decoded with iced-x86), and whether the stop
is the guest's own doing (a triple fault, as on any CPU) or a limit of the host's KVM
(this host's software KVM, kvm_pvm, refuses instructions hardware-assisted KVM runs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import iced_x86

from vmsim.kvm.api import (
    EXIT_KVM_FAILED,
    KVM_EXIT_INTERNAL_ERROR,
    KVM_EXIT_INTR,
    KVM_EXIT_SHUTDOWN,
    KVM_INTERNAL_ERROR_EMULATION,
    KvmRegs,
    KvmSregs,
    KvmStop,
    internal_error_words,
)
from vmsim.kvm.refused import linux_emulator_refuses

if TYPE_CHECKING:
    from vmsim.hostkvm.kvm import HostVcpu

# `vmsim run` exit statuses (vmsim/cli.py): 70 for what the backend does not model (here:
# what the host's KVM refuses), 124 for a run whose budget ran out.
EXIT_OK, EXIT_HOST_LIMIT, EXIT_WATCHDOG = 0, EXIT_KVM_FAILED, 124

# KVM_INTERNAL_ERROR_EMULATION with this flag carries the bytes KVM fetched (data[1..2]).
KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1
CR0_PE, CR0_NW, CR0_CD, CR0_PG = 1, 1 << 29, 1 << 30, 1 << 31
CR4_PAE = 1 << 5
WATCHDOG_HINT = ("VMSIM_KVM_WATCHDOG=SECONDS sets how long one KVM_RUN may take (0: no limit); "
                 "--max-instructions does not apply on --backend kvm")


class HostKvmStop(KvmStop):
    """Why the VM stopped on the host's KVM, with the `vmsim run` exit status it calls for
    (0 for a triple fault, as on the sim backend; 70 where the host's KVM refused what a
    CPU runs; 124 when the watchdog ran out)."""


def host_kvm_module() -> str:
    """The host's KVM vendor module (kvm_intel, kvm_amd, kvm_pvm), '' if none is seen."""
    for name in ("kvm_pvm", "kvm_intel", "kvm_amd"):
        if os.path.isdir(f"/sys/module/{name}"):
            return name
    return ""


def _not_vmsim() -> str:
    module = host_kvm_module()
    return (f"this is a limit of the host's KVM{f' ({module})' if module else ''}, not of vmsim: "
            "try --backend sim")


@dataclass
class GuestInsn:
    """The guest instruction at RIP as the vCPU left it."""

    eip: int
    regs: KvmRegs
    sregs: KvmSregs
    ins: iced_x86.Instruction | None  # None when its bytes could not be read
    raw: bytes = b""  # its bytes
    in_ram: bool = True  # False: no guest RAM at CS:EIP (the bytes, if any, are KVM's)

    @property
    def text(self) -> str:
        if self.ins is None:
            return "?"
        if self.ins.code == iced_x86.Code.INVALID:
            return "db " + ", ".join(f"{b:#04x}" for b in self.raw)
        return iced_x86.Formatter(iced_x86.FormatterSyntax.NASM).format(self.ins)

    def where(self) -> str:
        return f"at eip {self.eip:#010x}"


def guest_insn(vcpu: HostVcpu, fetched: bytes = b"") -> GuestInsn:
    """KVM_GET_REGS/KVM_GET_SREGS, then the bytes at CS:RIP from guest memory (or the
    ones KVM reports it fetched, when memory cannot be read there), decoded."""
    regs, sregs = vcpu.get_regs(), vcpu.get_sregs()
    bits = 64 if sregs.cs.l else 32 if sregs.cs.db else 16
    eip = regs.rip & (0xFFFFFFFF if bits == 32 else 0xFFFF if bits == 16 else (1 << 64) - 1)
    data = vcpu.read_guest_linear(sregs.cs.base + eip, 15, paging=bool(sregs.cr0 & CR0_PG))
    in_ram = bool(data)
    data = data or fetched
    ins = None
    if data:
        ins = iced_x86.Decoder(bits, data, ip=eip).decode()
        data = data[:ins.len]
    return GuestInsn(eip, regs, sregs, ins, data, in_ram)


def _fetched_bytes(data: list[int]) -> bytes:
    """The instruction bytes of an emulation failure (struct kvm_run.emulation_failure)."""
    if len(data) < 3 or not data[0] & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES:
        return b""
    raw = data[1].to_bytes(8, "little") + data[2].to_bytes(8, "little")
    return raw[1:1 + min(raw[0], 15)]


def explain_internal_error(vcpu: HostVcpu, suberror: int, data: list[int]) -> HostKvmStop:
    insn = guest_insn(vcpu, _fetched_bytes(data))
    what = internal_error_words(suberror)
    if suberror == KVM_INTERNAL_ERROR_EMULATION and not insn.in_ram:
        # Upstream KVM too (and vmsim's kvm.ko): code runs from RAM only, never from MMIO.
        return HostKvmStop(f"the host's KVM could not fetch a guest instruction {insn.where()}: "
                           f"no RAM is there ({what}); KVM runs guest code from RAM only",
                           EXIT_HOST_LIMIT)
    refused = _refused_on_mmio(vcpu, insn)
    if suberror == KVM_INTERNAL_ERROR_EMULATION and refused:
        # Not this host's limit: Linux refuses it wherever its access makes KVM emulate it,
        # and so does vmsim's kvm.ko.
        return HostKvmStop(f"the host's KVM could not emulate the guest instruction "
                           f"`{insn.text}` {insn.where()} ({what}): {refused}", EXIT_HOST_LIMIT)
    if suberror == KVM_INTERNAL_ERROR_EMULATION:
        text = (f"the host's KVM could not run the guest instruction `{insn.text}` "
                f"{insn.where()} ({what}){_architectural_hint(insn)}")
    else:
        text = f"the host's KVM stopped the guest {insn.where()} (`{insn.text}`) with {what}"
    return HostKvmStop(f"{text}; {_not_vmsim()}", EXIT_HOST_LIMIT)


_GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi")
_SEGMENTS = {iced_x86.Register.ES: "es", iced_x86.Register.CS: "cs", iced_x86.Register.SS: "ss",
             iced_x86.Register.DS: "ds", iced_x86.Register.FS: "fs", iced_x86.Register.GS: "gs"}


def _refused_on_mmio(vcpu: HostVcpu, insn: GuestInsn) -> str:
    """Why Linux's emulator refuses the instruction (vmsim.kvm.refused), where its memory
    access is not to RAM: any KVM must emulate it then. Where it is to RAM, hardware-assisted
    KVM runs it and only a software KVM (kvm_pvm) emulates it: "", that host's limit."""
    ins = insn.ins
    why = linux_emulator_refuses(ins) if ins is not None else ""
    if not why or insn.sregs.cs.l or not insn.sregs.cs.db:
        return ""
    regs, sregs = insn.regs, insn.sregs
    if ins.mnemonic == iced_x86.Mnemonic.ENTER:
        seg, offset = "ss", regs.rsp - 4  # its first store: the push of EBP
    else:
        def gpr(reg: iced_x86.Register) -> int:
            if reg == iced_x86.Register.NONE:
                return 0
            return getattr(regs, _GPRS[reg - iced_x86.Register.EAX]) if \
                iced_x86.Register.EAX <= reg <= iced_x86.Register.EDI else -1
        base, index = gpr(ins.memory_base), gpr(ins.memory_index)
        if base < 0 or index < 0:
            return ""
        seg = _SEGMENTS.get(ins.memory_segment, "ds")
        offset = base + index * ins.memory_index_scale + ins.memory_displacement
    linear = (getattr(sregs, seg).base + offset) & 0xFFFFFFFF
    in_ram = vcpu.read_guest_linear(linear, 1, paging=bool(sregs.cr0 & CR0_PG))
    return "" if in_ram else why


_SOFTWARE_INTERRUPTS = {iced_x86.Mnemonic.INT1: 1, iced_x86.Mnemonic.INT3: 3}


def _architectural_hint(insn: GuestInsn) -> str:
    """What a CPU does with the instruction, where that is not simply running it."""
    ins = insn.ins
    if ins is None:
        return ""
    if ins.code == iced_x86.Code.INVALID:
        return "; it is an invalid opcode, where a CPU raises #UD"
    vector = _SOFTWARE_INTERRUPTS.get(ins.mnemonic)
    if ins.mnemonic == iced_x86.Mnemonic.INT and ins.op0_kind == iced_x86.OpKind.IMMEDIATE8:
        vector = ins.immediate8
    if vector is not None:
        if vector * 8 + 7 > insn.sregs.idt.limit:
            return (f"; vector {vector} is past the IDT limit {insn.sregs.idt.limit:#x}, "
                    "where a CPU raises #GP")
    return ""


def explain_shutdown(vcpu: HostVcpu) -> HostKvmStop:
    """A triple fault, worded as the sim backend words it; where the fault that began it
    cannot be architectural (setting CR0.PG, which this host's KVM answers with #GP),
    also why, with the host-limit status."""
    insn = guest_insn(vcpu)
    text = f"triple fault: guest shut down {insn.where()}"
    if _sets_cr0_pg(insn):
        return HostKvmStop(f"{text} (`{insn.text}` enables paging, as a CPU would; the host's "
                           "KVM injected #GP instead, and the #GP ended in a triple fault); "
                           f"{_not_vmsim()}", EXIT_HOST_LIMIT)
    return HostKvmStop(text, EXIT_OK)


def _sets_cr0_pg(insn: GuestInsn) -> bool:
    """MOV CR0, r32 turning PG on in a way the SDM lets run (PE set, CD/NW valid, and no
    PAE whose PDPTE load could #GP), while CR0.PG is still clear."""
    ins = insn.ins
    if ins is None or ins.code != iced_x86.Code.MOV_CR_R32 or ins.op0_register != iced_x86.Register.CR0:
        return False
    index = ins.op1_register - iced_x86.Register.EAX
    if not 0 <= index < 8:
        return False
    value = (insn.regs.rax, insn.regs.rcx, insn.regs.rdx, insn.regs.rbx,
             insn.regs.rsp, insn.regs.rbp, insn.regs.rsi, insn.regs.rdi)[index] & 0xFFFFFFFF
    sregs = insn.sregs
    return (bool(value & CR0_PG) and bool(value & CR0_PE) and not sregs.cr0 & CR0_PG
            and not (value & CR0_NW and not value & CR0_CD) and not sregs.cr4 & CR4_PAE)


def explain_watchdog(vcpu: HostVcpu, seconds: float) -> HostKvmStop:
    insn = guest_insn(vcpu)
    text = f"the host's KVM did not return from KVM_RUN for {seconds:g} s {insn.where()}"
    ins = insn.ins
    if ins is not None and ins.mnemonic in (iced_x86.Mnemonic.VMCALL, iced_x86.Mnemonic.VMMCALL):
        return HostKvmStop(f"{text} (`{insn.text}`): the host's KVM does not return to "
                           f"userspace from a guest's VMCALL; {_not_vmsim()}", EXIT_HOST_LIMIT)
    return HostKvmStop(f"{text} (`{insn.text}`): the guest ran that long without an exit to "
                       f"vmsim; {WATCHDOG_HINT}", EXIT_WATCHDOG)


def explain_stop(vcpu: HostVcpu, exit_reason: int) -> HostKvmStop | None:
    """The stop reason for an exit that ends the VM on the host's KVM; None where the VMM's
    own words suffice (or, for KVM_EXIT_INTR, where the VM goes on)."""
    run = vcpu.kvm_run
    if exit_reason == KVM_EXIT_INTERNAL_ERROR:
        return explain_internal_error(vcpu, *run.internal())
    if exit_reason == KVM_EXIT_SHUTDOWN:
        return explain_shutdown(vcpu)
    if exit_reason == KVM_EXIT_INTR and vcpu.watchdog_expired:
        return explain_watchdog(vcpu, vcpu.watchdog_seconds)
    return None
