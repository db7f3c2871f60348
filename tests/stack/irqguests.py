"""Small interrupt guests assembled in the tests, and a run that keeps every VM-level event.

Every guest here remaps the PIC pair to vectors 0x20-0x2F (ICW1 0x11, ICW2 0x20/0x28,
ICW3 4/2, ICW4 1: the 8259A datasheet's initialization sequence), opens only IRQ 0, and
programs PIT channel 0 in mode 2 with a small reload, so that IRQ 0 comes every
RELOAD / 1.193182 MHz. Its IRQ 0 handler counts the tick, keeps the interrupted EIP,
masks IRQ 0 (exactly one tick is ever taken), sends a non-specific EOI and returns. The
guest ends through isa-debug-exit: status 1 when its own checks passed, 3 when one
failed, 5 for an unexpected vector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmsim.asm import assemble
from vmsim.asm.image import GuestImage
from vmsim.events import CATALOGUE, EventStream
from vmsim.session import Outcome, Session
from vmsim.trace import HIGH_RATE
from vmsim.vmm.machine import MachineConfig

OK, FAILED, UNEXPECTED = 1, 3, 5  # isa-debug-exit statuses: (value << 1) | 1
PIT_HZ = 1_193_182  # the 8254's input clock (virtualization-facts.md 7.3)
LIMIT = 5_000_000  # instructions: every guest here needs far fewer
VM_KINDS = [k for k in CATALOGUE if k not in HIGH_RATE]

HEAD = """
bits 32
org 0x100000
RELOAD      equ {reload}
SPIN        equ {spin}
DEBUG_EXIT  equ 0x501

start:
        cli
        lgdt [gdt_descriptor]
        jmp 0x08:.cs
.cs:    mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov esp, 0x90000
        xor ecx, ecx
.fill:  mov eax, unexpected
        call set_gate
        inc ecx
        cmp ecx, 256
        jb .fill
        mov ecx, 0x20
        mov eax, irq0
        call set_gate
        lidt [idt_descriptor]
        mov al, 0x11
        out 0x20, al
        out 0xA0, al
        mov al, 0x20
        out 0x21, al
        mov al, 0x28
        out 0xA1, al
        mov al, 4
        out 0x21, al
        mov al, 2
        out 0xA1, al
        mov al, 1
        out 0x21, al
        out 0xA1, al
        mov al, 0xFE
        out 0x21, al
        mov al, 0xFF
        out 0xA1, al
        mov al, 0x34
        out 0x43, al
        mov ax, RELOAD
        out 0x40, al
        mov al, ah
pit_armed:
        out 0x40, al
"""

TAIL = """
exit_ok:
        mov dx, DEBUG_EXIT
        mov al, 0
        out dx, al
        cli
        hlt
fail:
        mov dx, DEBUG_EXIT
        mov al, 1
        out dx, al
        cli
        hlt
unexpected:
        mov dx, DEBUG_EXIT
        mov al, 2
        out dx, al
        cli
        hlt

irq0:
        push eax
        inc dword [ticks]
        mov eax, [esp + 4]
        mov [frame_eip], eax
        mov al, 0xFF
        out 0x21, al
        mov al, 0x20
        out 0x20, al
        pop eax
        iret

set_gate:
        push edx
        mov edx, eax
        and edx, 0xFFFF
        or edx, 0x08 << 16
        mov [idt + ecx*8], edx
        mov edx, eax
        and edx, 0xFFFF0000
        or edx, 0x8E00
        mov [idt + ecx*8 + 4], edx
        pop edx
        ret

        align 4
ticks:      dd 0
frame_eip:  dd 0
        align 8
gdt:    dq 0
        dq 0x00CF9A000000FFFF
        dq 0x00CF92000000FFFF
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
        align 8
idt:    times 256 dq 0
idt_descriptor:
        dw 256 * 8 - 1
        dd idt
"""


def guest(body: str, reload: int = 100, spin: int = 200_000) -> GuestImage:
    """HEAD + body + TAIL. With the defaults, IRQ 0 is raised every 100 / 1.193182 MHz
    (about 251,000 cycles at NOMINAL_HZ), and a `dec ecx; jnz` loop of SPIN rounds with
    IF=0 (about 400,000 guest instructions) outlasts one period: IRQ 0 is pending after it."""
    return assemble(HEAD.format(reload=reload, spin=spin) + body + TAIL, "irqguest.asm")


@dataclass
class Run:
    image: GuestImage
    outcome: Outcome
    serial: bytes
    events: list[dict] = field(default_factory=list)

    @property
    def status(self) -> int | None:
        return self.outcome.exit_status

    def of(self, *kinds: str, **match) -> list[dict]:
        return [e for e in self.events if e["kind"] in kinds
                and all(e.get(k) == v for k, v in match.items())]

    def sym(self, name: str) -> int:
        return self.image.symbols[name]


def run(image: GuestImage | str, irqchip: str = "kernel", paging: str = "ept", smp: int = 1,
        limit: int = LIMIT, serial_in: bytes = b"") -> Run:
    """The guest through Session on the simulated kvm.ko, every VM-level event kept (what
    `vmsim run --trace` writes at level vm)."""
    events = EventStream()
    got: list[dict] = []
    events.subscribe(lambda e: got.append(e.to_dict()), VM_KINDS)
    img = image if isinstance(image, GuestImage) else None
    s = Session(image, "sim", MachineConfig(smp=smp, irqchip=irqchip, serial_in=serial_in),
                max_instructions=limit, events=events, paging=paging)
    outcome = s.run()
    return Run(img or s.image, outcome, bytes(s.serial), got)


def pit_period_cycles(reload: int, hz: int) -> float:
    """Mode 2 raises OUT once every `reload` input clocks (8254 datasheet, mode 2)."""
    return reload * hz / PIT_HZ
