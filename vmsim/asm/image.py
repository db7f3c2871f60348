"""The assembler's output: what a loader, the GUI and breakpoints need of a guest."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SourceLine:
    """One source line that produced bytes: where it sits and what it made."""

    address: int  # value of $ at the start of the line
    size: int  # bytes the line emitted (0 for labels-only / directives without output)
    file: str
    line: int  # 1-based


@dataclass
class GuestImage:
    """A flat binary with symbols and an address <-> source-line map.

    `origin` is the `org` value (the address of data[0] once loaded).
    `lines` is ordered by address; several lines may share an address (a label line and
    the instruction after it); only lines with size > 0 own bytes.
    """

    data: bytes
    origin: int = 0
    symbols: dict[str, int] = field(default_factory=dict)
    lines: list[SourceLine] = field(default_factory=list)
    source_file: str = "<input>"
    # The text it was assembled from (None for a flat binary): a snapshot carries it, so
    # that the snapshot alone reopens the guest in an editor.
    source: str | None = field(default=None, repr=False, compare=False)
    # line_at's index (lines that own bytes, and their addresses), built on first use: the
    # GUI asks at every step, and rebuilding it each time cost O(lines) per call.
    _owners: tuple[list[SourceLine], list[int], int] | None = field(
        default=None, init=False, repr=False, compare=False)

    def line_at(self, address: int) -> SourceLine | None:
        """The source line whose bytes contain `address`, or None."""
        if self._owners is None or self._owners[2] != len(self.lines):
            owned = [ln for ln in self.lines if ln.size > 0]
            self._owners = (owned, [ln.address for ln in owned], len(self.lines))
        owners, starts, _ = self._owners
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and address < owners[i].address + owners[i].size:
            return owners[i]
        return None

    def address_of_line(self, line: int, file: str | None = None) -> int | None:
        """First address emitted by `line` (or the next line that emits bytes)."""
        file = file or self.source_file
        candidates = [ln for ln in self.lines if ln.file == file and ln.line >= line and ln.size > 0]
        if not candidates:
            return None
        return min(candidates, key=lambda ln: (ln.line, ln.address)).address
