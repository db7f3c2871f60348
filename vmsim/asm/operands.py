"""Instruction operands: parsed once into syntax, resolved into Reg/Mem/Imm/Far per pass."""

from __future__ import annotations

from dataclasses import dataclass

from vmsim.asm.errors import LineError
from vmsim.asm.expr import EvalContext, Node, Value, evaluate, parse_expr
from vmsim.asm.lexer import Token
from vmsim.asm.registers import EBP, ESP, REGISTERS, RegInfo

SIZE_WORDS = {"byte": 8, "word": 16, "dword": 32, "qword": 64, "tword": 80}
JUMP_WORDS = ("short", "near", "far")


@dataclass(frozen=True, slots=True)
class OperandSyntax:
    """One operand as written: `kind` is 'reg', 'mem', 'imm' or 'far' (seg:offset)."""

    kind: str
    col: int
    size: int | None = None  # from byte/word/dword before the operand
    strict: bool = False
    jump: str | None = None  # short / near / far
    reg: str | None = None
    expr: Node | None = None  # imm value, memory address, or far offset
    seg_expr: Node | None = None  # far segment
    seg: str | None = None  # memory segment override
    disp_size: int | None = None  # [byte eax+1] / [dword eax+1]


@dataclass(frozen=True, slots=True)
class Reg:
    info: RegInfo
    col: int


@dataclass(frozen=True, slots=True)
class Mem:
    size: int | None
    seg: str | None
    base: int | None  # register numbers (32-bit GPRs)
    index: int | None
    scale: int
    disp: Value
    disp_size: int | None
    jump: str | None
    col: int

    @property
    def is_offset(self) -> bool:
        return self.base is None and self.index is None


@dataclass(frozen=True, slots=True)
class Imm:
    value: Value
    size: int | None
    strict: bool
    jump: str | None
    col: int


@dataclass(frozen=True, slots=True)
class Far:
    seg: Value
    off: Value
    col: int
    size: int | None = None  # `word sel:off` is ptr16:16 (66 EA / 66 9A)


Operand = Reg | Mem | Imm | Far


def parse_operand(toks: list[Token], end_col: int) -> OperandSyntax:
    """Parse the tokens between two commas."""
    if not toks:
        raise LineError("operand expected", end_col)
    col = toks[0].col
    size: int | None = None
    strict = False
    jump: str | None = None
    i = 0
    while i < len(toks) and toks[i].kind == "id" and not toks[i].value:
        w = toks[i].low
        if w in SIZE_WORDS:
            size = SIZE_WORDS[w]
        elif w in JUMP_WORDS:
            jump = w
        elif w == "strict":
            strict = True
        else:
            break
        i += 1
    rest = toks[i:]
    if not rest:
        raise LineError("operand expected after size keyword", end_col)
    first = rest[0]
    if first.is_op("["):
        if not rest[-1].is_op("]"):
            raise LineError("missing ']' to close this memory operand", first.col)
        inner = rest[1:-1]
        for t in inner:
            if t.is_op("[") or t.is_op("]"):
                raise LineError(f"unexpected '{t.text}' in memory operand", t.col)
        disp_size = None
        if inner and inner[0].kind == "id" and inner[0].low in ("byte", "dword", "word"):
            disp_size = SIZE_WORDS[inner[0].low]
            inner = inner[1:]
        seg = None
        if len(inner) >= 2 and inner[1].is_op(":") and inner[0].kind == "id":
            r = REGISTERS.get(inner[0].low)
            if r is None or r.kind != "sreg":
                raise LineError(f"'{inner[0].text}' is not a segment register", inner[0].col)
            seg = r.name
            inner = inner[2:]
        expr = parse_expr(inner, rest[-1].col)
        return OperandSyntax("mem", col, size, strict, jump, expr=expr, seg=seg,
                             disp_size=disp_size)
    if len(rest) == 1 and first.kind == "id" and not first.value and first.low in REGISTERS:
        return OperandSyntax("reg", col, size, strict, jump, reg=first.low)
    depth = 0
    for k, t in enumerate(rest):
        if t.is_op("("):
            depth += 1
        elif t.is_op(")"):
            depth -= 1
        elif t.is_op(":") and depth == 0:
            seg_expr = parse_expr(rest[:k], t.col)
            off = parse_expr(rest[k + 1:], end_col)
            return OperandSyntax("far", col, size, strict, jump, expr=off, seg_expr=seg_expr)
    return OperandSyntax("imm", col, size, strict, jump, expr=parse_expr(rest, end_col))


def check_address(v: Value, col: int) -> None:
    """A flat binary can hold numbers and single addresses, not `2*label` or `-label`."""
    if v.known and v.reloc not in (0, 1):
        raise LineError("invalid use of an address (only label + constant or label - label "
                        "make sense)", col)


def resolve(op: OperandSyntax, ctx: EvalContext) -> Operand:
    """Evaluate an operand's expressions with this pass's symbol values."""
    if op.kind == "reg":
        assert op.reg is not None
        return Reg(REGISTERS[op.reg], op.col)
    assert op.expr is not None
    if op.kind == "far":
        assert op.seg_expr is not None
        seg, off = evaluate(op.seg_expr, ctx), evaluate(op.expr, ctx)
        check_address(seg, op.col)
        check_address(off, op.col)
        return Far(seg, off, op.col, op.size)
    if op.kind == "imm":
        v = evaluate(op.expr, ctx)
        check_address(v, op.col)
        return Imm(v, op.size, op.strict, op.jump, op.col)
    ctx.allow_regs = True
    try:
        v = evaluate(op.expr, ctx)
    finally:
        ctx.allow_regs = False
    check_address(v, op.col)
    base, index, scale = _effective_address(v, op.col)
    disp = Value(v.n, v.reloc, v.known, section=v.section)
    return Mem(op.size, op.seg, base, index, scale, disp, op.disp_size, op.jump, op.col)


def _effective_address(v: Value, col: int) -> tuple[int | None, int | None, int]:
    """Pick base, index and scale the way NASM 2.16 does (parser.c + process_ea)."""
    terms = list(v.regs)
    if not terms:
        return None, None, 0
    for r, _ in terms:
        info = REGISTERS[r]
        if info.kind != "gpr":
            raise LineError(f"register '{r}' cannot be used in a memory address", col)
        if info.size == 16:
            raise LineError("16-bit addressing is not supported (use 32-bit registers)", col)
        if info.size != 32:
            raise LineError("invalid effective address", col)
    if len(terms) > 2:
        raise LineError("invalid effective address: too many registers", col)
    hint_reg, hint_mult = v.hint if v.hint else (None, False)
    base: str | None = None
    index: str | None = None
    scale = 0
    if len(terms) == 1:
        r, c = terms[0]
        if c == 1:
            base = r
        else:
            index, scale = r, c
    else:
        (r1, c1), (r2, c2) = terms
        if c1 != 1 and c2 != 1:
            raise LineError("invalid effective address: two index registers", col)
        if c1 == 1 and c2 == 1:
            # The first register written is the base unless it was written as reg*1.
            first_is_base = not (hint_reg == r1 and hint_mult)
            base, index = (r1, r2) if first_is_base else (r2, r1)
            scale = 1
        elif c1 == 1:
            base, index, scale = r1, r2, c2
        else:
            base, index, scale = r2, r1, c1
    if base is None and index is not None and scale in (2, 3, 5, 9) and index != "esp":
        base, scale = index, scale - 1  # [eax*3] -> [eax+eax*2]
    if scale == 1 and index == "esp":
        base, index = index, base
    if index == "esp" or (index is not None and scale not in (1, 2, 4, 8)):
        raise LineError("invalid 32-bit effective address", col)
    b = REGISTERS[base].num if base else None
    i = REGISTERS[index].num if index else None
    assert i != ESP
    return b, i, scale if index else 0


def modrm_bytes(mem: Mem, reg_field: int) -> bytes:
    """ModRM [+SIB] [+disp] for a memory operand (32-bit addressing, NASM's choices)."""
    d = mem.disp
    n = (d.n + (1 << 31)) % (1 << 32) - (1 << 31)  # NASM keeps a 32-bit signed offset
    simple = d.known and d.reloc == 0
    base, index = mem.base, mem.index
    if base is None and index is None:
        return bytes([(reg_field << 3) | 5]) + _disp(d.n, 4)
    if base is None:
        mod, base_field, nbytes = 0, 5, 4
    else:
        base_field = base
        if n == 0 and simple and base != EBP and mem.disp_size is None:
            mod, nbytes = 0, 0
        elif mem.disp_size == 8 or (mem.disp_size is None and simple and -128 <= n <= 127):
            mod, nbytes = 1, 1
        else:
            mod, nbytes = 2, 4
    if index is None and base != ESP:
        out = bytes([(mod << 6) | (reg_field << 3) | base_field])
    else:
        idx = 4 if index is None else index
        ss = {0: 0, 1: 0, 2: 1, 4: 2, 8: 3}[mem.scale]
        out = bytes([(mod << 6) | (reg_field << 3) | 4, (ss << 6) | (idx << 3) | base_field])
    return out + _disp(d.n, nbytes)


def _disp(n: int, nbytes: int) -> bytes:
    return (n & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little") if nbytes else b""
