"""Every corpus file assembles to exactly the bytes `nasm -f bin` produces."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.asm.oracle import first_difference, nasm_bin
from vmsim.asm.assembler import Assembler

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((ROOT / "tests" / "data" / "asm").glob("*.asm"))
# Guests written by other engineers: compared at test time, whatever is there.
GUEST_DIRS = [ROOT / "sample_guests", ROOT / "tests" / "data" / "guests",
              ROOT / "benchmarks" / "guests"]


def _guest_files() -> list[Path]:
    files: list[Path] = []
    for d in GUEST_DIRS:
        if d.is_dir():
            files += sorted(d.rglob("*.asm"))
    return files


def _compare(path: Path) -> None:
    source = path.read_text()
    try:
        expected = nasm_bin(source)
    except RuntimeError as e:
        pytest.skip(f"nasm rejects {path.name}: {e}")
    asm = Assembler(source, str(path))
    got = asm.run().data
    if got == expected:
        return
    at = first_difference(got, expected)
    where = "?"
    bases = {n: s.base - asm.origin for n, s in asm.sections.items()}
    for pl in asm.placed:
        start = bases[pl.section] + pl.offset
        if start <= at < start + max(pl.size, 1):
            where = f"line {pl.stmt.line}: {pl.stmt.text.strip()!r} -> {pl.head(32).hex()}"
            break
    pytest.fail(f"{path.name}: first difference at byte {at:#x} ({where}); "
                f"nasm has {expected[at:at + 8].hex()}, vmsim {got[at:at + 8].hex()}; "
                f"sizes nasm={len(expected)} vmsim={len(got)}")


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_matches_nasm(nasm: str, path: Path) -> None:
    _compare(path)


_PREPROCESSOR = ("%include", "%macro", "%if", "%rep", "%assign")


@pytest.mark.parametrize("path", _guest_files(), ids=lambda p: p.name)
def test_guest_sources_match_nasm(nasm: str, path: Path) -> None:
    lines = [ln.strip().lower() for ln in path.read_text().splitlines()]
    if any(ln.startswith(_PREPROCESSOR) for ln in lines):
        pytest.skip(f"{path.name} uses NASM's macro preprocessor, which vmsim's assembler "
                    "does not have (tests/guests builds it with nasm)")
    _compare(path)


def test_corpus_is_present() -> None:
    assert len(CORPUS) >= 8
