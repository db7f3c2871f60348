"""Compiled C on every backend: tests/stack/cguest/cguest.c, built by the host's gcc (-m32,
freestanding) at several optimization levels, with and without -fcf-protection (ENDBR32 at
every function), for the Pentium (no CMOV) and for gcc's default; each flat binary runs on
bare metal, both MMUs and the host's KVM and must print what qemu-system-i386 prints and
what this file works out in Python from the program's own arithmetic (zlib's CRC-32, a
stable sort, C's truncating division ...). What compilers emit is checked as a whole, not
instruction by instruction: the first build found REP BSF (__builtin_ctz) and ENDBR32
raising #UD. Skipped where gcc cannot build 32-bit code (Debian package gcc)."""

from __future__ import annotations

import shutil
import subprocess
import zlib
from functools import cache
from pathlib import Path

import pytest

from tests.stack.stackrun import printed_lines
from tests.stack.test_qemu import run_qemu

HERE = Path(__file__).resolve().parent / "cguest"
BUILDS = {
    "O0": ["-O0"],
    "O2": ["-O2"],
    "Os": ["-Os"],
    "O2-cf-protection": ["-O2", "-fcf-protection=full"],
    "O3-pentium": ["-O3", "-march=pentium"],
}
FLAGS = ["-m32", "-ffreestanding", "-nostdlib", "-static", "-fno-pic", "-fno-pie", "-no-pie",
         "-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-Wall", "-Wextra",
         "-Werror", "-Wl,--build-id=none", "-T", str(HERE / "guest.ld")]


@cache
def build(name: str, out: Path) -> Path:
    """The flat binary of cguest.c built with BUILDS[name], in `out`."""
    gcc, objcopy = shutil.which("gcc"), shutil.which("objcopy")
    if gcc is None or objcopy is None:
        pytest.skip("gcc and objcopy are not installed (Debian packages gcc, binutils)")
    elf, flat = out / f"{name}.elf", out / f"{name}.bin"
    p = subprocess.run([gcc, *FLAGS, *BUILDS[name], "-o", str(elf), str(HERE / "cguest.c")],
                       capture_output=True, text=True)
    if p.returncode != 0:
        if "cannot find" in p.stderr or "unrecognized" in p.stderr or "bits/" in p.stderr:
            pytest.skip(f"gcc cannot build 32-bit freestanding code here: {p.stderr.strip()[:200]}")
        raise AssertionError(p.stderr)
    subprocess.run([objcopy, "-O", "binary", str(elf), str(flat)], check=True)
    return flat


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cguest")


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def expected() -> list[str]:
    """What cguest.c prints, worked out from its source's arithmetic."""
    seed = 12345

    def nxt() -> int:
        nonlocal seed
        seed = (seed * 1103515245 + 12345) & 0xFFFFFFFF
        return seed

    buf = bytes((nxt() >> 16) & 0xFF for _ in range(4096))
    lines = [f"crc {zlib.crc32(buf):08x}",
             f"copy {zlib.crc32(buf[3:1003] + b'Z' * 77):08x}"]
    items = []
    for i in range(40):
        key = (nxt() >> 8) - (1 << 23)
        w = (nxt() >> 16) & 0xFFFF
        items.append((key, w - 0x10000 if w & 0x8000 else w, i))
    items.sort(key=lambda t: t[0])  # insertion sort: stable, as sorted() is
    lines.append("sort " + " ".join(f"{k}:{w}:{t}" for k, w, t in items[::13]))
    div = []
    for i in range(6):
        a, b = _s32(nxt()), (nxt() >> 20) - 2048
        b = b or 7
        q = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)  # C truncates toward 0
        div.append(f"{q},{a - q * b},{a >> (i + 3)}")
    lines.append("div " + " ".join(div))
    acc = 1
    for _ in range(5):
        hi, lo = nxt(), nxt()
        acc = (acc * (hi << 32 | lo) + (acc >> 17) + _s32(nxt()) * 128) % (1 << 64)
    lines.append(f"mul64 {acc:016x}")
    bits = []
    for i in range(5):
        v = nxt() | 1 << (i * 7)
        bits.append(f"{(v & -v).bit_length() - 1},{32 - v.bit_length()}")
    lines.append("bits " + " ".join(bits))
    x = 7
    ops = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a ^ b, lambda a, b: a * b]
    for _ in range(12):
        k, y = nxt() >> 30, nxt() >> 24
        x = _s32(ops[k](x, y))
    fib = [0, 1]
    while len(fib) <= 20:
        fib.append(fib[-1] + fib[-2])
    table = [17, -3, 256, 5, 99, -40, 8, 1000, 0]
    total = sum(table[nxt() % 9] for _ in range(50))
    lines.append(f"calls {x} {fib[20]} {total}")
    return [w for line in lines for w in line.split()]


@pytest.mark.parametrize("way", ["bare", "sim-ept", "sim-shadow", "kvm"])
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_compiled_c(name: str, way: str, out_dir: Path) -> None:
    flat = build(name, out_dir)
    status, words = printed_lines(flat, way)
    assert (status, words) == (1, expected())
    printed, qemu_status = run_qemu(flat.read_bytes(), out_dir)
    assert (qemu_status, printed.decode().split()) == (status, words)
