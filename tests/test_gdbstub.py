"""The GDB remote serial protocol stub (vmsim/gdbstub.py, docs/gdb.md).

Protocol-level tests talk to the stub over a socket pair; end-to-end tests drive
`vmsim run --gdb 0` with the real gdb in batch mode (skipped where gdb is absent). The
oracle for registers and stepping is the session itself on another backend (bare metal),
and for the wire format the GDB manual's Appendix E "Remote Serial Protocol".
"""

from __future__ import annotations

import re
import select
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from vmsim.asm import assemble
from vmsim.gdbstub import GdbStub, checksum, frame
from vmsim.session import Session

TIMEOUT = 120

# Paging on, with linear 8-12 MiB an alias of physical 0-4 MiB (4 MiB pages): memory that
# gdb reads at `counter + 0x800000` is `counter` seen through the guest's page tables.
GUEST = """\
bits 32
org 0x100000
PD equ 0x200000
start:
        mov esp, 0x90000
        mov edi, PD
        mov ecx, 1024
        xor eax, eax
        rep stosd
        mov dword [PD], 0x83            ; 0-4 MiB: a 4 MiB page, present, writable
        mov dword [PD + 8], 0x83        ; 8-12 MiB: the same physical 0-4 MiB
        mov eax, cr4
        or eax, 0x10                    ; CR4.PSE
        mov cr4, eax
        mov eax, PD
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000              ; CR0.PG
        mov cr0, eax
paged:
        mov eax, 1
        mov ebx, 2
        add eax, ebx
store:
        mov [counter], eax
after_store:
        mov ecx, [counter]
        mov dx, 0x3f8
        mov al, 'k'
        out dx, al
        mov dx, 0x501
        mov al, 3                       ; exit status (3 << 1) | 1 = 7
        out dx, al
        hlt
counter: dd 0x11223344
"""

SPIN = """\
bits 32
org 0x100000
        mov eax, 5
spin:   jmp spin
"""

BACKENDS = [("sim", "ept"), ("sim", "shadow"), ("bare", "ept")]


@pytest.fixture
def guest(tmp_path: Path) -> Path:
    p = tmp_path / "guest.asm"
    p.write_text(GUEST)
    return p


def _symbols() -> dict[str, int]:
    return assemble(GUEST).symbols


# -- a client of the stub over a socket ------------------------------------------------------

class Client:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.settimeout(TIMEOUT)
        self.buf = b""

    def raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_byte(self) -> bytes:
        while not self.buf:
            got = self.sock.recv(4096)
            assert got, "the stub closed the connection"
            self.buf += got
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def reply(self) -> str:
        """The next packet from the stub (its checksum checked), acked."""
        while self.read_byte() != b"$":
            pass
        data = b""
        while (b := self.read_byte()) != b"#":
            data += b
        cs = self.read_byte() + self.read_byte()
        assert int(cs, 16) == checksum(data)
        self.raw(b"+")
        return data.decode("latin-1")

    def packet(self, data: str) -> str:
        self.raw(frame(data.encode("latin-1")))
        assert self.read_byte() == b"+"
        return self.reply()


@pytest.fixture
def stub_client(guest: Path):
    """A stub serving a fresh session (bare metal unless a test says otherwise) in a
    thread, and a client on the other end of a socket pair."""
    made = []

    def make(backend: str = "bare", paging: str = "ept", path: Path = guest):
        session = Session(str(path), backend, paging=paging)
        ours, theirs = socket.socketpair()
        stub = GdbStub(session, theirs)
        t = threading.Thread(target=stub.serve, daemon=True)
        t.start()
        made.append((ours, theirs, t))
        return Client(ours), stub, session

    yield make
    for ours, theirs, t in made:
        ours.close()
        t.join(TIMEOUT)
        theirs.close()


def test_bad_checksum_is_nacked_and_unknown_packets_get_empty_replies(stub_client):
    c, _, _ = stub_client()
    c.raw(b"$qC#00")  # wrong checksum: nack, no reply
    assert c.read_byte() == b"-"
    assert c.packet("qC") == "QC01"
    assert c.packet("qThisIsNotAPacket") == ""
    assert c.packet("!") == ""
    assert c.packet("m100000") == "E22"  # malformed: no length
    assert "PacketSize=1000" in c.packet("qSupported:swbreak+;hwbreak+").split(";")
    assert c.packet("?") == "T05thread:01;"
    assert c.packet("qAttached") == "1"
    assert c.packet("qfThreadInfo") == "m01"
    assert c.packet("qsThreadInfo") == "l"
    assert c.packet("vCont?") == "vCont;c;C;s;S"
    assert c.packet("QStartNoAckMode") == "OK"
    c.raw(frame(b"qC"))  # no acks from here on, either way
    assert c.reply() == "QC01"


def test_escaped_binary_write_and_hex_read(stub_client):
    c, _, session = stub_client()
    at = _symbols()["counter"]
    data = bytes([0x7D, 0x23, 0x24, 0x2A])  # } # $ * all need escaping in an X packet
    escaped = b"".join(bytes([0x7D, b ^ 0x20]) for b in data)
    body = b"X%x,4:" % at + escaped
    c.raw(b"$" + body + b"#%02x" % checksum(body))
    assert c.read_byte() == b"+"
    assert c.reply() == "OK"
    assert session.read_linear(at, 4) == data
    assert c.packet(f"m{at:x},4") == data.hex()
    assert c.packet(f"M{at:x},4:01020304") == "OK"
    assert session.read_linear(at, 4) == bytes([1, 2, 3, 4])


def test_registers_match_the_entry_state(stub_client):
    c, _, session = stub_client("sim")
    regs = session.registers()
    g = bytes.fromhex(c.packet("g"))
    values = [int.from_bytes(g[i:i + 4], "little") for i in range(0, len(g), 4)]
    assert values[:10] == [regs[n] for n in ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP",
                                              "ESI", "EDI", "EIP", "EFLAGS")]
    assert values[10:] == [0x08, 0x10, 0x10, 0x10, 0x10, 0x10]  # cs ss ds es fs gs
    assert c.packet("P0=78563412") == "OK"  # eax, little-endian
    assert session.registers()["EAX"] == 0x12345678
    assert c.packet("p0") == "78563412"
    assert c.packet("p10") == "xx" * 10  # st0: vmsim has no x87 state to show
    assert c.packet("Pa=18000000") == "E22"  # cs: segments stay flat


@pytest.mark.parametrize("backend,paging", BACKENDS)
def test_software_breakpoint_then_watchpoint_then_exit(stub_client, backend, paging):
    c, _, _ = stub_client(backend, paging)
    sym = _symbols()
    c.packet("qSupported:swbreak+;hwbreak+")
    assert c.packet(f"Z0,{sym['paged']:x},1") == "OK"
    assert c.packet("c") == "T05swbreak:;thread:01;"
    assert int.from_bytes(bytes.fromhex(c.packet("p8")), "little") == sym["paged"]
    # Paging is on now: the alias at 8 MiB shows the same bytes as the identity map.
    assert c.packet(f"m{sym['counter'] + 0x800000:x},4") == "44332211"
    assert c.packet(f"m{0xC00000:x},4") == "E14"  # not mapped
    assert c.packet(f"z0,{sym['paged']:x},1") == "OK"
    assert c.packet(f"Z2,{sym['counter'] + 0x800000:x},4") == "OK"  # nothing writes there
    assert c.packet(f"Z2,{sym['counter']:x},4") == "OK"
    # A write watchpoint is a trap: it stops after the store, at the next instruction.
    assert c.packet("c") == f"T05watch:{sym['counter']:x};thread:01;"
    assert int.from_bytes(bytes.fromhex(c.packet("p8")), "little") == sym["after_store"]
    assert c.packet(f"m{sym['counter']:x},4") == "03000000"
    assert c.packet(f"z2,{sym['counter']:x},4") == "OK"
    assert c.packet(f"Z3,{sym['counter']:x},4") == "OK"  # the read right after
    assert c.packet("c") == f"T05rwatch:{sym['counter']:x};thread:01;"
    assert c.packet(f"z3,{sym['counter']:x},4") == "OK"
    assert c.packet("c") == "W07"  # isa-debug-exit: (3 << 1) | 1


def test_ctrl_c_interrupts_a_running_guest(stub_client, tmp_path: Path):
    spin = tmp_path / "spin.asm"
    spin.write_text(SPIN)
    c, _, _ = stub_client("sim", path=spin)
    c.raw(frame(b"c"))
    assert c.read_byte() == b"+"
    c.raw(b"\x03")
    assert c.reply() == "T02thread:01;"
    eip = int.from_bytes(bytes.fromhex(c.packet("p8")), "little")
    spin_at = assemble(SPIN).symbols["spin"]
    # Wherever the guest was: the loop, or (a busy machine spent the first slice's wall
    # time before the guest's first instruction) the entry, the interrupt taken before it.
    assert eip in (0x100000, spin_at)
    assert c.packet("s") == "T05thread:01;"  # one step: into the loop, or round it
    assert int.from_bytes(bytes.fromhex(c.packet("p8")), "little") == spin_at
    c.raw(frame(b"c") + b"\x03")  # the interrupt in the same segment as the packet
    assert c.read_byte() == b"+"
    assert c.reply() == "T02thread:01;"


def test_monitor_commands(stub_client):
    c, _, _ = stub_client("sim")

    def monitor(cmd: str) -> str:
        c.raw(frame(b"qRcmd," + cmd.encode().hex().encode()))
        assert c.read_byte() == b"+"
        out = ""
        while (r := c.reply()) != "OK":
            assert r.startswith("O")
            out += bytes.fromhex(r[1:]).decode()
        return out

    vmcs = monitor("info vmcs")
    assert "*** Guest state ***" in vmcs and "GUEST_RIP" in vmcs
    assert "EIP=00100000" in monitor("info registers")
    assert c.packet("s").startswith("T05")
    exits = monitor("info exits")
    assert "VM-EXIT" in exits and "Guest instructions: 1" in exits
    assert "info tlb" in monitor("help")
    assert "unknown command" in monitor("info nothing")


# -- stepping through the session ----------------------------------------------------------

@pytest.mark.parametrize("paging", ["ept", "shadow"])
def test_single_stepping_changes_nothing_the_guest_or_the_trace_sees(guest: Path, paging):
    """Stepping the whole guest one instruction at a time gives the EIPs bare metal gives,
    the same VM exits as a free run (no #DB, no extra exit), and the same ending."""
    def exits(s: Session) -> list:
        seen = []
        s.events.subscribe(lambda ev: seen.append((ev["exit_reason"], ev["guest_rip"])),
                           ["kvm_exit"])
        return seen

    free = Session(str(guest), "sim", paging=paging)
    free_exits = exits(free)
    end = free.run()
    stepped = Session(str(guest), "sim", paging=paging)
    stepped_exits = exits(stepped)
    bare = Session(str(guest), "bare")
    eips, bare_eips = [], []
    while not (out := stepped.single_step()).finished:
        eips.append(stepped.registers()["EIP"])
    while not bare.single_step().finished:
        bare_eips.append(bare.registers()["EIP"])
    assert eips == bare_eips
    # Every instruction but the last (the OUT that ends the VM) stopped once.
    assert len(eips) == bare.instructions - 1 > 20
    assert stepped_exits == free_exits and free_exits  # the guest does exit (OUT at least)
    assert (out.exit_status, stepped.instructions) == (end.exit_status, free.instructions)


# -- the real gdb ------------------------------------------------------------------------------

def _needs_gdb() -> str:
    exe = shutil.which("gdb")
    if exe is None:
        pytest.skip("gdb is not installed (Debian package gdb)")
    return exe


def _start_vmsim(guest: Path, *args: str) -> tuple[subprocess.Popen, int]:
    vm = subprocess.Popen([sys.executable, "-m", "vmsim", "run", str(guest), "--gdb", "0",
                           *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready, _, _ = select.select([vm.stderr], [], [], TIMEOUT)
    if not ready:
        vm.kill()
        vm.communicate()
        pytest.fail("vmsim did not say where it waits for gdb")
    line = vm.stderr.readline().decode()
    m = re.search(r"waiting for gdb on 127\.0\.0\.1:(\d+)", line)
    assert m, line
    return vm, int(m.group(1))


def _gdb(guest: Path, commands: list[str], *args: str) -> tuple[str, int, str, str]:
    """gdb's output, and vmsim's status, stdout and stderr."""
    exe = _needs_gdb()
    vm, port = _start_vmsim(guest, *args)
    argv = [exe, "-batch", "-nx", "-ex", "set architecture i386",
            "-ex", f"target remote :{port}"]
    for cmd in commands:
        argv += ["-ex", cmd]
    try:
        g = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
        out, err = vm.communicate(timeout=TIMEOUT)
    finally:
        if vm.poll() is None:
            vm.kill()
            vm.communicate()
    return g.stdout + g.stderr, vm.returncode, out.decode(), err.decode()


def _values(text: str) -> list[int]:
    """What gdb's `p/x` printed ($1 = 0x..., $2 = ...), in order."""
    return [int(v, 16) for v in re.findall(r"^\$\d+ = (0x[0-9a-f]+)", text, re.M)]


@pytest.mark.parametrize("backend,paging", BACKENDS)
def test_gdb_registers_memory_and_stepi(guest: Path, backend, paging):
    entry = Session(str(guest), backend, paging=paging).registers()
    bare = Session(str(guest), "bare")
    want = []
    for _ in range(3):
        bare.single_step()
        want.append(bare.registers()["EIP"])
    at = _symbols()["counter"]
    out, status, stdout, _ = _gdb(guest, [
        "info registers",
        f"x/wx {at:#x}",
        f"set {{int}}{at:#x} = 0x5a5a5a5a",
        f"x/wx {at:#x}",
        "stepi", "p/x $eip", "stepi", "p/x $eip", "stepi", "p/x $eip",
    ], "--backend", backend, "--paging", paging)
    regs = dict(re.findall(r"^(eflags|e[a-z]{2}|[cdefgs]s)\s+(0x[0-9a-f]+)", out, re.M))
    for name in ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags"):
        assert int(regs[name], 16) == entry[name.upper()], name
    assert int(regs["cs"], 16) == 0x08 and int(regs["ds"], 16) == 0x10
    assert f"{at:#x}:\t0x11223344" in out
    assert f"{at:#x}:\t0x5a5a5a5a" in out
    assert _values(out) == want
    assert (status, stdout) == (7, "k")  # gdb detached on quitting: the guest ran on


@pytest.mark.parametrize("backend,paging", BACKENDS)
def test_gdb_breakpoint_watchpoint_and_exit(guest: Path, backend, paging):
    sym = _symbols()
    out, status, _, _ = _gdb(guest, [
        f"break *{sym['store']:#x}",
        "continue", "p/x $eip",
        f"x/wx {sym['counter'] + 0x800000:#x}",  # through the guest's page tables
        "delete",
        f"watch *(int *){sym['counter']:#x}",
        "continue", "p/x $eip",
        "delete",
        "continue",
    ], "--backend", backend, "--paging", paging)
    assert "Breakpoint 1, " in out
    assert "Hardware watchpoint 2" in out and "Old value = 287454020" in out
    assert "New value = 3" in out
    assert _values(out) == [sym["store"], sym["after_store"]]
    assert f"{sym['counter'] + 0x800000:#x}:\t0x11223344" in out
    assert "exited with code 07" in out
    assert status == 7


def test_gdb_monitor_info_vmcs(guest: Path):
    out, status, _, _ = _gdb(guest, ["monitor info vmcs", "monitor info registers",
                                     "monitor info exits"])
    assert "*** Guest state ***" in out and "GUEST_RIP" in out
    assert "EIP=00100000" in out
    assert "VM-EXIT" in out
    assert status == 7


def test_gdb_kill_stops_the_run(guest: Path):
    _, status, stdout, err = _gdb(guest, ["kill"])
    assert status == 0 and stdout == ""
    assert "killed by the debugger" in err


# -- the command line --------------------------------------------------------------------------

def _vmsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmsim", "run", *args], capture_output=True,
                          text=True, timeout=TIMEOUT)


def test_port_in_use_or_invalid_is_one_line_status_2(guest: Path):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        r = _vmsim(str(guest), "--gdb", str(port))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr
    for bad in ("65536", "-1", "x"):
        r = _vmsim(str(guest), "--gdb", bad)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, bad
    r = _vmsim(str(guest), "--gdb", "0", "--backend", "kvm")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "KVM_SET_GUEST_DEBUG" in r.stderr


def test_debugger_going_away_lets_the_guest_run_to_its_end(guest: Path):
    vm, port = _start_vmsim(guest)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            c = Client(s)
            assert c.packet("s") == "T05thread:01;"
        out, _ = vm.communicate(timeout=TIMEOUT)
    finally:
        if vm.poll() is None:
            vm.kill()
            vm.communicate()
    assert vm.returncode == 7 and out == b"k"
