"""Source text -> statements. Parsing happens once; expressions are evaluated per pass."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vmsim.asm.errors import AsmError, LineError
from vmsim.asm.expr import ExprParser, Node, parse_expr
from vmsim.asm.forms import FORMS, PREFIXES
from vmsim.asm.lexer import Token, tokenize
from vmsim.asm.operands import OperandSyntax, parse_operand
from vmsim.asm.registers import SEG_PREFIX

DATA_UNITS = {"db": 1, "dw": 2, "dd": 4, "dq": 8}
RES_UNITS = {"resb": 1, "resw": 2, "resd": 4, "resq": 8}
IGNORED = {"global", "extern", "cpu", "default", "common", "static"}
DIRECTIVES = (set(DATA_UNITS) | set(RES_UNITS) | IGNORED
              | {"times", "align", "alignb", "bits", "use32", "use16", "org", "section",
                 "segment", "equ", "incbin"})


@dataclass(slots=True)
class DataItem:
    col: int
    text: bytes | None = None  # a string item
    expr: Node | None = None


@dataclass(slots=True)
class Stmt:
    """One source line. `kind` selects which of the other fields are meaningful."""

    line: int
    text: str
    scope: str  # last non-local label, for `.local` names
    kind: str = "none"  # none insn data res align equ org bits section
    col: int = 1
    label: str | None = None
    label_col: int = 1
    mnemonic: str = ""
    prefixes: list[int] = field(default_factory=list)
    operands: list[OperandSyntax] = field(default_factory=list)
    unit: int = 1
    items: list[DataItem] = field(default_factory=list)
    expr: Node | None = None  # res/align/equ/org count or value
    times: Node | None = None
    times_col: int = 1
    fill: Stmt | None = None  # align's filler (`align 4, db 0xcc`)
    name: str = ""  # section name
    sect_align: int = 0  # section ... align=N
    static: bool = False  # set by the assembler: bytes independent of symbols and address
    fixed: bool = False  # static, and no label or TIMES: the pass only places its bytes
    enc_key: object = None  # the assembler's cache: operands and site of the last encoding
    enc_out: bytes | None = None
    enc_checked: bool = False  # enc_out was encoded with ranges checked, as the final pass does
    last_size: int = -1  # the assembler's: bytes, and offset in its section, in the last pass
    last_offset: int = -1


# A line's tokens after %define expansion: each %define may double the one before it.
MAX_EXPANSION = 100_000


def qualify(name: str, scope: str) -> str:
    """`.loop` after `main:` is `main.loop` (NASM local labels; `..@x` is not local)."""
    if name.startswith(".") and not name.startswith(".."):
        return scope + name
    return name


# NASM ends a line at LF, CR LF or a lone CR, and nowhere else (str.splitlines() would also
# split at VT, FF, U+0085, U+2028..., which NASM keeps inside the line or string).
_EOL = re.compile(r"\r\n|\r|\n")


def parse_source(source: str, filename: str) -> list[Stmt]:
    stmts: list[Stmt] = []
    scope = ""
    defines: dict[str, list[Token]] = {}
    lines = _EOL.split(source)
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, text in enumerate(lines, start=1):
        try:
            toks = tokenize(text)
            toks = _preprocess(toks, defines)
            st = Stmt(lineno, text, scope)
            if toks:
                _parse_line(st, toks, len(text) + 1)
            if st.label and not st.label.startswith("."):
                scope = st.label
            if st.label:
                st.label = qualify(st.label, st.scope)
            stmts.append(st)
        except LineError as e:
            raise AsmError(e.message, filename, lineno, e.col) from None
        except RecursionError:
            raise AsmError("expression nested too deeply", filename, lineno, 1) from None
    return stmts


def _preprocess(toks: list[Token], defines: dict[str, list[Token]]) -> list[Token]:
    """Single-line `%define NAME value` / `%undef NAME`; other % directives are errors."""
    if toks and toks[0].is_op("%"):
        if len(toks) < 2 or toks[1].kind != "id":
            raise LineError("preprocessor directive expected after '%'", toks[0].col)
        word = toks[1].low
        if word in ("define", "idefine", "undef"):
            if len(toks) < 3 or toks[2].kind != "id":
                raise LineError(f"%{word} needs a macro name", toks[1].col)
            if len(toks) > 3 and toks[3].is_op("(") and toks[3].col == toks[2].col + len(
                    toks[2].text):
                raise LineError("macros with parameters are not supported", toks[3].col)
            if word == "undef":
                defines.pop(toks[2].text, None)
            else:
                defines[toks[2].text] = _preprocess(toks[3:], defines)
            return []
        raise LineError(f"preprocessor directive '%{toks[1].text}' is not supported",
                        toks[0].col)
    if not defines:
        return toks
    out: list[Token] = []
    for t in toks:
        if t.kind == "id" and t.text in defines:
            out += [Token(d.kind, d.text, t.col, d.value) for d in defines[t.text]]
            if len(out) > MAX_EXPANSION:
                raise LineError(f"macro expansion too long (more than {MAX_EXPANSION} tokens)",
                                t.col)
        else:
            out.append(t)
    return out


_PREFIX_GROUP = {0xF2: "rep", 0xF3: "rep", 0xF0: "lock", 0x66: "osize",
                 **{v: "seg" for v in SEG_PREFIX.values()}}


def _add_prefix(prefixes: list[int], byte: int, col: int) -> None:
    """NASM keeps one prefix per group: a repeat is dropped (its 'redundant prefixes'
    warning), two different ones are an error."""
    for have in prefixes:
        if _PREFIX_GROUP[have] == _PREFIX_GROUP[byte]:
            if have != byte:
                raise LineError("instruction has conflicting prefixes", col)
            return
    prefixes.append(byte)


def _is_keyword(t: Token) -> bool:
    low = t.low
    return (t.kind == "id" and not t.value
            and (low in FORMS or low in PREFIXES or low in DIRECTIVES))


def _parse_line(st: Stmt, toks: list[Token], end_col: int) -> None:
    if toks[0].is_op("["):
        # [bits 32], [org 0x7c00], [section .text]: NASM's primitive directive form.
        if not toks[-1].is_op("]") or len(toks) < 3:
            raise LineError("expected ']' after directive", toks[-1].col)
        inner = toks[1:-1]
        if inner[0].low not in ("bits", "org", "section", "segment", "global", "extern",
                                "cpu", "default"):
            raise LineError(f"unknown directive '{inner[0].text}'", inner[0].col)
        _parse_statement(st, inner, toks[-1].col)
        return
    first = toks[0]
    if first.kind == "id" and _is_keyword(first) and len(toks) > 1 and toks[1].is_op(":"):
        _check_label_name(first.text, first.col)
    seg_prefix = first.low in SEG_PREFIX and len(toks) > 1 and not toks[1].is_op(":")
    if first.kind == "id" and not seg_prefix and (first.value or not _is_keyword(first)):
        if len(toks) > 1 and toks[1].is_op(":"):
            st.label, st.label_col = first.text, first.col
            toks = toks[2:]
        elif len(toks) > 1 and toks[1].kind == "id" and toks[1].low == "equ":
            st.label, st.label_col = first.text, first.col
            toks = toks[1:]
        elif len(toks) > 1 and _is_keyword(toks[1]):
            st.label, st.label_col = first.text, first.col  # NASM: label without colon
            toks = toks[1:]
        elif first.low in ("bits", "org"):
            pass
        elif len(toks) == 1:
            raise LineError(f"unknown mnemonic '{first.text}' (a label alone on a line "
                            "needs a colon)", first.col)
        else:
            raise LineError(f"unknown mnemonic '{first.text}'", first.col)
        if st.label is not None and not first.value:
            _check_label_name(st.label, st.label_col)
    if toks:
        _parse_statement(st, toks, end_col)


def _check_label_name(name: str, col: int) -> None:
    from vmsim.asm.registers import REGISTERS

    if name.lower() in REGISTERS:
        raise LineError(f"'{name}' is a register and cannot be a label", col)
    if name.lower() in FORMS or name.lower() in PREFIXES or name.lower() in DIRECTIVES:
        raise LineError(f"'{name}' is an instruction and cannot be a label", col)


def _split_commas(toks: list[Token]) -> list[list[Token]]:
    parts: list[list[Token]] = [[]]
    depth = 0
    for t in toks:
        if t.is_op("(") or t.is_op("["):
            depth += 1
        elif t.is_op(")") or t.is_op("]"):
            depth -= 1
        if t.is_op(",") and depth == 0:
            parts.append([])
        else:
            parts[-1].append(t)
    return parts


def _parse_statement(st: Stmt, toks: list[Token], end_col: int) -> None:
    head = toks[0]
    if head.kind != "id":
        raise LineError(f"instruction or directive expected, found '{head.text}'", head.col)
    word = head.low
    rest = toks[1:]
    st.col = head.col
    if word == "times":
        # A loop, not recursion: `times 2 times 3 nop` is 3 NOPs in NASM (the last count wins).
        while word == "times":
            p = ExprParser(rest, 0, end_col)
            st.times = p.parse()
            st.times_col = head.col
            rest = rest[p.pos:]
            if not rest:
                raise LineError("TIMES needs an instruction or data after the count", end_col)
            head = rest[0]
            word = head.low if head.kind == "id" else ""
            if word == "times":
                rest = rest[1:]
        body = rest
        _parse_statement(st, body, end_col)
        if st.kind not in ("insn", "data"):
            raise LineError("TIMES can only repeat an instruction or data", body[0].col)
        return
    if word == "equ":
        if st.label is None:
            raise LineError("EQU needs a label before it", head.col)
        st.kind, st.expr = "equ", parse_expr(rest, end_col)
        return
    if word in DATA_UNITS:
        st.kind, st.unit = "data", DATA_UNITS[word]
        if not rest:
            raise LineError(f"'{word}' needs at least one value", end_col)
        for part in _split_commas(rest):
            col = part[0].col if part else end_col
            if len(part) == 1 and part[0].kind == "str":
                st.items.append(DataItem(col, text=part[0].text.encode("latin-1")))
            else:
                st.items.append(DataItem(col, expr=parse_expr(part, end_col)))
        return
    if word in RES_UNITS:
        st.kind, st.unit, st.expr = "res", RES_UNITS[word], parse_expr(rest, end_col)
        return
    if word in ("align", "alignb"):
        parts = _split_commas(rest)
        st.kind, st.expr = "align", parse_expr(parts[0], end_col)
        st.name = word
        if len(parts) > 2:
            raise LineError("too many arguments to ALIGN", parts[2][0].col if parts[2] else 1)
        if len(parts) == 2:
            if word == "alignb" or not parts[1]:
                raise LineError("bad ALIGN filler", parts[1][0].col if parts[1] else end_col)
            fill = Stmt(st.line, st.text, st.scope)
            _parse_statement(fill, parts[1], end_col)
            if fill.kind not in ("insn", "data"):
                raise LineError("ALIGN filler must be an instruction or data", parts[1][0].col)
            st.fill = fill
        return
    if word in ("bits", "use32", "use16"):
        if word == "bits":
            if len(rest) != 1 or rest[0].kind != "num":
                raise LineError("BITS needs 16, 32 or 64", rest[0].col if rest else end_col)
            bits = rest[0].value
        else:
            bits = 32 if word == "use32" else 16
        if bits != 32:
            raise LineError(f"only 32-bit code is supported (bits {bits})",
                            rest[0].col if rest else head.col)
        st.kind = "bits"
        return
    if word == "org":
        st.kind, st.expr = "org", parse_expr(rest, end_col)
        return
    if word in ("section", "segment"):
        if not rest or rest[0].kind != "id":
            raise LineError("section name expected", rest[0].col if rest else end_col)
        st.kind, st.name = "section", rest[0].text
        attrs = rest[1:]
        for k, t in enumerate(attrs):
            if t.kind == "id" and t.low == "align":
                if k + 2 >= len(attrs) or not attrs[k + 1].is_op("=") or attrs[k + 2].kind != "num":
                    raise LineError("expected align=N", t.col)
                st.sect_align = attrs[k + 2].value
                if st.sect_align <= 0 or st.sect_align & (st.sect_align - 1):
                    raise LineError(f"section alignment {st.sect_align} is not a power of two",
                                    attrs[k + 2].col)
                continue
            if t.kind == "id" and t.low in ("progbits", "nobits", "exec", "noexec", "write",
                                              "nowrite", "alloc", "noalloc"):
                continue
            if t.is_op("=") or t.kind == "num":
                continue
            raise LineError(f"unsupported section attribute '{t.text}'", t.col)
        return
    if word in IGNORED:
        return
    if word == "incbin":
        raise LineError("INCBIN is not supported", head.col)
    # An instruction, possibly behind prefixes.
    while rest and (word in PREFIXES or (word in SEG_PREFIX and rest)):
        _add_prefix(st.prefixes, PREFIXES.get(word) or SEG_PREFIX[word], head.col)
        head, rest = rest[0], rest[1:]
        if head.kind != "id":
            raise LineError(f"instruction expected, found '{head.text}'", head.col)
        word = head.low
    if word in PREFIXES:
        raise LineError(f"prefix '{head.text}' needs an instruction after it", head.col)
    if word not in FORMS:
        raise LineError(f"unknown mnemonic '{head.text}'", head.col)
    st.kind, st.mnemonic, st.col = "insn", word, head.col
    if rest:
        for part in _split_commas(rest):
            st.operands.append(parse_operand(part, end_col if not part else part[-1].col + 1))
