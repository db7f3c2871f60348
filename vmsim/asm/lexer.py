"""Tokens of one NASM source line: identifiers, numbers, strings, operators (with columns)."""

from __future__ import annotations

import re
from typing import NamedTuple

from vmsim.asm.errors import LineError

DIGITS = set("0123456789")  # ASCII only: str.isdigit() also takes '٣' and '²'
ID_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_.?@")
ID_CHARS = ID_START | set("0123456789$#~")
NUM_CHARS = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
# Longest first, so that '<<' wins over '<'.
OPERATORS = ("<<<", ">>>", "<<", ">>", "//", "%%", "+", "-", "*", "/", "%", "&", "|", "^", "~",
             "!", "(", ")", "[", "]", ",", ":", "=")


class Token(NamedTuple):  # a tuple: a frozen dataclass costs 3x more to build, per token
    kind: str  # 'id', 'num', 'str', 'op'
    text: str  # source text (for 'str': the decoded bytes as latin-1)
    col: int  # 1-based column of the first character
    value: int = 0  # numbers only; 1 for a `$name` identifier (never a keyword)

    @property
    def low(self) -> str:
        return self.text.lower()

    def is_op(self, op: str) -> bool:
        return self.kind == "op" and self.text == op


def parse_number(text: str, col: int) -> int:
    """NASM integer syntax: 0x/0h/0o/0q/0b/0y/0d/0t prefixes, h/x/o/q/b/y/d/t suffixes, '_'."""
    s = text.replace("_", "").lower()
    radixes = {"x": 16, "h": 16, "o": 8, "q": 8, "b": 2, "y": 2, "d": 10, "t": 10}
    candidates: list[tuple[str, int]] = []
    if len(s) > 2 and s[0] == "0" and s[1] in radixes:
        candidates.append((s[2:], radixes[s[1]]))
    if len(s) > 1 and s[-1] in radixes:
        candidates.append((s[:-1], radixes[s[-1]]))
    candidates.append((s, 10))
    if len(s) > 4000:
        # Python refuses longer decimal conversions; NASM keeps the low 64 bits of any.
        raise LineError(f"number too long ({len(s)} digits)", col)
    for digits, radix in candidates:
        try:
            return int(digits, radix)
        except ValueError:
            continue
    raise LineError(f"invalid number '{text}'", col)


_ESCAPES = {"n": 10, "t": 9, "r": 13, "0": 0, "a": 7, "b": 8, "e": 27, "f": 12, "v": 11,
            "\\": 92, "'": 39, '"': 34, "`": 96, "?": 63}


def _unescape_backquote(body: str, col: int) -> bytes:
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        i += 1
        if i >= len(body):
            raise LineError("unterminated escape sequence in string", col)
        c = body[i]
        if c in "xX":
            hexd = ""
            i += 1
            while i < len(body) and len(hexd) < 2 and body[i] in "0123456789abcdefABCDEF":
                hexd += body[i]
                i += 1
            if not hexd:
                raise LineError("\\x escape needs hex digits", col)
            out.append(int(hexd, 16))
        elif c in "01234567":
            octd = ""
            while i < len(body) and len(octd) < 3 and body[i] in "01234567":
                octd += body[i]
                i += 1
            out.append(int(octd, 8) & 0xFF)
        elif c in "uU":
            n = 4 if c == "u" else 8
            hexd = body[i + 1:i + 1 + n]
            if len(hexd) != n or any(ch not in "0123456789abcdefABCDEF" for ch in hexd):
                raise LineError(f"\\{c} escape needs {n} hex digits", col)
            out += emit_utf8(int(hexd, 16))
            i += 1 + n
        elif c in _ESCAPES:
            out.append(_ESCAPES[c])
            i += 1
        else:
            out += ("\\" + c).encode("utf-8")
            i += 1
    return bytes(out)


def emit_utf8(v: int) -> bytes:
    """NASM's `\\u`/`\\U` encoding (string.c emit_utf8): UTF-8 extended to any 32-bit value,
    surrogates and values past U+10FFFF included, in up to six bytes."""
    if v < 0x80:
        return bytes([v])
    nbytes = 2
    while nbytes < 6 and v >> (6 * (nbytes - 1)) >= 0x40 >> (nbytes - 1):
        nbytes += 1
    lead = (0xFF00 >> nbytes) & 0xFF  # C0 E0 F0 F8 FC
    tail = [0x80 | ((v >> (6 * k)) & 0x3F) for k in range(nbytes - 2, -1, -1)]
    return bytes([(lead + (v >> (6 * (nbytes - 1)))) & 0xFF, *tail])


def _shown(c: str) -> str:
    """A character for an error message: invisible ones (NUL, BOM, controls) escaped."""
    return f"'{c}'" if c.isprintable() and c != "\ufeff" else repr(c).replace('"', "'")


# Whitespace, or a name: NASM takes any byte >= 0x80 as part of a name (so UTF-8 names
# work), but a BOM does not start one. The classes are [A-Za-z_.?@\x80-\U0010ffff] and
# [A-Za-z0-9_.?@$#~\x80-\U0010ffff] written as the ASCII characters they leave out:
# the same sets, but `re` compiles a range up to U+10FFFF in ~13 ms, at every start.
_NAME_OR_SPACE = re.compile(r"(?P<ws>[ \t\r\f\v]+)"
                            r"|(?P<id>(?!\ufeff)[^\x00-\x2d\x2f-\x3e\x5b-\x5e\x60\x7b-\x7f]"
                            r"[^\x00-\x22\x25-\x2d\x2f\x3a-\x3e\x5b-\x5e\x60\x7b-\x7d\x7f]*)")


_OPERATOR = re.compile("|".join(re.escape(op) for op in OPERATORS))  # longest first


def tokenize(line: str) -> list[Token]:
    """Split one source line (comments dropped). Raises LineError for bad characters."""
    toks: list[Token] = []
    i, n = 0, len(line)
    while i < n:
        m = _NAME_OR_SPACE.match(line, i)  # most of a line: one regex step, not a char loop
        if m is not None:
            if m.lastgroup == "id":
                toks.append(Token("id", m.group(), i + 1))
            i = m.end()
            continue
        c = line[i]
        col = i + 1
        if c == ";":
            break
        elif c in "'\"`":
            j = i + 1
            if c == "`":
                while j < n and line[j] != "`":
                    j += 2 if line[j] == "\\" else 1
            else:
                while j < n and line[j] != c:
                    j += 1
            if j >= n:
                raise LineError("unterminated string", col)
            body = line[i + 1:j]
            data = _unescape_backquote(body, col) if c == "`" else body.encode("utf-8")
            toks.append(Token("str", data.decode("latin-1"), col))
            i = j + 1
        elif c in DIGITS or (c == "$" and i + 1 < n and line[i + 1] in DIGITS):
            j = i + 1
            while j < n and line[j] in NUM_CHARS:
                j += 1
            if j < n and line[j] == ".":
                raise LineError("floating-point numbers are not supported", col)
            text = line[i:j]
            value = parse_number("0x" + text[1:] if c == "$" else text, col)
            toks.append(Token("num", text, col, value))
            i = j
        elif c == "$":
            if line.startswith("$$", i):
                toks.append(Token("op", "$$", col))
                i += 2
            elif i + 1 < n and (line[i + 1] in ID_START or line[i + 1] >= "\x80"):
                j = i + 1  # '$name' is the identifier 'name' even if it is a keyword
                while j < n and (line[j] in ID_CHARS or line[j] >= "\x80"):
                    j += 1
                toks.append(Token("id", line[i + 1:j], col, 1))
                i = j
            else:
                toks.append(Token("op", "$", col))
                i += 1
        else:
            m = _OPERATOR.match(line, i)
            if m is None:
                raise LineError(f"unexpected character {_shown(c)}", col)
            toks.append(Token("op", m.group(), col))
            i = m.end()
    return toks
