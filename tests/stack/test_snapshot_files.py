"""Snapshot files of a running VM (issue 12): cut, save, load, resume exactly.

A run cut at an instruction limit, saved (Session.save_snapshot / `vmsim run --save`) and
resumed from the file alone (Session.load_snapshot / `vmsim run --load`) must be the uncut
run: the serial output of the two parts is the uncut run's, the resumed trace is the
uncut trace's tail (event numbers and virtual times included), and RAM, registers, the
exit status and the disk end the same. Files that are not snapshots, or do not fit, are
refused with one line and status 2.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vmsim.events import CATALOGUE, EventStream
from vmsim.session import Session
from vmsim.snapshot_format import SnapshotError
from vmsim.vmm.machine import MachineConfig

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_guests"
DATA = ROOT / "tests" / "data" / "snapshots"
V1_SESSION = DATA / "session1-hello.vmsnap"  # format 1, session section 1: kept forever
BUDGET = 3_000_000
KINDS = sorted(set(CATALOGUE) - {"walk_step", "tlb_hit", "tlb_miss", "ept_step"})

CASES = {  # guest, machine, paging, the uncut run's budget per vCPU
    "hello": ("hello", {}, "ept", BUDGET),
    "timer-userspace": ("timer", {"irqchip": "userspace"}, "ept", BUDGET),
    "apic2": ("apic", {"smp": 2}, "ept", BUDGET),
    "virtio_blk": ("virtio_blk", {"disk": True}, "ept", BUDGET),
    "paging-shadow": ("paging", {}, "shadow", BUDGET),
    # (writes queued in kvm.ko's coalesced-MMIO ring at the cut: saved with the VM)
    "vga-coalesced": ("vga", {"coalesced_mmio": True}, "ept", BUDGET),
}


def _record(events: EventStream) -> list[str]:
    out: list[str] = []
    events.subscribe(lambda ev: out.append(json.dumps(ev.to_dict(), sort_keys=True,
                                                      default=str)), KINDS)
    return out


def _end(s: Session) -> dict:
    o = s.run()
    end = {"outcome": (o.exit_status, o.halted, o.reason), "serial": bytes(s.serial),
           "serial_total": s.serial_total, "ram": bytes(s.machine.ram),
           "time": s.virtual_time, "regs": [s.registers(i) for i in range(len(s.vm.cpus))],
           "screen": s.machine.vga_display(), "vga": bytes(s.machine.vga.buffer),
           "vmcs": [sorted(c.vcpu.vmcs.fields.items()) for c in s.vm.cpus]}
    s.machine.close()
    return end


def _disk(path: Path, seed: int = 12) -> Path:
    path.write_bytes(random.Random(seed).randbytes(64 * 512))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_run_cut_saved_and_loaded_is_the_uncut_run(case: str, tmp_path: Path) -> None:
    name, opts, paging, budget = CASES[case]
    guest = str(SAMPLES / f"{name}.asm")

    def config(disk: Path | None) -> MachineConfig:
        o = dict(opts)
        if o.pop("disk", False):
            o["disk"] = str(disk)
        return MachineConfig(**o)

    disk_u = _disk(tmp_path / "u.img") if opts.get("disk") else None
    uncut = Session(guest, "sim", config(disk_u), max_instructions=budget, paging=paging)
    trace_u = _record(uncut.events)
    end_u = _end(uncut)
    assert len(trace_u) > 20
    # Somewhere in the first half (the limit counts each vCPU's work).
    per_vcpu = uncut.instructions // len(uncut.vm.cpus)
    cut_at = random.Random(f"snapshot {case}").randrange(per_vcpu // 10, per_vcpu // 2)
    disk_c = _disk(tmp_path / "c.img") if opts.get("disk") else None
    cut = Session(guest, "sim", config(disk_c), max_instructions=cut_at, paging=paging)
    trace_c = _record(cut.events)
    first = cut.run()
    if first.finished and cut.machine.stop_requested:
        pytest.fail(f"{case}: the guest ended before the cut at {cut_at}")
    snap = tmp_path / "cut.vmsnap"
    summary = cut.save_snapshot(str(snap))
    assert str(snap) in summary
    k = cut.events.seq
    assert trace_c == trace_u[:len(trace_c)], "the cut run is the uncut run up to the cut"
    cut.machine.close()

    # As `vmsim run --load --trace` does: the trace listens once the VM is loaded (the
    # rebuilt VM's creation is not part of the run).
    resumed = Session.load_snapshot(str(snap), events=EventStream(), max_instructions=budget,
                                    **({"disk": str(disk_c)} if disk_c else {}))
    assert resumed.events.seq == k
    trace_r = _record(resumed.events)
    end_r = _end(resumed)
    for key in end_u:
        assert end_u[key] == end_r[key], f"{case} cut at {cut_at}: {key} differs"
    tail = [e for e in trace_u if json.loads(e)["seq"] > k]
    assert trace_r == tail, f"{case}: the resumed trace is not the uncut trace's tail"
    if disk_u is not None:
        assert disk_u.read_bytes() == disk_c.read_bytes()


def vmsim(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmsim", *args], capture_output=True,
                          cwd=cwd or ROOT, timeout=300)


def test_cli_save_and_load_give_the_uncut_output_and_trace_tail(tmp_path: Path) -> None:
    guest = str(SAMPLES / "virtio_blk.asm")
    d_u, d_c = _disk(tmp_path / "u.img"), _disk(tmp_path / "c.img")
    u = vmsim("run", guest, "--disk", str(d_u), "--trace", str(tmp_path / "u.jsonl"))
    p1 = vmsim("run", guest, "--disk", str(d_c), "--max-instructions", "30000",
               "--save", str(tmp_path / "s.vmsnap"), "--trace", str(tmp_path / "p1.jsonl"))
    assert p1.returncode == 124, p1.stderr
    assert b"saved " in p1.stderr
    p2 = vmsim("run", "--load", str(tmp_path / "s.vmsnap"), "--disk", str(d_c),
               "--trace", str(tmp_path / "p2.jsonl"))
    assert p2.returncode == u.returncode == 1, p2.stderr
    assert p1.stdout + p2.stdout == u.stdout
    assert b"virtio-blk" in u.stdout or len(u.stdout) > 20
    uncut = (tmp_path / "u.jsonl").read_text().splitlines()
    resumed = (tmp_path / "p2.jsonl").read_text().splitlines()
    seq = json.loads(resumed[0])["seq"]
    start = next(i for i, line in enumerate(uncut) if json.loads(line).get("seq") == seq)
    assert resumed == uncut[start:]
    assert d_u.read_bytes() == d_c.read_bytes()


def test_a_snapshot_alone_reopens_the_guest(tmp_path: Path) -> None:
    guest = tmp_path / "mine.asm"
    shutil.copyfile(SAMPLES / "hello.asm", guest)
    s = Session(str(guest), "sim", max_instructions=300)
    s.run()
    s.save_snapshot(str(tmp_path / "h.vmsnap"))
    s.machine.close()
    guest.unlink()
    r = Session.load_snapshot(str(tmp_path / "h.vmsnap"))
    assert r.image.source == (SAMPLES / "hello.asm").read_text()
    assert r.image.lines, "the source map is back: the editor can show the line"
    r.run()
    assert bytes(r.serial) == b"Hello from a vmsim guest!\n"
    assert r.outcome.exit_status == 1


def test_the_first_format_version_still_loads(tmp_path: Path) -> None:
    """A file written by this version of the format is kept, and read by every later
    vmsim (VMSIM_REGENERATE_SNAPSHOTS=1 writes it again, only when the format is new)."""
    if os.environ.get("VMSIM_REGENERATE_SNAPSHOTS") or not V1_SESSION.exists():
        s = Session(str(SAMPLES / "hello.asm"), "sim", max_instructions=150)
        s.run()
        s.save_snapshot(str(V1_SESSION))
        s.machine.close()
    with zipfile.ZipFile(V1_SESSION) as z:
        manifest = json.loads(z.read("manifest.json"))
    assert manifest["format_version"] == 1
    assert {e["name"]: e["version"] for e in manifest["sections"]}["session"] == 1
    r = Session.load_snapshot(str(V1_SESSION))
    r.run()
    assert bytes(r.serial) == b"Hello from a vmsim guest!\n"


def _hello_snapshot(path: Path) -> Path:
    """hello.asm saved after 150 instructions."""
    s = Session(str(SAMPLES / "hello.asm"), "sim", max_instructions=150)
    s.run()
    s.save_snapshot(str(path))
    s.machine.close()
    return path


def _one_line(p: subprocess.CompletedProcess) -> str:
    err = p.stderr.decode()
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_files_that_are_not_snapshots_are_refused_in_one_line(tmp_path: Path) -> None:
    good = _hello_snapshot(tmp_path / "good.vmsnap")
    data = good.read_bytes()
    cases = {
        "truncated": (data[:len(data) // 2], "truncated or corrupt"),
        "foreign zip": (None, "not a vmsim snapshot (no manifest.json)"),
        "text": (b"hello\n", "not a vmsim snapshot"),
    }
    foreign = tmp_path / "foreign.vmsnap"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("readme.txt", "hi")
    for what, (content, words) in cases.items():
        path = foreign if content is None else tmp_path / f"{what}.vmsnap"
        if content is not None:
            path.write_bytes(content)
        p = vmsim("run", "--load", str(path))
        assert p.returncode == 2, what
        line = _one_line(p)
        assert str(path) in line and words in line, (what, line)
    # A section whose checksum no longer matches: refused, naming the section.
    bad = tmp_path / "bad.vmsnap"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            body = zin.read(info)
            if info.filename == "serial.json":
                body = body.replace(b"0", b"1", 1)
            zout.writestr(info, body)
    line = _one_line(vmsim("run", "--load", str(bad)))
    assert "section serial" in line and "checksum mismatch" in line


def test_a_snapshot_that_does_not_fit_is_refused_not_half_loaded(tmp_path: Path) -> None:
    """Sections valid as plain data but not as the machine's state: one line naming the
    file; no session comes back."""
    good = _hello_snapshot(tmp_path / "good.vmsnap")
    from vmsim.snapshot import open_snapshot
    from vmsim.snapshot_format import write_snapshot

    snap = open_snapshot(str(good))
    secs = dict(snap.sections)
    secs["sim-threads"] = type(secs["sim-threads"])(secs["sim-threads"].type,
                                                    {**secs["sim-threads"].data, "positions": {}})
    broken = tmp_path / "broken.vmsnap"
    write_snapshot(str(broken), secs, snap.meta)
    with pytest.raises(SnapshotError) as e:
        Session.load_snapshot(str(broken))
    assert str(broken) in str(e.value) and "\n" not in str(e.value)
    line = _one_line(vmsim("run", "--load", str(broken)))
    assert "does not fit this machine" in line


def test_load_options_the_snapshot_fixes_are_refused(tmp_path: Path) -> None:
    snap = _hello_snapshot(tmp_path / "h.vmsnap")
    assert "--smp" in _one_line(vmsim("run", "--load", str(snap), "--smp", "2"))
    assert "not both" in _one_line(vmsim("run", str(SAMPLES / "hello.asm"), "--load", str(snap)))
    assert "GUEST" in _one_line(vmsim("run"))
    other = _disk(tmp_path / "other.img", seed=13)
    v = SAMPLES / "virtio_blk.asm"
    d = _disk(tmp_path / "d.img")
    p = vmsim("run", str(v), "--disk", str(d), "--max-instructions", "20000",
              "--save", str(tmp_path / "v.vmsnap"))
    assert p.returncode == 124
    line = _one_line(vmsim("run", "--load", str(tmp_path / "v.vmsnap"), "--disk", str(other)))
    assert "does not hold the disk image the snapshot was taken with" in line
    # --save never overwrites an input.
    assert "will not overwrite" in _one_line(vmsim("run", str(v), "--disk", str(d), "--save",
                                                   str(d)))


def test_break_stops_and_the_saved_run_resumes(tmp_path: Path) -> None:
    hello = str(SAMPLES / "hello.asm")
    u = vmsim("run", hello)
    p1 = vmsim("run", hello, "--break", "port:0x3f8", "--save", str(tmp_path / "b.vmsnap"))
    assert p1.returncode == 4, p1.stderr
    assert b"stopped at breakpoint: port 0x3f8" in p1.stderr
    p2 = vmsim("run", "--load", str(tmp_path / "b.vmsnap"))
    assert p1.stdout + p2.stdout == u.stdout
    assert p2.returncode == u.returncode == 1
    bad = vmsim("run", hello, "--break", "exit:NOT_A_REASON")
    assert bad.returncode == 2 and b"unknown exit reason" in bad.stderr


COUNTER = """\
; Counts for ever on COM1: 0 1 2 ... (a run Ctrl-C stops)
    org 0x100000
    bits 32
    xor ebx, ebx
next:
    mov eax, ebx
    call print
    mov al, ' '
    mov dx, 0x3f8
    out dx, al
    inc ebx
    jmp next
print:                  ; eax in decimal
    mov ecx, 10
    xor esi, esi
.div:
    xor edx, edx
    div ecx
    push edx
    inc esi
    test eax, eax
    jnz .div
.out:
    pop eax
    add al, '0'
    mov dx, 0x3f8
    out dx, al
    dec esi
    jnz .out
    ret
"""


def test_ctrl_c_with_save_stops_between_steps_and_saves(tmp_path: Path) -> None:
    guest = tmp_path / "counter.asm"
    guest.write_text(COUNTER)
    snap = tmp_path / "c.vmsnap"
    proc = subprocess.Popen([sys.executable, "-m", "vmsim", "run", str(guest), "--save",
                             str(snap)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, bufsize=0)
    try:
        # Unbuffered: communicate() reads the pipe itself, so bytes a buffered reader had
        # taken in beyond these 40 would be lost to the test (not to vmsim).
        first = b""
        while len(first) < 40 and (chunk := proc.stdout.read(40 - len(first))):
            first += chunk  # running: it has printed
        assert first.startswith(b"0 1 2 ")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert b"saved " in err and b"Traceback" not in err
    printed = (first + out).decode()
    p2 = vmsim("run", "--load", str(snap), "--max-instructions", "20000")
    assert p2.returncode == 124
    numbers = (printed + p2.stdout.decode()).split()
    assert len(numbers) > 20
    assert numbers == [str(i) for i in range(len(numbers))] or \
        numbers[:-1] == [str(i) for i in range(len(numbers) - 1)], \
        "the resumed run prints on from where the interrupted one stopped"


HAVE_KVM = os.access("/dev/kvm", os.R_OK | os.W_OK)
PORTS = str(SAMPLES / "ports.asm")  # port I/O only: the host's software KVM runs it


def _first_half(tmp_path: Path, backend: str) -> tuple[subprocess.CompletedProcess, Path]:
    snap = tmp_path / f"{backend}.vmsnap"
    if backend == "sim":
        p = vmsim("run", PORTS, "--max-instructions", "3000", "--save", str(snap))
        assert p.returncode == 124, p.stderr
    else:  # the host counts no instructions: cut at the 60th exit to userspace
        p = vmsim("run", PORTS, "--backend", "kvm", "--break", "event:kvm_userspace_exit",
                  "--break-hits", "60", "--save", str(snap))
        assert p.returncode == 4, p.stderr
    assert b"saved " in p.stderr
    return p, snap


@pytest.mark.parametrize(("src", "dst"), [("sim", "kvm"), ("kvm", "sim"), ("kvm", "kvm")])
def test_a_snapshot_file_moves_between_the_simulator_and_the_host_kvm(
        src: str, dst: str, tmp_path: Path) -> None:
    """Through the file's portable sections (migration-*: the KVM_GET_* copies, RAM, the
    devices): the two halves print what one uncut run prints, with its exit status."""
    if not HAVE_KVM:
        pytest.skip("needs the host's /dev/kvm")
    uncut = vmsim("run", PORTS)
    p1, snap = _first_half(tmp_path, src)
    assert 0 < len(p1.stdout) < len(uncut.stdout)
    p2 = vmsim("run", "--load", str(snap), "--backend", dst)
    assert p2.returncode == uncut.returncode == 1, p2.stderr
    assert p1.stdout + p2.stdout == uncut.stdout


def test_the_portable_sections_load_where_the_exact_ones_cannot(tmp_path: Path) -> None:
    """A snapshot taken with EPT loads with shadow paging through its portable state
    (the exact state holds EPT tables): the run ends the same, and the destination's
    shadow MMU builds its tables from nothing (page faults the source never took)."""
    from vmsim.snapshot import open_snapshot

    uncut = Session(PORTS, "sim")
    uncut.run()
    s = Session(PORTS, "sim", max_instructions=3000)
    s.run()
    s.save_snapshot(str(tmp_path / "p.vmsnap"))
    s.machine.close()
    names = set(open_snapshot(str(tmp_path / "p.vmsnap")).sections)
    assert {"migration-vm", "migration-ram", "migration-cpu0-regs", "migration-cpu0-sregs",
            "migration-devices", "sim-vcpu0", "ram"} <= names
    faults: list[str] = []
    r = Session.load_snapshot(str(tmp_path / "p.vmsnap"), paging="shadow")
    r.events.subscribe(lambda ev: faults.append(ev.kind), ["kvm_mmu_get_page"])
    r.run()
    assert bytes(r.serial) == bytes(uncut.serial)
    assert r.outcome.exit_status == uncut.outcome.exit_status
    assert faults, "shadow pages are built anew on the destination"
