"""The one instruction table: iced-x86 mnemonic -> handler factory.

A factory takes a decoded `iced_x86.Instruction` and the compile context and returns
the instruction's ready-to-call handler: a closure of no arguments that executes the
instruction and returns the next EIP. Factories raise `NotInSubset` for forms vmsim
does not model; the decoder turns that into #UD plus an `unsupported` event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import iced_x86

if TYPE_CHECKING:
    from vmsim.hw.insn.ctx import Ctx

Handler = Callable[[], int]
Factory = Callable[[iced_x86.Instruction, "Ctx"], Handler]

TABLE: dict[int, Factory] = {}
# Instructions a hypervisor may intercept (the VMX layer reads this to document its seams).
INTERCEPTABLE: set[str] = set()


class NotInSubset(Exception):
    """This form of the instruction is outside vmsim's x86 subset."""


def _mnemonic(name: str) -> int:
    return getattr(iced_x86.Mnemonic, name.upper())


def handles(*names: str) -> Callable[[Factory], Factory]:
    def register(factory: Factory) -> Factory:
        for n in names:
            TABLE[_mnemonic(n)] = factory
        return factory

    return register


def opcode_byte(ins: iced_x86.Instruction) -> int:
    """The opcode byte of `ins` within its opcode map (D9 of D9 E8, 1E of ENDBR32's 0F 1E FB:
    iced-x86 counts a fixed ModRM byte into the opcode)."""
    info = ins.op_code()
    return info.op_code >> 8 * (info.op_code_len - 1)
