; virtio_blk.asm: a polling virtio-blk driver on the virtio-mmio transport (VIRTIO 1.2).
;
; What it does, in the order of the VIRTIO 1.2 spec:
; - scans the virtio-mmio transports at 0xFEB00000 + 0x200 * i (i = 0..31) for
;   MagicValue 0x74726976 "virt", Version 2 (modern) and DeviceID 2 (block) (§4.2.2);
; - initializes it as §3.1.1 says: reset (Status 0), ACKNOWLEDGE, DRIVER, reads the
;   64 feature bits, accepts VIRTIO_F_VERSION_1 (bit 32, required) and VIRTIO_BLK_F_FLUSH
;   (bit 9, if offered), sets FEATURES_OK and reads it back, sets up queue 0 (QueueSel,
;   QueueNumMax, QueueNum, QueueDesc/Driver/Device, QueueReady) and sets DRIVER_OK;
; - reads the capacity (512-byte sectors) from config space at 0x100, between two reads
;   of ConfigGeneration (§2.5.1);
; - reads sectors 0, 1 and the last one and prints a checksum of each; reads sector 5,
;   writes a pattern to it, reads it back; FLUSH; GET_ID (prints the ID string);
;   requests that must fail: a read at the capacity and one straddling the end (IOERR),
;   a write at the capacity (IOERR: the image must not grow), an unknown type (UNSUPP);
; - resets the device and exits through isa-debug-exit (port 0x501, status (0 << 1) | 1).
;
; Each request is one descriptor chain (§2.7.5, §5.2.6): header (type, reserved,
; sector: 16 bytes, device-readable), the data buffer if any (device-writable for IN and
; GET_ID), the status byte (device-writable). The guest puts the head (descriptor 0) in
; the available ring, bumps avail->idx and writes QueueNotify; then it polls used->idx
; (no interrupt handler: it runs where IRET cannot, on the host's software KVM), reads
; InterruptStatus and acknowledges it with InterruptACK, as an interrupt handler would.
; Interrupts stay off (CLI): the device raises its line, nobody listens.
;
; Checksum of a buffer: h = 0; for each little-endian dword d: h = rol(h, 5) xor d.
; The pattern written to sector 5: dword k (k = 0..127) = (k + 1) * 0x9E3779B9 mod 2^32.
;
; The queue and the buffers live on their own pages, away from the code page (the guest
; is loaded at 0x100000 and is under 4 KiB): RAM on vmsim (16 MiB) and QEMU microvm.
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501

MMIO_BASE   equ 0xFEB00000
MMIO_STRIDE equ 0x200
MMIO_COUNT  equ 32

; virtio-mmio registers (VIRTIO 1.2 §4.2.2, Table 4.1)
MagicValue        equ 0x000
Version           equ 0x004
DeviceID          equ 0x008
VendorID          equ 0x00C
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
ConfigGeneration  equ 0x0FC
Config            equ 0x100     ; struct virtio_blk_config: u64 capacity first

; device status bits (§2.1)
ACKNOWLEDGE equ 1
DRIVER      equ 2
DRIVER_OK   equ 4
FEATURES_OK equ 8
FAILED      equ 0x80

F_FLUSH     equ 1 << 9          ; VIRTIO_BLK_F_FLUSH, feature word 0
F_VERSION_1 equ 1 << 0          ; VIRTIO_F_VERSION_1 = bit 32: feature word 1, bit 0

; request types and status values (§5.2.6)
T_IN        equ 0
T_OUT       equ 1
T_FLUSH     equ 4
T_GET_ID    equ 8
T_UNKNOWN   equ 0x7E            ; no such type: UNSUPP
ID_BYTES    equ 20              ; VIRTIO_BLK_ID_BYTES

; descriptor flags (§2.7.5)
DESC_F_NEXT  equ 1
DESC_F_WRITE equ 2

QSIZE       equ 8               ; our queue size (a power of 2, at most QueueNumMax)
SECTOR      equ 512
WSECT       equ 5               ; the sector the pattern goes to

; memory, one page each (the descriptor table needs 16-byte alignment, the available
; ring 2, the used ring 4: §2.7)
DESC        equ 0x110000        ; struct virtq_desc[QSIZE]: addr u64, len u32, flags, next
AVAIL       equ 0x111000        ; flags u16, idx u16, ring[QSIZE] u16
USED        equ 0x112000        ; flags u16, idx u16, ring[QSIZE] {id u32, len u32}
REQ         equ 0x113000        ; virtio_blk_req header: type u32, reserved u32, sector u64
REQ_STATUS  equ 0x113800        ; the status byte the device writes
RBUF        equ 0x114000        ; data read
WBUF        equ 0x115000        ; data written
IDBUF       equ 0x116000        ; GET_ID's 20 bytes
VARS        equ 0x117000        ; the driver's variables (the guest never writes its image)
qsize       equ VARS + 0        ; dword: the queue size in use
capacity    equ VARS + 4        ; dword: sectors (this guest needs fewer than 2^32)
last_status equ VARS + 8        ; dword: the last request's status byte
last_len    equ VARS + 12       ; dword: its used element's len
last_isr    equ VARS + 16       ; dword: InterruptStatus after it
last_used   equ VARS + 20       ; word: the used->idx the driver has seen
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
        mov edi, DESC                   ; the rings, buffers and variables start zeroed
        mov ecx, (VARS + 0x1000 - DESC) / 4
        xor eax, eax
        rep stosd

        ; -- find the device: the first transport that is a modern virtio block device
        xor ecx, ecx
        mov ebp, MMIO_BASE
.scan:  cmp dword [ebp + MagicValue], 0x74726976
        jne .next
        cmp dword [ebp + Version], 2
        jne .next
        cmp dword [ebp + DeviceID], 2
        je .found
.next:  add ebp, MMIO_STRIDE
        inc ecx
        cmp ecx, MMIO_COUNT
        jb .scan
        mov esi, s_nodevice
        jmp fail

.found: mov esi, s_found                ; "virtio-blk: transport N at XXXXXXXX, ..."
        call puts
        mov eax, ecx
        call putdec
        mov esi, s_at
        call puts
        mov eax, ebp
        call puthex8
        mov esi, s_vendor
        call puts
        mov eax, [ebp + VendorID]
        call puthex8
        call newline

        ; -- §3.1.1 steps 1-3: reset, ACKNOWLEDGE, DRIVER
        mov dword [ebp + Status], 0
.reset: cmp dword [ebp + Status], 0     ; §4.2.3.1: wait until the reset reads back 0
        jne .reset
        mov dword [ebp + Status], ACKNOWLEDGE
        mov dword [ebp + Status], ACKNOWLEDGE | DRIVER

        ; -- step 4: read the device's features, accept VERSION_1 and FLUSH
        mov dword [ebp + DeviceFeaturesSel], 1
        mov ebx, [ebp + DeviceFeatures] ; bits 63:32
        mov dword [ebp + DeviceFeaturesSel], 0
        mov edx, [ebp + DeviceFeatures] ; bits 31:0
        test ebx, F_VERSION_1
        jnz .modern
        mov esi, s_noversion1
        jmp fail_device
.modern:
        and ebx, F_VERSION_1
        and edx, F_FLUSH
        mov dword [ebp + DriverFeaturesSel], 1
        mov [ebp + DriverFeatures], ebx
        mov dword [ebp + DriverFeaturesSel], 0
        mov [ebp + DriverFeatures], edx
        mov esi, s_features
        call puts
        mov eax, ebx
        call puthex8
        mov al, ' '
        call putc
        mov eax, edx
        call puthex8

        ; -- steps 5-6: FEATURES_OK, and read it back: the device may refuse the subset
        mov dword [ebp + Status], ACKNOWLEDGE | DRIVER | FEATURES_OK
        mov eax, [ebp + Status]
        test eax, FEATURES_OK
        jnz .features_ok
        call newline
        mov esi, s_nofeatures
        jmp fail_device
.features_ok:
        mov esi, s_status
        call puts
        call puthex2
        call newline

        ; -- step 7: queue 0
        mov dword [ebp + QueueSel], 0
        cmp dword [ebp + QueueReady], 0
        je .q_free
        mov esi, s_queue_busy
        jmp fail_device
.q_free:
        mov eax, [ebp + QueueNumMax]
        test eax, eax
        jnz .q_exists
        mov esi, s_noqueue
        jmp fail_device
.q_exists:
        mov esi, s_queue
        call puts
        call putdec
        mov ebx, QSIZE
        cmp eax, ebx
        jae .q_size
        mov ebx, eax                    ; a smaller queue than ours: take the device's
.q_size:
        mov [qsize], ebx
        mov esi, s_queue2
        call puts
        mov eax, ebx
        call putdec
        call newline
        mov [ebp + QueueNum], ebx
        mov dword [ebp + QueueDescLow], DESC
        mov dword [ebp + QueueDescHigh], 0
        mov dword [ebp + QueueDriverLow], AVAIL
        mov dword [ebp + QueueDriverHigh], 0
        mov dword [ebp + QueueDeviceLow], USED
        mov dword [ebp + QueueDeviceHigh], 0
        mov dword [ebp + QueueReady], 1

        ; -- step 8: DRIVER_OK
        mov dword [ebp + Status], ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
        mov esi, s_driver_ok
        call puts
        mov eax, [ebp + Status]
        call puthex2
        call newline

        ; -- the capacity, consistent between two equal ConfigGeneration reads
.config:
        mov edi, [ebp + ConfigGeneration]
        mov eax, [ebp + Config]
        mov edx, [ebp + Config + 4]
        cmp edi, [ebp + ConfigGeneration]
        jne .config
        mov [capacity], eax
        mov esi, s_capacity
        call puts
        test edx, edx
        jz .cap_small
        mov esi, s_too_big              ; this guest counts sectors in 32 bits
        jmp fail_device
.cap_small:
        call putdec
        mov esi, s_sectors
        call puts
        cmp eax, WSECT + 1
        jae .cap_ok
        mov esi, s_too_small
        jmp fail_device
.cap_ok:

        ; -- reads
        xor ebx, ebx
        call read_sector
        mov ebx, 1
        call read_sector
        mov ebx, [capacity]
        dec ebx
        call read_sector

        ; -- write a pattern to sector WSECT, between a read before and one after
        mov ebx, WSECT
        call read_sector
        mov edi, WBUF
        xor ecx, ecx
        xor eax, eax
.pattern:
        add eax, 0x9E3779B9
        mov [edi + ecx*4], eax
        inc ecx
        cmp ecx, SECTOR / 4
        jb .pattern
        mov esi, s_write
        call puts
        mov eax, ebx
        call putdec
        mov esi, s_colon
        call puts
        mov eax, T_OUT
        mov ecx, SECTOR
        mov edi, WBUF
        xor edx, edx                    ; the device reads the data
        call request
        call put_result
        mov esi, s_checksum
        call puts
        mov esi, WBUF
        mov ecx, SECTOR
        call checksum
        call puthex8
        call newline
        call read_sector

        ; -- FLUSH: header and status only
        mov esi, s_flush
        call puts
        mov eax, T_FLUSH
        xor ebx, ebx
        xor ecx, ecx
        call request
        call put_result
        call newline

        ; -- GET_ID: 20 bytes, NUL-terminated if shorter
        mov edi, IDBUF
        xor eax, eax
        mov ecx, ID_BYTES / 4 + 1
        rep stosd
        mov esi, s_get_id
        call puts
        mov eax, T_GET_ID
        xor ebx, ebx
        mov ecx, ID_BYTES
        mov edi, IDBUF
        mov edx, 1
        call request
        call put_result
        mov esi, s_id
        call puts
        mov esi, IDBUF
        mov ecx, ID_BYTES
.id:    lodsb
        test al, al
        jz .id_end
        cmp al, 0x20                    ; printable ASCII as is, anything else as '?'
        jb .id_odd
        cmp al, 0x7E
        jbe .id_put
.id_odd:
        mov al, '?'
.id_put:
        call putc
        loop .id
.id_end:
        mov al, '"'
        call putc
        call newline

        ; -- requests that must fail
        mov esi, s_past
        call puts
        mov eax, [capacity]
        call putdec
        mov esi, s_colon
        call puts
        mov eax, T_IN
        mov ebx, [capacity]
        mov ecx, SECTOR
        mov edi, RBUF
        mov edx, 1
        call request
        call put_result
        call newline

        mov esi, s_straddle
        call puts
        mov eax, [capacity]
        dec eax
        call putdec
        mov esi, s_colon
        call puts
        mov eax, T_IN
        mov ebx, [capacity]
        dec ebx
        mov ecx, 2 * SECTOR
        mov edi, RBUF
        mov edx, 1
        call request
        call put_result
        call newline

        mov esi, s_write_past
        call puts
        mov eax, [capacity]
        call putdec
        mov esi, s_colon
        call puts
        mov eax, T_OUT
        mov ebx, [capacity]
        mov ecx, SECTOR
        mov edi, WBUF
        xor edx, edx
        call request
        call put_result
        call newline

        mov esi, s_unknown
        call puts
        mov eax, T_UNKNOWN
        xor ebx, ebx
        xor ecx, ecx
        call request
        call put_result
        call newline

        ; -- the rings after all that, then reset (§4.2.3.1: writing 0 to Status)
        mov esi, s_rings
        call puts
        movzx eax, word [AVAIL + 2]
        call putdec
        mov esi, s_rings2
        call puts
        movzx eax, word [USED + 2]
        call putdec
        call newline
        mov dword [ebp + Status], 0
        mov esi, s_reset
        call puts
        mov eax, [ebp + Status]
        call puthex2
        mov esi, s_ready
        call puts
        mov eax, [ebp + QueueReady]
        call putdec
        call newline

        mov esi, s_done
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

; read_sector: read sector EBX into RBUF and print
; "read sector N: status S, used len L, isr I, checksum C"
read_sector:
        pushad
        mov esi, s_read
        call puts
        mov eax, ebx
        call putdec
        mov esi, s_colon
        call puts
        mov edi, RBUF                   ; a read that writes nothing leaves a known buffer
        mov ecx, SECTOR / 4
        mov eax, 0xDEADBEEF
        rep stosd
        mov eax, T_IN
        mov ecx, SECTOR
        mov edi, RBUF
        mov edx, 1
        call request
        call put_result
        mov esi, s_checksum
        call puts
        mov esi, RBUF
        mov ecx, SECTOR
        call checksum
        call puthex8
        call newline
        popad
        ret

; request: one request through queue 0 of the device at EBP, waiting for its completion.
; In: EAX type, EBX sector, ECX data bytes (0: no data descriptor), EDI data buffer,
; EDX 1 if the device writes the data (IN, GET_ID). Out: [last_status] the status byte,
; [last_len] the used element's len, [last_isr] InterruptStatus before the ACK.
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
        mov esi, DESC + 16              ; the status descriptor's slot
        test ecx, ecx
        jz .status
        ; descriptor 1: the data
        mov [DESC + 16], edi
        mov dword [DESC + 20], 0
        mov [DESC + 24], ecx
        mov ax, DESC_F_NEXT
        test edx, edx
        jz .flags
        or ax, DESC_F_WRITE
.flags: mov [DESC + 28], ax
        mov word [DESC + 30], 2
        mov esi, DESC + 32
.status:                                ; the last descriptor: the status byte
        mov dword [esi + 0], REQ_STATUS
        mov dword [esi + 4], 0
        mov dword [esi + 8], 1
        mov word [esi + 12], DESC_F_WRITE
        mov word [esi + 14], 0

        ; the head (descriptor 0) into the available ring, then publish it (§2.7.13):
        ; x86 keeps stores in order, so the ring entry is visible before the index
        movzx eax, word [AVAIL + 2]
        mov ecx, [qsize]
        dec ecx
        and ecx, eax
        mov word [AVAIL + 4 + ecx*2], 0
        inc eax
        mov [AVAIL + 2], ax
        mov dword [ebp + QueueNotify], 0

        ; poll the used ring until the device has moved its index past ours
        movzx ecx, word [last_used]
.poll:  cmp cx, [USED + 2]
        je .poll
        lea eax, [ecx + 1]
        mov [last_used], ax
        mov eax, [qsize]
        dec eax
        and ecx, eax
        mov eax, [USED + 4 + ecx*8 + 4] ; used element: id (0: our head), len
        mov [last_len], eax
        movzx eax, byte [REQ_STATUS]
        mov [last_status], eax

        ; what an interrupt handler does: read InterruptStatus, acknowledge those bits
        mov eax, [ebp + InterruptStatus]
        mov [last_isr], eax
        mov [ebp + InterruptACK], eax
        popad
        ret

; put_result: "status S, used len L, isr I" from the last request
put_result:
        push eax
        push esi
        mov esi, s_res_status
        call puts
        mov eax, [last_status]
        call putdec
        cmp eax, 3
        jae .named
        mov esi, [status_names + eax*4]
        call puts
.named: mov esi, s_res_len
        call puts
        mov eax, [last_len]
        call putdec
        mov esi, s_res_isr
        call puts
        mov eax, [last_isr]
        call putdec
        pop esi
        pop eax
        ret

; checksum: EAX = rol-5/xor hash of the ECX bytes (a multiple of 4) at ESI
checksum:
        push ecx
        push esi
        shr ecx, 2
        xor eax, eax
.next:  rol eax, 5
        xor eax, [esi]
        add esi, 4
        loop .next
        pop esi
        pop ecx
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

newline:
        push eax
        mov al, 10
        call putc
        pop eax
        ret

; puthex2: AL as two hexadecimal digits
puthex2:
        push eax
        push ebx
        movzx ebx, al
        shr al, 4
        and eax, 0xF
        mov al, [hexdigits + eax]
        call putc
        and ebx, 0xF
        mov al, [hexdigits + ebx]
        call putc
        pop ebx
        pop eax
        ret

; puthex8: EAX as eight hexadecimal digits
puthex8:
        push eax
        rol eax, 8
        call puthex2
        rol eax, 8
        call puthex2
        rol eax, 8
        call puthex2
        rol eax, 8
        call puthex2
        pop eax
        ret

; putdec: EAX in decimal
putdec:
        pushad
        mov ebx, 10
        xor ecx, ecx
.div:   xor edx, edx
        div ebx
        push edx
        inc ecx
        test eax, eax
        jnz .div
.out:   pop eax
        add al, '0'
        call putc
        loop .out
        popad
        ret

s_nodevice:   db "virtio-blk: no modern block device on the virtio-mmio transports", 10, 0
s_found:      db "virtio-blk: transport ", 0
s_at:         db " at ", 0
s_vendor:     db ", vendor ", 0
s_noversion1: db "virtio-blk: the device does not offer VIRTIO_F_VERSION_1", 10, 0
s_features:   db "features: accepted ", 0
s_status:     db ", status ", 0
s_nofeatures: db "virtio-blk: FEATURES_OK did not stick", 10, 0
s_queue_busy: db "virtio-blk: queue 0 is already ready", 10, 0
s_noqueue:    db "virtio-blk: queue 0 does not exist", 10, 0
s_queue:      db "queue 0: max ", 0
s_queue2:     db ", size ", 0
s_driver_ok:  db "driver ok: status ", 0
s_capacity:   db "capacity: ", 0
s_sectors:    db " sectors", 10, 0
s_too_big:    db "virtio-blk: more than 2^32 sectors", 10, 0
s_too_small:  db "virtio-blk: fewer sectors than this guest writes to", 10, 0
s_read:       db "read sector ", 0
s_write:      db "write sector ", 0
s_colon:      db ": ", 0
s_checksum:   db ", checksum ", 0
s_flush:      db "flush: ", 0
s_get_id:     db "get id: ", 0
s_id:         db ', id "', 0
s_past:       db "read past the end, sector ", 0
s_straddle:   db "read 2 sectors across the end, sector ", 0
s_write_past: db "write past the end, sector ", 0
s_unknown:    db "unknown request type 0x7E: ", 0
s_rings:      db "rings: avail idx ", 0
s_rings2:     db ", used idx ", 0
s_reset:      db "reset: status ", 0
s_ready:      db ", queue ready ", 0
s_done:       db "virtio-blk: done", 10, 0
s_res_status: db "status ", 0
s_res_len:    db ", used len ", 0
s_res_isr:    db ", isr ", 0
s_ok:         db " (OK)", 0
s_ioerr:      db " (IOERR)", 0
s_unsupp:     db " (UNSUPP)", 0
hexdigits:    db "0123456789ABCDEF"

        align 4
status_names: dd s_ok, s_ioerr, s_unsupp

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
