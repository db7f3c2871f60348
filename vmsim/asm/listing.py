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
        data = pl.data
        if not data:
            rows.append(f"{st.line:6d} {'':33}{st.text}".rstrip())
            continue
        chunks = [data[i:i + BYTES_PER_ROW] for i in range(0, len(data), BYTES_PER_ROW)]
        shown = chunks[:MAX_ROWS]
        for k, chunk in enumerate(shown):
            hexs = chunk.hex().upper() + ("-" if k + 1 < len(chunks) else "")
            text = st.text if k == 0 else ""
            rows.append(f"{st.line:6d} {addr + k * BYTES_PER_ROW:08X} {hexs:<24}{text}".rstrip())
        if len(chunks) > MAX_ROWS:
            rest = len(data) - MAX_ROWS * BYTES_PER_ROW
            rows.append(f"{st.line:6d} {addr + MAX_ROWS * BYTES_PER_ROW:08X} "
                        f"<{rest} more bytes>")
    return "\n".join(rows) + "\n"
