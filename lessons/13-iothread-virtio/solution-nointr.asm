; Lesson 13: one virtio-blk device, two requests, polled (VIRTIO 1.2).
;
; A cut-down version of sample_guests/virtio_blk.asm. The disk is the virtio-mmio transport
; where QEMU's microvm (acpi=off) and vmsim put it: 0xFEB00E00, ISA IRQ 12. The guest
; - checks that it is a modern block device (MagicValue "virt", Version 2, DeviceID 2);
; - initializes it (§3.1.1): reset, ACKNOWLEDGE, DRIVER, features (VERSION_1 and, if
;   offered, FLUSH), FEATURES_OK, queue 0 with 8 entries, DRIVER_OK;
; - request 1: IN sector 0 into RBUF, and prints the text it holds (up to the first NUL
;   or newline);
; - request 2: OUT sector 1 from WBUF (the line "written by the guest");
; - exits through isa-debug-exit (status 1); on any surprise, prints why (status 3).
;
; Each request is one descriptor chain (§2.7.5, §5.2.6): the 16-byte header (type,
; reserved, sector; device-readable), the 512-byte data buffer, the status byte
; (device-writable). The guest puts the head (descriptor 0) in the available ring, bumps
; avail->idx and writes 0 to QueueNotify: the kick. Then it polls used->idx: interrupts
; stay off (CLI), so the device's interrupt reaches nobody; the guest still acknowledges
; InterruptStatus with InterruptACK, as a handler would.
;
; The same binary runs on QEMU:
;   qemu-system-i386 -M microvm,acpi=off -global virtio-mmio.force-legacy=false -m 16 \
;     -display none -nodefaults -serial stdio -device isa-debug-exit,iobase=0x501,iosize=1 \
;     -drive id=d0,file=disk.img,format=raw,if=none -device virtio-blk-device,drive=d0 \
;     -kernel guest.bin -no-reboot
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501
VIRTIO      equ 0xFEB00E00          ; virtio-mmio transport 7: 0xFEB00000 + 7 * 0x200

; virtio-mmio registers (VIRTIO 1.2 §4.2.2, Table 4.1)
MagicValue        equ 0x000
Version           equ 0x004
DeviceID          equ 0x008
DeviceFeatures    equ 0x010
DeviceFeaturesSel equ 0x014
DriverFeatures    equ 0x020
DriverFeaturesSel equ 0x024
QueueSel          equ 0x030
QueueNumMax       equ 0x034
QueueNum          equ 0x038
QueueReady        equ 0x044
QueueNotify       equ 0x050
InterruptStatus   equ 0x060
InterruptACK      equ 0x064
Status            equ 0x070
QueueDescLow      equ 0x080
QueueDescHigh     equ 0x084
QueueDriverLow    equ 0x090
QueueDriverHigh   equ 0x094
QueueDeviceLow    equ 0x0A0
QueueDeviceHigh   equ 0x0A4

; device status bits (§2.1)
ACKNOWLEDGE equ 1
DRIVER      equ 2
DRIVER_OK   equ 4
FEATURES_OK equ 8
FAILED      equ 0x80

F_FLUSH     equ 1 << 9          ; VIRTIO_BLK_F_FLUSH, feature word 0
F_VERSION_1 equ 1 << 0          ; VIRTIO_F_VERSION_1 = bit 32: feature word 1, bit 0

T_IN        equ 0               ; request types (§5.2.6)
T_OUT       equ 1
DESC_F_NEXT  equ 1              ; descriptor flags (§2.7.5)
DESC_F_WRITE equ 2

QSIZE       equ 8
SECTOR      equ 512

; memory, one page each (descriptor table 16-byte aligned, available ring 2, used ring 4)
DESC        equ 0x110000        ; struct virtq_desc[QSIZE]: addr u64, len u32, flags, next
AVAIL       equ 0x111000        ; flags u16, idx u16, ring[QSIZE] u16
USED        equ 0x112000        ; flags u16, idx u16, ring[QSIZE] {id u32, len u32}
REQ         equ 0x113000        ; virtio_blk_req header: type u32, reserved u32, sector u64
REQ_STATUS  equ 0x113800        ; the status byte the device writes
RBUF        equ 0x114000        ; data read
WBUF        equ 0x115000        ; data written
STACK_TOP   equ 0x90000

start:
        jmp entry

        align 4
multiboot:                              ; multiboot v1 header, "address fields valid"
        dd 0x1BADB002
        dd 0x00010000
        dd -(0x1BADB002 + 0x00010000)
        dd multiboot                    ; header_addr
        dd 0x100000                     ; load_addr
        dd 0                            ; load_end_addr: whole file
        dd 0                            ; bss_end_addr: no bss
        dd entry                        ; entry_addr

entry:
        cli
        mov esp, STACK_TOP
        lgdt [gdt_descriptor]           ; our own flat GDT: QEMU's firmware enters with its own
        jmp 0x08:.reload_cs
.reload_cs:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        cld
        mov edi, DESC                   ; the rings and buffers start zeroed
        mov ecx, (WBUF + 0x1000 - DESC) / 4
        xor eax, eax
        rep stosd

        ; -- is it there? (every virtio-mmio register access is an MMIO exit to QEMU)
        mov ebp, VIRTIO
        mov esi, s_nodevice
        cmp dword [ebp + MagicValue], 0x74726976
        jne fail
        cmp dword [ebp + Version], 2
        jne fail
        cmp dword [ebp + DeviceID], 2
        jne fail

        ; -- §3.1.1: reset, ACKNOWLEDGE, DRIVER
        mov dword [ebp + Status], 0
.reset: cmp dword [ebp + Status], 0
        jne .reset
        mov dword [ebp + Status], ACKNOWLEDGE
        mov dword [ebp + Status], ACKNOWLEDGE | DRIVER

        ; -- features: VERSION_1 (required), FLUSH if offered, nothing else
        mov dword [ebp + DeviceFeaturesSel], 1
        mov ebx, [ebp + DeviceFeatures]
        mov dword [ebp + DeviceFeaturesSel], 0
        mov edx, [ebp + DeviceFeatures]
        mov esi, s_noversion1
        test ebx, F_VERSION_1
        jz fail_device
        and ebx, F_VERSION_1
        and edx, F_FLUSH
        mov dword [ebp + DriverFeaturesSel], 1
        mov [ebp + DriverFeatures], ebx
        mov dword [ebp + DriverFeaturesSel], 0
        mov [ebp + DriverFeatures], edx
        mov dword [ebp + Status], ACKNOWLEDGE | DRIVER | FEATURES_OK
        mov esi, s_nofeatures
        test dword [ebp + Status], FEATURES_OK
        jz fail_device

        ; -- queue 0: QSIZE entries, the three parts' addresses, ready
        mov dword [ebp + QueueSel], 0
        mov esi, s_noqueue
        cmp dword [ebp + QueueNumMax], QSIZE
        jb fail_device
        mov dword [ebp + QueueNum], QSIZE
        mov dword [ebp + QueueDescLow], DESC
        mov dword [ebp + QueueDescHigh], 0
        mov dword [ebp + QueueDriverLow], AVAIL
        mov dword [ebp + QueueDriverHigh], 0
        mov dword [ebp + QueueDeviceLow], USED
        mov dword [ebp + QueueDeviceHigh], 0
        mov dword [ebp + QueueReady], 1
        ; no interrupts, please: this driver polls (VRING_AVAIL_F_NO_INTERRUPT, §2.7.7)
        mov word [AVAIL], 1

        ; -- DRIVER_OK: from here the device may use the queue
        mov dword [ebp + Status], ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK

        ; -- request 1: read sector 0 and print the text in it
        mov eax, T_IN
        xor ebx, ebx
        mov edi, RBUF
        mov edx, DESC_F_WRITE           ; the device writes the data
        call request
        mov esi, s_read
        call puts
        mov esi, RBUF
        mov ecx, 64                     ; at most 64 characters
.text:  lodsb
        cmp al, 0x20                    ; up to the first NUL, newline or other control
        jb .text_end
        call putc
        loop .text
.text_end:
        mov al, 10
        call putc

        ; -- request 2: write sector 1
        mov esi, s_line                 ; the data: our line, zero-padded (WBUF is zeroed)
        mov edi, WBUF
        mov ecx, s_line_end - s_line
        rep movsb
        mov eax, T_OUT
        mov ebx, 1
        mov edi, WBUF
        xor edx, edx                    ; the device reads the data
        call request
        mov esi, s_written
        call puts

        mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al
        hlt

; fail_device: set FAILED (§3.1.1: the driver gave up), then fail
fail_device:
        or dword [ebp + Status], FAILED
; fail: print ESI and stop with exit status (1 << 1) | 1 = 3
fail:
        call puts
        mov dx, DEBUG_EXIT
        mov al, 1
        out dx, al
        cli
        hlt

; request: one request of SECTOR bytes through queue 0, waiting for its completion.
; In: EAX type, EBX sector, EDI data buffer, EDX the data descriptor's flags beyond NEXT
; (DESC_F_WRITE for IN). Fails unless the status byte says OK (0).
request:
        pushad
        mov [REQ], eax
        mov dword [REQ + 4], 0
        mov [REQ + 8], ebx
        mov dword [REQ + 12], 0
        mov byte [REQ_STATUS], 0xFF     ; not a status the device writes

        ; descriptor 0: the header, read by the device
        mov dword [DESC + 0], REQ
        mov dword [DESC + 4], 0
        mov dword [DESC + 8], 16
        mov word [DESC + 12], DESC_F_NEXT
        mov word [DESC + 14], 1
        ; descriptor 1: the data
        mov [DESC + 16], edi
        mov dword [DESC + 20], 0
        mov dword [DESC + 24], SECTOR
        or edx, DESC_F_NEXT
        mov [DESC + 28], dx
        mov word [DESC + 30], 2
        ; descriptor 2: the status byte, written by the device
        mov dword [DESC + 32], REQ_STATUS
        mov dword [DESC + 36], 0
        mov dword [DESC + 40], 1
        mov word [DESC + 44], DESC_F_WRITE
        mov word [DESC + 46], 0

        ; the head (descriptor 0) into the available ring, then publish it (§2.7.13):
        ; x86 keeps stores in order, so the ring entry is visible before the index
        movzx eax, word [AVAIL + 2]
        mov ecx, eax
        and ecx, QSIZE - 1
        mov word [AVAIL + 4 + ecx*2], 0
        inc eax
        mov [AVAIL + 2], ax

        ; the kick: tell the device that queue 0 has something new
        mov dword [ebp + QueueNotify], 0

        ; poll the used ring until the device has moved its index to ours
.poll:  cmp ax, [USED + 2]
        jne .poll
        mov esi, s_ioerror
        cmp byte [REQ_STATUS], 0
        jne fail

        ; what an interrupt handler does: read InterruptStatus, acknowledge those bits
        mov eax, [ebp + InterruptStatus]
        mov [ebp + InterruptACK], eax
        popad
        ret

; putc: send AL on COM1 once the transmitter holding register is empty
putc:
        push edx
        push eax
        mov dx, LSR
.wait:  in al, dx
        test al, LSR_THRE
        jz .wait
        pop eax
        mov dx, COM1
        out dx, al
        pop edx
        ret

; puts: send the zero-terminated string at ESI
puts:
        push esi
        push eax
.next:  lodsb
        test al, al
        jz .end
        call putc
        jmp .next
.end:   pop eax
        pop esi
        ret

s_nodevice:   db "virtio-blk: no modern block device at 0xFEB00E00", 10, 0
s_noversion1: db "virtio-blk: no VIRTIO_F_VERSION_1", 10, 0
s_nofeatures: db "virtio-blk: FEATURES_OK did not stick", 10, 0
s_noqueue:    db "virtio-blk: queue 0 is too small", 10, 0
s_ioerror:    db "virtio-blk: the request failed", 10, 0
s_read:       db "sector 0: ", 0
s_written:    db "sector 1: written", 10, 0
s_line:       db "written by the guest", 10
s_line_end:

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
