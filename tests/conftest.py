"""Shared fixtures: oracles on the host, and small helpers to build and run guests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import vmsim.history

ROOT = Path(__file__).resolve().parents[1]

# Every checkpoint of every test that records a history checks the pages its write log
# found changed against a scan of the whole RAM (History._changed_pages).
vmsim.history.CHECK_WRITE_LOG = True


@pytest.fixture
def nasm(tmp_path: Path):
    """Assemble NASM source with the real nasm (the encoding oracle); skip if absent."""
    exe = shutil.which("nasm")
    if exe is None:
        pytest.skip("nasm is not installed (Debian package nasm)")

    def assemble(source: str, name: str = "guest") -> bytes:
        src = tmp_path / f"{name}.asm"
        out = tmp_path / f"{name}.bin"
        src.write_text(source)
        subprocess.run([exe, "-f", "bin", "-o", str(out), str(src)], check=True,
                       capture_output=True, timeout=60)
        return out.read_bytes()

    return assemble
