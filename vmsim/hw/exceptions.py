"""Architectural exceptions (SDM Vol. 3A 6.3.1, Table 6-1) as Python control flow.

An instruction handler raises `CpuException`; the run loop catches it and delivers it
through the guest's IDT (or to a hypervisor's intercept). These never escape the CPU.
"""

from __future__ import annotations

DE, DB, NMI, BP, OF, BR, UD, NM, DF, TS, NP, SS, GP, PF, MF, AC, MC = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18)

NAMES = {DE: "#DE", DB: "#DB", NMI: "NMI", BP: "#BP", OF: "#OF", BR: "#BR", UD: "#UD",
         NM: "#NM", DF: "#DF", TS: "#TS", NP: "#NP", SS: "#SS", GP: "#GP", PF: "#PF",
         MF: "#MF", AC: "#AC", MC: "#MC"}

# Exceptions that push an error code (Table 6-1).
HAS_ERROR_CODE = frozenset({DF, TS, NP, SS, GP, PF, AC})
# Classes for the double-fault rules (SDM Vol. 3A Table 6-5).
CONTRIBUTORY = frozenset({DE, TS, NP, SS, GP})


def name(vector: int) -> str:
    return NAMES.get(vector, f"INT {vector:#x}")


class CpuException(Exception):
    """A fault raised by the instruction being executed (EIP still points at it)."""

    def __init__(self, vector: int, error_code: int | None = None, cr2: int | None = None):
        super().__init__(vector, error_code)
        self.vector = vector
        self.error_code = error_code
        self.cr2 = cr2  # linear address for #PF

    def __str__(self) -> str:
        ec = "" if self.error_code is None else f"({self.error_code:#x})"
        return f"{name(self.vector)}{ec}"


class Unsupported(Exception):
    """The guest did something legal that vmsim does not model: the run stops, with a reason."""


def ud() -> CpuException:
    return CpuException(UD)


def gp(code: int = 0) -> CpuException:
    return CpuException(GP, code)
