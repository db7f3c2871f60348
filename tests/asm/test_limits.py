"""Sources that ask for more than a guest can hold, or never settle: refused with a position.

An image larger than MAX_IMAGE_SIZE (the largest `--memory`, 3072 MiB, less the first MiB
below the load address 0x100000) is refused at the line that crosses it, before any of it
is built; the tracemalloc test holds the assembler to that.
"""

from __future__ import annotations

import tracemalloc

import pytest

from vmsim.asm import AsmError, assemble
from vmsim.asm.assembler import MAX_GUEST_RAM, MAX_IMAGE_SIZE, Assembler

# (source, line, col) of the line that takes the image past the limit
TOO_LARGE = [
    ("times 0x7fffffff db 0\ntimes 0x7fffffff db 0", 2, 1),
    ("resb 6_000_000_000", 1, 1),
    ("nop\n  resd 1 << 30", 2, 3),
    ("resw 0x7fffffff", 1, 1),
    ("resq 1 << 29", 1, 1),
    ("times 1 << 30 dd 0", 1, 1),
    ("times 1 << 29 dq 0", 1, 1),
    ("x: times 1 << 40 db 'abc'", 1, 4),
    ("times 2 times 6_000_000_000 db 0", 1, 9),
    ("mov eax, 1\ntimes 0x40000000 mov eax, 1", 2, 1),
    # many moderately large lines add up
    ("times 1_000_000_000 db 0\n" * 4, 4, 1),
    ("db 1\nalign 0x40000000\ndb 1\nalign 0x40000000\ndb 1\nalign 0x40000000", 6, 1),
    ("align 0x100000000", 1, 1),
    ("section .bss\nresb 0xC0000000", 2, 1),
    ("db 1\nsection .data\nresb 0x80000000\nsection .bss\nresb 0x80000000", 5, 1),
    # section alignment padding counts too: named at the section's first line
    ("db 1\nsection .data align=0x80000000\ndb 1\nsection .bss align=0x80000000\nresb 1", 4, 1),
]


@pytest.mark.parametrize(("source", "line", "col"), TOO_LARGE, ids=[s for s, _, _ in TOO_LARGE])
def test_image_larger_than_a_guest_is_refused_at_its_line(source: str, line: int, col: int) -> None:
    with pytest.raises(AsmError) as info:
        assemble("bits 32\n" + source + "\n", "big.asm")
    e = info.value
    assert (e.file, e.line, e.col) == ("big.asm", line + 1, col), str(e)
    assert "too large" in e.message or "larger than a guest" in e.message


def test_limit_is_the_largest_guest_ram_less_the_load_address() -> None:
    from vmsim.vmm.machine import LOAD_ADDRESS, Machine, MachineConfig

    assert MAX_IMAGE_SIZE == MAX_GUEST_RAM - LOAD_ADDRESS
    with pytest.raises(ValueError, match="memory"):
        Machine(MachineConfig(memory_mib=(MAX_GUEST_RAM >> 20) + 1))


def test_refusing_a_6_gb_source_allocates_next_to_nothing() -> None:
    """Before the fix these lines built their bytes each pass (6 GB of RSS, MemoryError)."""
    sources = [
        "times 6_000_000_000 db 0",
        "resb 6_000_000_000",
        "times 3 times 2_000_000_000 dd 0",
        "times 2_000_000_000 db 0\ntimes 2_000_000_000 db 0\ntimes 2_000_000_000 db 0",
        "section .bss\nresq 750_000_000",
        "align 0x40000000\ndb 1\nalign 0x80000000\ndb 1\nalign 0x80000000\ndb 1",
    ]
    tracemalloc.start()
    try:
        for src in sources:
            with pytest.raises(AsmError, match="too large"):
                assemble("bits 32\nnop\n" + src + "\n", "big.asm")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, f"peak {peak} bytes"


def test_large_reservations_are_not_built_until_the_image() -> None:
    """A 64 MiB .bss and 16 MiB of `times` cost the assembler about what the image holds."""
    src = ("bits 32\norg 0x100000\nmov eax, end\ntimes 16 << 20 db 0xAA\nend:\n"
           "section .bss\nresb 64 << 20\n")
    tracemalloc.start()
    try:
        img = assemble(src, "t.asm")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(img.data) == 5 + (16 << 20)
    assert img.data[5:] == b"\xaa" * (16 << 20)
    assert peak < (16 << 20) * 1.3 + (4 << 20), f"peak {peak} bytes"


def test_times_of_a_relative_jump_is_bounded(nasm: str) -> None:
    """Each copy of `jmp $+2` has its own displacement: encoded copy by copy, so capped."""
    from tests.asm.oracle import nasm_bin

    src = "bits 32\ntimes 1000 jmp $+2\n"
    assert assemble(src).data == nasm_bin(src)
    with pytest.raises(AsmError) as info:
        assemble("bits 32\nnop\n  times 100000 jmp $+2\n")
    assert (info.value.line, info.value.col) == (3, 3)


# (source, line, col) of the statement whose size or value keeps changing
NEVER_SETTLE = [
    ("nop\na: times (b - a) + 1 db 0\nb:", 2, 4),
    ("nop\nnop\na: times 1 - (b - a) db 0\nb:", 3, 4),
    ("dd x\nx equ y + 1\ny equ x", 2, 1),
]


@pytest.mark.parametrize(("source", "line", "col"), NEVER_SETTLE,
                         ids=[s for s, _, _ in NEVER_SETTLE])
def test_did_not_converge_names_the_line(source: str, line: int, col: int) -> None:
    with pytest.raises(AsmError, match="did not converge") as info:
        assemble("bits 32\n" + source + "\n", "loop.asm")
    assert (info.value.line, info.value.col) == (line + 1, col), str(info.value)


def test_nesting_too_deep_names_the_line_and_column() -> None:
    deep = "(" * 70 + "1" + ")" * 70
    with pytest.raises(AsmError, match="nested too deeply") as info:
        assemble(f"bits 32\nnop\nmov eax, {deep}\n", "deep.asm")
    assert (info.value.line, info.value.col) == (3, 10 + 64)
    with pytest.raises(AsmError, match="nested too deeply") as info:
        assemble("bits 32\nnop\nnop\n  dd " + "-" * 100 + "1\n", "deep.asm")
    assert (info.value.line, info.value.col) == (4, 6 + 64)


def test_long_flat_expressions_are_not_too_deep(nasm: str) -> None:
    """`1+1+...` is a chain, not nesting: NASM takes 5000 terms, and so does vmsim."""
    from tests.asm.oracle import nasm_bin

    src = "bits 32\ndd " + "+".join(["3"] * 5000) + "\nmov eax, " + "-".join(["7"] * 3000) + "\n"
    assert assemble(src).data == nasm_bin(src)


def _passes(src: str) -> int:
    asm = Assembler(src, "t.asm")
    count = 0
    real = asm._pass

    def counted(p):  # type: ignore[no-untyped-def]
        nonlocal count
        count += 1
        return real(p)

    asm._pass = counted  # type: ignore[method-assign]
    asm.run()
    return count


def test_jump_dense_source_takes_few_passes_and_matches_nasm(nasm: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """NASM needs a pass per few dozen jumps here (23 passes for 100 KB, minutes for 2 MB):
    early passes see later forward jumps out of range. vmsim's pass count is bounded
    (NASM's passes, then a few that read forward references with the shift so far), and
    its bytes are still NASM's."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.asm.oracle import nasm_bin
    from vmsim.asm.assembler import NASM_PASSES

    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    try:
        from asm_bench import make_source
    finally:
        sys.path.pop(0)
    src = make_source(60_000)
    bound = NASM_PASSES + 4
    assert _passes(src) <= bound
    (tmp_path / "s.asm").write_text(src)
    r = subprocess.run([nasm, "-f", "bin", "--limit-passes", str(bound), "-o",
                        str(tmp_path / "s.bin"), str(tmp_path / "s.asm")],
                       capture_output=True, text=True, check=False)
    assert r.returncode != 0 and "passes" in r.stderr  # NASM itself needs more
    assert assemble(src).data == nasm_bin(src)
