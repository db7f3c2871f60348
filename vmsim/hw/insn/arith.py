"""Binary arithmetic, logic, shifts and bits (SDM Vol. 1 7.3.2-7.3.7; Vol. 2 ADD ... SAR,
SHLD/SHRD, BT/BTS/BTR/BTC, BSF/BSR).

Each factory specialises on where the operands live (a register, memory through `_rmw`,
an immediate). The forms of the ALU ops are generated from one template each (`_generate`,
`_MAKERS`), because they dominate real guests' instruction mix.
"""

from __future__ import annotations

from collections.abc import Callable

import iced_x86

from vmsim.hw import exceptions as X
from vmsim.hw.flags import (
    CF,
    K_ADD,
    K_DEC,
    K_INC,
    K_LOGIC,
    K_RES,
    K_SBB,
    K_SUB,
    MASK,
    OF,
    SIGN,
    SIZE_INDEX,
    ZF,
    get_cf,
    materialize,
    set_explicit,
)
from vmsim.hw.insn.ctx import Ctx, reg_info
from vmsim.hw.insn.table import handles

M32 = 0xFFFFFFFF

# name: (flag kind, expression for the unmasked result, writes the destination)
_OPS: dict[int, tuple[int, str, bool]] = {
    iced_x86.Mnemonic.ADD: (K_ADD, "a + b", True),
    iced_x86.Mnemonic.ADC: (K_ADD, "a + b + get_cf(lf)", True),
    iced_x86.Mnemonic.SUB: (K_SUB, "a - b", True),
    iced_x86.Mnemonic.SBB: (K_SBB, "a - b - get_cf(lf)", True),
    iced_x86.Mnemonic.CMP: (K_SUB, "a - b", False),
    iced_x86.Mnemonic.AND: (K_LOGIC, "a & b", True),
    iced_x86.Mnemonic.OR: (K_LOGIC, "a | b", True),
    iced_x86.Mnemonic.XOR: (K_LOGIC, "a ^ b", True),
    iced_x86.Mnemonic.TEST: (K_LOGIC, "a & b", False),
}

# Templates, specialised by exec once per (op, form) at import. `a`/`b` are the operands;
# flags are recorded before the register write (a register write cannot fault) and after
# the memory write (a faulting store must leave the flags as they were).
_TEMPLATES = {
    "rr": """
def make(r, lf, d, s, op, nxt, mask):
    def h():
        a = r[d]; b = r[s]; res = {expr}
        lf[0] = op; lf[1] = res; lf[2] = a; lf[3] = b
        {store_reg}
        return nxt
    return h
""",
    "ri": """
def make(r, lf, d, b, op, nxt, mask):
    def h():
        a = r[d]; res = {expr}
        lf[0] = op; lf[1] = res; lf[2] = a; lf[3] = b
        {store_reg}
        return nxt
    return h
""",
    "rm": """
def make(r, lf, d, ea, rd, op, nxt, mask):
    def h():
        b = rd(ea()); a = r[d]; res = {expr}
        lf[0] = op; lf[1] = res; lf[2] = a; lf[3] = b
        {store_reg}
        return nxt
    return h
""",
    "mx": """
def make(lf, ea, rd, wr, src, op, nxt, mask):
    def h():
        addr = ea(); a = rd(addr); b = src(); res = {expr}
        {store_mem}
        lf[0] = op; lf[1] = res; lf[2] = a; lf[3] = b
        return nxt
    return h
""",
    "gx": """
def make(lf, get, put, src, op, nxt, mask):
    def h():
        a = get(); b = src(); res = {expr}
        lf[0] = op; lf[1] = res; lf[2] = a; lf[3] = b
        {store_put}
        return nxt
    return h
""",
}


def _generate() -> dict[tuple[int, str], Callable]:
    makers = {}
    for mnem, (_kind, expr, store) in _OPS.items():
        for form, tpl in _TEMPLATES.items():
            src = tpl.format(
                expr=expr,
                store_reg="r[d] = res & mask" if store else "",
                store_mem="wr(addr, res & mask)" if store else "",
                store_put="put(res & mask)" if store else "",
            )
            ns: dict = {"get_cf": get_cf}
            exec(compile(src, f"<alu {form}>", "exec"), ns)  # fixed templates, not user input
            makers[(mnem, form)] = ns["make"]
    return makers


_MAKERS = _generate()


@handles("add", "adc", "sub", "sbb", "cmp", "and", "or", "xor", "test")
def alu_Ev_Gv(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    kind, _expr, _store = _OPS[ins.mnemonic]
    size = c.opsize(ins, 0)
    op = kind * 3 + SIZE_INDEX[size]
    mask = MASK[op]
    nxt = ins.next_ip32
    r, lf = c.r, c.lf
    if c.is_reg(ins, 0):
        d = reg_info(ins.op0_register)[0]
        if size == 4:
            if c.is_reg(ins, 1):
                s = reg_info(ins.op1_register)[0]
                return _MAKERS[(ins.mnemonic, "rr")](r, lf, d, s, op, nxt, mask)
            if c.is_imm(ins, 1):
                return _MAKERS[(ins.mnemonic, "ri")](r, lf, d, ins.immediate(1) & M32, op, nxt,
                                                     mask)
            return _MAKERS[(ins.mnemonic, "rm")](r, lf, d, c.ea(ins), c.rd[4], op, nxt, mask)
        get, put = c.reg_reader(ins.op0_register), c.reg_writer(ins.op0_register)
        return _MAKERS[(ins.mnemonic, "gx")](lf, get, put, c.reader(ins, 1, size), op, nxt, mask)
    return _MAKERS[(ins.mnemonic, "mx")](lf, c.ea(ins), c.rd[size], c.wr[size],
                                         c.reader(ins, 1, size), op, nxt, mask)


def _rmw(ins: iced_x86.Instruction, c: Ctx, size: int,
         body: Callable[[int], int | None]) -> Callable[[], int]:
    """Read-modify-write of operand 0 through `body(a) -> new value or None (no write)`."""
    nxt = ins.next_ip32
    if c.is_reg(ins, 0):
        get, put = c.reg_reader(ins.op0_register), c.reg_writer(ins.op0_register)

        def reg_form() -> int:
            v = body(get())
            if v is not None:
                put(v)
            return nxt
        return reg_form
    ea, rd, wr = c.ea(ins), c.rd[size], c.wr[size]

    def mem_form() -> int:
        addr = ea()
        v = body(rd(addr))
        if v is not None:
            wr(addr, v)
        return nxt
    return mem_form


@handles("inc", "dec")
def inc_Ev(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    size = c.opsize(ins, 0)
    is_inc = ins.mnemonic == iced_x86.Mnemonic.INC
    op = (K_INC if is_inc else K_DEC) * 3 + SIZE_INDEX[size]
    mask = MASK[op]
    lf, r, nxt = c.lf, c.r, ins.next_ip32
    if size == 4 and c.is_reg(ins, 0):
        d = reg_info(ins.op0_register)[0]
        delta = 1 if is_inc else -1

        def inc_r32() -> int:
            a = r[d]
            cf = get_cf(lf)
            res = a + delta
            lf[0] = op; lf[1] = res; lf[2] = a; lf[3] = cf  # noqa: E702
            r[d] = res & mask
            return nxt
        return inc_r32
    if c.is_reg(ins, 0):
        get, put = c.reg_reader(ins.op0_register), c.reg_writer(ins.op0_register)
        delta = 1 if is_inc else -1

        def inc_r() -> int:
            a = get()
            cf = get_cf(lf)
            res = a + delta
            lf[0] = op; lf[1] = res; lf[2] = a; lf[3] = cf  # noqa: E702
            put(res & mask)
            return nxt
        return inc_r
    ea, rd, wr = c.ea(ins), c.rd[size], c.wr[size]
    delta = 1 if is_inc else -1

    def inc_m() -> int:
        addr = ea()
        a = rd(addr)
        res = a + delta
        wr(addr, res & mask)
        cf = get_cf(lf)
        lf[0] = op; lf[1] = res; lf[2] = a; lf[3] = cf  # noqa: E702
        return nxt
    return inc_m


@handles("neg")
def neg_Ev(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    size = c.opsize(ins, 0)
    op = K_SUB * 3 + SIZE_INDEX[size]
    mask, lf = MASK[op], c.lf
    pending: list[int] = [0, 0]

    def body(a: int) -> int:
        pending[0] = a
        return (-a) & mask

    h = _rmw(ins, c, size, body)

    def neg() -> int:
        n = h()
        a = pending[0]
        lf[0] = op; lf[1] = -a; lf[2] = 0; lf[3] = a  # noqa: E702
        return n
    return neg


@handles("not")
def not_Ev(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    size = c.opsize(ins, 0)
    mask = MASK[SIZE_INDEX[size]]
    return _rmw(ins, c, size, lambda a: a ^ mask)


@handles("xadd")
def xadd_Ev_Gv(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """SDM Vol. 2B XADD: TEMP = SRC + DEST; SRC = DEST; DEST = TEMP; flags as ADD."""
    size = c.opsize(ins, 0)
    op = K_ADD * 3 + SIZE_INDEX[size]
    mask, lf, nxt = MASK[op], c.lf, ins.next_ip32
    get_src, put_src = c.reg_reader(ins.op1_register), c.reg_writer(ins.op1_register)
    if c.is_reg(ins, 0):
        get, put = c.reg_reader(ins.op0_register), c.reg_writer(ins.op0_register)

        def xadd_rr() -> int:
            a = get()
            b = get_src()
            res = a + b
            lf[0] = op; lf[1] = res; lf[2] = a; lf[3] = b  # noqa: E702
            put_src(a)
            put(res & mask)  # last: XADD r, r with one register keeps the sum
            return nxt
        return xadd_rr
    ea, rd, wr = c.ea(ins), c.rd[size], c.wr[size]

    def xadd_mr() -> int:
        addr = ea()
        a = rd(addr)
        b = get_src()
        res = a + b
        wr(addr, res & mask)  # a faulting store leaves the register and the flags alone
        lf[0] = op; lf[1] = res; lf[2] = a; lf[3] = b  # noqa: E702
        put_src(a)
        return nxt
    return xadd_mr


_ACCUMULATOR = {1: iced_x86.Register.AL, 2: iced_x86.Register.AX, 4: iced_x86.Register.EAX}


@handles("cmpxchg")
def cmpxchg_Ev_Gv(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """SDM Vol. 2A CMPXCHG: flags as CMP accumulator, DEST; equal: DEST = SRC; else the
    accumulator = DEST. A memory DEST is written either way, with its own value when they
    differ (the processor's locked write cycle; kvm.ko's em_cmpxchg writes it back too)."""
    size = c.opsize(ins, 0)
    op = K_SUB * 3 + SIZE_INDEX[size]
    lf, nxt = c.lf, ins.next_ip32
    get_acc, put_acc = c.reg_reader(_ACCUMULATOR[size]), c.reg_writer(_ACCUMULATOR[size])
    get_src = c.reg_reader(ins.op1_register)
    if c.is_reg(ins, 0):
        get, put = c.reg_reader(ins.op0_register), c.reg_writer(ins.op0_register)

        def cmpxchg_rr() -> int:
            a = get_acc()
            d = get()
            lf[0] = op; lf[1] = a - d; lf[2] = a; lf[3] = d  # noqa: E702
            if a == d:
                put(get_src())
            else:
                put_acc(d)
            return nxt
        return cmpxchg_rr
    ea, rd, wr = c.ea(ins), c.rd[size], c.wr[size]

    def cmpxchg_mr() -> int:
        addr = ea()
        d = rd(addr)
        a = get_acc()
        wr(addr, get_src() if a == d else d)  # a faulting store changes nothing else
        lf[0] = op; lf[1] = a - d; lf[2] = a; lf[3] = d  # noqa: E702
        if a != d:
            put_acc(d)
        return nxt
    return cmpxchg_mr


@handles("cmpxchg8b")
def cmpxchg8b_Mq(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """SDM Vol. 2A CMPXCHG8B: EDX:EAX against m64; equal: ZF = 1 and m64 = ECX:EBX; else
    ZF = 0 and EDX:EAX = m64; the other flags unchanged. "The destination operand is
    written back if the comparison fails" (the locked write cycle; em_cmpxchg8b's writeback
    too): m64 is read and written as one 8-byte access each, so a read-only page faults
    either way and a page-crossing m64 is checked whole before anything is stored. A
    register operand is #UD (iced-x86 decodes 0F C7 /1 mod 3 as invalid)."""
    ea, rd64, wr64 = c.ea(ins), c.rd[8], c.wr[8]
    r, lf, nxt = c.r, c.lf, ins.next_ip32

    def cmpxchg8b() -> int:
        addr = ea()
        m = rd64(addr)
        acc = r[2] << 32 | r[0]
        equal = m == acc
        wr64(addr, (r[1] << 32 | r[3]) if equal else m)  # a faulting store changes nothing
        f = materialize(lf) & ~ZF
        set_explicit(lf, (f | ZF) if equal else f)
        if not equal:
            r[0], r[2] = m & M32, m >> 32
        return nxt
    return cmpxchg8b


# -- multiply and divide (SDM Vol. 2A MUL, IMUL, DIV, IDIV) ---------------------------------

def _acc(c: Ctx, size: int) -> tuple[Callable[[], int], Callable[[int], None]]:
    """(read of the low accumulator, write of the double-width result) for MUL/DIV."""
    r = c.r
    if size == 1:
        def put8(v: int) -> None:
            r[0] = (r[0] & 0xFFFF0000) | (v & 0xFFFF)
        return (lambda: r[0] & 0xFF), put8
    if size == 2:
        def put16(v: int) -> None:
            r[0] = (r[0] & 0xFFFF0000) | (v & 0xFFFF)
            r[2] = (r[2] & 0xFFFF0000) | ((v >> 16) & 0xFFFF)
        return (lambda: r[0] & 0xFFFF), put16

    def put32(v: int) -> None:
        r[0] = v & M32
        r[2] = (v >> 32) & M32
    return (lambda: r[0]), put32


def _signed(v: int, size: int) -> int:
    s = 1 << (8 * size - 1)
    return (v ^ s) - s


@handles("mul")
def mul_Ev(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    size = c.opsize(ins, 0)
    src = c.reader(ins, 0, size)
    acc, put = _acc(c, size)
    bits = 8 * size
    lf, nxt = c.lf, ins.next_ip32
    op = K_RES * 3 + SIZE_INDEX[size]

    def mul() -> int:
        res = acc() * src()
        put(res)
        hi = 1 if res >> bits else 0
        # SF ZF AF PF are undefined; this CPU derives SF ZF PF from the low half.
        lf[0] = op; lf[1] = res & MASK[op]; lf[2] = hi; lf[3] = hi  # noqa: E702
        return nxt
    return mul


@handles("imul")
def imul(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    lf, nxt = c.lf, ins.next_ip32
    if ins.op_count == 1:
        size = c.opsize(ins, 0)
        src = c.reader(ins, 0, size)
        acc, put = _acc(c, size)
        op = K_RES * 3 + SIZE_INDEX[size]
        mask = MASK[op]

        def imul1() -> int:
            res = _signed(acc(), size) * _signed(src(), size)
            put(res)
            ovf = 1 if res != _signed(res & mask, size) else 0
            lf[0] = op; lf[1] = res & mask; lf[2] = ovf; lf[3] = ovf  # noqa: E702
            return nxt
        return imul1
    size = c.opsize(ins, 0)
    op = K_RES * 3 + SIZE_INDEX[size]
    mask = MASK[op]
    put = c.reg_writer(ins.op0_register)
    if ins.op_count == 2:
        a_rd, b_rd = c.reg_reader(ins.op0_register), c.reader(ins, 1, size)
    else:
        a_rd = c.reader(ins, 1, size)
        imm = ins.immediate(2) & mask
        b_rd = lambda: imm  # noqa: E731

    def imul23() -> int:
        res = _signed(a_rd(), size) * _signed(b_rd(), size)
        low = res & mask
        put(low)
        ovf = 1 if res != _signed(low, size) else 0
        lf[0] = op; lf[1] = low; lf[2] = ovf; lf[3] = ovf  # noqa: E702
        return nxt
    return imul23


@handles("div", "idiv")
def div_Ev(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    size = c.opsize(ins, 0)
    src = c.reader(ins, 0, size)
    r, nxt = c.r, ins.next_ip32
    bits = 8 * size
    mask = (1 << bits) - 1
    signed = ins.mnemonic == iced_x86.Mnemonic.IDIV

    def dividend() -> int:
        if size == 1:
            return r[0] & 0xFFFF
        if size == 2:
            return ((r[2] & 0xFFFF) << 16) | (r[0] & 0xFFFF)
        return (r[2] << 32) | r[0]

    def store(q: int, rem: int) -> None:
        if size == 1:
            r[0] = (r[0] & 0xFFFF0000) | ((rem & 0xFF) << 8) | (q & 0xFF)
        elif size == 2:
            r[0] = (r[0] & 0xFFFF0000) | (q & 0xFFFF)
            r[2] = (r[2] & 0xFFFF0000) | (rem & 0xFFFF)
        else:
            r[0], r[2] = q & M32, rem & M32

    def div() -> int:
        d = src()
        if d == 0:
            raise X.CpuException(X.DE)
        n = dividend()
        if signed:
            n, d = _signed(n, 2 * size), _signed(d, size)
            q = abs(n) // abs(d)
            if (n < 0) != (d < 0):
                q = -q
            rem = n - q * d  # remainder takes the dividend's sign
            if not -(1 << (bits - 1)) <= q < (1 << (bits - 1)):
                raise X.CpuException(X.DE)
        else:
            q, rem = divmod(n, d)
            if q > mask:
                raise X.CpuException(X.DE)
        store(q, rem)
        # CF OF SF ZF AF PF are all undefined after DIV/IDIV: left as they were.
        return nxt
    return div


# -- shifts and rotates (SDM Vol. 2B SAL/SAR/SHL/SHR, RCL/RCR/ROL/ROR) ------------------------

def _count_reader(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    if ins.op_count < 2:
        return lambda: 1
    if c.is_reg(ins, 1):
        r = c.r
        return lambda: r[1] & 0x1F  # CL, masked to 5 bits
    n = ins.immediate(1) & 0x1F
    return lambda: n


@handles("shl", "sal", "shr", "sar")
def shift_Ev(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    size = c.opsize(ins, 0)
    bits = 8 * size
    op = K_RES * 3 + SIZE_INDEX[size]
    mask, sign = MASK[op], SIGN[op]
    lf = c.lf
    count = _count_reader(ins, c)
    m = ins.mnemonic
    flags: list[int] = [0, 0, 0]  # res, cf, of of the last shift, for the flag record

    if m in (iced_x86.Mnemonic.SHL, iced_x86.Mnemonic.SAL):
        def shift(a: int, n: int) -> int:
            full = a << n
            res = full & mask
            cf = (full >> bits) & 1
            flags[0], flags[1], flags[2] = res, cf, ((res & sign) != 0) ^ cf
            return res
    elif m == iced_x86.Mnemonic.SHR:
        def shift(a: int, n: int) -> int:
            res = a >> n
            flags[0], flags[1], flags[2] = res, (a >> (n - 1)) & 1, 1 if a & sign else 0
            return res
    else:
        def shift(a: int, n: int) -> int:
            sa = (a ^ sign) - sign
            res = (sa >> n) & mask
            flags[0], flags[1], flags[2] = res, (sa >> (n - 1)) & 1, 0
            return res

    def body(a: int) -> int | None:
        n = count()
        if n == 0:
            return None  # count 0: no flags touched, no write
        return shift(a, n)

    h = _rmw(ins, c, size, body)
    r, nxt = c.r, ins.next_ip32
    if size == 4 and c.is_reg(ins, 0) and ins.op_count >= 1 and not (
            ins.op_count == 2 and c.is_reg(ins, 1)):
        # Fast path: shift a 32-bit register by a constant (CRC and hash loops).
        d = reg_info(ins.op0_register)[0]
        n = ins.immediate(1) & 0x1F if ins.op_count == 2 else 1
        if n == 0:
            return lambda: nxt
        if m == iced_x86.Mnemonic.SHR:
            def shr_r32() -> int:
                a = r[d]
                res = a >> n
                r[d] = res
                lf[0] = op; lf[1] = res; lf[2] = (a >> (n - 1)) & 1  # noqa: E702
                lf[3] = a >> 31
                return nxt
            return shr_r32

    def shifted() -> int:
        flags[0] = -1
        nx = h()
        if flags[0] >= 0:
            lf[0] = op; lf[1] = flags[0]; lf[2] = flags[1]; lf[3] = flags[2]  # noqa: E702
        return nx
    return shifted


@handles("rol", "ror", "rcl", "rcr")
def rotate_Ev(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    size = c.opsize(ins, 0)
    bits = 8 * size
    mask = MASK[SIZE_INDEX[size]]
    lf = c.lf
    count = _count_reader(ins, c)
    m = ins.mnemonic
    through_carry = m in (iced_x86.Mnemonic.RCL, iced_x86.Mnemonic.RCR)
    left = m in (iced_x86.Mnemonic.ROL, iced_x86.Mnemonic.RCL)
    # The flags the rotate leaves, set once its write is done (a write that faults leaves
    # them as they were: the fault restarts the instruction); None: unchanged.
    pending: list[int | None] = [None]

    def body(a: int) -> int | None:
        pending[0] = None
        n = count()
        f = materialize(lf)
        cf = f & CF
        if through_carry:
            n %= bits + 1
            if n == 0:
                return None
            wide = (cf << bits) | a  # bits+1 wide rotate through CF
            w = bits + 1
            if left:
                wide = ((wide << n) | (wide >> (w - n))) & ((1 << w) - 1)
            else:
                wide = ((wide >> n) | (wide << (w - n))) & ((1 << w) - 1)
            res, cf = wide & mask, wide >> bits
        else:
            if count() == 0:
                return None
            n %= bits
            res = ((a << n) | (a >> (bits - n))) & mask if left else \
                ((a >> n) | (a << (bits - n))) & mask
            cf = res & 1 if left else (res >> (bits - 1)) & 1
        msb = (res >> (bits - 1)) & 1
        of = msb ^ cf if left else msb ^ ((res >> (bits - 2)) & 1)
        # Only CF and OF change (OF is defined for 1-bit rotates; this CPU always sets it).
        pending[0] = (f & ~(CF | OF)) | cf | (OF if of else 0)
        return res

    h = _rmw(ins, c, size, body)

    def rotate() -> int:
        n = h()
        if pending[0] is not None:
            set_explicit(lf, pending[0])
        return n
    return rotate


# -- bit test (SDM Vol. 2A BT/BTS/BTR/BTC) -------------------------------------------------

def _addr16(ins: iced_x86.Instruction) -> bool:
    regs = [r for r in (ins.memory_base, ins.memory_index) if r]
    if regs:
        return any(r < iced_x86.Register.EAX for r in regs)
    return ins.memory_displ_size == 2

@handles("bt", "bts", "btr", "btc")
def bt_Ev_Gv(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    size = c.opsize(ins, 0)
    bits = 8 * size
    lf, nxt = c.lf, ins.next_ip32
    m = ins.mnemonic
    modify = {iced_x86.Mnemonic.BT: None,
              iced_x86.Mnemonic.BTS: lambda v, b: v | b,
              iced_x86.Mnemonic.BTR: lambda v, b: v & ~b,
              iced_x86.Mnemonic.BTC: lambda v, b: v ^ b}[m]

    def set_cf(bit: int) -> None:
        set_explicit(lf, (materialize(lf) & ~CF) | (1 if bit else 0))

    if c.is_reg(ins, 0):
        offset = c.reader(ins, 1, size)

        def body(v: int) -> int | None:
            b = 1 << (offset() % bits)
            set_cf(v & b)
            return None if modify is None else modify(v, b)
        return _rmw(ins, c, size, body)
    ea, rd, wr = c.ea(ins), c.rd[size], c.wr[size]
    if c.is_imm(ins, 1):
        # An immediate offset into memory: the operand itself. CF only once the write is
        # done: a write that faults (a read-only page) leaves the flags as they were.
        imm_bit = 1 << ((ins.immediate(1) & 0xFF) % bits)
        mask = MASK[SIZE_INDEX[size]]

        def bt_mem_imm() -> int:
            addr = ea()
            v = rd(addr)
            if modify is not None:
                wr(addr, modify(v, imm_bit) & mask)
            set_cf(v & imm_bit)
            return nxt
        return bt_mem_imm
    # Register bit offset into memory: a bit string, the offset is signed and unbounded.
    off = c.reg_reader(ins.op1_register)
    # The bit offset's displacement is part of the address computation, so with a 0x67
    # prefix it wraps at 64 KiB like the rest of the effective address (SDM Vol. 1 3.7.5;
    # Bochs masks with the address-size mask, QEMU computes it as an a16 address).
    amask = 0xFFFF if _addr16(ins) else M32

    def bt_mem() -> int:
        o = _signed(off(), size)
        addr = (ea() + (o // bits) * size) & amask
        v = rd(addr)
        b = 1 << (o % bits)
        if modify is not None:
            wr(addr, modify(v, b) & MASK[SIZE_INDEX[size]])
        set_cf(v & b)
        return nxt
    return bt_mem


# -- bit scan (SDM Vol. 2A BSF, BSR) --------------------------------------------------------

@handles("bsf", "bsr", "tzcnt", "lzcnt")
def bsf_Gv_Ev(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """SDM Vol. 2A BSF/BSR: the index of the lowest (BSF) or highest (BSR) set bit of the
    source into the destination, ZF = 0. A zero source sets ZF and leaves the destination
    as it was: the SDM calls its content undefined, but Intel and AMD processors and QEMU
    keep it (so does kvm.ko's em_bsf_c). CF OF SF AF PF are undefined; this CPU sets them
    as TEST source, source would (CF = OF = AF = 0, SF and PF from the source), as QEMU
    does, so that ZF = (source == 0) is the lazy record's own.
    F3 0F BC and F3 0F BD are TZCNT and LZCNT only on a processor with BMI1 and LZCNT; on
    one without (this CPU: default_cpuid) the REP prefix is ignored and they are BSF and
    BSR (SDM Vol. 2B TZCNT, LZCNT). Compilers emit `rep bsf` for a count of trailing zeros
    that either kind of processor may run."""
    size = c.opsize(ins, 0)
    op = K_LOGIC * 3 + SIZE_INDEX[size]
    src = c.reader(ins, 1, size)  # a memory source faults before anything changes
    lf, nxt = c.lf, ins.next_ip32
    idx, _, _ = reg_info(ins.op0_register)
    put = c.reg_writer(ins.op0_register)
    r = c.r
    lowest = ins.mnemonic in (iced_x86.Mnemonic.BSF, iced_x86.Mnemonic.TZCNT)

    if size == 4:
        if lowest:
            def bsf_r32() -> int:
                s = src()
                if s:
                    r[idx] = (s & -s).bit_length() - 1
                lf[0] = op; lf[1] = s; lf[2] = s; lf[3] = s  # noqa: E702
                return nxt
            return bsf_r32

        def bsr_r32() -> int:
            s = src()
            if s:
                r[idx] = s.bit_length() - 1
            lf[0] = op; lf[1] = s; lf[2] = s; lf[3] = s  # noqa: E702
            return nxt
        return bsr_r32

    def bit_scan() -> int:
        s = src()
        if s:
            put((s & -s).bit_length() - 1 if lowest else s.bit_length() - 1)
        lf[0] = op; lf[1] = s; lf[2] = s; lf[3] = s  # noqa: E702
        return nxt
    return bit_scan


# -- double-precision shifts (SDM Vol. 2B SHLD, SHRD) ----------------------------------------

@handles("shld", "shrd")
def shxd_Ev_Gv(ins: iced_x86.Instruction, c: Ctx) -> Callable[[], int]:
    """SDM Vol. 2B SHLD/SHRD: the destination shifted left (right) by the count, masked to
    5 bits, the vacated bits filled from the source's high (low) end; the source is not
    changed. Count 0: no write and no flags. CF = the last bit shifted out of the
    destination; SF ZF PF from the result; OF = the sign changed, defined for a count of 1
    only (this CPU sets it so for every count); AF undefined (0 here).

    A 16-bit operand shifted by more than 16 gives an undefined result and flags. This CPU
    shifts dest:src:dest as one 48-bit value, as P6 and later processors do (Bochs's
    shift16.cc; QEMU does the same; the Pentium, and an AMD EPYC run through KVM, shift
    dest:src:src). For counts up to 16 that is the SDM's definition, so one formula serves
    every 16-bit count."""
    size = c.opsize(ins, 0)
    bits = 8 * size
    op = K_RES * 3 + SIZE_INDEX[size]
    mask, top = MASK[op], bits - 1
    lf, r, nxt = c.lf, c.r, ins.next_ip32
    get_src = c.reg_reader(ins.op1_register)
    left = ins.mnemonic == iced_x86.Mnemonic.SHLD
    by_cl = c.is_reg(ins, 2)
    imm = ins.immediate(2) & 0x1F if not by_cl else 0

    if bits == 16:
        if left:
            def shift(d: int, s: int, n: int) -> tuple[int, int]:
                w = (d << 32) | (s << 16) | d
                return (w >> (32 - n)) & mask, (w >> (48 - n)) & 1
        else:
            def shift(d: int, s: int, n: int) -> tuple[int, int]:
                w = (d << 32) | (s << 16) | d
                return (w >> n) & mask, (w >> (n - 1)) & 1
    elif left:
        def shift(d: int, s: int, n: int) -> tuple[int, int]:
            return ((d << n) | (s >> (32 - n))) & mask, (d >> (32 - n)) & 1
    else:
        def shift(d: int, s: int, n: int) -> tuple[int, int]:
            return ((d >> n) | (s << (32 - n))) & mask, (d >> (n - 1)) & 1

    if c.is_reg(ins, 0):
        get, put = c.reg_reader(ins.op0_register), c.reg_writer(ins.op0_register)

        def shxd_r() -> int:
            n = r[1] & 0x1F if by_cl else imm
            if n:
                d = get()
                res, cf = shift(d, get_src(), n)
                put(res)
                lf[0] = op; lf[1] = res; lf[2] = cf; lf[3] = ((res ^ d) >> top) & 1  # noqa: E702
            return nxt
        return shxd_r
    ea, rd, wr = c.ea(ins), c.rd[size], c.wr[size]

    def shxd_m() -> int:
        addr = ea()
        d = rd(addr)
        n = r[1] & 0x1F if by_cl else imm
        if n:
            res, cf = shift(d, get_src(), n)
            wr(addr, res)  # a faulting store leaves the flags as they were
            lf[0] = op; lf[1] = res; lf[2] = cf; lf[3] = ((res ^ d) >> top) & 1  # noqa: E702
        return nxt
    return shxd_m
