"""The multi-pass driver: lays out sections, sizes jumps until labels stop moving.

Like NASM, pass 1 is optimistic about forward references (short jumps, sign-extended
immediates) and conservative about displacements (disp32); later passes use the label
values of the pass before, until nothing moves. A final pass then emits bytes with every
symbol known and every range checked.

Two things keep assembly time linear in the source:
- The number of passes is bounded. NASM reads a forward reference at its value of the
  pass before, so in a large file a wave of jumps that grew early in a pass makes later
  forward jumps look out of range, and the wave needs one pass per few dozen jumps: NASM
  takes 23 passes for 100 KB of jump-dense code, 3 minutes for 2 MB. vmsim runs NASM's
  passes first (NASM_PASSES of them: every guest NASM settles in that many gets NASM's
  bytes exactly); after that it reads a forward reference as its old value *plus how far
  this pass has already moved the line that reads it* (everything in between assumed
  unchanged), which settles in a few passes. Jump sizes have more than one stable
  answer: a jump NASM made near in a transient stays near if its target is then 128-131
  bytes away. So past NASM_PASSES, vmsim's bytes are a valid assembly of the source that
  may have a few short jumps where NASM's has near ones.
- An instruction is encoded again only when its operands (or, for a relative jump, its
  displacement) differ from the last pass; a line with fixed bytes is only placed.

Output is never larger than a guest can hold: MAX_IMAGE_SIZE bounds the bytes from ORG to
the end of the last section (.bss included), checked line by line before anything is
allocated; `times`, `resb` and `align` keep one copy and a count until the image is built.
"""

from __future__ import annotations

import gc
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from vmsim.asm.encoder import REL_MNEMONICS, Site, encode
from vmsim.asm.errors import AsmError, LineError
from vmsim.asm.expr import EvalContext, Node, Value, evaluate, is_static
from vmsim.asm.image import GuestImage, SourceLine
from vmsim.asm.operands import Imm, check_address, resolve
from vmsim.asm.parser import Stmt, parse_source, qualify

MAX_PASSES = 64
NASM_PASSES = 8  # passes run exactly as NASM runs them (see the module's docstring)
DEFAULT_SECTION_ALIGN = 4  # NASM's bin format aligns every section after the first to 4
# The largest image a vmsim guest can hold: `vmsim run --memory` allows at most 3072 MiB
# (vmsim/vmm/machine.py) and the image is loaded at 0x100000, above the first MiB.
MAX_GUEST_RAM = 3072 << 20
GUEST_LOAD_ADDRESS = 0x100000
MAX_IMAGE_SIZE = MAX_GUEST_RAM - GUEST_LOAD_ADDRESS
# `times N insn` whose copies differ (each relative jump has its own displacement) is
# encoded copy by copy; beyond this many copies it would take minutes, so it is refused.
MAX_VARYING_COPIES = 1 << 16
_CHUNK = 1 << 20  # repeated output is written in pieces of this size


@dataclass(slots=True)
class Placed:
    """What one statement produced in the last pass: `data` repeated `count` times."""

    stmt: Stmt
    section: str
    offset: int  # within the section
    data: bytes  # one copy (the whole output when count == 1)
    count: int = 1
    size: int = -1  # len(data) * count, given by the assembler (read a lot, so not computed)

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = len(self.data) * self.count

    def head(self, n: int) -> bytes:
        """The first `n` bytes of the output, without building the rest."""
        if not self.data:
            return b""
        return (self.data * min(self.count, -(-n // len(self.data))))[:n]

    def chunks(self) -> Iterator[bytes]:
        """The whole output in pieces of at most about _CHUNK bytes."""
        if self.count == 1 or not self.data:
            if self.count:
                yield self.data
            return
        per = max(1, _CHUNK // len(self.data))
        piece = self.data * min(per, self.count)
        left = self.count
        while left >= per:
            yield piece
            left -= per
        if left:
            yield self.data * left


@dataclass
class Section:
    name: str
    nobits: bool
    align: int = DEFAULT_SECTION_ALIGN
    size: int = 0
    base: int = 0
    line: int = 1  # where it is first named (for an error about its placement)
    col: int = 1


@dataclass
class _Pass:
    final: bool
    symbols: dict[str, Value]  # EQU values
    labels: dict[str, tuple[str, int]]  # label -> (section, offset): bases may still move
    shifted: bool  # forward references read with the shift since the pass before
    defined: set[str] = field(default_factory=set)
    # Where this pass first differed from the one before: a line's size, a label's value.
    size_change: tuple[int, int] | None = None
    value_change: tuple[int, int] | None = None
    saw_unknown: bool = False
    total: int = 0  # bytes emitted so far, all sections (gaps between them: _layout)
    shift: int = 0  # how far the current statement moved since the pass before
    section: str = ".text"  # the current statement's section


class Assembler:
    def __init__(self, source: str, filename: str) -> None:
        self.filename = filename
        self.source = source
        with _gc_paused():
            self.stmts = parse_source(source, filename)
        for st in self.stmts:
            st.static = _is_static(st)
            st.fixed = st.static and st.label is None and st.times is None
        self.symbols: dict[str, Value] = {}
        self.labels: dict[str, tuple[str, int]] = {}
        self.sections: dict[str, Section] = {}
        self.origin = 0
        self.placed: list[Placed] = []
        self.passes = 0  # passes run, the final one included
        # Relative jumps by (mnemonic, prefixes, displacement...): bytes and ranges-checked.
        self._rel_cache: dict[tuple[object, ...], tuple[bytes, bool]] = {}

    # -- evaluation helpers ------------------------------------------------------------

    def _ctx(self, p: _Pass, st: Stmt, here: int, sect: Section) -> EvalContext:
        def lookup(name: str, col: int) -> Value:
            full = qualify(name, st.scope)
            if full in p.labels:
                sname, off = p.labels[full]
                if sname == p.section and full not in p.defined:
                    off += p.shift  # forward: assume nothing in between changed size
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

    def _reserve(self, p: _Pass, cur: Section, size: int, col: int) -> None:
        """Refuse output beyond what a guest can hold, before it is built."""
        total = p.total + size
        if total > MAX_IMAGE_SIZE:
            raise LineError(
                f"image too large: this line takes it to {total:,} bytes, and a guest holds "
                f"at most {MAX_IMAGE_SIZE:,} (the largest RAM, {MAX_GUEST_RAM >> 20} MiB, less "
                f"the MiB below the load address {GUEST_LOAD_ADDRESS:#x})", col)

    # -- passes ------------------------------------------------------------------------

    def run(self) -> GuestImage:
        with _gc_paused():
            return self._run()

    def _run(self) -> GuestImage:
        p: _Pass | None = None
        for n in range(MAX_PASSES):
            # NASM's own passes first (forward references at their old values): its result
            # whenever NASM settles within NASM_PASSES; then passes that read forward
            # references with this pass's shift, which settle in a few more.
            before = self._places()
            p = _Pass(False, self.symbols, self.labels, n >= NASM_PASSES)
            self._pass(p)
            # Stable: done. An unknown symbol that stays unknown is reported by the final pass.
            if p.size_change is None and p.value_change is None and self._places() == before:
                break
        else:
            assert p is not None
            line, col = p.size_change or p.value_change or (1, 1)
            raise AsmError(f"instruction sizes did not converge after {MAX_PASSES} passes "
                           "(this line's size or value kept changing)", self.filename, line, col)
        before = self._places()
        p = _Pass(True, self.symbols, self.labels, False)
        self._pass(p)
        if p.size_change or p.value_change or self._places() != before:
            line, col = p.size_change or p.value_change or (1, 1)
            raise AsmError("internal error: final pass moved labels", self.filename, line, col)
        return self._image()

    def _places(self) -> tuple[object, ...]:
        return self.origin, tuple((s.name, s.base, s.size) for s in self.sections.values())

    def _section(self, name: str, st: Stmt | None = None) -> Section:
        if name not in self.sections:
            self.sections[name] = Section(name, nobits=name.lower() in (".bss", "bss"))
            if st is not None:
                self.sections[name].line, self.sections[name].col = st.line, st.col
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
            except RecursionError:
                raise AsmError("expression nested too deeply", self.filename, st.line,
                               st.col) from None
        self.passes += 1
        self._layout()

    def _statement(self, p: _Pass, st: Stmt, cur: Section) -> Section:
        out = st.enc_out
        if st.fixed and out is not None:
            # Most lines: no label, no TIMES, bytes already known (ranges checked).
            n = len(out)
            if p.total + n > MAX_IMAGE_SIZE:
                self._reserve(p, cur, n, st.col)
            self.placed.append(Placed(st, cur.name, cur.size, out, 1, n))
            if n != st.last_size:
                self._size_changed(p, st, n)
            cur.size += n
            p.total += n
            return cur
        if st.kind == "none":  # a label alone, a comment, a directive with no output
            if st.label is not None:
                self._define_label(p, st, cur)
            self.placed.append(Placed(st, cur.name, cur.size, b"", 1, 0))
            return cur
        if st.kind == "section":
            cur = self._section(st.name, st)
            cur.align = max(cur.align, st.sect_align)
        here = cur.base + cur.size
        p.section = cur.name
        p.shift = cur.size - st.last_offset if p.shifted and st.last_offset >= 0 else 0
        st.last_offset = cur.size
        ctx = self._ctx(p, st, here, cur)
        if st.label is not None:
            if st.kind == "equ":
                if st.label in p.defined:
                    raise LineError(f"label '{st.label}' is already defined", st.label_col)
                p.defined.add(st.label)
                assert st.expr is not None
                v = evaluate(st.expr, ctx)
                old = p.symbols.get(st.label)
                if old is None or (old.n, old.reloc, old.known) != (v.n, v.reloc, v.known):
                    p.value_change = p.value_change or (st.line, st.label_col)
                p.symbols[st.label] = v
            else:
                self._define_label(p, st, cur)
        data, count = self._emit(p, st, cur, ctx, here)
        if cur.nobits and count and data.strip(b"\0") and st.kind != "res":
            raise LineError(f"section {cur.name} can only reserve space (resb...)", st.col)
        size = len(data) * count
        self.placed.append(Placed(st, cur.name, cur.size, data, count, size))
        if size != st.last_size:
            self._size_changed(p, st, size)
        cur.size += size
        p.total += size
        return cur

    def _define_label(self, p: _Pass, st: Stmt, cur: Section) -> None:
        assert st.label is not None
        if st.label in p.defined:
            raise LineError(f"label '{st.label}' is already defined", st.label_col)
        p.defined.add(st.label)
        where = (cur.name, cur.size)
        if p.labels.get(st.label) != where:
            p.value_change = p.value_change or (st.line, st.label_col)
            p.labels[st.label] = where

    @staticmethod
    def _size_changed(p: _Pass, st: Stmt, size: int) -> None:
        if p.size_change is None:
            p.size_change = (st.line, st.times_col if st.times is not None else st.col)
        st.last_size = size

    def _emit(self, p: _Pass, st: Stmt, cur: Section, ctx: EvalContext,
              here: int) -> tuple[bytes, int]:
        """One copy of the statement's output and how many times it repeats."""
        kind = st.kind
        if kind == "org":
            assert st.expr is not None
            n = self._const(st.expr, ctx, p, "ORG")
            if n is None:
                raise LineError("ORG must not use symbols defined later", st.col)
            if p.total and n != self.origin:  # bytes already placed (this pass)
                raise LineError("ORG must come before any code or data", st.col)
            if not 0 <= n < 1 << 32:
                raise LineError(f"ORG {n} is not a 32-bit address", st.col)
            self.origin = n
            self.sections[".text"].base = n
            return b"", 1
        if kind in ("insn", "data"):
            count = 1
            if st.times is not None:
                c = self._const(st.times, ctx, p, "TIMES count")
                if c is None:
                    return b"", 1
                if c < 0:
                    if p.final:
                        raise LineError(f"TIMES count is negative ({c})", st.times_col)
                    return b"", 1
                count = c
            if count == 0:
                return b"", 1
            one = self._one(p, st, cur, ctx, here)
            col = st.times_col if st.times is not None else st.col
            self._reserve(p, cur, len(one) * count, col)
            if count == 1 or st.kind == "data":
                return one, count
            # `$` stays at the line start, but each copy is assembled at its own address
            # (so `times 3 jmp short $` gives EB FE EB FC EB FA, as in NASM).
            second = self._one(p, st, cur, ctx, here + len(one))
            if second == one:
                return one, count
            if count > MAX_VARYING_COPIES:
                raise LineError(f"TIMES {count} copies of an instruction whose encoding changes "
                                f"with its address (at most {MAX_VARYING_COPIES})", st.times_col)
            out = bytearray(one + second)
            for _ in range(count - 2):
                out += self._one(p, st, cur, ctx, here + len(out))
            self._reserve(p, cur, len(out), st.times_col)
            return bytes(out), 1
        if kind == "res":
            assert st.expr is not None
            n = self._const(st.expr, ctx, p, "RESB count")
            if n is None:
                return b"", 1
            if n < 0:
                raise LineError(f"reserve count is negative ({n})", st.col)
            self._reserve(p, cur, n * st.unit, st.col)
            return b"\0" * st.unit, n
        if kind == "align":
            assert st.expr is not None
            n = self._const(st.expr, ctx, p, "ALIGN")
            if n is None:
                return b"", 1
            if n <= 0 or n & (n - 1):
                raise LineError(f"ALIGN value {n} is not a power of two", st.col)
            if n > MAX_IMAGE_SIZE:
                raise LineError(f"ALIGN value {n:#x} is larger than a guest can hold "
                                f"({MAX_IMAGE_SIZE:#x} bytes)", st.col)
            cur.align = max(cur.align, n)  # NASM's align also raises the section alignment
            pad = (n - (cur.size % n)) % n
            self._reserve(p, cur, pad, st.col)
            if st.name == "alignb":
                return b"\0", pad
            if st.fill is None:
                return b"\x90", pad
            unit = self._one(p, st.fill, cur, ctx, ctx.here)
            if not unit:
                return b"", 1
            if len(unit) == 1:
                return unit, pad
            return unit, pad // len(unit)
        return b"", 1

    def _one(self, p: _Pass, st: Stmt, cur: Section, ctx: EvalContext, at: int) -> bytes:
        """One copy of an instruction's or data line's bytes, from the cache when possible."""
        if st.static:
            # Nothing in it depends on symbols or addresses: encode once, ranges checked.
            if st.enc_out is not None:
                return st.enc_out
            try:
                out = self._encode(st, cur, ctx, at, True)
            except LineError:
                if p.final:
                    raise
                return self._encode(st, cur, ctx, at, False)  # the final pass reports it
            st.enc_out = out
            return out
        if st.kind == "data":
            return self._data(st, ctx, p.final)
        ops = tuple(resolve(o, ctx) for o in st.operands)
        # Encoding is the slow part; most lines encode the same way in every pass. A
        # relative jump's bytes depend on its target only through the displacement.
        key: tuple[object, ...]
        shared: tuple[object, ...] | None = None
        if st.mnemonic in REL_MNEMONICS and len(ops) == 1 and isinstance(ops[0], Imm):
            v, o = ops[0].value, ops[0]
            key = (v.n - at, v.known, v.reloc, v.section == cur.name, o.size, o.strict, o.jump)
            # `jne .loop` 20 bytes back is the same bytes on every line: shared by all.
            shared = (st.mnemonic, *st.prefixes, *key)
            hit = self._rel_cache.get(shared)
            if hit is not None and (hit[1] or not p.final):
                return hit[0]
        else:
            key = ops
        if st.enc_key == key and (st.enc_checked or not p.final):
            assert st.enc_out is not None
            return st.enc_out
        # Encoded as in the final pass (ranges checked) when that succeeds, so that the
        # final pass can take it from the cache; else as in an early pass, not to be reused.
        try:
            out = encode(st.mnemonic, st.col, list(ops), st.prefixes, Site(at, cur.name, True))
            st.enc_checked = True
        except LineError:
            if p.final:
                raise
            out = encode(st.mnemonic, st.col, list(ops), st.prefixes, Site(at, cur.name, False))
            st.enc_checked = False
        st.enc_key, st.enc_out = key, out
        if shared is not None:
            self._rel_cache[shared] = (out, st.enc_checked)
        return out

    def _encode(self, st: Stmt, cur: Section, ctx: EvalContext, at: int, final: bool) -> bytes:
        if st.kind == "data":
            return self._data(st, ctx, final)
        ops = [resolve(o, ctx) for o in st.operands]
        return encode(st.mnemonic, st.col, ops, st.prefixes, Site(at, cur.name, final))

    def _data(self, st: Stmt, ctx: EvalContext, final: bool) -> bytes:
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
            if final and unit < 8 and not -(1 << (8 * unit)) <= v.n < (1 << (8 * unit)):
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
            if addr - self.origin > MAX_IMAGE_SIZE:
                raise AsmError(f"image too large: section {s.name} ends {addr - self.origin:,} "
                               f"bytes after ORG, and a guest holds at most {MAX_IMAGE_SIZE:,}",
                               self.filename, s.line, s.col)

    def _image(self) -> GuestImage:
        by_section: dict[str, list[Placed]] = {}
        for pl in self.placed:
            by_section.setdefault(pl.section, []).append(pl)
        out = io.BytesIO()
        for s in self.sections.values():
            if s.nobits:
                continue
            placed = by_section.get(s.name, [])
            if not any(pl.size for pl in placed):
                continue
            gap = s.base - self.origin - out.tell()
            while gap > 0:
                out.write(bytes(min(gap, _CHUNK)))
                gap -= _CHUNK
            for pl in placed:
                for chunk in pl.chunks():
                    out.write(chunk)
        lines = [
            SourceLine(self.sections[pl.section].base + pl.offset, pl.size, self.filename,
                       pl.stmt.line)
            for pl in self.placed
        ]
        lines.sort(key=lambda ln: (ln.address, ln.line))
        symbols = {k: v.n for k, v in self.symbols.items()}
        for k, (sname, off) in self.labels.items():
            symbols[k] = self.sections[sname].base + off
        data = out.getvalue()  # shares BytesIO's buffer: no second copy of a large image
        return GuestImage(data, self.origin, symbols, lines, self.filename, self.source)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The assembler makes millions of small acyclic objects (tokens, trees, statements):
    the cycle collector would scan them again and again for nothing (a fifth of the time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _is_static(st: Stmt) -> bool:
    """True if the line's bytes cannot change between passes (no symbol, `$` or jump)."""
    if st.kind == "data":
        return all(it.expr is None or is_static(it.expr) for it in st.items)
    if st.kind != "insn" or st.mnemonic in REL_MNEMONICS:
        return False
    return all((o.expr is None or is_static(o.expr))
               and (o.seg_expr is None or is_static(o.seg_expr)) for o in st.operands)


def _col(node: Node) -> int:
    from vmsim.asm.expr import first_col

    return first_col(node)


def assemble_with_placement(source: str, filename: str) -> tuple[GuestImage, list[Placed]]:
    """Assemble and also return per-line output (for listings)."""
    asm = Assembler(source, filename)
    image = asm.run()
    return image, asm.placed
