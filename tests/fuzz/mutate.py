"""Mutators over bytes and over lines: what the fuzz tests feed vmsim.

All take a `random.Random`, so a seed gives the same inputs on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

# Byte strings worth dropping into a guest: instructions that leave the guest or change
# how memory is translated, and values at the edges of fields.
GUEST_TOKENS: tuple[bytes, ...] = (
    b"\x0f\x01\xc1",  # vmcall
    b"\x0f\x22\xd8",  # mov cr3, eax
    b"\x0f\x22\xc0",  # mov cr0, eax
    b"\x0f\x22\xe0",  # mov cr4, eax
    b"\x0f\x20\xc0",  # mov eax, cr0
    b"\x0f\x01\x38",  # invlpg [eax]
    b"\x0f\x01\x10",  # lgdt [eax]
    b"\x0f\x01\x18",  # lidt [eax]
    b"\x0f\x00\xd8",  # ltr ax
    b"\x0f\xa2",  # cpuid
    b"\x0f\x31",  # rdtsc
    b"\x0f\x32", b"\x0f\x30",  # rdmsr, wrmsr
    b"\xcf", b"\x66\xcf",  # iret(d), iret (16-bit)
    b"\xcd\x80", b"\xcd\x0e", b"\xcc", b"\xf1", b"\xce",  # int n, int3, int1, into
    b"\xf4", b"\xfa", b"\xfb", b"\x9d", b"\x9c",  # hlt cli sti popf pushf
    b"\xee", b"\xec", b"\xef", b"\xed", b"\x6e", b"\xf3\x6e", b"\xf3\x6c",  # out/in/outs/ins
    b"\x66\xba\x01\x05",  # mov dx, 0x501 (isa-debug-exit)
    b"\x66\xba\xf8\x03",  # mov dx, 0x3f8 (COM1)
    b"\xb8\x00\x80\x0b\x00",  # mov eax, 0xb8000 (VGA)
    b"\xb8\x00\x00\x00\xff",  # mov eax, 0xff000000 (above RAM)
    b"\xb8\x00\x00\x0a\x00",  # mov eax, 0xa0000 (VGA hole)
    b"\xb8\x01\x00\x00\x80",  # mov eax, 0x80000001 (PG|PE)
    b"\xb8\x10\x00\x00\x00",  # mov eax, 0x10 (CR4.PSE)
    b"\xea\x00\x00\x10\x00\x08\x00",  # jmp far 0x08:0x100000
    b"\xeb\xfe",  # jmp $
    b"\x8e\xd8", b"\x8e\xd0",  # mov ds, ax / mov ss, ax
    b"\xf3\xa4", b"\xf3\xab", b"\xf2\xae",  # rep movsb, rep stosd, repne scasb
    b"\x00\x00", b"\xff\xff\xff\xff", b"\x7f", b"\x80", b"\x00\x10\x00\x00",
)


def bit_flip(rng: random.Random, data: bytearray) -> None:
    for _ in range(rng.choice((1, 1, 2, 4, 8))):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)


def byte_set(rng: random.Random, data: bytearray) -> None:
    for _ in range(rng.randrange(1, 5)):
        data[rng.randrange(len(data))] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))


def byte_insert(rng: random.Random, data: bytearray) -> None:
    i = rng.randrange(len(data) + 1)
    data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))


def byte_delete(rng: random.Random, data: bytearray) -> None:
    if len(data) > 1:
        i = rng.randrange(len(data))
        del data[i:i + rng.randrange(1, min(16, len(data) - i) + 1)]


def token_insert(rng: random.Random, data: bytearray) -> None:
    i = rng.randrange(len(data) + 1)
    tok = rng.choice(GUEST_TOKENS)
    if rng.random() < 0.5:
        data[i:i] = tok
    else:
        data[i:i + len(tok)] = tok


def chunk_copy(rng: random.Random, data: bytearray) -> None:
    """Repeat a piece of the input elsewhere (duplicates instructions, tables)."""
    a = rng.randrange(len(data))
    piece = data[a:a + rng.randrange(1, 65)]
    b = rng.randrange(len(data) + 1)
    data[b:b] = piece


BYTE_MUTATORS: tuple[Callable[[random.Random, bytearray], None], ...] = (
    bit_flip, byte_set, byte_insert, byte_delete, token_insert, chunk_copy,
)


def splice(rng: random.Random, a: bytes, b: bytes) -> bytes:
    """The head of one input with the tail of another."""
    return a[:rng.randrange(len(a) + 1)] + b[rng.randrange(len(b) + 1):]


def mutate_bytes(rng: random.Random, seeds: Sequence[bytes], max_len: int = 1 << 16) -> bytes:
    """One input: a seed (or a splice of two) under 1 to 8 byte mutations."""
    base = rng.choice(seeds)
    if len(seeds) > 1 and rng.random() < 0.2:
        base = splice(rng, base, rng.choice(seeds))
    data = bytearray(base or b"\x90")
    for _ in range(rng.choice((1, 1, 2, 3, 5, 8))):
        if not data:
            data.append(rng.randrange(256))
        rng.choice(BYTE_MUTATORS)(rng, data)
    return bytes(data[:max_len]) or b"\x90"


def random_bytes(rng: random.Random, max_len: int = 4096) -> bytes:
    n = rng.choice((1, 2, 16, 64, 512, max_len, rng.randrange(1, max_len + 1)))
    return rng.randbytes(n)


def mutate_lines(rng: random.Random, lines: list[str], pool: Sequence[str]) -> list[str]:
    """Line-level mutations of a text file: drop, duplicate, swap, insert from `pool`,
    and byte damage inside one line."""
    out = list(lines) or [""]
    for _ in range(rng.choice((1, 1, 2, 4))):
        i = rng.randrange(len(out))
        op = rng.randrange(6)
        if op == 0 and len(out) > 1:
            del out[i]
        elif op == 1:
            out.insert(i, out[i])
        elif op == 2:
            j = rng.randrange(len(out))
            out[i], out[j] = out[j], out[i]
        elif op == 3 and pool:
            out.insert(i, rng.choice(pool))
        elif op == 4 and out[i]:
            k = rng.randrange(len(out[i]))
            out[i] = out[i][:k] + out[i][k + rng.randrange(1, 4):]
        else:
            k = rng.randrange(len(out[i]) + 1)
            junk = rng.choice(("{", "}", '"', "\\", "\x00", "\u00e9", "[", "]", ",", ":",
                               "-1", "1e999", "null", "9" * 30, " "))
            out[i] = out[i][:k] + junk + out[i][k:]
    return out
