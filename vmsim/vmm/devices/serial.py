"""16550A UART (QEMU hw/char/serial.c), enough for polling drivers: no interrupts yet.

Offsets from the base (COM1 = 0x3F8): 0 RBR/THR (DLL when LCR.DLAB), 1 IER (DLM), 2 IIR/FCR,
3 LCR, 4 MCR, 5 LSR, 6 MSR, 7 SCR.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

LSR_DR, LSR_THRE, LSR_TEMT = 0x01, 0x20, 0x40
LCR_DLAB = 0x80
MCR_LOOP = 0x10


class Serial16550:
    def __init__(self, output: Callable[[bytes], None] | None = None, rx: bytes = b""):
        self.output = output
        self.transmitted = bytearray()
        self.rx: deque[int] = deque(rx)
        self.ier = 0
        self.lcr = 0
        self.mcr = 0
        self.scr = 0
        self.fcr = 0
        self.dll = 0x0C  # 9600 baud after reset (QEMU's divider default)
        self.dlm = 0

    def feed(self, data: bytes) -> None:
        """Bytes arriving on the line (the guest reads them from RBR)."""
        self.rx.extend(data)

    def read(self, offset: int, size: int) -> int:
        dlab = self.lcr & LCR_DLAB
        if offset == 0:
            if dlab:
                return self.dll
            return self.rx.popleft() if self.rx else 0
        if offset == 1:
            return self.dlm if dlab else self.ier
        if offset == 2:
            return 0xC1 if self.fcr & 1 else 0x01  # no interrupt pending
        if offset == 3:
            return self.lcr
        if offset == 4:
            return self.mcr
        if offset == 5:
            return LSR_THRE | LSR_TEMT | (LSR_DR if self.rx else 0)
        if offset == 6:
            return 0xB0 if not self.mcr & MCR_LOOP else 0  # CTS DSR DCD
        return self.scr

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        dlab = self.lcr & LCR_DLAB
        if offset == 0:
            if dlab:
                self.dll = value
            elif self.mcr & MCR_LOOP:
                self.rx.append(value)
            else:
                self.transmitted.append(value)
                if self.output is not None:
                    self.output(bytes([value]))
        elif offset == 1:
            if dlab:
                self.dlm = value
            else:
                self.ier = value & 0x0F
        elif offset == 2:
            self.fcr = value & 0xC9
            if value & 2:
                self.rx.clear()
        elif offset == 3:
            self.lcr = value
        elif offset == 4:
            self.mcr = value & 0x1F
        elif offset == 7:
            self.scr = value
