"""Random programs of REP string instructions (MOVS, STOS, LODS, CMPS, SCAS with REP, REPE
and REPNE; INS and OUTS at a port nobody claims) in both directions and every size, over a
window of eight pages that map RAM, the VGA text buffer (MMIO: under KVM each element there
is kvm.ko's instruction emulator's) or nothing, some of them not present or read-only
(CR0.WP set), so that runs fault part-way (CMPS on one side only: which of its two loads
comes first is the implementation's). The #PF handler logs CR2, the error code, ECX,
ESI and EDI, and makes the page present and writable; the instruction resumes. After each
instruction the guest keeps EAX, ECX, ESI, EDI and the arithmetic flags; at the end it prints
them, the log and a hash of every frame and VGA page. They run on bare metal, on the
simulated kvm.ko with EPT and with shadow paging, and on qemu-system-i386 (TCG); every run
must print the same. (The host's KVM here refuses guest paging.) The same again with a
16-bit address size (SI, DI and CX, their upper halves random and kept) over a window at
0x8000, some runs ending at 64 KiB, where SI and DI wrap. A fixed set of programs in CI
(derandomized); `VMSIM_SOAK=N` runs N fresh ones."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.diff.conftest import SOAK
from tests.stack.test_qemu import run_qemu
from vmsim.asm import assemble
from vmsim.session import Session

EXAMPLES = SOAK or 12
PD, PT = 0x200000, 0x201000
PT0 = 0x202000  # a16: the table of linear 0-4 MiB, identity but for the window
WINDOW16 = 0x8000  # a16: the window's eight pages, within 64 KiB
FRAMES = 0x300000  # eight frames of RAM
VGA = 0xB8000  # two pages of the text buffer
NOTHING = 0x2000000  # where no RAM and no device is
WINDOW, PAGES = 0x400000, 8
LOG, LOGN, RECS = 0x380000, 0x37FFFC, 0x381000
PORT = 0x2E8  # COM4's: nobody's here
P, RW = 0x1, 0x2
ARITH = 0x8D5  # CF PF AF ZF SF OF
SIZES = {1: "b", 2: "w", 4: "d"}
BUDGET = 1_000_000  # instructions: each program needs about 100,000

TARGETS = [FRAMES + 0x1000 * i for i in range(PAGES)] + [VGA, VGA + 0x1000, NOTHING]
PTE = st.tuples(st.sampled_from(TARGETS), st.sampled_from((P | RW, P | RW, P, RW)))


@st.composite
def instruction(draw, a16: bool = False) -> tuple:
    """One REP instruction and its registers; with `a16` a 16-bit address size (SI, DI
    and CX in the low halves, random upper halves that must stay) over WINDOW16."""
    window = WINDOW16 if a16 else WINDOW
    op = draw(st.sampled_from(("movs", "stos", "lods", "cmps", "scas", "ins", "outs")))
    prefix = draw(st.sampled_from(("repe", "repne"))) if op in ("cmps", "scas") else "rep"
    size = draw(st.sampled_from((1, 2, 4)))
    down = draw(st.booleans())
    count = draw(st.one_of(st.integers(0, 6), st.integers(0, 1500)))

    def address() -> int:
        # Often near a page's edge, so that runs cross into the next page; the whole run
        # stays in the window.
        page = draw(st.integers(0, PAGES - 1))
        off = draw(st.one_of(st.integers(0, 0xFFF), st.integers(0xFF0, 0xFFF), st.integers(0, 0x10)))
        return window + page * 0x1000 + off

    esi, edi = address(), address()
    rooms = [max((a - window + size) if down else (window + PAGES * 0x1000 - a), 0)
             for a in (esi, edi)]
    # The run stays in the window. With a16 a quarter of the runs fill it to its end: going
    # up, that is 64 KiB, where SI and DI wrap to 0 after the last element.
    span = min(rooms) if a16 and draw(st.integers(0, 3)) == 0 else min(count * size, *rooms)
    count = span // size
    edits = draw(st.lists(st.tuples(st.integers(0, PAGES - 1), st.sampled_from((~P, ~RW))),
                          max_size=2))
    if op == "cmps":
        # Which of CMPS's two loads comes first is the implementation's: QEMU's TCG reads
        # ES:EDI first, vmsim DS:ESI (docs/qemu-departures.md). One side's pages are made
        # present first, so that only the other side can fault.
        run = esi if draw(st.booleans()) else edi
        edits += [(page, P | RW) for page in _pages(run, count, size, down, window)]
    if a16:
        esi, edi, count = (draw(st.integers(0, 0xFFFF)) << 16 | x for x in (esi, edi, count))
    return op, prefix, size, down, count, esi, edi, draw(st.integers(0, 0xFFFFFFFF)), edits


def _pages(at: int, count: int, size: int, down: bool, window: int = WINDOW) -> range:
    """The window's pages a run of `count` elements from `at` touches."""
    if count == 0:
        return range(0)
    last = at + ((-(count - 1) if down else count - 1) * size)
    lo, hi = min(at, last), max(at, last) + size - 1
    return range((lo - window) >> 12, ((hi - window) >> 12) + 1)


def program(ptes: list[tuple[int, int]], items: list[tuple], a16: bool = False) -> str:
    """The guest. With `a16` the window is WINDOW16, mapped by PT0 (entries 8-15), and
    each instruction has a 16-bit address size."""
    table = "\n".join(f"        dd {t | f:#x}" for t, f in ptes)
    window, pt = (WINDOW16, PT0 + 4 * (WINDOW16 >> 12)) if a16 else (WINDOW, PT)
    body = []
    for k, (op, prefix, size, down, count, esi, edi, eax, edits) in enumerate(items):
        for page, mask in edits:
            edit = f"or dword [{pt + 4 * page:#x}], {mask}" if mask > 0 else \
                f"and dword [{pt + 4 * page:#x}], {mask & 0xFFFFFFFF:#x}"
            body += [edit, f"invlpg [{window + 0x1000 * page:#x}]"]
        body += [f"mov esi, {esi:#x}", f"mov edi, {edi:#x}", f"mov ecx, {count:#x}",
                 f"mov eax, {eax:#x}", f"mov dx, {PORT:#x}", "std" if down else "cld",
                 *(["db 0x67"] if a16 else []), f"{prefix} {op}{SIZES[size]}", "pushfd",
                 "cld", "pop ebp", f"and ebp, {ARITH:#x}"]
        body += [f"mov [{RECS + 20 * k + 4 * i:#x}], {r}"
                 for i, r in enumerate(("eax", "ecx", "esi", "edi", "ebp"))]
    return f"""bits 32
org 0x100000
start:  jmp entry
        align 4
        dd 0x1BADB002, 0x00010000, -(0x1BADB002 + 0x00010000)
        dd start + 4, 0x100000, 0, 0, entry
entry:  mov esp, 0x90000
        lgdt [gdtr]
        jmp 0x08:.cs
.cs:    mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        cld
        mov ecx, 32
        mov eax, unexpected
.idt:   mov [idt + ecx * 8 - 8], ax
        mov word [idt + ecx * 8 - 6], 0x08
        mov word [idt + ecx * 8 - 4], 0x8E00
        shr eax, 16
        mov [idt + ecx * 8 - 2], ax
        mov eax, unexpected
        loop .idt
        mov eax, pf
        mov [idt + 14 * 8], ax
        shr eax, 16
        mov [idt + 14 * 8 + 6], ax
        lidt [idtr]
        ; the frames and the two VGA pages: a word pattern (what is there first is not
        ; the same everywhere: SeaBIOS writes the screen on QEMU)
        mov edi, {FRAMES:#x}
        mov ecx, {PAGES * 1024}
        mov eax, 0x01234567
.fill:  stosd
        imul eax, eax, 0x01000193
        inc eax
        loop .fill
        mov edi, {VGA:#x}
        mov ecx, 2 * 1024
.vga:   stosd
        imul eax, eax, 0x01000193
        inc eax
        loop .vga
        mov edi, {PD:#x}
        mov ecx, 2 * 1024
        xor eax, eax
        rep stosd
        mov dword [{LOGN:#x}], 0
        {_low_tables(a16)}
        mov dword [{PD + 4:#x}], {PT | P | RW:#x}
        mov esi, ptes
        mov edi, {pt:#x}
        mov ecx, {PAGES}
        rep movsd
        mov eax, cr4
        or eax, 0x10
        mov cr4, eax
        mov eax, {PD:#x}
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80010000              ; PG, WP
        mov cr0, eax
        {chr(10).join("        " + line for line in body).lstrip()}
        ; report: the log, the records, a hash of each frame and VGA page
        mov eax, [{LOGN:#x}]
        call hex
        mov esi, {LOG:#x}
        mov ebx, [{LOGN:#x}]
        imul ebx, ebx, 5
        call words
        mov esi, {RECS:#x}
        mov ebx, {5 * len(items)}
        call words
        mov esi, {FRAMES:#x}
        mov ebx, {PAGES}
        call hashes
        mov esi, {VGA:#x}
        mov ebx, 2
        call hashes
        mov dx, 0x501
        mov al, 0
        out dx, al
        hlt

pf:     ; log CR2, the error code, ECX, ESI, EDI; make the page present and writable
        push eax
        push ebx
        mov ebx, [{LOGN:#x}]
        imul ebx, ebx, 20
        mov eax, cr2
        mov [{LOG:#x} + ebx], eax
        mov eax, [esp + 8]
        mov [{LOG + 4:#x} + ebx], eax
        mov [{LOG + 8:#x} + ebx], ecx
        mov [{LOG + 12:#x} + ebx], esi
        mov [{LOG + 16:#x} + ebx], edi
        inc dword [{LOGN:#x}]
        mov eax, cr2
        shr eax, 12
        and eax, 0x3FF
        or dword [{PT0 if a16 else PT:#x} + eax * 4], {P | RW}
        mov eax, cr2
        invlpg [eax]
        pop ebx
        pop eax
        add esp, 4
        iret

unexpected:
        mov al, 3
        mov dx, 0x501
        out dx, al
        hlt

words:  ; EBX dwords from ESI, each on a line
        test ebx, ebx
        jz .done
.w:     lodsd
        call hex
        dec ebx
        jnz .w
.done:  ret

hashes: ; EBX pages from ESI: the FNV-1 hash of each by dwords
        mov edx, 0x811C9DC5
        mov ecx, 1024
.h:     lodsd
        imul edx, edx, 0x01000193
        xor edx, eax
        loop .h
        mov eax, edx
        call hex
        dec ebx
        jnz hashes
        ret

hex:    ; EAX as eight hex digits and a newline on COM1
        push ecx
        push edx
        mov ecx, 8
.digit: rol eax, 4
        push eax
        and al, 15
        add al, '0'
        cmp al, '9'
        jbe .put
        add al, 7
.put:   mov dx, 0x3F8
        out dx, al
        pop eax
        loop .digit
        mov al, 10
        out dx, al
        pop edx
        pop ecx
        ret

        align 4
ptes:
{table}
        align 8
gdt:    dq 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF
gdtr:   dw 23
        dd gdt
idt:    times 32 dq 0
idtr:   dw 32 * 8 - 1
        dd idt
"""


def _low_tables(a16: bool) -> str:
    """PD[0]: 0-4 MiB as one identity 4 MiB page; with a16 through PT0, identity page by
    page (the window's entries are written after)."""
    if not a16:
        return f"mov dword [{PD:#x}], 0x83       ; 0-4 MiB: a 4 MiB page, identity"
    return f"""mov edi, {PT0:#x}
        mov eax, {P | RW:#x}
        mov ecx, 1024
.pt0:   stosd
        add eax, 0x1000
        loop .pt0
        mov dword [{PD:#x}], {PT0 | P | RW:#x}"""


def _vmsim(image, backend: str, paging: str = "ept") -> tuple[bytes, int | None]:
    out = bytearray()
    kw = {"paging": paging} if backend == "sim" else {}
    # (A budget: a REP that ran past its count would otherwise run for hours.)
    s = Session(image, backend, serial_out=out.extend, max_instructions=BUDGET, **kw)
    status = s.run().exit_status
    return bytes(out), status


@settings(deadline=None, derandomize=not SOAK, database=None, max_examples=EXAMPLES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ptes=st.lists(PTE, min_size=PAGES, max_size=PAGES),
       items=st.lists(instruction(), min_size=1, max_size=6))
def test_rep_faults_are_the_same_everywhere(ptes: list, items: list, tmp_path: Path) -> None:
    _same_everywhere(program(ptes, items), tmp_path)


@settings(deadline=None, derandomize=not SOAK, database=None, max_examples=SOAK or 6,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ptes=st.lists(PTE, min_size=PAGES, max_size=PAGES),
       items=st.lists(instruction(a16=True), min_size=1, max_size=6))
def test_a16_rep_faults_are_the_same_everywhere(ptes: list, items: list, tmp_path: Path) -> None:
    """The same with a 16-bit address size: SI, DI and CX, their upper halves kept, over a
    window at 0x8000 (kvm.ko's emulator counts CX for the VGA pages and the port)."""
    _same_everywhere(program(ptes, items, a16=True), tmp_path)


def _same_everywhere(text: str, tmp_path: Path) -> None:
    image = assemble(text, "<rep faults>")
    bare = _vmsim(image, "bare")
    assert bare[1] == 1, f"the guest did not finish on bare metal: {bare}\n{text}"
    for paging in ("ept", "shadow"):
        assert _vmsim(image, "sim", paging) == bare, f"{paging} differs from bare metal:\n{text}"
    assert run_qemu(image.data, tmp_path) == bare, f"QEMU differs from vmsim:\n{text}"
