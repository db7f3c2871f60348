"""What a guest reads where nothing is, on every backend and on qemu-system-i386
(tests/stack/unassigned.asm): memory nobody claims reads 0 and drops stores, as QEMU's
unassigned memory does (memory.c unassigned_mem_read); the VGA window below the text
buffer reads all ones in text mode (vga.c vga_mem_readb, memory map 3); a port nobody
claims reads all ones (ioport.c unassigned_io_read). Loads of every size, one across the
end of RAM, and REP MOVSD out of both (a page at a time where that is exact)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stack.stackrun import host_kvm_problem, run_cli
from tests.stack.test_qemu import run_qemu
from vmsim.asm import assemble
from vmsim.session import Session

GUEST = Path(__file__).resolve().parent / "unassigned.asm"
WAYS = ["bare", "sim-ept", "sim-shadow", "kvm"]


def _printed(way: str) -> tuple[int | None, list[str]]:
    if way == "kvm":
        if (why := host_kvm_problem()) is not None:
            pytest.skip(why)
        p = run_cli(["run", "--backend", "kvm", str(GUEST)])
        return p.returncode, p.stdout.decode().split()
    backend, _, paging = way.partition("-")
    out = bytearray()
    kw = {"paging": paging} if paging else {}
    s = Session(assemble(GUEST.read_text(), str(GUEST)), backend, serial_out=out.extend, **kw)
    return s.run().exit_status, out.decode().split()


@pytest.mark.parametrize("way", WAYS)
def test_what_the_guest_reads(way: str) -> None:
    status, lines = _printed(way)
    assert status == 1
    ones, nothing = ["FFFFFFFF", "0000FFFF", "000000FF"], ["00000000"] * 3
    assert lines[:6] == ones * 2  # the VGA window at its first and last dword
    # RAM's last dword, then a word and a byte across and past its end: the RAM bytes, 0
    assert lines[6:11] == ["44332211", "00003322", "00000044", "00004433", "00000044"]
    assert lines[11:21] == nothing + nothing + nothing + ["00000000"]  # 16, 32 MiB, 2 GiB
    # The copies: RAM's 8 bytes, 0x3000 bytes of nothing, 0x1000 of the VGA window.
    total = (0x88776655 + 0x44332211 + 0x400 * 0xFFFFFFFF) & 0xFFFFFFFF
    assert lines[21:27] == [f"{total:08X}", "FFFFFFFF", "88776655", "44332211", "00000000",
                            "FFFFFFFF"]
    assert lines[27:] == ["FFFFFFFF"]  # the port


@pytest.mark.parametrize("way", WAYS)
def test_qemu_prints_the_same(way: str, tmp_path: Path) -> None:
    printed, status = run_qemu(assemble(GUEST.read_text(), str(GUEST)).data, tmp_path)
    assert status == 1
    assert _printed(way) == (1, printed.decode().split())
