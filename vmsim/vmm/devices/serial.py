"""16550A UART, COM1 (QEMU hw/char/serial.c), register for register as QEMU models it.

Offsets from the base (COM1 = 0x3F8): 0 RBR/THR (DLL when LCR.DLAB), 1 IER (DLM), 2 IIR/FCR,
3 LCR, 4 MCR, 5 LSR, 6 MSR, 7 SCR. The device implements 1-byte accesses only (QEMU's
serial_io_ops: impl.min = impl.max = 1); the I/O bus splits wider ones.

What the guest sees, as in QEMU:
- IIR names the highest-priority pending interrupt among those IER enables: line status
  (0x06) > received data (0x04) > THR empty (0x02) > modem status (0x00); 0x01 = none.
  Bits 7:6 are 11 while the FIFOs are on. THR-empty is pending from the moment IER.THRI
  is turned on with the transmitter empty, and again after each byte is sent; reading IIR
  while it shows THR-empty clears it, and so does writing THR (`serial_update_irq` is the
  one function that computes all this, and it would drive the IRQ line).
- Loopback (MCR bit 4): what is written to THR comes back in RBR instead of going out,
  and MSR's high nibble shows MCR's outputs: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
- RBR keeps the last byte received: reading it again without new data returns that
  byte (the FIFO, when enabled, answers 0 once it is empty).
- Sending is instantaneous (the byte is handed to `output` at once, so THRE and TEMT are
  set again by the time the guest looks); no timers, so no character-timeout interrupt
  (IIR 0x0C) and no modem-status polling: MSR outside loopback is QEMU's value for a
  backend that is not a real serial port, DCD | DSR | CTS.
- `irq`, when given, is called with the interrupt line's level whenever it may have
  changed, as QEMU's qemu_irq_raise/lower (the machine wires it to ISA IRQ 4).
- Input comes from the line (`--serial-in`, bytes typed in the GUI's console): in a VM,
  through QEMU's main loop (an fd handler that asks serial_can_receive first), so a byte
  arrives when the main loop thread runs, not the instant the guest makes room.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

UART_LCR_DLAB = 0x80
UART_IER_RDI, UART_IER_THRI, UART_IER_RLSI, UART_IER_MSI = 0x01, 0x02, 0x04, 0x08
UART_IIR_NO_INT, UART_IIR_ID = 0x01, 0x06
UART_IIR_MSI, UART_IIR_THRI, UART_IIR_RDI, UART_IIR_RLSI = 0x00, 0x02, 0x04, 0x06
UART_IIR_FE = 0xC0  # FIFOs enabled
UART_MCR_DTR, UART_MCR_RTS, UART_MCR_OUT1, UART_MCR_OUT2, UART_MCR_LOOP = 1, 2, 4, 8, 0x10
UART_MSR_CTS, UART_MSR_DSR, UART_MSR_RI, UART_MSR_DCD = 0x10, 0x20, 0x40, 0x80
UART_MSR_ANY_DELTA = 0x0F
UART_LSR_DR, UART_LSR_OE, UART_LSR_BI = 0x01, 0x02, 0x10
UART_LSR_THRE, UART_LSR_TEMT = 0x20, 0x40
UART_LSR_INT_ANY = 0x1E  # OE PE FE BI: the line-status interrupt's causes
UART_FCR_FE, UART_FCR_RFR, UART_FCR_XFR = 0x01, 0x02, 0x04
UART_FIFO_LENGTH = 16
RX_TRIGGER_LEVELS = {0x00: 1, 0x40: 4, 0x80: 8, 0xC0: 14}  # FCR bits 7:6


class Serial16550:
    """One UART. `output` receives each byte sent; `rx` (and later `feed`) is what arrives
    on the line, handed to the UART as fast as it can take it (QEMU's chardev asks
    serial_can_receive first); `irq` is the interrupt line it drives, when there is one."""

    # (Slots, in the order the constructor sets them: vmsim.state.fields_state.)
    __slots__ = (  # noqa: RUF023
        "output", "irq", "transmitted", "line_in", "recv_fifo", "notify_main_loop",
        "rbr", "thr", "ier", "iir", "lcr", "lsr", "msr", "divider", "mcr", "scr", "fcr",
        "recv_fifo_itl", "thr_ipending")

    def __init__(self, output: Callable[[bytes], None] | None = None, rx: bytes = b"",
                 irq: Callable[[bool], None] | None = None):
        self.output = output
        self.irq = irq
        self.transmitted = bytearray()
        self.line_in: deque[int] = deque(rx)  # bytes on the line the UART has not taken yet
        self.recv_fifo: deque[int] = deque()
        # Structure, not state (QEMU's main loop, set by attach_main_loop).
        self.notify_main_loop: Callable[[], None] | None = None
        self.serial_reset()

    def serial_reset(self) -> None:
        """serial_reset: the power-on register values."""
        self.rbr = 0
        self.thr = 0
        self.ier = 0
        self.iir = UART_IIR_NO_INT
        self.lcr = 0
        self.lsr = UART_LSR_TEMT | UART_LSR_THRE
        self.msr = UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS
        self.divider = 0x0C  # 9600 baud from QEMU's 115200 base
        self.mcr = UART_MCR_OUT2
        self.scr = 0
        self.fcr = 0
        self.recv_fifo_itl = 1
        self.thr_ipending = False
        self.recv_fifo.clear()
        self.serial_update_irq()
        self._accept_input()

    # -- interrupt state -------------------------------------------------------------------
    def serial_update_irq(self) -> None:
        """serial_update_irq: IIR from what is pending and enabled, in priority order."""
        lsr, ier = self.lsr, self.ier
        if ier & UART_IER_RLSI and lsr & UART_LSR_INT_ANY:
            iid = UART_IIR_RLSI
        elif ier & UART_IER_RDI and lsr & UART_LSR_DR and (
                not self.fcr & UART_FCR_FE or len(self.recv_fifo) >= self.recv_fifo_itl):
            iid = UART_IIR_RDI
        elif ier & UART_IER_THRI and self.thr_ipending:
            iid = UART_IIR_THRI
        elif ier & UART_IER_MSI and self.msr & UART_MSR_ANY_DELTA:
            iid = UART_IIR_MSI
        else:
            iid = UART_IIR_NO_INT
        self.iir = iid | (self.iir & 0xF0)
        if self.irq is not None:
            self.irq(self.irq_pending)

    @property
    def irq_pending(self) -> bool:
        """The level of the UART's interrupt output (IIR bit 0 clear)."""
        return not self.iir & UART_IIR_NO_INT

    # -- the line ----------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Bytes arriving on the line (the guest reads them from RBR)."""
        self.line_in.extend(data)
        self._accept_input()

    def serial_can_receive(self) -> int:
        """How many bytes the UART takes now (QEMU's serial_can_receive)."""
        if self.fcr & UART_FCR_FE:
            n = len(self.recv_fifo)
            if n >= UART_FIFO_LENGTH:
                return 0
            return self.recv_fifo_itl - n if n <= self.recv_fifo_itl else 1
        return 0 if self.lsr & UART_LSR_DR else 1

    def serial_receive1(self, byte: int) -> None:
        """A byte arrived (from the line, or from the transmitter in loopback)."""
        if self.fcr & UART_FCR_FE:
            if len(self.recv_fifo) < UART_FIFO_LENGTH:
                self.recv_fifo.append(byte)
            else:
                self.lsr |= UART_LSR_OE  # an overrun does not overwrite the FIFO
            self.lsr |= UART_LSR_DR
        else:
            if self.lsr & UART_LSR_DR:
                self.lsr |= UART_LSR_OE
            self.rbr = byte
            self.lsr |= UART_LSR_DR
        self.serial_update_irq()

    def attach_main_loop(self, notify: Callable[[], None]) -> None:
        """Input arrives through QEMU's main loop from now on: the chardev's fd handler
        (`chr_can_read` / `chr_read`) hands bytes over when the main loop polls, and
        qemu_chr_fe_accept_input (the guest made room) only wakes it (`notify`)."""
        self.notify_main_loop = notify

    def chr_ready(self) -> bool:
        """The fd has data the UART may take (the line is not cut off by loopback)."""
        return bool(self.line_in) and not self.mcr & UART_MCR_LOOP

    def chr_read(self, n: int) -> int:
        """The chardev's read handler (serial_receive1 for each byte): up to n bytes."""
        taken = 0
        while taken < n and self.chr_ready():
            self.serial_receive1(self.line_in.popleft())
            taken += 1
        return taken

    def _accept_input(self) -> None:
        """qemu_chr_fe_accept_input: take waiting bytes while the UART has room (or, with
        a main loop, wake it to do so). In loopback the receiver is cut off from the line,
        so nothing is taken."""
        if self.notify_main_loop is not None:
            if self.chr_ready():
                self.notify_main_loop()
            return
        while self.line_in and not self.mcr & UART_MCR_LOOP:
            n = self.serial_can_receive()
            if n <= 0:
                return
            for _ in range(min(n, len(self.line_in))):
                self.serial_receive1(self.line_in.popleft())

    def serial_xmit(self) -> None:
        """Send THR: to `output`, or back to the receiver in loopback. Instantaneous, so
        the transmitter is empty again (THRE, TEMT) and THR-empty is pending once more."""
        self.lsr |= UART_LSR_THRE
        if not self.thr_ipending:
            self.thr_ipending = True
            self.serial_update_irq()
        byte = self.thr
        if self.mcr & UART_MCR_LOOP:
            self.serial_receive1(byte)
        else:
            self.transmitted.append(byte)
            if self.output is not None:
                self.output(bytes([byte]))
        self.lsr |= UART_LSR_TEMT

    # -- register accesses (the bus's Device contract; 1-byte accesses) ---------------------
    def read(self, offset: int, size: int) -> int:
        """serial_ioport_read."""
        offset &= 7
        if offset == 0:
            if self.lcr & UART_LCR_DLAB:
                return self.divider & 0xFF
            if self.fcr & UART_FCR_FE:
                ret = self.recv_fifo.popleft() if self.recv_fifo else 0
                if not self.recv_fifo:
                    self.lsr &= ~(UART_LSR_DR | UART_LSR_BI)
            else:
                ret = self.rbr  # the last byte received, read again if nothing new came
                self.lsr &= ~(UART_LSR_DR | UART_LSR_BI)
            self.serial_update_irq()
            self._accept_input()
            return ret
        if offset == 1:
            return self.divider >> 8 if self.lcr & UART_LCR_DLAB else self.ier
        if offset == 2:
            ret = self.iir
            if ret & UART_IIR_ID == UART_IIR_THRI:
                self.thr_ipending = False  # reading it acknowledges THR empty
                self.serial_update_irq()
            return ret
        if offset == 3:
            return self.lcr
        if offset == 4:
            return self.mcr
        if offset == 5:
            ret = self.lsr
            if self.lsr & (UART_LSR_BI | UART_LSR_OE):
                self.lsr &= ~(UART_LSR_BI | UART_LSR_OE)
                self.serial_update_irq()
            return ret
        if offset == 6:
            if self.mcr & UART_MCR_LOOP:
                # The modem outputs wired to the inputs: OUT2->DCD, OUT1->RI, RTS->CTS, DTR->DSR.
                mcr = self.mcr
                return (mcr & 0x0C) << 4 | (mcr & 0x02) << 3 | (mcr & 0x01) << 5
            ret = self.msr
            if self.msr & UART_MSR_ANY_DELTA:
                self.msr &= 0xF0
                self.serial_update_irq()
            return ret
        return self.scr

    def write(self, offset: int, size: int, value: int) -> None:
        """serial_ioport_write."""
        offset &= 7
        value &= 0xFF
        if offset == 0:
            if self.lcr & UART_LCR_DLAB:
                self.divider = (self.divider & 0xFF00) | value
                return
            self.thr = value
            self.thr_ipending = False
            self.lsr &= ~(UART_LSR_THRE | UART_LSR_TEMT)
            self.serial_update_irq()
            self.serial_xmit()
        elif offset == 1:
            if self.lcr & UART_LCR_DLAB:
                self.divider = (self.divider & 0x00FF) | value << 8
                return
            changed = (self.ier ^ value) & 0x0F
            self.ier = value & 0x0F
            if changed & UART_IER_THRI:
                # Turning THRI on with THR empty raises THR-empty even if an IIR read had
                # cleared it (QEMU: "Windows relies on it").
                self.thr_ipending = bool(self.ier & UART_IER_THRI and self.lsr & UART_LSR_THRE)
            if changed:
                self.serial_update_irq()
        elif offset == 2:
            if (value ^ self.fcr) & UART_FCR_FE:
                value |= UART_FCR_XFR | UART_FCR_RFR  # switching the FIFOs flushes them
            if value & UART_FCR_RFR:
                self.lsr &= ~(UART_LSR_DR | UART_LSR_BI)
                self.recv_fifo.clear()
            if value & UART_FCR_XFR:
                self.lsr |= UART_LSR_THRE
                self.thr_ipending = True
            self.fcr = value & 0xC9
            if self.fcr & UART_FCR_FE:
                self.iir |= UART_IIR_FE
                self.recv_fifo_itl = RX_TRIGGER_LEVELS[self.fcr & 0xC0]
            else:
                self.iir &= ~UART_IIR_FE
            self.serial_update_irq()
            self._accept_input()
        elif offset == 3:
            self.lcr = value
        elif offset == 4:
            self.mcr = value & 0x1F
            self._accept_input()  # leaving loopback reconnects the line
        elif offset == 7:
            self.scr = value
        # LSR (5) and MSR (6) ignore writes.
