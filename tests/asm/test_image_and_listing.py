"""GuestImage symbols, the address <-> line map, and the listing output."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from vmsim.asm import assemble
from vmsim.asm.cli import register

SOURCE = """\
bits 32
org 0x7c00
start:              ; line 3
    mov eax, 1      ; 5 bytes at 0x7c00
    nop             ; 1 byte at 0x7c05
.loop:
    jmp .loop       ; 2 bytes at 0x7c06
COUNT equ 3
data: times COUNT db 7
section .data
msg: db "hi", 0
"""


def test_symbols_origin_and_data() -> None:
    img = assemble(SOURCE, "g.asm")
    assert img.origin == 0x7C00
    assert img.source_file == "g.asm"
    assert img.symbols["start"] == 0x7C00
    assert img.symbols["start.loop"] == 0x7C06
    assert img.symbols["COUNT"] == 3
    assert img.symbols["data"] == 0x7C08
    assert img.symbols["msg"] == 0x7C0C  # .data follows .text, aligned to 4
    assert img.data == bytes.fromhex("b801000000" "90" "ebfe" "070707" "00" "686900")


def test_every_line_has_an_entry_in_address_order() -> None:
    img = assemble(SOURCE, "g.asm")
    assert sorted(ln.line for ln in img.lines) == list(range(1, 12))
    assert [ln.address for ln in img.lines] == sorted(ln.address for ln in img.lines)
    by_line = {ln.line: ln for ln in img.lines}
    assert (by_line[4].address, by_line[4].size) == (0x7C00, 5)
    assert (by_line[7].address, by_line[7].size) == (0x7C06, 2)
    assert (by_line[6].address, by_line[6].size) == (0x7C06, 0)
    assert (by_line[9].address, by_line[9].size) == (0x7C08, 3)
    assert all(ln.file == "g.asm" for ln in img.lines)


def test_line_at_and_address_of_line() -> None:
    img = assemble(SOURCE, "g.asm")
    line_at = img.line_at(0x7C03)
    assert line_at is not None and line_at.line == 4
    hit = img.line_at(0x7C07)
    assert hit is not None and hit.line == 7
    assert img.line_at(0x7BFF) is None
    assert img.address_of_line(5) == 0x7C05
    assert img.address_of_line(6) == 0x7C06  # label-only line: the next line's bytes
    assert img.address_of_line(3) == 0x7C00
    msg = img.line_at(0x7C0D)
    assert msg is not None and msg.line == 11


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vmsim")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_binary_and_listing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "g.asm"
    src.write_text(SOURCE)
    assert _cli(["asm", str(src), "-o", str(tmp_path / "g.bin"), "--listing"]) == 0
    assert (tmp_path / "g.bin").read_bytes() == assemble(SOURCE).data
    out = capsys.readouterr().out.splitlines()
    assert out[3].split() == ["4", "00007C00", "B801000000", "mov", "eax,", "1", ";", "5",
                              "bytes", "at", "0x7c00"]
    assert out[6].split()[:3] == ["7", "00007C06", "EBFE"]
    assert out[0].split() == ["1", "bits", "32"]
    assert len(out) == 11


def test_cli_listing_file_and_default_output(tmp_path: Path) -> None:
    src = tmp_path / "g.asm"
    src.write_text("bits 32\ndb 1,2,3,4,5,6,7,8,9,10,11\n")
    assert _cli(["asm", str(src), "-l", str(tmp_path / "g.lst")]) == 0
    assert (tmp_path / "g.bin").read_bytes() == bytes(range(1, 12))
    rows = (tmp_path / "g.lst").read_text().splitlines()
    assert rows[1].split()[:3] == ["2", "00000000", "010203040506070809-"]
    assert rows[2].split() == ["2", "00000009", "0A0B"]


def test_line_at_does_not_rescan_every_line_per_call() -> None:
    """The GUI asks at every step; with 100k lines each call used to rebuild the index."""

    class CountingList(list):  # type: ignore[type-arg]
        scans = 0

        def __iter__(self):  # type: ignore[no-untyped-def]
            CountingList.scans += 1
            return super().__iter__()

    img = assemble("bits 32\norg 0x100000\n" + "nop\nmov eax, 1\n" * 1000)
    img.lines = CountingList(img.lines)
    hits = [img.line_at(0x100000 + a) for a in range(0, 6000, 7)]
    assert all(h is not None for h in hits)
    assert hits[1] is not None and hits[1].line == 6  # 0x100007: the second `mov eax, 1`
    assert CountingList.scans <= 1
