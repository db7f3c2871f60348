"""Match resolved operands against the form table and emit bytes (NASM 2.16 choices)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from vmsim.asm.errors import LineError
from vmsim.asm.expr import Value
from vmsim.asm.forms import FORMS, Form
from vmsim.asm.operands import Far, Imm, Mem, Operand, Reg, modrm_bytes
from vmsim.asm.registers import SEG_PREFIX

_SIZED = {"8": 8, "16": 16, "32": 32}
# Instructions whose explicitly sized immediate gives the size of a sizeless memory operand
# (`add [eax], byte 5` is a byte add, as in NASM).
_SIZE_FROM_IMM = {"mov", "add", "or", "adc", "sbb", "and", "sub", "xor", "cmp", "test"}
# Mnemonics with a relative-jump form: their bytes depend on where they are assembled.
REL_MNEMONICS = frozenset(m for m, forms in FORMS.items()
                          if any(t in ("rel8", "rel32") for f in forms for t in f.enc))
_FORMS_BY_COUNT: dict[tuple[str, int], list[Form]] = {}
for _m, _forms in FORMS.items():
    for _f in _forms:
        _FORMS_BY_COUNT.setdefault((_m, len(_f.specs)), []).append(_f)
_FIXED_REGS = {"al", "ax", "eax", "cl", "dx", "es", "cs", "ss", "ds", "fs", "gs"}


@dataclass(frozen=True, slots=True)
class Site:
    """Where an instruction is assembled: needed for relative jumps and range errors."""

    address: int  # absolute address of the first byte
    section: str
    final: bool  # last pass: all values known, ranges enforced


def fits_sbyte(v: Value, bits: int) -> bool:
    """NASM's SBYTEWORD/SBYTEDWORD test: the value wraps to a sign-extended byte."""
    return ((v.n + 128) & ((1 << bits) - 1)) <= 255


def _match(spec: str, op: Operand) -> bool | int:
    """True if `op` fits `spec`; an int N if only a missing memory size (N) prevents it."""
    if isinstance(op, Reg):
        info = op.info
        if spec in _FIXED_REGS:
            return info.name == spec
        if spec[0] == "r" and spec[1:] in _SIZED:
            return info.kind == "gpr" and info.size == _SIZED[spec[1:]]
        if spec.startswith("rm"):
            return info.kind == "gpr" and info.size == _SIZED[spec[2:]]
        return {"sreg": "sreg", "cr": "creg", "dr": "dreg"}.get(spec) == info.kind
    if isinstance(op, Mem):
        if spec in ("mfar", "mfar16"):
            want = 16 if spec == "mfar16" else 32
            return op.jump == "far" and (op.size == want or (op.size is None and want == 32))
        if op.jump in ("far", "short"):
            return False
        if spec == "m":
            return True
        if spec == "mw":
            return op.jump is None and op.size in (None, 16)
        if spec.startswith("mo"):
            if not op.is_offset:
                return False
            want = _SIZED[spec[2:]]
        elif spec.startswith("rm") or (spec[0] == "m" and spec[1:] in _SIZED):
            want = _SIZED[spec.lstrip("rm")]
        else:
            return False
        if op.size is None:
            return want
        return op.size == want
    if isinstance(op, Far):
        return spec == ("ptr16" if op.size == 16 else "ptr") and op.size in (None, 16, 32)
    # Immediate
    v = op.value
    if spec in ("short", "j8", "rel", "jr8"):
        return {"short": op.jump == "short", "j8": op.jump is None,
                "rel": op.jump in (None, "near"), "jr8": op.jump != "far"}[spec]
    if op.jump is not None:
        return False
    if spec == "one":
        return op.size is None and not op.strict and (not v.known or (v.simple and v.n == 1))
    explicit = spec.endswith("!")
    spec = spec.rstrip("!")
    if spec[0] == "i" and spec[1:] in _SIZED:
        bits = _SIZED[spec[1:]]
        return op.size == bits if explicit else op.size in (None, bits)
    if spec[0] == "s" and spec[1:] in _SIZED:
        bits = _SIZED[spec[1:]]
        if explicit and op.size != bits:
            return False
        if op.size not in (None, 8, bits) or (op.strict and op.size == bits):
            return False
        return not v.known or (v.simple and fits_sbyte(v, bits))
    return False


def _try(form: Form, ops: list[Operand]) -> bool | int:
    fuzzy: bool | int = True
    for spec, op in zip(form.specs, ops, strict=True):
        m = _match(spec, op)
        if m is False:
            return False
        if m is not True:
            fuzzy = m
    return fuzzy


def encode(mnemonic: str, mcol: int, ops: list[Operand], prefixes: list[int], site: Site) -> bytes:
    """Bytes for one instruction. Raises LineError for impossible operand combinations."""
    forms = _FORMS_BY_COUNT.get((mnemonic, len(ops)), [])
    if not forms:
        counts = sorted({len(f.specs) for f in FORMS[mnemonic]})
        want = " or ".join(str(c) for c in counts)
        raise LineError(f"'{mnemonic}' takes {want} operand(s), not {len(ops)}", mcol)
    mem_i = [i for i, o in enumerate(ops) if isinstance(o, Mem)]
    if len(mem_i) > 1:
        raise LineError("invalid combination of opcode and operands: two memory operands",
                        ops[mem_i[1]].col)
    if len(ops) == 2 and mnemonic in _SIZE_FROM_IMM and mem_i:
        mem, other = ops[mem_i[0]], ops[1 - mem_i[0]]
        if (isinstance(mem, Mem) and mem.size is None and isinstance(other, Imm)
                and other.size is not None):
            ops = list(ops)
            ops[mem_i[0]] = replace(mem, size=other.size)
    sizes: set[int] = set()
    unguessable = False  # movzx [mem]: NASM will not guess the source size
    for form in forms:
        m = _try(form, ops)
        if m is True:
            out = _emit(form, ops, prefixes, site)
            if out is not None:
                return out
        elif m is not False:
            if form.nofuzzy:
                unguessable = True
            else:
                sizes.add(m)
    if len(sizes) == 1 and mem_i:
        ops = list(ops)
        ops[mem_i[0]] = replace(ops[mem_i[0]], size=sizes.pop())  # type: ignore[type-var]
        for form in forms:
            if _try(form, ops) is True:
                out = _emit(form, ops, prefixes, site)
                if out is not None:
                    return out
    if (sizes or unguessable) and mem_i:
        raise LineError("operation size not specified", ops[mem_i[0]].col)
    regs = [o for o in ops if isinstance(o, Reg) and o.info.kind == "gpr"]
    if len(regs) >= 2 and len({r.info.size for r in regs}) > 1:
        raise LineError("mismatch in operand sizes", regs[1].col)
    for o in ops:
        if isinstance(o, Imm) and o.value.known and not o.value.simple and o.jump is None \
                and mnemonic in ("int", "in", "out", "enter", "ret", "retf"):
            raise LineError("this operand must be a constant, not an address", o.col)
    raise LineError("invalid combination of opcode and operands", mcol)


def _check_range(v: Value, nbytes: int, col: int, site: Site) -> None:
    """NASM only warns here ('data exceeds bounds'); vmsim makes it an error."""
    if site.final and not (-(1 << (8 * nbytes)) <= v.n < (1 << (8 * nbytes))):
        kind = {1: "byte", 2: "word", 4: "dword"}[nbytes]
        raise LineError(f"value {v.n} does not fit in a {kind}", col)


def _le(n: int, nbytes: int) -> bytes:
    return (n & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little")


def _emit(form: Form, ops: list[Operand], prefixes: list[int], site: Site) -> bytes | None:
    """Encode `form`; None if it is a short jump that cannot reach (try the next form)."""
    body = bytearray()
    pre_seg: int | None = None
    o16 = False
    imms = iter((o, s) for o, s in zip(ops, form.specs, strict=True)
                if isinstance(o, Imm) and s not in ("short", "j8", "rel", "jr8", "one"))
    rel: tuple[int, Imm] | None = None  # (width, target)
    specs = form.specs
    for o in ops:
        if isinstance(o, Mem) and o.seg:
            pre_seg = SEG_PREFIX[o.seg]
    for tok in form.enc:
        if tok == "o16":
            o16 = True
        elif tok.startswith("/"):
            body += _modrm(tok, specs, ops)
        elif tok in ("ib", "iw", "id"):
            imm, spec = next(imms)
            nbytes = {"ib": 1, "iw": 2, "id": 4}[tok]
            if spec[0] != "s":  # sign-extended byte forms were chosen because the value fits
                _check_range(imm.value, nbytes, imm.col, site)
            body += _le(imm.value.n, nbytes)
        elif tok in ("rel8", "rel32"):
            target = ops[0]
            assert isinstance(target, Imm)
            rel = (1 if tok == "rel8" else 4, target)
            body += bytes(rel[0])
        elif tok == "mo":
            mem = next(o for o in ops if isinstance(o, Mem))
            body += _le(mem.disp.n, 4)
        elif tok == "ptr":
            far = ops[0]
            assert isinstance(far, Far)
            _check_range(far.off, 4, far.col, site)
            _check_range(far.seg, 2, far.col, site)
            body += _le(far.off.n, 4) + _le(far.seg.n, 2)
        elif tok == "ptr16":
            far = ops[0]
            assert isinstance(far, Far)
            _check_range(far.off, 2, far.col, site)
            _check_range(far.seg, 2, far.col, site)
            body += _le(far.off.n, 2) + _le(far.seg.n, 2)
        elif "+r" in tok:
            byte, idx = tok.split("+r")
            reg = ops[int(idx)]
            assert isinstance(reg, Reg)
            body.append(int(byte, 16) + reg.info.num)
        else:
            body.append(int(tok, 16))
    # NASM's prefix order: rep/repne, lock, segment, operand size.
    head = bytearray(p for p in prefixes if p in (0xF2, 0xF3))
    head += bytes(p for p in prefixes if p == 0xF0)
    segs = [p for p in prefixes if p in SEG_PREFIX.values()]
    if pre_seg is not None and segs:  # NASM refuses `es mov eax, [es:ebx]` too
        mem = next(o for o in ops if isinstance(o, Mem) and o.seg)
        raise LineError("instruction has conflicting segment overrides", mem.col)
    if pre_seg is not None:
        head.append(pre_seg)
    elif segs:
        head.append(segs[-1])
    if o16 or 0x66 in prefixes:  # (once: `o16 mov ax, bx` is 66 89 D8, as in NASM)
        head.append(0x66)
    out = head + body
    if rel is not None:
        width, target = rel
        disp = target.value.n - (site.address + len(out))
        if width == 1:
            in_range = -128 <= disp <= 127
            if "j8" in specs:
                tv = target.value
                if tv.known and not (tv.reloc == 1 and tv.section == site.section and in_range):
                    return None
            elif site.final and not in_range:
                raise LineError("short jump is out of range", target.col)
        out[len(out) - width:] = _le(disp, width)
    return bytes(out)


def _modrm(tok: str, specs: tuple[str, ...], ops: list[Operand]) -> bytes:
    if tok.startswith("/r"):
        if len(tok) == 4:
            reg_i, rm_i = int(tok[2]), int(tok[3])
        else:
            rm_i = _rm_index(specs)
            reg_i = next(i for i in range(len(specs)) if i != rm_i and _is_reg_spec(specs[i]))
        reg = ops[reg_i]
        assert isinstance(reg, Reg)
        field = reg.info.num
    else:
        field = int(tok[1])
        rm_i = _rm_index(specs)
    rm = ops[rm_i]
    if isinstance(rm, Reg):
        return bytes([0xC0 | (field << 3) | rm.info.num])
    assert isinstance(rm, Mem)
    return modrm_bytes(rm, field)


def _is_reg_spec(spec: str) -> bool:
    return spec in ("r8", "r16", "r32", "sreg", "cr", "dr") or spec in _FIXED_REGS


def _rm_index(specs: tuple[str, ...]) -> int:
    for i, s in enumerate(specs):
        if s.startswith(("rm", "m")):
            return i
    # Register-only forms (mov r32,sreg / mov r32,cr): the general register is r/m.
    for i, s in enumerate(specs):
        if s in ("r8", "r16", "r32"):
            return i
    return 0
