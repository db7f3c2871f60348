"""Where each key and array element of a TOML document is, for error messages that point
at the line a teacher must fix (tomllib gives positions only for syntax errors).

`positions(text)` maps a key path, as the parsed document would be indexed
(("steps", 2, "checks", 0, "type")), to its (line, column), both 1-based: a key's path
to where the key is written, an array element's to where the element starts, a table
header's to the header. It scans a document tomllib has already accepted, so it only
needs to follow TOML's structure (strings, comments, brackets), not to check it.
"""

from __future__ import annotations

import bisect

Path = tuple[str | int, ...]


class _Scanner:
    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.starts = [0] + [k + 1 for k, c in enumerate(text) if c == "\n"]
        self.pos: dict[Path, tuple[int, int]] = {}
        self.aot: dict[Path, int] = {}  # array-of-tables path -> elements so far

    def where(self, i: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.starts, i)
        return line, i - self.starts[line - 1] + 1

    def _moved(self, at: int) -> None:
        if self.i <= at:  # (never on valid TOML: a guard against looping)
            raise ValueError("no progress")

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def skip_ws(self, newlines: bool) -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif c == "#":
                while self.i < len(s) and s[self.i] != "\n":
                    self.i += 1
            else:
                return

    def string(self) -> str:
        """Skip a string at self.i; returns its text (escapes left as written)."""
        s = self.s
        q = s[self.i]
        if s.startswith(q * 3, self.i):
            end = s.find(q * 3, self.i + 3)
            while q == '"' and end > 0 and _escaped(s, end):
                end = s.find(q * 3, end + 1)
            end = len(s) - 3 if end < 0 else end
            while end + 3 < len(s) and s[end + 3] == q:  # up to two quotes end the content
                end += 1
            text = s[self.i + 3:end]
            self.i = end + 3
            return text
        j = self.i + 1
        while j < len(s) and s[j] != q and s[j] != "\n":
            j += 2 if (q == '"' and s[j] == "\\") else 1
        text = s[self.i + 1:j]
        self.i = j + 1
        return text

    def key(self) -> list[str]:
        """A (dotted) key; self.i left after it."""
        parts = []
        while True:
            self.skip_ws(False)
            c = self.peek()
            if c in ('"', "'"):
                parts.append(self.string())
            else:
                j = self.i
                while j < len(self.s) and (self.s[j].isalnum() or self.s[j] in "_-"):
                    j += 1
                parts.append(self.s[self.i:j])
                self.i = j
            self.skip_ws(False)
            if self.peek() == ".":
                self.i += 1
                continue
            return parts

    def resolve(self, parts: list[str]) -> Path:
        """A header's dotted name to a path: arrays of tables on the way are indexed by
        their last element."""
        path: Path = ()
        for p in parts:
            path = (*path, p)
            if path in self.aot:
                path = (*path, self.aot[path] - 1)
        return path

    def value(self, path: Path) -> None:
        c = self.peek()
        if c in ('"', "'"):
            self.string()
        elif c == "[":
            self.i += 1
            k = 0
            while True:
                self.skip_ws(True)
                if self.peek() in ("]", ""):
                    self.i += 1
                    return
                self.pos[(*path, k)] = self.where(self.i)
                at = self.i
                self.value((*path, k))
                self._moved(at)
                k += 1
                self.skip_ws(True)
                if self.peek() == ",":
                    self.i += 1
        elif c == "{":
            self.i += 1
            while True:
                self.skip_ws(False)
                if self.peek() in ("}", ""):
                    self.i += 1
                    return
                at = self.i
                key = (*path, *self.key())
                self.pos[key] = self.where(at)
                self._moved(at)
                self.i += 1  # "="
                self.skip_ws(False)
                self.value(key)
                self.skip_ws(False)
                if self.peek() == ",":
                    self.i += 1
        else:
            s = self.s
            while self.i < len(s) and s[self.i] not in ",]}\n#":
                self.i += 1

    def document(self) -> dict[Path, tuple[int, int]]:
        table: Path = ()
        s = self.s
        while True:
            self.skip_ws(True)
            if self.i >= len(s):
                return self.pos
            at = self.i
            if s.startswith("[[", self.i):
                self.i += 2
                parts = self.key()
                parent = self.resolve(parts[:-1])
                base = (*parent, parts[-1])
                self.aot[base] = self.aot.get(base, 0) + 1
                table = (*base, self.aot[base] - 1)
                self.pos[table] = self.where(at)
                self.i = s.find("]]", self.i) + 2
            elif s[self.i] == "[":
                self.i += 1
                table = self.resolve(self.key())
                self.pos.setdefault(table, self.where(at))
                self.i = s.find("]", self.i) + 1
            else:
                key = (*table, *self.key())
                self.pos[key] = self.where(at)
                self._moved(at)
                self.i += 1  # "="
                self.skip_ws(False)
                self.value(key)
            # the rest of the line (a comment)
            self.skip_ws(False)


def _escaped(s: str, i: int) -> bool:
    n = 0
    while i > 0 and s[i - 1] == "\\":
        n += 1
        i -= 1
    return n % 2 == 1


def positions(text: str) -> dict[Path, tuple[int, int]]:
    try:
        return _Scanner(text).document()
    except (IndexError, ValueError):  # never: the text was valid TOML; positions are a help
        return {}


def locate(pos: dict[Path, tuple[int, int]], path: Path) -> tuple[int, int]:
    """The position of `path`; else of the first thing written inside it (an array of
    tables has no position of its own, its first element has); else of the nearest
    enclosing key, element or table that has one; (0, 0) if none."""
    path = tuple(path)
    while path:
        if path in pos:
            return pos[path]
        n = len(path)
        inside = [p for k, p in pos.items() if len(k) > n and k[:n] == path]
        if inside:
            return min(inside)
        path = path[:-1]
    return 0, 0
