"""A listing in the layout of `nasm -l`: line number, address, bytes, source text.

Unlike NASM, the address column is absolute (ORG included), as breakpoints see it.
Lines with more than nine bytes continue on following rows, the first row ending in '-'.
"""

from __future__ import annotations

from vmsim.asm.assembler import Placed

BYTES_PER_ROW = 9
MAX_ROWS = 8  # `times 510 db 0` would otherwise print 57 rows


def format_listing(placed: list[Placed], bases: dict[str, int]) -> str:
    rows: list[str] = []
    for pl in placed:
        st = pl.stmt
        addr = bases[pl.section] + pl.offset
        size = pl.size
        if not size:
            rows.append(f"{st.line:6d} {'':33}{st.text}".rstrip())
            continue
        data = pl.head(MAX_ROWS * BYTES_PER_ROW)  # `resb 1 << 30` is not built for this
        nrows = -(-size // BYTES_PER_ROW)
        shown = [data[i:i + BYTES_PER_ROW] for i in range(0, len(data), BYTES_PER_ROW)]
        for k, chunk in enumerate(shown):
            hexs = chunk.hex().upper() + ("-" if k + 1 < nrows else "")
            text = st.text if k == 0 else ""
            rows.append(f"{st.line:6d} {addr + k * BYTES_PER_ROW:08X} {hexs:<24}{text}".rstrip())
        if nrows > MAX_ROWS:
            rest = size - MAX_ROWS * BYTES_PER_ROW
            rows.append(f"{st.line:6d} {addr + MAX_ROWS * BYTES_PER_ROW:08X} "
                        f"<{rest} more bytes>")
    return "\n".join(rows) + "\n"
