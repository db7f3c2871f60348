"""A GDB remote serial protocol stub, as QEMU's gdbstub (gdbstub/gdbstub.c, system.c).

`vmsim run GUEST --gdb PORT` listens on 127.0.0.1:PORT and, like `qemu -s -S`, waits for
the debugger before the guest's first instruction. The stub drives the session and
nothing else: registers and memory through the session's views (guest-linear addresses,
through the guest's own page tables), `stepi` through Session.single_step (vmsim's own
step: the guest never sees EFLAGS.TF or a #DB, and the trace no extra VM exit), continue
through Session.run_for with the breakpoints as address breakpoints, the socket polled
between batches so that Ctrl-C (0x03) stops the guest within one batch.

Packets (GDB manual, Appendix E "Remote Serial Protocol"): `$data#cs` with `+`/`-` acks
(QStartNoAckMode turns them off), `qSupported`, `?`, `g`/`G`, `p`/`P`, `m`/`M`/`X`,
`s`/`c` (with an address), `vCont?`/`vCont;c`/`vCont;s`, `Z0`-`Z4`/`z0`-`z4`, `k`, `D`,
`qAttached`, `qC`, `qfThreadInfo`, `qRcmd` (`monitor ...`), `H`, `T`. Anything else gets
the empty reply that means "not supported". Stop replies: `T05` (SIGTRAP) with
`swbreak:`/`hwbreak:` or `watch:`/`rwatch:`/`awatch:ADDR`, `T02` (SIGINT) after Ctrl-C,
`W` with vmsim's exit status when the VM ends.

Simplifications: one vCPU (thread 1); i386 registers only (no x87/SSE: `p` answers them
as unavailable); segment registers can be read, not changed; software breakpoints are
address breakpoints in the session (the guest's memory is never patched with int3, so
it reads back unchanged, as in QEMU's TCG); watchpoints decode each instruction before
running it (iced-x86's memory operands) and so run the guest one instruction at a time.
"""

from __future__ import annotations

import contextlib
import copy
import io
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass

from vmsim.session import GPR_NAMES, Outcome, Session

# The i386 `g` packet order (gdb's i386 register numbers 0-15, as QEMU's i386 gdbstub).
GDB_REGS = (*GPR_NAMES, "EIP", "EFLAGS", "CS", "SS", "DS", "ES", "FS", "GS")
# Sizes of gdb's i386 registers after these: st0-7, the eight x87 control registers,
# xmm0-7, mxcsr (gdb/features/i386/32bit-core.xml, 32bit-sse.xml).
_OTHER_SIZES = [10] * 8 + [4] * 8 + [16] * 8 + [4]
PACKET_SIZE = 4096  # as QEMU's MAX_PACKET_LENGTH: qSupported says PacketSize=1000 (hex)
GDB_SIGNAL_INT = 2
GDB_SIGNAL_TRAP = 5
THREAD = "01"
RUN_SECONDS = 0.02  # wall time per run_for batch between two polls of the socket
WATCH_POLL = 256  # single steps between two polls while watchpoints are set

# Z packet types (GDB manual E.2): 0 software breakpoint, 1 hardware breakpoint, 2 write
# watchpoint, 3 read watchpoint, 4 access watchpoint. The stop reply's word for each.
_WATCH = {2: "watch", 3: "rwatch", 4: "awatch"}


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def frame(data: bytes) -> bytes:
    """One packet: `$`, the data with `#$}*` escaped (`}` then the byte XOR 0x20), `#`, the
    two-hex-digit modulo-256 sum of the escaped data."""
    out = bytearray()
    for b in data:
        if b in b"#$}*":
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return b"$" + bytes(out) + b"#%02x" % checksum(out)


def unescape(data: bytes) -> bytes:
    out = bytearray()
    it = iter(data)
    for b in it:
        out.append(next(it, 0) ^ 0x20 if b == 0x7D else b)
    return bytes(out)


def exit_code(outcome: Outcome) -> int:
    """The status `vmsim run` gives this ending (vmsim.cli), for the W packet."""
    if outcome.exit_status is not None:
        return outcome.exit_status & 0xFF
    if outcome.stuck or outcome.limit_reached:
        return 124
    if outcome.unsupported:
        return 70
    return 0


@dataclass
class Watchpoint:
    addr: int
    length: int
    kind: int  # 2 write, 3 read, 4 access

    def hit(self, addr: int, size: int, read: bool, write: bool) -> bool:
        if not (addr < self.addr + self.length and self.addr < addr + max(size, 1)):
            return False
        return write if self.kind == 2 else read if self.kind == 3 else (read or write)


class DebuggerGone(Exception):
    """The connection closed (or failed) without a detach."""


class GdbStub:
    """The protocol on one connected socket, driving `session` until the debugger
    detaches or goes away, kills the guest, or the VM ends (reported with a W packet)."""

    def __init__(self, session: Session, conn: socket.socket, lock=None,
                 on_stop: Callable[[], None] | None = None):
        self.s = session
        self.conn = conn
        # A front end that shares the session (the GUI) passes a lock the stub holds while
        # it uses the session, and hears when the guest stopped (a stop reply was sent).
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.on_stop = on_stop
        self.buf = bytearray()
        self.ack = True
        self.swbreak = False  # the debugger understands swbreak/hwbreak stop reasons
        self.breakpoints: dict[int, int] = {}  # address: Z type (0 or 1)
        self.watchpoints: list[Watchpoint] = []
        self.killed = False
        self.detached = False
        self.ended: Outcome | None = None  # the VM's end, as reported to the debugger
        self._decoded: dict[tuple[bytes, int], tuple[bool, list[tuple]]] = {}
        self._info = None
        self.stats = None
        if session.vm is not None:  # `monitor info exits`: counted from the stub's start
            from vmsim.stats import ExitStats

            self.stats = ExitStats()
            self.stats.attach(session.events)

    # -- the wire --------------------------------------------------------------------------
    def _recv(self) -> None:
        try:
            data = self.conn.recv(65536)
        except OSError as e:
            raise DebuggerGone(str(e)) from None
        if not data:
            raise DebuggerGone("connection closed")
        self.buf += data

    def read_packet(self) -> bytes | None:
        """The next packet's data (acked), or None for a Ctrl-C while stopped; a packet with
        a bad checksum is nacked (`-`) and dropped, as gdb then sends it again."""
        while True:
            while self.buf[:1] in (b"+", b"-"):
                del self.buf[:1]  # acks of our replies (a nack: we do not resend; see send)
            if self.buf[:1] == b"\x03":
                del self.buf[:1]
                return None
            start = self.buf.find(b"$")
            if start > 0:
                del self.buf[:start]  # noise before a packet
                continue
            end = self.buf.find(b"#")
            if start == 0 and end > 0 and len(self.buf) >= end + 3:
                data, cs = bytes(self.buf[1:end]), bytes(self.buf[end + 1:end + 3])
                del self.buf[:end + 3]
                try:
                    ok = int(cs, 16) == checksum(data)
                except ValueError:
                    ok = False
                if not self.ack:
                    return data
                self._send_raw(b"+" if ok else b"-")
                if ok:
                    return data
                continue
            if start < 0:
                self.buf.clear()
            self._recv()

    def _send_raw(self, data: bytes) -> None:
        try:
            self.conn.sendall(data)
        except OSError as e:
            raise DebuggerGone(str(e)) from None

    def send(self, reply: str | bytes) -> None:
        """One reply. Its ack is consumed with the next packet (gdb acks before sending
        anything else); a stub on a reliable stream need not resend."""
        self._send_raw(frame(reply.encode("latin-1") if isinstance(reply, str) else reply))

    def interrupted(self) -> bool:
        """Poll the socket while the guest runs: True at a Ctrl-C (0x03), also one that
        came in the same read as the packet that resumed the guest."""
        while select.select([self.conn], [], [], 0)[0]:
            self._recv()
        if b"\x03" in self.buf:
            del self.buf[:self.buf.index(b"\x03") + 1]
            return True
        return False

    # -- the session -----------------------------------------------------------------------
    def serve(self) -> Outcome | None:
        """Answer packets until the debugger leaves or the VM ends. Returns the VM's end if
        it came while the debugger was attached, else None (the caller runs the rest)."""
        try:
            while not (self.killed or self.detached or self.ended):
                data = self.read_packet()
                if data is None:  # Ctrl-C while stopped: say where it is stopped
                    self.send(self._stop_reply(GDB_SIGNAL_INT))
                    continue
                with self.lock:
                    reply = self.handle(data)
                if reply is not None:
                    self.send(reply)
                    if self.on_stop is not None and reply[:1] in ("T", "W"):
                        self.on_stop()
        except DebuggerGone:
            self.detached = True
        return self.ended

    def handle(self, data: bytes) -> str | bytes | None:
        """The reply to one packet ("" = not supported; None = none at all)."""
        text = data.decode("latin-1")
        cmd = text[:1]
        try:
            if text.startswith("q") or text.startswith("Q"):
                return self._query(text)
            if text.startswith("v"):
                return self._v(text)
            if cmd == "?":
                return self._stop_reply(GDB_SIGNAL_TRAP)
            if cmd == "g":
                return "".join(self._reg_hex(n) for n in range(len(GDB_REGS)))
            if cmd == "G":
                return self._write_g(text[1:])
            if cmd == "p":
                return self._reg_hex(int(text[1:], 16))
            if cmd == "P":
                n, value = text[1:].split("=")
                return self._write_reg(int(n, 16), bytes.fromhex(value))
            if cmd == "m":
                addr, length = (int(x, 16) for x in text[1:].split(","))
                got = self.s.read_linear(addr, min(length, PACKET_SIZE // 2 - 16))
                return got.hex() if got else "E14"
            if cmd in "MX":
                head, _, payload = data[1:].partition(b":")
                addr, length = (int(x, 16) for x in head.split(b","))
                raw = bytes.fromhex(payload.decode()) if cmd == "M" else unescape(payload)
                if len(raw) != length:
                    return "E22"
                return "OK" if not raw or self.s.write_linear(addr, raw) else "E14"
            if cmd in "sc":
                if len(text) > 1:
                    self.s.write_registers({"EIP": int(text[1:], 16)})
                return self.resume(step=cmd == "s")
            if cmd in "Zz":
                return self._z(cmd == "Z", text[1:])
            if cmd == "k":
                self.killed = True
                return None  # no reply to k (GDB manual E.2)
            if cmd == "D":
                self.detached = True
                return "OK"
            if cmd in "HT":
                return "OK"  # one thread: any thread id is it
        except (ValueError, IndexError):
            return "E22"
        return ""

    def _query(self, text: str) -> str:
        name = text.split(":", 1)[0].split(",", 1)[0]
        if name == "qSupported":
            self.swbreak = "swbreak+" in text
            return (f"PacketSize={PACKET_SIZE:x};swbreak+;hwbreak+;QStartNoAckMode+;"
                    "vContSupported+")
        if name == "QStartNoAckMode":
            self.ack = False
            return "OK"
        if name == "qAttached":
            return "1"  # attached to an existing process: gdb detaches (D) when it quits
        if name == "qC":
            return "QC" + THREAD
        if name == "qfThreadInfo":
            return "m" + THREAD
        if name == "qsThreadInfo":
            return "l"
        if name == "qRcmd":
            command = bytes.fromhex(text.split(",", 1)[1]).decode("utf-8", "replace")
            out = self.monitor(command)
            for i in range(0, len(out), 1000):  # console output: O packets, then OK
                self.send("O" + out[i:i + 1000].encode().hex())
            return "OK"
        return ""

    def _v(self, text: str) -> str | None:
        if text == "vCont?":
            return "vCont;c;C;s;S"
        if text.startswith("vCont;"):
            actions = [a.split(":")[0] for a in text[6:].split(";")]
            return self.resume(step=any(a[:1] in "sS" for a in actions))
        if text.startswith("vKill"):
            self.killed = True
            return "OK"
        return ""

    # -- registers -------------------------------------------------------------------------
    def _reg_values(self) -> dict[str, int]:
        regs = self.s.registers()
        for name, (selector, _base, _limit) in self.s.segments().items():
            regs[name] = selector
        return regs

    def _reg_hex(self, n: int) -> str:
        if n < len(GDB_REGS):
            return (self._reg_values()[GDB_REGS[n]] & 0xFFFFFFFF).to_bytes(4, "little").hex()
        i = n - len(GDB_REGS)
        return "xx" * (_OTHER_SIZES[i] if i < len(_OTHER_SIZES) else 4)  # unavailable

    def _write_reg(self, n: int, raw: bytes) -> str:
        if n >= len(GDB_REGS) or len(raw) != 4:
            return "E22"
        name, value = GDB_REGS[n], int.from_bytes(raw, "little")
        if n >= 10:  # a segment register: vmsim keeps flat segments (see the docstring)
            return "OK" if value == self._reg_values()[name] else "E22"
        self.s.write_registers({name: value})
        return "OK"

    def _write_g(self, hexdata: str) -> str:
        raw = bytes.fromhex(hexdata[:8 * len(GDB_REGS)])
        current = self._reg_values()
        changes = {}
        for n, name in enumerate(GDB_REGS):
            if 4 * n + 4 > len(raw):
                break
            value = int.from_bytes(raw[4 * n:4 * n + 4], "little")
            if n >= 10 and value != current[name]:
                return "E22"
            if n < 10 and value != current[name]:
                changes[name] = value
        if changes:
            self.s.write_registers(changes)
        return "OK"

    # -- breakpoints and watchpoints ---------------------------------------------------------
    def _z(self, insert: bool, text: str) -> str:
        kind, addr, length = text.split(";")[0].split(",")
        t, a, n = int(kind), int(addr, 16), int(length, 16)
        if t in (0, 1):
            if insert:
                self.breakpoints[a] = t
            else:
                self.breakpoints.pop(a, None)
            return "OK"
        if t in _WATCH:
            wp = Watchpoint(a, max(n, 1), t)
            if insert:
                self.watchpoints.append(wp)
            elif wp in self.watchpoints:
                self.watchpoints.remove(wp)
            return "OK"
        return ""

    def _accesses(self) -> list[tuple[int, int, bool, bool]]:
        """(linear address, size, reads, writes) of the memory operands of the instruction
        at EIP, before it runs (iced-x86's InstructionInfo; REP covers ECX elements)."""
        s = self.s
        cpu = s.cpus[0]
        if s._vcpu_outside_guest(0) is None:  # the CPU holds the state: read it directly
            r, eip, eflags = cpu.r, cpu.eip, cpu.eflags
        else:
            regs = s.registers()
            r, eip, eflags = [regs[n] for n in GPR_NAMES], regs["EIP"], regs["EFLAGS"]
        code = s.read_linear(eip, 15)
        if not code:
            return []
        rep, operands = self._operands(code, eip)
        out = []
        for base, index, scale, disp, size, reads, writes in operands:
            addr = ((r[base] if base >= 0 else 0) + (r[index] * scale if index >= 0 else 0)
                    + disp) & 0xFFFFFFFF
            if rep:
                count = r[1]  # ECX elements
                if eflags & 0x400:  # DF: downwards
                    addr, size = (addr - (count - 1) * size) & 0xFFFFFFFF, count * size
                else:
                    size *= max(count, 1)
            out.append((addr, size, reads, writes))
        return out

    def _operands(self, code: bytes, eip: int) -> tuple[bool, list[tuple]]:
        """The instruction's memory operands as (base GPR, index GPR, scale, displacement,
        size, reads, writes), -1 for no register; cached by its bytes and address."""
        key = (code, eip)
        got = self._decoded.get(key)
        if got is not None:
            return got
        import iced_x86

        ins = iced_x86.Decoder(32, code, ip=eip).decode()
        gpr = {getattr(iced_x86.Register, name): i for i, name in enumerate(GPR_NAMES)}
        acc = iced_x86.OpAccess
        operands = []
        for m in self._info.info(ins).used_memory():
            size = iced_x86.MemorySizeInfo(m.memory_size).size or 4
            reads = m.access in (acc.READ, acc.COND_READ, acc.READ_WRITE, acc.READ_COND_WRITE)
            writes = m.access in (acc.WRITE, acc.COND_WRITE, acc.READ_WRITE,
                                  acc.READ_COND_WRITE)
            operands.append((gpr.get(m.base, -1), gpr.get(m.index, -1), m.scale,
                             m.displacement, size, reads, writes))
        got = (ins.has_rep_prefix or ins.has_repe_prefix or ins.has_repne_prefix, operands)
        if len(self._decoded) > 4096:
            self._decoded.clear()
        self._decoded[key] = got
        return got

    # -- running -----------------------------------------------------------------------------
    def resume(self, step: bool) -> str | None:
        """`s` or `c`: run, then the stop reply (or the W packet when the VM ends)."""
        s = self.s
        if step:
            hits = self._watch_hits()
            out = s.single_step()
            if out.finished:
                return self._ended(out)
            return self._stop_reply(GDB_SIGNAL_TRAP, self._after_step(hits))
        polls = 0
        while True:
            if self.watchpoints:
                hits = self._watch_hits()
                out = s.single_step()
                if out.finished:
                    return self._ended(out)
                why = self._after_step(hits)
                if not why:
                    eip = s.registers()["EIP"]
                    if eip in self.breakpoints:
                        why = self._break_word(eip)
                if why:
                    return self._stop_reply(GDB_SIGNAL_TRAP, why)
                polls += 1
                if polls % WATCH_POLL == 0 and self.interrupted():
                    return self._stop_reply(GDB_SIGNAL_INT)
                continue
            s.breakpoints.addresses = set(self.breakpoints)
            try:
                out = s.run_for(seconds=RUN_SECONDS)
            finally:
                s.breakpoints.addresses = set()
            if out.finished:
                return self._ended(out)
            if out.breakpoint:
                return self._stop_reply(GDB_SIGNAL_TRAP,
                                        self._break_word(s.registers()["EIP"]))
            if self.interrupted():  # DebuggerGone: serve() lets the run go on (as QEMU)
                return self._stop_reply(GDB_SIGNAL_INT)

    def _watch_hits(self) -> list[tuple[Watchpoint, int, bool, bool]]:
        if not self.watchpoints:
            return []
        if self._info is None:
            import iced_x86

            self._info = iced_x86.InstructionInfoFactory()
        cpu = self.s.cpus[0]
        self._before = (cpu.deliveries,)
        return [(wp, a, r, w) for a, n, r, w in self._accesses() for wp in self.watchpoints
                if wp.hit(a, n, r, w)]

    def _after_step(self, hits) -> str:
        """The stop reason a watchpoint gives after the instruction ran (a data breakpoint
        is a trap: reported after the access, EIP at the next instruction); none if the
        instruction faulted instead (its access did not happen)."""
        if not hits or self.s.cpus[0].deliveries != self._before[0]:
            return ""
        wp = hits[0][0]
        return f"{_WATCH[wp.kind]}:{wp.addr:x};"

    def _break_word(self, eip: int) -> str:
        if not self.swbreak:
            return ""
        return "hwbreak:;" if self.breakpoints.get(eip) == 1 else "swbreak:;"

    def _stop_reply(self, signal: int, why: str = "") -> str:
        return f"T{signal:02x}{why}thread:{THREAD};"

    def _ended(self, out: Outcome) -> str:
        self.ended = out
        return f"W{exit_code(out):02x}"

    # -- monitor commands (QEMU's HMP `info` views, vmsim's own content) -----------------------
    def monitor(self, command: str) -> str:
        words = command.split()
        if words[:1] == ["info"] and len(words) == 2:
            view = getattr(self, "_info_" + words[1], None)
            if view is not None:
                return view()
        if words in ([], ["help"]):
            return MONITOR_HELP
        return f"unknown command: '{command}' (monitor help lists them)\n"

    def _info_registers(self) -> str:
        r = self.s.registers()
        lines = [f"EAX={r['EAX']:08x} EBX={r['EBX']:08x} ECX={r['ECX']:08x} EDX={r['EDX']:08x}",
                 f"ESI={r['ESI']:08x} EDI={r['EDI']:08x} EBP={r['EBP']:08x} ESP={r['ESP']:08x}",
                 f"EIP={r['EIP']:08x} EFL={r['EFLAGS']:08x}"]
        for name, (sel, base, limit) in self.s.segments().items():
            lines.append(f"{name:<3}={sel:04x} {base:08x} {limit:08x}")
        lines.append(f"CR0={r['CR0']:08x} CR2={r['CR2']:08x} CR3={r['CR3']:08x} "
                     f"CR4={r['CR4']:08x}")
        return "\n".join(lines) + "\n"

    def _info_vmcs(self) -> str:
        vm = self.s.vm
        vcpu = vm.cpus[0].vcpu if vm is not None else None
        if vcpu is None or not hasattr(vcpu, "vmcs"):
            return "no VMCS: the bare backend runs the guest with no hypervisor\n"
        return vcpu.vmcs.dump() + "\n"

    def _info_exits(self) -> str:
        if self.stats is None:
            return "no VM exits: the bare backend runs the guest with no hypervisor\n"
        stats = copy.deepcopy(self.stats)
        stats.finish(self.s.instructions, self.s.virtual_time)
        out = io.StringIO()
        stats.report(out)
        return out.getvalue()

    def _info_tlb(self) -> str:
        rows = self.s.tlb()
        if not rows:
            return "the TLB is empty\n"
        return "".join(f"{lin:08x}: {pa & ~0xFFF:08x} {'W' if w else '-'}\n"
                       for lin, pa, w in rows)


MONITOR_HELP = """\
info registers -- the vCPU's registers, segments and control registers
info vmcs      -- the VMCS by area, like Linux's dump_vmcs()
info exits     -- VM exits by reason since the debugger attached (perf kvm stat)
info tlb       -- the TLB: linear page, physical page, writable
help           -- this list
"""


class GdbServer:
    """The listening socket (127.0.0.1 only). Bound at construction, so that a port in
    use is found before the guest is loaded; port 0 picks a free one (`port` says which)."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.listener = socket.create_server((host, port))
        self.port = self.listener.getsockname()[1]

    def serve(self, session: Session, lock=None,
              on_stop: Callable[[], None] | None = None) -> GdbStub:
        """Wait for the debugger (the guest has not run), then serve it. Returns the stub:
        its `ended`, `killed` and `detached` say how the session ended."""
        conn, _ = self.listener.accept()
        self.listener.close()  # one debugger, as QEMU's single gdb connection
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stub = GdbStub(session, conn, lock, on_stop)
        try:
            stub.serve()
        finally:
            conn.close()
        return stub

    def close(self) -> None:
        """Stop listening; a serve() waiting in accept() in another thread returns with
        OSError (shutdown wakes it on Linux)."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
