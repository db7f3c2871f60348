"""Instruction handlers, one module per family (SDM Vol. 2 chapters cited in each).

Importing this package fills `TABLE` (see table.py).
"""

from vmsim.hw.insn import arith, bcd, control, data, string, system  # noqa: F401  (fill TABLE)
from vmsim.hw.insn.table import INTERCEPTABLE, TABLE, NotInSubset, handles

__all__ = ["INTERCEPTABLE", "TABLE", "NotInSubset", "handles"]
