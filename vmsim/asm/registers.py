"""x86 register names (32-bit mode) and their encodings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RegInfo:
    name: str
    kind: str  # 'gpr', 'sreg', 'creg', 'dreg'
    size: int  # bits
    num: int  # encoding in ModRM.reg / rm or +r


def _build() -> dict[str, RegInfo]:
    regs: dict[str, RegInfo] = {}
    for size, names in ((32, "eax ecx edx ebx esp ebp esi edi"),
                        (16, "ax cx dx bx sp bp si di"),
                        (8, "al cl dl bl ah ch dh bh")):
        for num, name in enumerate(names.split()):
            regs[name] = RegInfo(name, "gpr", size, num)
    for num, name in enumerate("es cs ss ds fs gs".split()):
        regs[name] = RegInfo(name, "sreg", 16, num)
    for num in (0, 2, 3, 4):
        regs[f"cr{num}"] = RegInfo(f"cr{num}", "creg", 32, num)
    for num in range(8):
        regs[f"dr{num}"] = RegInfo(f"dr{num}", "dreg", 32, num)
    return regs


REGISTERS = _build()
SEG_PREFIX = {"es": 0x26, "cs": 0x2E, "ss": 0x36, "ds": 0x3E, "fs": 0x64, "gs": 0x65}
ESP, EBP = 4, 5
