"""vmsim.asm: a NASM-compatible assembler for 32-bit x86 guests (flat binary output).

    image = assemble(source, "guest.asm")   # -> GuestImage (bytes, org, symbols, lines)

Bytes are identical to `nasm -f bin` (2.16) for the supported subset; mistakes raise
AsmError whose str() is `file:line:col: message`.
"""

from __future__ import annotations

from vmsim.asm.errors import AsmError
from vmsim.asm.image import GuestImage, SourceLine

__all__ = ["AsmError", "GuestImage", "SourceLine", "assemble"]


def assemble(source: str, filename: str = "<input>") -> GuestImage:
    """Assemble NASM-syntax 32-bit source into a flat binary image."""
    from vmsim.asm.assembler import Assembler

    return Assembler(source, filename).run()
