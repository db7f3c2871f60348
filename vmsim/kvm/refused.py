"""What Linux's x86 instruction emulator (arch/x86/kvm/emulate.c) refuses although a CPU
runs it. vmsim's kvm.ko replays an instruction on its own CPU, which runs more, so it must
refuse these as x86_emulate_instruction does; the host's KVM fails them alike, and
vmsim.hostkvm.explain says so rather than blaming the host."""

from __future__ import annotations

import iced_x86


def linux_emulator_refuses(ins: iced_x86.Instruction) -> str:
    """Why Linux's emulator fails `ins` (X86EMUL_UNHANDLEABLE: an emulation failure), or
    "": BOUND and ARPL have no entry in emulate.c's opcode table, and em_enter returns
    X86EMUL_UNHANDLEABLE for a nesting level. Only an access that kvm.ko must emulate (to
    MMIO) brings either to the emulator."""
    m = ins.mnemonic
    if m == iced_x86.Mnemonic.BOUND:
        return "Linux's instruction emulator has no BOUND (emulate.c's opcode table)"
    if m == iced_x86.Mnemonic.ARPL:
        return ("Linux's instruction emulator has no ARPL (emulate.c's opcode 0x63 is "
                "MOVSXD, in 64-bit mode only: mode_dual_63)")
    if m == iced_x86.Mnemonic.ENTER and ins.immediate(1) & 31 != 0:
        return "Linux's instruction emulator refuses an ENTER with a nesting level (em_enter)"
    return ""
