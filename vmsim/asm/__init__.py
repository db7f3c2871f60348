"""vmsim.asm: a NASM-compatible assembler for 32-bit x86 guests (flat binary output).

    image = assemble(source, "guest.asm")   # -> GuestImage (bytes, org, symbols, lines)

Bytes are identical to `nasm -f bin` (NASM 2.16, default -Ox) for the supported subset;
the tests check this against the real nasm. Mistakes raise AsmError, whose str() is
`file:line:col: message`.

Where vmsim deliberately differs from NASM:
- NASM's "data exceeds bounds" warnings are errors (`mov al, 300`, `db 300`, `dw 70000`);
  the bounds are NASM's own, so everything NASM accepts silently is accepted here.
- A lone word without a colon (`clii`) is an unknown mnemonic, not an orphan label.
- `resb`/`resw`/... outside .bss emit zeros without NASM's warning.
- A TIMES count may refer to symbols defined later (NASM requires them earlier).
Not supported (clear errors): `bits 16`/16-bit addressing, macros other than
single-line `%define`, floating-point data, INCBIN. Modules: lexer -> expr -> parser
(statements) -> operands -> forms (the instruction table) -> encoder -> assembler
(passes, sections), plus listing and cli.
"""

from __future__ import annotations

from vmsim.asm.errors import AsmError
from vmsim.asm.image import GuestImage, SourceLine

__all__ = ["AsmError", "GuestImage", "SourceLine", "assemble"]


def assemble(source: str, filename: str = "<input>") -> GuestImage:
    """Assemble NASM-syntax 32-bit source into a flat binary image."""
    from vmsim.asm.assembler import Assembler

    try:
        return Assembler(source, filename).run()
    except RecursionError:
        raise AsmError("expression nested too deeply", filename, 1, 1) from None
