"""VGA text buffer at 0xB8000 as MMIO: 80x25 cells of (character, attribute).

Only the text window is modelled: reads return what was written. The rest of the legacy
window below it (VgaLowMem) decodes to nothing in text mode.
"""

from __future__ import annotations

BASE = 0xB8000
SIZE = 0x8000
LOWMEM_BASE = 0xA0000  # QEMU's "vga-lowmem" region: 0xA0000-0xBFFFF
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
        """The device's buffer as text (screen_text)."""
        return screen_text(self.buffer)


def screen_text(buffer: bytes | bytearray) -> str:
    """A text buffer (the device's, or Machine.vga_display(): what a refresh draws) as
    text, trailing blanks dropped (code page 437 for the glyphs)."""
    rows = []
    for row in range(ROWS):
        chars = bytes(buffer[2 * (row * COLUMNS + c)] or 0x20 for c in range(COLUMNS))
        rows.append(chars.decode("cp437").rstrip())
    while rows and not rows[-1]:
        rows.pop()
    return "\n".join(rows)


class VgaLowMem:
    """The legacy VGA window below the text buffer, 0xA0000-0xB7FFF. In text mode the
    Graphics Controller's memory map select (GR06 bits 3:2 = 3) decodes 0xB8000-0xBFFFF
    only: QEMU's vga_mem_readb reads the rest of the window as 0xFF and vga_mem_writeb
    drops stores to it (memory nobody claims reads 0 instead)."""

    __slots__ = ()

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        pass
