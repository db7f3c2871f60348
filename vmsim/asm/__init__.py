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
- Images are bounded by what a guest can hold: at most 3071 MiB from ORG to the end of
  the last section, .bss and section padding included (the largest `--memory`, 3072 MiB,
  less the first MiB below the load address 0x100000). A line that crosses it is refused
  with its position before anything is built; `times`, `resb` and `align` output is kept
  as one copy and a count until the image is written.
- `times N` of an instruction whose bytes change with its address (a relative jump to a
  fixed target) is refused beyond 65536 copies; parentheses and unary operators nest at
  most 64 deep; a line's %define expansion is at most 100000 tokens.
- Jump sizing runs NASM's own passes (same bytes as NASM whenever NASM settles within
  8 passes, which every small guest does), then passes that settle in a few more where
  NASM would need one pass per few dozen jumps (a 2 MB jump-dense file: 3 minutes in
  NASM). Past those 8 passes a jump NASM leaves near 128-131 bytes from its target may
  be short here. "did not converge" (after 64 passes) names a line that kept changing.
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
    except RecursionError:  # each line catches its own; this is the last resort
        raise AsmError("expression nested too deeply", filename, 1, 1) from None
