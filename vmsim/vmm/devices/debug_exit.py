"""QEMU's isa-debug-exit (hw/misc/debugexit.c): a write of v ends the run with status
(v << 1) | 1, so a guest can report success or failure to the host."""

from __future__ import annotations

from collections.abc import Callable


class DebugExit:
    # (Slots, in the order the constructor sets them: vmsim.state.fields_state.)
    __slots__ = ("on_exit", "status")

    def __init__(self, on_exit: Callable[[int], None]):
        self.on_exit = on_exit
        self.status: int | None = None

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1  # reads are not implemented by QEMU's model

    def write(self, offset: int, size: int, value: int) -> None:
        self.status = ((value << 1) | 1) & 0xFFFFFFFF
        self.on_exit(self.status)
