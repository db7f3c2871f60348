"""VGA text buffer at 0xB8000 as MMIO: 80x25 cells of (character, attribute).

Only the text window is modelled: reads return what was written.
"""

from __future__ import annotations

BASE = 0xB8000
SIZE = 0x8000
COLUMNS, ROWS = 80, 25


class VgaText:
    # (Slots, in the order the constructor sets them: vmsim.state.fields_state.)
    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = bytearray(SIZE)

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.buffer[offset:offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        self.buffer[offset:offset + size] = value.to_bytes(size, "little")

    def cell(self, row: int, col: int) -> tuple[int, int]:
        i = 2 * (row * COLUMNS + col)
        return self.buffer[i], self.buffer[i + 1]

    def text(self) -> str:
        """The screen as text, trailing blanks dropped (code page 437 for the glyphs)."""
        rows = []
        for row in range(ROWS):
            chars = bytes(self.buffer[2 * (row * COLUMNS + c)] or 0x20 for c in range(COLUMNS))
            rows.append(chars.decode("cp437").rstrip())
        while rows and not rows[-1]:
            rows.pop()
        return "\n".join(rows)
