"""Decode the instruction at a linear address into a ready-to-call handler (cold path)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import iced_x86
from iced_x86 import Register

from vmsim.hw import exceptions as X
from vmsim.hw.insn import TABLE, NotInSubset
from vmsim.hw.insn.table import opcode_byte

if TYPE_CHECKING:
    from vmsim.hw.cpu import Cpu

_FORMATTER = iced_x86.Formatter(iced_x86.FormatterSyntax.NASM)


def format_instruction(ins: iced_x86.Instruction) -> str:
    return _FORMATTER.format(ins)


def decode_instruction(cpu: Cpu, eip: int) -> tuple[iced_x86.Instruction, list[int]]:
    """The instruction at `eip` as an instruction fetch sees it (may raise #PF)."""
    data, frames = cpu.fetch_bytes(eip)
    return _decode_fetched(cpu, eip, data, frames)[:2]


def _decode_fetched(cpu: Cpu, eip: int, data: bytes,
                    frames: list[int]) -> tuple[iced_x86.Instruction, list[int], bool]:
    """Decode what fetch_bytes gave, fetching from the next page for an instruction
    running into it; the flag says whether the first fetch held all of it."""
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
        return ins, frames, False
    return ins, frames, True


DECODE_MEMO_LIMIT = 1 << 13


def decode_at(cpu: Cpu, eip: int) -> Callable[[], int]:
    if eip in cpu.decoded:
        handler = cpu.refetch(eip)  # decoded before a CR3 load
        if handler is not None:
            return handler
    data, frames = cpu.fetch_bytes(eip)
    memo = cpu.decode_memo
    hit = memo.get((eip, data))
    if hit is not None:
        # The same bytes at the same EIP, decoded since the handlers were last made:
        # the same instruction and handler (the fetch above is made as before).
        ins, handler = hit
    else:
        ins, frames, whole = _decode_fetched(cpu, eip, data, frames)
        handler = compile_instruction(cpu, ins)
        # An instruction from two pages is decoded each time (its second fetch), and so
        # is one not in vmsim's subset (its handler holds bytes read at decode time).
        if whole and not getattr(handler, "not_in_subset", False):
            if len(memo) >= DECODE_MEMO_LIMIT:
                memo.clear()
            memo[(eip, data)] = (ins, handler)
    cpu.note_code(eip, frames, handler, ins.len)
    cpu.note_decoded(eip, ins, frames, handler)
    return handler


def compile_instruction(cpu: Cpu, ins: iced_x86.Instruction) -> Callable[[], int]:
    if ins.is_invalid:
        return _raise_ud
    factory = TABLE.get(ins.mnemonic)
    try:
        if factory is None:
            raise NotInSubset
        handler = factory(ins, cpu.ctx)
    except NotInSubset:
        return _not_in_subset(cpu, ins)
    if cpu.seg_classes is not None or ins.segment_prefix == Register.CS:
        return _segment_checked(cpu, ins, handler)
    return handler


_INFO = iced_x86.InstructionInfoFactory()
_WRITES = {iced_x86.OpAccess.WRITE, iced_x86.OpAccess.COND_WRITE,
           iced_x86.OpAccess.READ_WRITE, iced_x86.OpAccess.READ_COND_WRITE}


def _segment_checked(cpu: Cpu, ins: iced_x86.Instruction,
                     handler: Callable[[], int]) -> Callable[[], int]:
    """The instruction, or the fault its segment use raises first (SDM Vol. 2, each
    instruction's Protected Mode Exceptions: "#GP(0) If the DS, ES, FS, or GS register is
    used to access memory and it contains a NULL segment selector", "If the destination
    operand is located in a non-writable segment"; #SS(0) for SS). Decided at decode time:
    the CPU decodes again whenever a segment's class changes (Cpu._segments_changed)."""
    from vmsim.hw.cpu import SEG_EXECUTE_ONLY, SEG_OK, SEG_READ_ONLY, SEG_UNUSABLE, SS

    classes = cpu.seg_classes
    for m in _INFO.info(ins).used_memory():
        if m.access == iced_x86.OpAccess.NO_MEM_ACCESS:
            continue
        sreg = m.segment - Register.ES
        cls = classes[sreg] if classes is not None else (SEG_READ_ONLY if sreg == 1 else SEG_OK)
        write = m.access in _WRITES
        if cls in (SEG_UNUSABLE, SEG_EXECUTE_ONLY) or (write and cls == SEG_READ_ONLY):
            vector = X.SS if sreg == SS else X.GP
            break
    else:
        return handler
    r = cpu.r
    counted = ins.is_string_instruction and (ins.has_rep_prefix or ins.has_repne_prefix)

    def segment_fault() -> int:
        if counted and not r[1]:
            return handler()  # REP with ECX = 0 accesses no memory
        raise X.CpuException(vector, 0)
    return segment_fault


def _raise_ud() -> int:
    raise X.ud()


def _x87(ins: iced_x86.Instruction) -> bool:
    """An x87 instruction: an escape opcode D8-DF (SDM Vol. 2 Appendix A.4)."""
    info = ins.op_code()
    return info.table == iced_x86.OpCodeTableKind.NORMAL and \
        info.encoding == iced_x86.EncodingKind.LEGACY and 0xD8 <= opcode_byte(ins) <= 0xDF


def _not_in_subset(cpu: Cpu, ins: iced_x86.Instruction) -> Callable[[], int]:
    text = format_instruction(ins)
    eip = ins.ip32
    raw = cpu.mem.read_bytes(cpu.mmu.probe(eip) or 0, ins.len).hex()
    events = cpu.events
    from vmsim.hw.cpu import CR0_EM, CR0_TS

    mmu = cpu.mmu
    x87 = _x87(ins)
    em_ts = CR0_EM | CR0_TS

    def handler() -> int:
        # An x87 instruction with CR0.EM or CR0.TS set is #NM whether or not an FPU is
        # there (SDM Vol. 3A 2.5, CR0.EM and CR0.TS; Table 12-8): how a kernel emulates the
        # FPU, or switches its state lazily. This CPU has none: otherwise #UD.
        if x87 and mmu.cr0 & em_ts:
            raise X.CpuException(X.NM)
        if events is not None:
            events.emit("not_in_subset", cpu.name, eip=eip, text=text, bytes=raw)
        raise X.ud()

    handler.not_in_subset = True  # type: ignore[attr-defined]  # kept out of blocks
    return handler
