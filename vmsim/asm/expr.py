"""NASM expressions: parse tokens to a tree once, evaluate it in every pass.

A value is an absolute number plus bookkeeping NASM uses to choose encodings:
`reloc` counts address terms (labels, `$`, `$$`): NASM calls a value with none "simple"
and only simple values get short immediate / displacement forms. `known` is False for a
symbol not defined yet in the current pass (a forward reference). `regs` holds register
terms, only legal inside `[...]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmsim.asm.errors import LineError
from vmsim.asm.lexer import Token
from vmsim.asm.registers import REGISTERS

MASK64 = (1 << 64) - 1


def wrap64(n: int) -> int:
    """NASM evaluates in 64-bit two's complement."""
    n &= MASK64
    return n - (1 << 64) if n >> 63 else n


@dataclass(frozen=True, slots=True)
class Value:
    n: int = 0
    reloc: int = 0
    known: bool = True
    regs: tuple[tuple[str, int], ...] = ()  # (register, coefficient), in source order
    hint: tuple[str, bool] | None = None  # first register seen; True if it was multiplied
    section: str | None = None  # section of a single address term (for jump sizing)

    @property
    def simple(self) -> bool:
        return self.known and self.reloc == 0 and not self.regs

    @property
    def scalar(self) -> bool:
        return self.reloc == 0 and not self.regs


# --- tree -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Num:
    value: int
    col: int


@dataclass(frozen=True, slots=True)
class Sym:
    name: str
    col: int


@dataclass(frozen=True, slots=True)
class Here:
    start: bool  # True for `$$`
    col: int


@dataclass(frozen=True, slots=True)
class RegRef:
    name: str
    col: int


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    arg: Node
    col: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Node
    right: Node
    col: int


Node = Num | Sym | Here | RegRef | Unary | Binary

# Lowest precedence first (NASM manual 3.5).
_LEVELS: tuple[tuple[str, ...], ...] = (
    ("|",), ("^",), ("&",), ("<<", ">>", "<<<", ">>>"), ("+", "-"), ("*", "/", "//", "%", "%%"),
)


_PREC = {op: i for i, level in enumerate(_LEVELS) for op in level}


def char_const(text: str) -> int:
    """'ab' is 0x6261: characters are stored little-endian, as NASM does."""
    data = text.encode("latin-1")
    if len(data) > 8:
        raise ValueError("character constant too long")
    return int.from_bytes(data, "little")


# Parentheses and unary operators nested deeper than this are refused (each level costs
# the recursive-descent parser about ten Python frames; NASM's own parser recurses too).
MAX_NESTING = 64


class ExprParser:
    """Recursive descent over a token list; `pos` is left after the expression."""

    def __init__(self, toks: list[Token], pos: int = 0, end_col: int = 1) -> None:
        self.toks = toks
        self.pos = pos
        self.end_col = end_col
        self.depth = 0

    def _deeper(self, t: Token) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise LineError(f"expression nested too deeply (more than {MAX_NESTING} levels of "
                            "parentheses and unary operators)", t.col)

    def peek(self) -> Token | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def parse(self) -> Node:
        return self._binary(0)

    def _binary(self, min_prec: int) -> Node:
        """Precedence climbing over _LEVELS; operators of one level associate to the left."""
        left = self._unary()
        toks = self.toks
        while self.pos < len(toks):
            t = toks[self.pos]
            prec = _PREC.get(t.text) if t.kind == "op" else None
            if prec is None or prec < min_prec:
                break
            self.pos += 1
            left = Binary(t.text, left, self._binary(prec + 1), t.col)
        return left

    def _unary(self) -> Node:
        t = self.peek()
        if t is None:
            raise LineError("expression expected", self.end_col)
        if t.kind == "op" and t.text in ("-", "+", "~", "!"):
            self.pos += 1
            self._deeper(t)
            node = Unary(t.text, self._unary(), t.col)
            self.depth -= 1
            return node
        return self._atom()

    def _atom(self) -> Node:
        t = self.peek()
        assert t is not None
        self.pos += 1
        if t.kind == "num":
            return Num(t.value, t.col)
        if t.kind == "str":
            try:
                return Num(char_const(t.text), t.col)
            except ValueError:
                raise LineError("character constant too long", t.col) from None
        if t.kind == "id":
            if not t.value and t.low in REGISTERS:
                return RegRef(t.low, t.col)
            return Sym(t.text, t.col)
        if t.is_op("$") or t.is_op("$$"):
            return Here(t.text == "$$", t.col)
        if t.is_op("("):
            self._deeper(t)
            inner = self._binary(0)
            self.depth -= 1
            close = self.peek()
            if close is None or not close.is_op(")"):
                raise LineError("expected ')'", close.col if close else self.end_col)
            self.pos += 1
            return inner
        raise LineError(f"unexpected '{t.text}' in expression", t.col)


def parse_expr(toks: list[Token], end_col: int) -> Node:
    """Parse a whole token list as one expression."""
    if not toks:
        raise LineError("expression expected", end_col)
    p = ExprParser(toks, 0, end_col)
    node = p.parse()
    if p.pos != len(toks):
        t = toks[p.pos]
        raise LineError(f"unexpected '{t.text}' in expression", t.col)
    return node


def first_col(node: Node) -> int:
    while isinstance(node, Binary):
        node = node.left
    return node.col


def is_static(node: Node) -> bool:
    """True if the value cannot change between passes: no symbol and no `$`/`$$`."""
    todo = [node]
    while todo:
        n = todo.pop()
        if isinstance(n, (Sym, Here)):
            return False
        if isinstance(n, Unary):
            todo.append(n.arg)
        elif isinstance(n, Binary):
            todo += (n.left, n.right)
    return True


# --- evaluation -------------------------------------------------------------------------

Lookup = Callable[[str, int], Value]


@dataclass(slots=True)
class EvalContext:
    lookup: Lookup  # resolves a (local-expanded) symbol; may return an unknown Value
    here: int  # `$`
    section_start: int  # `$$`
    section: str
    allow_regs: bool = False


def evaluate(node: Node, ctx: EvalContext) -> Value:
    if isinstance(node, Binary) and isinstance(node.left, Binary):
        # `1+2+3+...` is a left-leaning chain as deep as it is long: walk it, don't recurse.
        spine: list[Binary] = []
        n: Node = node
        while isinstance(n, Binary):
            spine.append(n)
            n = n.left
        v = evaluate(n, ctx)
        for b in reversed(spine):
            v = _binary(b, v, evaluate(b.right, ctx))
        return v
    if isinstance(node, Num):
        return Value(wrap64(node.value))
    if isinstance(node, Sym):
        return ctx.lookup(node.name, node.col)
    if isinstance(node, Here):
        return Value(ctx.section_start if node.start else ctx.here, 1, section=ctx.section)
    if isinstance(node, RegRef):
        if not ctx.allow_regs:
            raise LineError(f"register '{node.name}' not allowed in an expression", node.col)
        return Value(0, regs=((node.name, 1),), hint=(node.name, False))
    if isinstance(node, Unary):
        v = evaluate(node.arg, ctx)
        if node.op == "+":
            return v
        if node.op == "-":
            return Value(wrap64(-v.n), -v.reloc, v.known,
                         tuple((r, -c) for r, c in v.regs), v.hint, v.section)
        _need_scalar(v, node.op, node.col)
        n = ~v.n if node.op == "~" else int(v.n == 0)
        return Value(wrap64(n), 0, v.known)
    return _binary(node, evaluate(node.left, ctx), evaluate(node.right, ctx))


def _need_scalar(v: Value, op: str, col: int) -> None:
    if v.known and not v.scalar:
        raise LineError(f"'{op}' operator may only be applied to scalar values", col)


def _merge_regs(a: Value, b: Value, sign: int) -> tuple[tuple[str, int], ...]:
    coef: dict[str, int] = dict(a.regs)
    for r, c in b.regs:
        coef[r] = coef.get(r, 0) + sign * c
    return tuple((r, c) for r, c in coef.items() if c != 0)


def _binary(node: Binary, a: Value, b: Value) -> Value:
    op, col = node.op, node.col
    known = a.known and b.known
    hint = a.hint or b.hint
    if op in ("+", "-"):
        sign = 1 if op == "+" else -1
        reloc = a.reloc + sign * b.reloc
        section = a.section if a.reloc else b.section
        return Value(wrap64(a.n + sign * b.n), reloc, known, _merge_regs(a, b, sign), hint,
                     section if reloc == 1 else None)
    if op == "*":
        if not a.scalar and not b.scalar and a.known and b.known:
            raise LineError("unable to multiply two non-scalar objects", col)
        vec, k = (a, b) if not a.scalar else (b, a)
        if hint is not None:
            hint = (hint[0], True)
        return Value(wrap64(vec.n * k.n), vec.reloc * k.n, known,
                     tuple((r, c * k.n) for r, c in vec.regs if c * k.n != 0), hint)
    _need_scalar(a, op, col)
    _need_scalar(b, op, col)
    if not known:
        return Value(0, 0, False)
    x, y = a.n, b.n
    ux, uy = x & MASK64, y & MASK64
    if op in ("/", "//", "%", "%%") and y == 0:
        raise LineError("division by zero", col)
    if op == "/":
        r = ux // uy
    elif op == "%":
        r = ux % uy
    elif op == "//":
        r = abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1)
    elif op == "%%":
        r = x - y * (abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1))
    elif op in ("<<", "<<<"):
        r = ux << (uy & 63) if uy < 64 else 0
    elif op == ">>":
        r = ux >> uy if uy < 64 else 0
    elif op == ">>>":
        r = x >> min(uy, 63)
    elif op == "&":
        r = x & y
    elif op == "|":
        r = x | y
    else:  # "^"
        r = x ^ y
    return Value(wrap64(r))
