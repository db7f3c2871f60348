"""The multi-pass driver: lays out sections, sizes jumps until labels stop moving.

Like NASM, pass 1 is optimistic about forward references (short jumps, sign-extended
immediates) and conservative about displacements (disp32); later passes use the label
values of the pass before, until nothing moves. A final pass then emits bytes with every
symbol known and every range checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmsim.asm.encoder import Site, encode
from vmsim.asm.errors import AsmError, LineError
from vmsim.asm.expr import EvalContext, Node, Value, evaluate
from vmsim.asm.image import GuestImage, SourceLine
from vmsim.asm.operands import check_address, resolve
from vmsim.asm.parser import Stmt, parse_source, qualify

MAX_PASSES = 64
DEFAULT_SECTION_ALIGN = 4  # NASM's bin format aligns every section after the first to 4


@dataclass
class Placed:
    """What one statement produced in the last pass."""

    stmt: Stmt
    section: str
    offset: int  # within the section
    data: bytes


@dataclass
class Section:
    name: str
    nobits: bool
    align: int = DEFAULT_SECTION_ALIGN
    size: int = 0
    base: int = 0


@dataclass
class _Pass:
    final: bool
    symbols: dict[str, Value]  # EQU values
    labels: dict[str, tuple[str, int]]  # label -> (section, offset): bases may still move
    defined: set[str] = field(default_factory=set)
    saw_unknown: bool = False


class Assembler:
    def __init__(self, source: str, filename: str) -> None:
        self.filename = filename
        self.stmts = parse_source(source, filename)
        self.symbols: dict[str, Value] = {}
        self.labels: dict[str, tuple[str, int]] = {}
        self.sections: dict[str, Section] = {}
        self.origin = 0
        self.placed: list[Placed] = []

    # -- evaluation helpers ------------------------------------------------------------

    def _ctx(self, p: _Pass, st: Stmt, here: int, sect: Section) -> EvalContext:
        def lookup(name: str, col: int) -> Value:
            full = qualify(name, st.scope)
            if full in p.labels:
                sname, off = p.labels[full]
                return Value(self.sections[sname].base + off, 1, section=sname)
            v = p.symbols.get(full)
            if v is None or (p.final and not v.known):
                if p.final:
                    why = "" if v is None else " (its EQU value uses an undefined symbol)"
                    raise LineError(f"symbol '{full}' is not defined{why}", col)
                p.saw_unknown = True
                return Value(0, 0, False)
            if not v.known:
                p.saw_unknown = True
            return v

        return EvalContext(lookup, here, sect.base, sect.name)

    def _const(self, node: Node, ctx: EvalContext, p: _Pass, what: str) -> int | None:
        """A value that must be a plain number (times/res/align/org)."""
        v = evaluate(node, ctx)
        if not v.known:
            return None
        if not v.scalar:
            raise LineError(f"{what} must be a constant, not an address", _col(node))
        return v.n

    # -- passes ------------------------------------------------------------------------

    def run(self) -> GuestImage:
        prev: tuple[object, ...] | None = None
        for _ in range(MAX_PASSES):
            p = _Pass(False, self.symbols, self.labels)
            self._pass(p)
            state = self._state()
            # Stable: done. An unknown symbol that stays unknown is reported by the final pass.
            if state == prev:
                break
            prev = state
        else:
            raise AsmError("instruction sizes did not converge (jumps keep changing size)",
                           self.filename, 1, 1)
        self._pass(_Pass(True, self.symbols, self.labels))
        if self._state() != prev:
            raise AsmError("internal error: final pass moved labels", self.filename, 1, 1)
        return self._image()

    def _state(self) -> tuple[object, ...]:
        syms = tuple(sorted((k, v.n, v.reloc, v.known) for k, v in self.symbols.items()))
        syms += tuple(sorted(self.labels.items()))
        secs = tuple((s.name, s.base, s.size) for s in self.sections.values())
        return syms, secs, self.origin

    def _section(self, name: str) -> Section:
        if name not in self.sections:
            self.sections[name] = Section(name, nobits=name.lower() in (".bss", "bss"))
        return self.sections[name]

    def _pass(self, p: _Pass) -> None:
        self._section(".text")
        for s in self.sections.values():
            s.size = 0
        cur = self.sections[".text"]
        self.placed = []
        for st in self.stmts:
            try:
                cur = self._statement(p, st, cur)
            except LineError as e:
                raise AsmError(e.message, self.filename, st.line, e.col) from None
        self._layout()

    def _statement(self, p: _Pass, st: Stmt, cur: Section) -> Section:
        if st.kind == "section":
            cur = self._section(st.name)
            cur.align = max(cur.align, st.sect_align)
        here = cur.base + cur.size
        ctx = self._ctx(p, st, here, cur)
        if st.label is not None:
            if st.label in p.defined:
                raise LineError(f"label '{st.label}' is already defined", st.label_col)
            p.defined.add(st.label)
            if st.kind == "equ":
                assert st.expr is not None
                p.symbols[st.label] = evaluate(st.expr, ctx)
            else:
                p.labels[st.label] = (cur.name, cur.size)
        data = self._emit(p, st, cur, ctx, here)
        if cur.nobits and data.strip(b"\0") and st.kind != "res":
            raise LineError(f"section {cur.name} can only reserve space (resb...)", st.col)
        self.placed.append(Placed(st, cur.name, cur.size, data))
        cur.size += len(data)
        return cur

    def _emit(self, p: _Pass, st: Stmt, cur: Section, ctx: EvalContext, here: int) -> bytes:
        kind = st.kind
        if kind == "org":
            assert st.expr is not None
            n = self._const(st.expr, ctx, p, "ORG")
            if n is None:
                raise LineError("ORG must not use symbols defined later", st.col)
            if any(pl.data for pl in self.placed) and n != self.origin:
                raise LineError("ORG must come before any code or data", st.col)
            if not 0 <= n < 1 << 32:
                raise LineError(f"ORG {n} is not a 32-bit address", st.col)
            self.origin = n
            self.sections[".text"].base = n
            return b""
        if kind in ("insn", "data"):
            count = 1
            if st.times is not None:
                c = self._const(st.times, ctx, p, "TIMES count")
                if c is None:
                    return b""
                if c < 0:
                    if p.final:
                        raise LineError(f"TIMES count is negative ({c})", st.times_col)
                    return b""
                count = c
            one = self._one(p, st, cur, ctx, here)
            if count < 2 or st.kind == "data":
                return one * count
            # `$` stays at the line start, but each copy is assembled at its own address
            # (so `times 3 jmp short $` gives EB FE EB FC EB FA, as in NASM).
            second = self._one(p, st, cur, ctx, here + len(one))
            if second == one:
                return one * count
            out = bytearray(one + second)
            for _ in range(count - 2):
                out += self._one(p, st, cur, ctx, here + len(out))
            return bytes(out)
        if kind == "res":
            assert st.expr is not None
            n = self._const(st.expr, ctx, p, "RESB count")
            if n is None:
                return b""
            if n < 0:
                raise LineError(f"reserve count is negative ({n})", st.col)
            return bytes(n * st.unit)
        if kind == "align":
            assert st.expr is not None
            n = self._const(st.expr, ctx, p, "ALIGN")
            if n is None:
                return b""
            if n <= 0 or n & (n - 1):
                raise LineError(f"ALIGN value {n} is not a power of two", st.col)
            cur.align = max(cur.align, n)  # NASM's align also raises the section alignment
            pad = (n - (cur.size % n)) % n
            if st.name == "alignb":
                return bytes(pad)
            if st.fill is None:
                return b"\x90" * pad
            unit = self._one(p, st.fill, cur, ctx, ctx.here)
            if not unit:
                return b""
            return (unit * pad)[:pad] if len(unit) == 1 else unit * (pad // len(unit))
        return b""

    def _one(self, p: _Pass, st: Stmt, cur: Section, ctx: EvalContext, at: int) -> bytes:
        if st.kind == "data":
            return self._data(p, st, ctx)
        ops = [resolve(o, ctx) for o in st.operands]
        site = Site(at, cur.name, p.final)
        return encode(st.mnemonic, st.col, ops, st.prefixes, site)

    def _data(self, p: _Pass, st: Stmt, ctx: EvalContext) -> bytes:
        out = bytearray()
        unit = st.unit
        for item in st.items:
            if item.text is not None:
                pad = (-len(item.text)) % unit
                out += item.text + bytes(pad)
                continue
            assert item.expr is not None
            v = evaluate(item.expr, ctx)
            check_address(v, item.col)
            if p.final and unit < 8 and not -(1 << (8 * unit)) <= v.n < (1 << (8 * unit)):
                kind = {1: "byte", 2: "word", 4: "dword"}[unit]
                raise LineError(f"value {v.n} does not fit in a {kind}", item.col)
            out += (v.n & ((1 << (8 * unit)) - 1)).to_bytes(unit, "little")
        return bytes(out)

    def _layout(self) -> None:
        """.text at ORG, then the other progbits sections, then nobits (.bss)."""
        order = [s for s in self.sections.values() if not s.nobits]
        order += [s for s in self.sections.values() if s.nobits]
        addr = self.origin
        for i, s in enumerate(order):
            if i:
                addr = (addr + s.align - 1) // s.align * s.align
            s.base = addr
            addr += s.size

    def _image(self) -> GuestImage:
        out = bytearray()
        for s in self.sections.values():
            if s.nobits:
                continue
            chunks = [pl.data for pl in self.placed if pl.section == s.name]
            if not any(chunks):
                continue
            out += bytes(s.base - self.origin - len(out))
            for c in chunks:
                out += c
        lines = [
            SourceLine(self.sections[pl.section].base + pl.offset, len(pl.data), self.filename,
                       pl.stmt.line)
            for pl in self.placed
        ]
        lines.sort(key=lambda ln: (ln.address, ln.line))
        symbols = {k: v.n for k, v in self.symbols.items()}
        for k, (sname, off) in self.labels.items():
            symbols[k] = self.sections[sname].base + off
        return GuestImage(bytes(out), self.origin, symbols, lines, self.filename)


def _col(node: Node) -> int:
    from vmsim.asm.expr import first_col

    return first_col(node)


def assemble_with_placement(source: str, filename: str) -> tuple[GuestImage, list[Placed]]:
    """Assemble and also return per-line output (for listings)."""
    asm = Assembler(source, filename)
    image = asm.run()
    return image, asm.placed
