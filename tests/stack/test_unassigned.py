"""What a guest reads where nothing is, on every backend and on qemu-system-i386
(tests/stack/unassigned.asm): memory nobody claims reads 0 and drops stores, as QEMU's
unassigned memory does (memory.c unassigned_mem_read); the VGA window below the text
buffer reads all ones in text mode (vga.c vga_mem_readb, memory map 3); a port nobody
claims reads all ones (ioport.c unassigned_io_read). Loads of every size, one across the
end of RAM, and REP MOVSD out of both (a page at a time where that is exact)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stack.stackrun import printed_lines
from tests.stack.test_qemu import run_qemu
from vmsim.asm import assemble

GUEST = Path(__file__).resolve().parent / "unassigned.asm"
WAYS = ["bare", "sim-ept", "sim-shadow", "kvm"]


@pytest.mark.parametrize("way", WAYS)
def test_what_the_guest_reads(way: str) -> None:
    status, lines = printed_lines(GUEST, way)
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
    assert printed_lines(GUEST, way) == (1, printed.decode().split())
