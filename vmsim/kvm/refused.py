"""What Linux's x86 instruction emulator (arch/x86/kvm/emulate.c) refuses although a CPU
runs it. vmsim's kvm.ko replays an instruction on its own CPU, which runs more, so it must
refuse these as x86_emulate_instruction does; the host's KVM fails them alike, and
vmsim.hostkvm.explain says so rather than blaming the host."""

from __future__ import annotations

import iced_x86

# Descriptor checks: N in twobyte_table (0F 02, 0F 03) and in group6 (0F 00 /4, /5).
_NO_ENTRY = {iced_x86.Mnemonic.LAR: "LAR (emulate.c's twobyte_table)",
             iced_x86.Mnemonic.LSL: "LSL (emulate.c's twobyte_table)",
             iced_x86.Mnemonic.VERR: "VERR (emulate.c's group6)",
             iced_x86.Mnemonic.VERW: "VERW (emulate.c's group6)"}


def linux_emulator_refuses(ins: iced_x86.Instruction) -> str:
    """Why Linux's emulator fails `ins` (X86EMUL_UNHANDLEABLE: an emulation failure), or
    "": BOUND, ARPL, LAR, LSL, VERR and VERW have no entry in emulate.c's opcode tables, and
    em_enter returns X86EMUL_UNHANDLEABLE for a nesting level. Only an access that kvm.ko
    must emulate (to MMIO) brings one of them to the emulator."""
    m = ins.mnemonic
    if m == iced_x86.Mnemonic.BOUND:
        return "Linux's instruction emulator has no BOUND (emulate.c's opcode table)"
    if m == iced_x86.Mnemonic.ARPL:
        return ("Linux's instruction emulator has no ARPL (emulate.c's opcode 0x63 is "
                "MOVSXD, in 64-bit mode only: mode_dual_63)")
    if m in _NO_ENTRY:
        return f"Linux's instruction emulator has no {_NO_ENTRY[m]}"
    if m == iced_x86.Mnemonic.ENTER and ins.immediate(1) & 31 != 0:
        return "Linux's instruction emulator refuses an ENTER with a nesting level (em_enter)"
    return ""
