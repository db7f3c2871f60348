"""virtio-blk on virtio-mmio (issue 11, the device): registers against QEMU 7.2 and the
VIRTIO 1.2 spec, requests through the whole stack (a driver guest on --backend sim in both
irqchip modes, polling the used ring), the image file's bytes afterwards, the error paths,
and guest input that must never crash vmsim.

Register values marked "QEMU 7.2" were read from qemu-system-i386 7.2 (-M microvm,acpi=off
-global virtio-mmio.force-legacy=false, a 100-sector raw drive) by a probe guest.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.vmm.virtio_guest import guest_source
from vmsim.asm import assemble
from vmsim.events import EventStream
from vmsim.hw.memory import PhysicalMemory
from vmsim.session import Session
from vmsim.vmm.block import BlockBackend
from vmsim.vmm.devices.virtio_blk import VirtIOBlock
from vmsim.vmm.devices.virtio_mmio import VirtIOMMIOProxy
from vmsim.vmm.machine import MachineConfig

NEXT, WRITE, INDIRECT = 1, 2, 4
SECTOR = 512


def make_image(tmp_path: Path, sectors: int = 16) -> Path:
    img = tmp_path / "disk.img"
    img.write_bytes(b"".join(bytes([(s * 7 + i) & 0xFF for i in range(SECTOR)])
                             for s in range(sectors)))
    return img


def proxy_with_disk(tmp_path: Path, readonly: bool = False, sectors: int = 100):
    img = tmp_path / "p.img"
    img.write_bytes(bytes(sectors * SECTOR))
    mem = PhysicalMemory(16 << 20)
    lines: list[int] = []
    vdev = VirtIOBlock(BlockBackend(img, readonly), mem, EventStream())
    return VirtIOMMIOProxy(7, 0xFEB00E00, 12, lines.append, vdev), lines, mem


# -- registers --------------------------------------------------------------------------
def test_registers_match_qemu(tmp_path):
    p, _, _ = proxy_with_disk(tmp_path)
    assert p.read(0x000, 4) == 0x74726976  # MagicValue "virt"
    assert p.read(0x004, 4) == 2  # Version (modern)
    assert p.read(0x008, 4) == 2  # DeviceID: block
    assert p.read(0x00C, 4) == 0x554D4551  # VendorID "QEMU"
    p.write(0x014, 4, 0)
    assert p.read(0x010, 4) == 0x30006E54  # QEMU 7.2
    p.write(0x014, 4, 1)
    assert p.read(0x010, 4) == 0x00000101  # VERSION_1, RING_RESET
    p.write(0x030, 4, 0)
    assert p.read(0x034, 4) == 1024  # QueueNumMax (QEMU 7.2)
    p.write(0x030, 4, 1)
    assert p.read(0x034, 4) == 0  # no queue 1
    assert p.read(0x044, 4) == 0 and p.read(0x070, 4) == 0 and p.read(0x0FC, 4) == 0
    assert p.read(0x0B0, 4) == 0xFFFFFFFF  # SHM length: none (QEMU 7.2)
    assert p.read(0x000, 2) == 0  # registers take 4-byte accesses only
    # Config space, QEMU 7.2 for 100 sectors: capacity, seg_max 254, CHS 2/16/63,
    # blk_size 512, writeback 1 and num_queues 1, discard/write-zeroes limits, then the end.
    cfg = [p.read(0x100 + 4 * i, 4) for i in range(16)]
    assert cfg == [100, 0, 0, 0xFE, 0x3F100002, 0x200, 0, 0, 0x00010001, 0x3FFFFF, 1, 1,
                   0x3FFFFF, 1, 1, 0xFFFFFFFF]
    assert p.read(0x100, 1) == 100 and p.read(0x1FC, 4) == 0xFFFFFFFF


def test_readonly_offers_ro(tmp_path):
    p, _, _ = proxy_with_disk(tmp_path, readonly=True)
    assert p.read(0x010, 4) == 0x30006E74  # QEMU 7.2 with readonly=on: + VIRTIO_BLK_F_RO


def test_empty_transport_reads_device_id_zero():
    p = VirtIOMMIOProxy(0, 0xFEB00000, 5, lambda level: None)
    assert [p.read(o, 4) for o in (0, 4, 8, 0xC, 0x10, 0x70)] == \
        [0x74726976, 2, 0, 0x554D4551, 0, 0]
    p.write(0x70, 4, 1)
    assert p.read(0x70, 4) == 0


def test_feature_negotiation_and_reset(tmp_path):
    p, _, _ = proxy_with_disk(tmp_path)
    vdev = p.vdev
    p.write(0x070, 4, 1)
    p.write(0x070, 4, 3)
    p.write(0x024, 4, 1)
    p.write(0x020, 4, 0xFFFFFFFF)  # more than offered
    p.write(0x024, 4, 0)
    p.write(0x020, 4, 0xFFFFFFFF)
    p.write(0x070, 4, 0xB)
    # QEMU masks the driver's features to the offered ones and keeps FEATURES_OK (read
    # back as 0x0B on QEMU 7.2); the spec's driver MUST NOT ack what was not offered.
    assert p.read(0x070, 4) == 0xB
    assert vdev.guest_features == vdev.host_features
    p.write(0x020, 4, 0)  # too late: features are fixed once FEATURES_OK is set
    p.write(0x070, 4, 0xB)
    assert vdev.guest_features == vdev.host_features
    vdev.isr = 1
    p.write(0x070, 4, 0)  # reset
    assert p.read(0x070, 4) == 0 and p.read(0x060, 4) == 0 and vdev.guest_features == 0


def test_interrupt_ack_lowers_the_line(tmp_path):
    p, lines, _ = proxy_with_disk(tmp_path)
    p.vdev.isr = 1
    p.virtio_mmio_update_irq()
    assert lines[-1] == 1 and p.read(0x060, 4) == 1
    p.write(0x064, 4, 1)
    assert lines[-1] == 0 and p.read(0x060, 4) == 0


# -- the whole stack --------------------------------------------------------------------
RW_CHAINS = [[("hdr_w", 16, NEXT, 1), ("wbuf", 512, NEXT, 2), ("st_w", 1, WRITE, 0)],
             [("hdr_r", 16, NEXT, 4), ("rbuf", 512, WRITE | NEXT, 5), ("st_r", 1, WRITE, 0)]]


def rw_data(write_sector: int = 3, read_sector: int = 5) -> str:
    return f"""hdr_w:  dd 1, 0, {write_sector & 0xFFFFFFFF}, {write_sector >> 32}
hdr_r:  dd 0, 0, {read_sector & 0xFFFFFFFF}, {read_sector >> 32}
wbuf:   times 512 db 0xA5
rbuf:   times 512 db 0
st_w:   db 0xFF
st_r:   db 0xFF
"""


def run_guest(src: str, img: Path | None, irqchip: str = "kernel", readonly: bool = False,
              backend: str = "sim") -> tuple[Session, dict[str, int]]:
    image = assemble(src, "virtio_guest.asm")
    s = Session(image, backend, MachineConfig(disk=str(img) if img else None,
                                              disk_readonly=readonly, irqchip=irqchip),
                max_instructions=200_000)
    out = s.run()
    assert out.exit_status == 1, out
    return s, image.symbols


def results(s: Session, sym: dict[str, int]) -> tuple[int, int, int, int]:
    return struct.unpack("<IIII", s.machine.mem.read_bytes(sym["results"], 16))


@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_guest_writes_and_reads_a_sector(tmp_path, irqchip):
    img = make_image(tmp_path)
    before = img.read_bytes()
    s, sym = run_guest(guest_source(RW_CHAINS, [0, 3], rw_data()), img, irqchip)
    mem = s.machine.mem
    after = img.read_bytes()
    assert after[3 * SECTOR:4 * SECTOR] == b"\xA5" * SECTOR
    assert after[:3 * SECTOR] == before[:3 * SECTOR] and after[4 * SECTOR:] == before[4 * SECTOR:]
    assert mem.read_bytes(sym["rbuf"], SECTOR) == before[5 * SECTOR:6 * SECTOR]
    assert mem.read_bytes(sym["st_w"], 1) == b"\0" and mem.read_bytes(sym["st_r"], 1) == b"\0"
    features_ok, status, isr, done = results(s, sym)
    assert (features_ok, status, isr, done) == (0xB, 0xF, 1, 2)
    # The used ring: both heads, with the device-writable lengths (QEMU's in_len).
    used = mem.read_bytes(sym["used"], 4 + 16)
    assert struct.unpack("<HHIIII", used) == (0, 2, 0, 1, 3, 513)
    # The transport's line (IRQ 12) is high: nobody acknowledged. (With the irqchip in
    # the kernel the iothread's irqfd gave kvm.ko an edge: QEMU's qemu_irq is not driven.)
    assert s.machine.virtio_transports[7].level == 1
    view = s.virtio_queues()[7]
    assert view["device_id"] == 2 and view["queues"][0]["used_idx"] == 2
    assert [r["status"] for r in view["requests"]] == ["OK", "OK"]
    assert view["sectors_touched"] == {3: "w", 5: "r"}


def test_readonly_disk_refuses_the_write(tmp_path):
    img = make_image(tmp_path)
    before = img.read_bytes()
    s, sym = run_guest(guest_source(RW_CHAINS, [0, 3], rw_data()), img, readonly=True)
    assert img.read_bytes() == before
    mem = s.machine.mem
    assert mem.read_bytes(sym["st_w"], 1) == b"\1"  # IOERR
    assert mem.read_bytes(sym["st_r"], 1) == b"\0"  # reads still work
    assert mem.read_bytes(sym["rbuf"], SECTOR) == before[5 * SECTOR:6 * SECTOR]


def test_out_of_range_sector_is_ioerr(tmp_path):
    img = make_image(tmp_path, sectors=16)
    before = img.read_bytes()
    s, sym = run_guest(guest_source(RW_CHAINS, [0, 3], rw_data(16, 1 << 40)), img)
    mem = s.machine.mem
    assert mem.read_bytes(sym["st_w"], 1) == b"\1" and mem.read_bytes(sym["st_r"], 1) == b"\1"
    assert img.read_bytes() == before
    assert results(s, sym)[1:] == (0xF, 1, 2)  # both completed, the device still works


CMD_CHAINS = [[("hdr_f", 16, NEXT, 1), ("st_f", 1, WRITE, 0)],
              [("hdr_i", 16, NEXT, 3), ("idbuf", 20, WRITE | NEXT, 4), ("st_i", 1, WRITE, 0)],
              [("hdr_u", 16, NEXT, 6), ("st_u", 1, WRITE, 0)]]
CMD_DATA = """hdr_f: dd 4, 0, 0, 0
hdr_i: dd 8, 0, 0, 0
hdr_u: dd 99, 0, 0, 0
idbuf: times 20 db 0xEE
st_f: db 0xFF
st_i: db 0xFF
st_u: db 0xFF
"""


def test_flush_and_get_id(tmp_path):
    img = make_image(tmp_path)
    chains, data = CMD_CHAINS, CMD_DATA
    s, sym = run_guest(guest_source(chains, [0, 2, 5], data), img)
    mem = s.machine.mem
    assert [mem.read_bytes(sym[n], 1)[0] for n in ("st_f", "st_i", "st_u")] == [0, 0, 2]
    assert mem.read_bytes(sym["idbuf"], 2) == b"\0\xEE"  # the empty serial, NUL-terminated


INDIRECT_CHAINS = [[("itable", 48, INDIRECT, 0)]]
INDIRECT_DATA = """itable: dd hdr_r, 0
        dd 16
        dw 1, 1
        dd rbuf, 0
        dd 512
        dw 3, 2
        dd st_r, 0
        dd 1
        dw 2, 0
hdr_r: dd 0, 0, 2, 0
rbuf: times 512 db 0
st_r: db 0xFF
"""


def test_indirect_descriptors(tmp_path):
    img = make_image(tmp_path)
    chains, data = INDIRECT_CHAINS, INDIRECT_DATA
    s, sym = run_guest(guest_source(chains, [0], data, features_lo=1 << 28), img)
    mem = s.machine.mem
    assert mem.read_bytes(sym["st_r"], 1) == b"\0"
    assert mem.read_bytes(sym["rbuf"], SECTOR) == img.read_bytes()[2 * SECTOR:3 * SECTOR]


MALFORMED = {
    "next out of range": [("hdr_r", 16, NEXT, 9)],
    "a loop": [("hdr_r", 16, NEXT, 1), ("rbuf", 512, WRITE | NEXT, 0)],
    # QEMU maps a buffer outside RAM through its one bounce buffer, 4 KiB at most: the
    # second page of this one finds it in use.
    "outside RAM": [("hdr_r", 16, NEXT, 1), ("0x40000000", 8192, WRITE | NEXT, 2),
                    ("st_r", 1, WRITE, 0)],
    "too-short header": [("hdr_r", 8, NEXT, 1), ("st_r", 1, WRITE, 0)],
    "no status buffer": [("hdr_r", 16, 0, 0)],
}


MALFORMED_DATA = "hdr_r: dd 1, 0, 0, 0\nrbuf: times 512 db 0\nst_r: db 0xFF\n"


@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_chain_needs_reset(tmp_path, case, irqchip):
    img = make_image(tmp_path)
    before = img.read_bytes()
    data = "hdr_r: dd 1, 0, 0, 0\nrbuf: times 512 db 0\nst_r: db 0xFF\n"
    # The bad chain, then a good one: the device must not process it until reset.
    start = len(MALFORMED[case])
    chains = [MALFORMED[case], [("hdr_r", 16, NEXT, start + 1), ("rbuf", 512, NEXT, start + 2),
                                ("st_r", 1, WRITE, 0)]]
    s, sym = run_guest(guest_source(chains, [0, start], data), img, irqchip)
    _, status, isr, done = results(s, sym)
    assert status & 0x40 and done == 0  # DEVICE_NEEDS_RESET, nothing completed
    assert isr & 2  # a configuration-change interrupt says so (DRIVER_OK was set)
    assert img.read_bytes() == before
    assert s.machine.virtio_blk.broken


def test_queue_num_grown_after_ready_needs_reset(tmp_path):
    """QEMU keeps the ring mapping QueueReady made: a larger QueueNum afterwards makes the
    next pop fail with "Cannot map descriptor ring" (and nothing is read beyond RAM)."""
    p, _, mem = proxy_with_disk(tmp_path)
    top = mem.size - 0x100  # rings at the very end of RAM: 8 entries fit, 1024 would not
    for reg, value in ((0x70, 1), (0x70, 3), (0x24, 1), (0x20, 1), (0x70, 0xB), (0x38, 8),
                       (0x80, top - 0x80), (0x90, top), (0xA0, top - 0x1000), (0x44, 1),
                       (0x70, 0xF), (0x38, 1024)):
        p.write(reg, 4, value)
    mem.load(top, struct.pack("<HHH", 0, 1, 0))
    p.write(0x50, 4, 0)
    assert p.read(0x70, 4) & 0x40
    assert p.vdev.broken_reason == "Cannot map descriptor ring"


# -- nothing the guest writes crashes vmsim -----------------------------------------------
REGS = [0x000, 0x010, 0x014, 0x020, 0x024, 0x030, 0x034, 0x038, 0x044, 0x050, 0x060, 0x064,
        0x070, 0x080, 0x084, 0x090, 0x094, 0x0A0, 0x0A4, 0x0FC, 0x100, 0x120, 0x13C, 0x1FF]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(st.tuples(st.sampled_from(REGS), st.sampled_from([1, 2, 4]),
                                 st.integers(0, 0xFFFFFFFF)), max_size=40),
       table=st.binary(min_size=0, max_size=512),
       small=st.lists(st.integers(0, 0xFFFFF), min_size=6, max_size=6),
       num=st.integers(0, 1100))
def test_random_guest_input_never_raises(tmp_path, writes, table, small, num):
    img = tmp_path / "h.img"
    img.write_bytes(bytes(8 * SECTOR))
    mem = PhysicalMemory(1 << 20)
    vdev = VirtIOBlock(BlockBackend(img), mem, EventStream())
    p = VirtIOMMIOProxy(7, 0xFEB00E00, 12, lambda level: None, vdev)
    # A random descriptor table and rings anywhere in RAM (or across its end), a random
    # queue size (up to past QEMU's limit), random available-ring contents.
    desc, avail, used = small[0] & ~15, small[1] & ~1, small[2] & ~3
    mem.load(desc, table[:mem.size - desc])
    ring = struct.pack("<HH", 0, small[3] & 0xFFFF) + struct.pack("<8H", *([small[4] & 0xFFFF] * 8))
    mem.load(avail, ring[:mem.size - avail])
    for reg, value in ((0x70, 1), (0x70, 3), (0x24, 1), (0x20, 1), (0x24, 0),
                       (0x20, small[5] << 12), (0x70, 0xB), (0x38, num), (0x80, desc),
                       (0x90, avail), (0xA0, used), (0x44, 1), (0x70, 0xF)):
        p.write(reg, 4, value)
    p.write(0x50, 4, 0)
    for reg, size, value in writes:
        value &= (1 << (8 * size)) - 1
        if reg == 0x050 and value == 0 and avail + 4 <= mem.size:
            bumped = (int.from_bytes(mem.read_bytes(avail + 2, 2), "little") + 1) & 0xFFFF
            mem.load(avail + 2, struct.pack("<H", bumped))  # the driver adds a request
        p.write(reg, size, value)
        p.read(reg, size)
    made_out = any(r["type"] == "OUT" and r["status"] == "OK" for r in vdev.requests)
    if not made_out:
        assert img.read_bytes() == bytes(8 * SECTOR)
    p.vdev.blk.close()


# -- the command line -----------------------------------------------------------------------
def vmsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmsim", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("disk", ["/nonexistent/disk.img", "/dev/null", "{dir}", "{fifo}"])
def test_bad_disk_path_is_one_line_exit_2(tmp_path, disk):
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    guest = tmp_path / "g.asm"
    guest.write_text("bits 32\norg 0x100000\nmov dx, 0x501\nmov al, 0\nout dx, al\n")
    r = vmsim("run", str(guest), "--disk", disk.format(dir=tmp_path, fifo=fifo))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmsim: ") and r.stdout == ""


def test_unreadable_disk_is_refused(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    img = make_image(tmp_path)
    img.chmod(0)
    guest = tmp_path / "g.asm"
    guest.write_text("bits 32\norg 0x100000\nmov dx, 0x501\nmov al, 0\nout dx, al\n")
    r = vmsim("run", str(guest), "--disk", str(img))
    assert r.returncode == 2 and "Permission denied" in r.stderr


def test_cli_run_with_disk_writes_the_file(tmp_path):
    img = make_image(tmp_path)
    guest = tmp_path / "g.asm"
    guest.write_text(guest_source(RW_CHAINS, [0, 3], rw_data()))
    r = vmsim("run", str(guest), "--disk", str(img), "--irqchip", "userspace")
    assert r.returncode == 1, r.stderr
    assert img.read_bytes()[3 * SECTOR:4 * SECTOR] == b"\xA5" * SECTOR
    ro = tmp_path / "ro.img"
    ro.write_bytes(img.read_bytes())
    r = vmsim("run", str(guest), "--disk", f"{ro},readonly")
    assert r.returncode == 1 and ro.read_bytes() == img.read_bytes()


# -- the same guests on QEMU ------------------------------------------------------------
def qemu_run(binary: bytes, img: Path, readonly: bool, tmp_path: Path) -> str:
    import shutil

    qemu = shutil.which("qemu-system-i386")
    if qemu is None:
        pytest.skip("qemu-system-i386 is not installed (Debian package qemu-system-x86)")
    kernel = tmp_path / "guest.bin"
    kernel.write_bytes(binary)
    drive = f"id=d0,file={img},format=raw,if=none" + (",readonly=on" if readonly else "")
    r = subprocess.run([qemu, "-M", "microvm,acpi=off", "-global",
                        "virtio-mmio.force-legacy=false", "-m", "16", "-display", "none",
                        "-nodefaults", "-serial", "stdio", "-device",
                        "isa-debug-exit,iobase=0x501,iosize=1", "-drive", drive,
                        "-device", "virtio-blk-device,drive=d0", "-kernel", str(kernel),
                        "-no-reboot"], capture_output=True, timeout=60)
    assert r.returncode == 1, r.stderr
    return r.stdout.decode()


ORACLE_CASES = {
    "read and write": (RW_CHAINS, [0, 3], rw_data(), 0, False, ("st_w", "st_r")),
    "readonly": (RW_CHAINS, [0, 3], rw_data(), 0, True, ("st_w", "st_r")),
    "out of range": (RW_CHAINS, [0, 3], rw_data(16, 1 << 40), 0, False, ("st_w", "st_r")),
    "negotiated flush": (RW_CHAINS, [0, 3], rw_data(), 1 << 9, False, ("st_w", "st_r")),
    "next out of range": ([MALFORMED["next out of range"]], [0],
                          "hdr_r: dd 1, 0, 0, 0\nst_r: db 0xFF\n", 0, False, ("st_r",)),
    "no status buffer": ([MALFORMED["no status buffer"]], [0],
                         "hdr_r: dd 1, 0, 0, 0\nst_r: db 0xFF\n", 0, False, ("st_r",)),
    "flush, get id, unsupported": (CMD_CHAINS, [0, 2, 5], CMD_DATA, 0, False,
                                   ("st_f", "st_i", "st_u", "idbuf", "idbuf + 1")),
    "indirect": (INDIRECT_CHAINS, [0], INDIRECT_DATA, 1 << 28, False, ("st_r", "rbuf + 7")),
    "one buffer outside RAM": ([[("hdr_r", 16, NEXT, 1), ("0x40000000", 512, WRITE | NEXT, 2),
                                 ("st_r", 1, WRITE, 0)]], [0], MALFORMED_DATA, 0, False,
                               ("st_r",)),
    **{f"malformed: {k}": ([v], [0], MALFORMED_DATA, 0, False, ("st_r",))
       for k, v in MALFORMED.items() if k != "no status buffer"},
}


@pytest.mark.parametrize("case", sorted(ORACLE_CASES))
def test_guest_matches_qemu(tmp_path, case):
    """Serial output (what the driver saw) and the image file afterwards, vmsim vs QEMU."""
    chains, heads, data, features, readonly, report = ORACLE_CASES[case]
    src = guest_source(chains, heads, data, features_lo=features, report=report)
    image = assemble(src, "virtio_guest.asm")
    ours, theirs = tmp_path / "vmsim.img", tmp_path / "qemu.img"
    make_image(tmp_path)
    ours.write_bytes((tmp_path / "disk.img").read_bytes())
    theirs.write_bytes((tmp_path / "disk.img").read_bytes())
    expected = qemu_run(image.data, theirs, readonly, tmp_path)
    s = Session(image, "sim", MachineConfig(disk=str(ours), disk_readonly=readonly),
                max_instructions=200_000)
    assert s.run().exit_status == 1
    assert s.serial.decode() == expected
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_same_device_on_the_hosts_kvm(tmp_path, irqchip):
    """--backend kvm: QueueNotify is a real KVM_EXIT_MMIO from the host's KVM; the polling
    driver sees what it sees on the simulated kvm.ko."""
    import os

    from vmsim.hostkvm import HostKvmError

    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm on this host")
    src = guest_source(RW_CHAINS, [0, 3], rw_data(), report=("st_w", "st_r"))
    image = assemble(src, "virtio_guest.asm")
    outputs, files = [], []
    for backend in ("sim", "kvm"):
        (tmp_path / backend).mkdir()
        img = make_image(tmp_path / backend)
        try:
            s = Session(image, backend, MachineConfig(disk=str(img), irqchip=irqchip))
        except HostKvmError as e:
            pytest.skip(str(e))
        assert s.run().exit_status == 1
        outputs.append(s.serial.decode())
        files.append(img.read_bytes())
    assert outputs[0] == outputs[1] and files[0] == files[1]
    assert files[0][3 * SECTOR:4 * SECTOR] == b"\xA5" * SECTOR
