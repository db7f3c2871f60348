"""A guest that floods the virtqueue with malformed chains (issue 11: "nothing the guest
writes can crash vmsim"): round after round it offers a descriptor chain that loops onto
itself, kicks, expects DEVICE_NEEDS_RESET (QEMU's virtqueue_pop: "Looped descriptor" ->
virtio_error), acknowledges, resets and re-initializes the device (VIRTIO 1.2 §2.1.2,
§3.1.1), and at the end reads sector 0 with a good chain. vmsim must refuse every bad
chain, leave the image untouched, and serve the good request after the reset, as QEMU
microvm does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vmsim.asm import assemble

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 300
FIRST = 0x5A  # the first byte of the test's image

FLOOD = f"""bits 32
org 0x100000
DISK    equ 0xFEB00E00                  ; microvm,acpi=off: the disk's transport (7)
DESC    equ 0x110000                    ; the rings and buffers, each on its own page
AVAIL   equ 0x111000
USED    equ 0x112000
HDR     equ 0x113000
BUF     equ 0x114000
STATUS  equ 0x115000
        jmp start
        align 4
multiboot:
        dd 0x1BADB002
        dd 0x00010000
        dd -(0x1BADB002 + 0x00010000)
        dd multiboot
        dd 0x100000
        dd 0
        dd 0
        dd start
start:
        mov esp, 0x90000
        mov esi, DISK
        mov ebx, {ROUNDS}
        xor ebp, ebp                    ; bad chains the device refused
.round: call init
        mov dword [DESC], HDR           ; descriptor 0: NEXT, and next = 0: a loop
        mov dword [DESC + 4], 0
        mov dword [DESC + 8], 16
        mov word [DESC + 12], 1
        mov word [DESC + 14], 0
        call kick
        mov eax, [esi + 0x70]
        test eax, 0x40                  ; DEVICE_NEEDS_RESET
        jz .next
        inc ebp
.next:  mov eax, [esi + 0x60]
        mov [esi + 0x64], eax           ; InterruptACK
        dec ebx
        jnz .round
        call init                       ; now a good read of sector 0
        mov dword [HDR], 0              ; VIRTIO_BLK_T_IN, sector 0
        mov dword [HDR + 8], 0
        mov dword [HDR + 12], 0
        mov byte [STATUS], 0xFF
        mov dword [DESC], HDR
        mov dword [DESC + 8], 16
        mov word [DESC + 12], 1
        mov word [DESC + 14], 1
        mov dword [DESC + 16], BUF
        mov dword [DESC + 24], 512
        mov word [DESC + 28], 3         ; NEXT | WRITE
        mov word [DESC + 30], 2
        mov dword [DESC + 32], STATUS
        mov dword [DESC + 40], 1
        mov word [DESC + 44], 2         ; WRITE
        mov word [DESC + 46], 0
        call kick
.poll:  cmp word [USED + 2], 1
        jne .poll
        mov esi, msg
        call puts
        mov eax, ebp
        call hex
        mov esi, msg2
        call puts
        movzx eax, byte [STATUS]
        call hex
        mov esi, msg3
        call puts
        movzx eax, byte [BUF]
        call hex
        mov al, 10
        call putc
        mov dx, 0x501
        mov al, 0
        out dx, al

; reset, then the driver's initialization with VIRTIO_F_VERSION_1 and one 8-entry queue
init:   mov dword [esi + 0x70], 0
        mov word [AVAIL], 0
        mov word [AVAIL + 2], 0
        mov word [USED + 2], 0
        mov dword [esi + 0x70], 1       ; ACKNOWLEDGE
        mov dword [esi + 0x70], 3       ; DRIVER
        mov dword [esi + 0x24], 1
        mov dword [esi + 0x20], 1       ; VIRTIO_F_VERSION_1 (bit 32)
        mov dword [esi + 0x24], 0
        mov dword [esi + 0x20], 0
        mov dword [esi + 0x70], 0xB     ; FEATURES_OK
        mov dword [esi + 0x30], 0
        mov dword [esi + 0x38], 8
        mov dword [esi + 0x80], DESC
        mov dword [esi + 0x84], 0
        mov dword [esi + 0x90], AVAIL
        mov dword [esi + 0x94], 0
        mov dword [esi + 0xA0], USED
        mov dword [esi + 0xA4], 0
        mov dword [esi + 0x44], 1       ; QueueReady
        mov dword [esi + 0x70], 0xF     ; DRIVER_OK
        ret

; head 0 into the available ring, then QueueNotify
kick:   movzx eax, word [AVAIL + 2]
        and eax, 7
        mov word [AVAIL + 4 + eax * 2], 0
        inc word [AVAIL + 2]
        mov dword [esi + 0x50], 0
        ret

puts:   lodsb
        test al, al
        jz .done
        call putc
        jmp puts
.done:  ret

putc:   push edx
        push eax
        mov dx, 0x3FD
.wait:  in al, dx
        test al, 0x20
        jz .wait
        pop eax
        mov dx, 0x3F8
        out dx, al
        pop edx
        ret

hex:    push ecx                        ; EAX as 8 hex digits
        mov ecx, 8
.digit: rol eax, 4
        push eax
        and al, 0xF
        add al, '0'
        cmp al, '9'
        jbe .out
        add al, 7
.out:   call putc
        pop eax
        loop .digit
        pop ecx
        ret

msg:    db "flood: malformed chains refused ", 0
msg2:   db ", then sector 0: status ", 0
msg3:   db ", first byte ", 0
"""

EXPECTED = (f"flood: malformed chains refused {ROUNDS:08X}, then sector 0: status 00000000,"
            f" first byte {FIRST:08X}\n")


def _image(tmp_path: Path) -> Path:
    img = tmp_path / "disk.img"
    img.write_bytes(bytes([FIRST]) + bytes(range(256)) * 2 * 64 + bytes(511))
    return img


@pytest.mark.parametrize("args", [["--irqchip", "kernel"], ["--irqchip", "userspace"],
                                  ["--no-ioeventfd"]])
def test_a_flood_of_malformed_chains_is_refused_and_the_device_recovers(
        tmp_path: Path, args: list[str]) -> None:
    img = _image(tmp_path)
    before = img.read_bytes()
    guest = tmp_path / "flood.asm"
    guest.write_text(FLOOD)
    r = subprocess.run([sys.executable, "-m", "vmsim", "run", "--disk", str(img), *args,
                        str(guest)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 1, r.stderr  # isa-debug-exit(0)
    assert r.stdout == EXPECTED
    assert "Traceback" not in r.stderr
    assert img.read_bytes() == before


def test_qemu_microvm_refuses_the_same_flood(tmp_path: Path) -> None:
    # The oracle: QEMU's own virtio-blk-device on microvm prints the same.
    from tests.guests.guestrun import qemu_path
    from tests.guests.microvm import run_microvm

    if qemu_path() is None:
        pytest.skip("qemu-system-i386 is not installed (Debian package qemu-system-x86)")

    img = _image(tmp_path)
    kernel = tmp_path / "flood.bin"
    kernel.write_bytes(assemble(FLOOD, "flood.asm").data)
    run = run_microvm(kernel, img, acpi=False)
    assert run.serial.decode() == EXPECTED, run.stderr


# -- a run that ends badly keeps every write the guest saw completed ----------------------
def _writer(after: str) -> str:
    """Writes 0xA5 over sector 2, waits for the used ring, says so, then `after`."""
    body = FLOOD.split("start:")[0] + f"""start:
        mov esp, 0x90000
        mov esi, DISK
        call init
        mov edi, BUF
        mov ecx, 512
        mov al, 0xA5
        rep stosb
        mov dword [HDR], 1              ; VIRTIO_BLK_T_OUT, sector 2
        mov dword [HDR + 8], 2
        mov dword [HDR + 12], 0
        mov dword [DESC], HDR
        mov dword [DESC + 8], 16
        mov word [DESC + 12], 1
        mov word [DESC + 14], 1
        mov dword [DESC + 16], BUF
        mov dword [DESC + 24], 512
        mov word [DESC + 28], 1         ; NEXT (the device reads it)
        mov word [DESC + 30], 2
        mov dword [DESC + 32], STATUS
        mov dword [DESC + 40], 1
        mov word [DESC + 44], 2         ; WRITE
        call kick
.poll:  cmp word [USED + 2], 1
        jne .poll
        mov esi, written
        call puts
        {after}
written: db "written", 10, 0
"""
    return body + FLOOD[FLOOD.index("; reset, then the driver"):FLOOD.index("msg:")]


@pytest.mark.parametrize("after, args, status", [
    ("jmp $", ["--max-instructions", "3000000"], 124),  # the budget ends it
    ("ud2", [], 0),  # no IDT: #UD, #DF, triple fault: the guest crashes
])
def test_a_run_that_ends_badly_keeps_the_completed_write(tmp_path: Path, after: str,
                                                        args: list[str], status: int) -> None:
    img = _image(tmp_path)
    before = img.read_bytes()
    guest = tmp_path / "writer.asm"
    guest.write_text(_writer(after))
    r = subprocess.run([sys.executable, "-m", "vmsim", "run", "--disk", str(img), *args,
                        str(guest)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert (r.returncode, r.stdout) == (status, "written\n"), r.stderr
    assert img.read_bytes() == before[:1024] + b"\xA5" * 512 + before[1536:]


def test_ctrl_c_keeps_the_completed_write(tmp_path: Path) -> None:
    import signal

    img = _image(tmp_path)
    guest = tmp_path / "writer.asm"
    guest.write_text(_writer("jmp $"))
    with subprocess.Popen([sys.executable, "-m", "vmsim", "run", "--disk", str(img),
                           str(guest)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          cwd=ROOT) as p:
        try:
            assert p.stdout.readline() == b"written\n"  # the guest saw the write completed
            p.send_signal(signal.SIGINT)
            assert p.wait(timeout=120) == 130
        finally:
            p.kill()
    assert img.read_bytes()[1024:1536] == b"\xA5" * 512
