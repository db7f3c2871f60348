"""Run the real NASM as the oracle: same source in, flat binary out."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

NASM = shutil.which("nasm")


def nasm_bin(source: str) -> bytes:
    """Assemble with `nasm -f bin` (default -Ox); raise RuntimeError with NASM's stderr."""
    assert NASM is not None
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "t.asm"
        out = Path(tmp) / "t.bin"
        src.write_text(source)
        r = subprocess.run([NASM, "-f", "bin", "-o", str(out), str(src)],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        return out.read_bytes()


def first_difference(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))
