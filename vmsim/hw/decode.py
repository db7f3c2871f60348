"""Decode the instruction at a linear address into a ready-to-call handler (cold path)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import iced_x86

from vmsim.hw import exceptions as X
from vmsim.hw.insn import TABLE, NotInSubset

if TYPE_CHECKING:
    from vmsim.hw.cpu import Cpu

_FORMATTER = iced_x86.Formatter(iced_x86.FormatterSyntax.NASM)


def format_instruction(ins: iced_x86.Instruction) -> str:
    return _FORMATTER.format(ins)


def decode_instruction(cpu: Cpu, eip: int) -> tuple[iced_x86.Instruction, list[int]]:
    """The instruction at `eip` as an instruction fetch sees it (may raise #PF)."""
    data, frames = cpu.fetch_bytes(eip)
    decoder = iced_x86.Decoder(32, data, ip=eip)
    ins = decoder.decode()
    if decoder.last_error == iced_x86.DecoderError.NO_MORE_BYTES and len(data) < 15:
        # The instruction runs into the next page: fetch from it too (its #PF, if any).
        more, frame = cpu.fetch_more(eip, len(data))
        data += more
        decoder = iced_x86.Decoder(32, data, ip=eip)
        ins = decoder.decode()
        if ins.len > len(data) - len(more):
            frames.append(frame)
    return ins, frames


def decode_at(cpu: Cpu, eip: int) -> Callable[[], int]:
    ins, frames = decode_instruction(cpu, eip)
    handler = compile_instruction(cpu, ins)
    cpu.note_code(eip, frames, handler)
    return handler


def compile_instruction(cpu: Cpu, ins: iced_x86.Instruction) -> Callable[[], int]:
    if ins.is_invalid:
        return _raise_ud
    factory = TABLE.get(ins.mnemonic)
    try:
        if factory is None:
            raise NotInSubset
        return factory(ins, cpu.ctx)
    except NotInSubset:
        return _not_in_subset(cpu, ins)


def _raise_ud() -> int:
    raise X.ud()


def _not_in_subset(cpu: Cpu, ins: iced_x86.Instruction) -> Callable[[], int]:
    text = format_instruction(ins)
    eip = ins.ip32
    raw = cpu.mem.read_bytes(cpu.mmu.probe(eip) or 0, ins.len).hex()
    events = cpu.events

    def handler() -> int:
        if events is not None:
            events.emit("not_in_subset", cpu.name, eip=eip, text=text, bytes=raw)
        raise X.ud()

    return handler
