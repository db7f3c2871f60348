"""Assembler throughput: lines/s and MB/s on generated sources of 0.5, 1, 2 and 5 MB.

The sources are typical guest code, the same mix at every size: labels and local labels,
MOVs with registers, immediates and memory operands, forward and backward jumps and
calls (short and near, so the pass loop has jumps to size), `db` strings, `times`
padding and EQUs. Assembly time should grow linearly with the source: the rates printed
for each size should stay about the same. Jump-dense code like this is NASM's worst case
(it needs a pass per few dozen jumps: 6 s for 0.5 MB, 32 s for 1 MB, 177 s for 2 MB);
before issue 8, vmsim followed it and gave up ("did not converge", 64 passes) from
about 0.3 MB (42 s to say so); 0.2 MB took 20 s.
Measured on the 2-core build machine after the fix: about 3,000-6,000 lines/s at every
size, 5 MB in 45-85 s depending on load.

    .venv/bin/python benchmarks/asm_bench.py [--sizes 0.5,1,2,5] [--repeat N]
"""

from __future__ import annotations

import argparse
import random
import time

from vmsim.asm import assemble


def make_source(nbytes: int, seed: int = 8) -> str:
    """About `nbytes` of NASM source, deterministic for a seed."""
    rnd = random.Random(seed)
    regs = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp")
    out = ["bits 32", "org 0x100000", "start:"]
    size = 0
    block = 0
    while size < nbytes:
        b = f"f{block}"
        lines = [
            f"{b}:",
            f"    mov {rnd.choice(regs)}, {rnd.randrange(1 << 32)}",
            f"    mov {rnd.choice(regs)}, [{rnd.choice(regs)} + {rnd.randrange(256)}]",
            f"    mov dword [{b}.data + 4], {rnd.choice(regs)}",
            ".loop:",
            f"    add {rnd.choice(regs)}, {rnd.randrange(-128, 128)}",
            f"    cmp {rnd.choice(regs)}, {b}_k",
            "    jne .loop",
            f"    jz f{block + 1}",  # forward: sized by the pass loop
            f"    call f{block + rnd.randrange(1, 4)}",
            "    jmp .skip",
            f".data: db 'block {block}', 13, 10, 0",
            f"    dd {b}, .loop",
            f"    times {rnd.randrange(1, 8)} db 0x90",
            ".skip:",
            f"{b}_k equ {rnd.randrange(1 << 16)}",
        ]
        if rnd.random() < 0.1:
            lines.append(f"    times {rnd.randrange(100, 300)} nop")  # far enough to need jmp near
        for ln in lines:
            size += len(ln) + 1
        out += lines
        block += 1
    for k in range(block, block + 4):
        out.append(f"f{k}: ret")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0.5,1,2,5", help="source sizes in MB (default 0.5,1,2,5)")
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs per size (default 1)")
    args = ap.parse_args()
    print(f"{'source':>8} {'lines':>9} {'image':>9} {'seconds':>8} {'lines/s':>9} {'MB/s':>6}")
    for mb in (float(s) for s in args.sizes.split(",")):
        src = make_source(int(mb * 1_000_000))
        nlines = src.count("\n")
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            image = assemble(src, "bench.asm")
            best = min(best, time.perf_counter() - t0)
        print(f"{len(src) / 1e6:6.2f}MB {nlines:9d} {len(image.data):9d} {best:8.2f} "
              f"{nlines / best:9.0f} {len(src) / 1e6 / best:6.3f}")


if __name__ == "__main__":
    main()
