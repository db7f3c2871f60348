"""Random programs of guest paging: PTE and PDE edits (present, writable, accessed, dirty,
the frame; a page table or a 4 MiB page), INVLPG, CR3 switches between two address spaces,
CR0.WP, reads, writes and read-modify-writes through the mappings and through a 4 MiB alias
of the frames, and instructions that raise #DE, #BP, #OF, #BR, #UD and #GP, with handlers
that log the vector, the error code and CR2 or the saved EIP, and resume after the
instruction. They run on bare metal, on the simulated kvm.ko with EPT and with shadow paging
(where kvm.ko write-protects the guest's tables, emulates the writes to them and sets the
accessed and dirty bits for the guest), and on qemu-system-i386 (TCG: an oracle for paging,
A/D bits and #PF codes; the host's KVM here refuses guest paging). The guest prints what it
saw at the end (its registers, the fault log, every table entry and the frames' words);
every run must print the same and exit the same way.

A PTE may point at a frame or at either address space's page table, so that writes through
the window edit page tables too. Every PTE edit is followed by INVLPG, and every PDE edit
and every write through the window by a CR3 reload, so that no run depends on what a TLB
may keep (which the SDM leaves to the implementation). A fixed set of
programs in CI (derandomized); `VMSIM_SOAK=N` runs N fresh ones.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.diff.conftest import SOAK
from tests.stack.test_qemu import run_qemu
from vmsim.asm import assemble
from vmsim.session import Session

EXAMPLES = SOAK or 25
PD = (0x200000, 0x201000)  # the two address spaces' page directories
PT = (0x202000, 0x203000)  # their page tables for linear 4-8 MiB
FRAME = 0x300000  # four frames, 0x300000-0x303FFF
WINDOW = 0x400000  # linear: four pages through PT_A or PT_B
ALIAS = 0x800000  # linear 8-12 MiB: a 4 MiB page onto physical 0-4 MiB
LOG, LOGN, RESUME = 0x380000, 0x380100, 0x380104
LOG_ENTRIES = 8
P, RW, A, D, PS = 0x1, 0x2, 0x20, 0x40, 0x80

# Instructions that raise an exception, delivered through the IDT while the guest pages
# (under shadow paging a delivery may itself exit, for a stack page not yet shadowed, and
# be injected again).
EXCEPTIONS = {
    "div0": "mov eax, 7\n        xor edx, edx\n        xor ecx, ecx\n        div ecx",  # #DE
    "int3": "int3",  # #BP, a trap
    "into": "mov al, 0x7F\n        add al, 1\n        into",  # #OF, a trap
    "bound": "mov eax, 100\n        bound eax, [bounds]",  # #BR
    "ud2": "ud2",  # #UD
    "selector": "mov ax, 0x38\n        mov ds, ax",  # #GP(0x38): beyond the GDT's limit
    "int_n": "int 0x40",  # #GP(0x40 * 8 + 2): beyond the IDT's limit
}
page = st.integers(0, 3)
offset = st.sampled_from((0, 4, 8))
flags = st.sampled_from((P | RW, P, RW, 0, P | RW | A, P | RW | A | D, P | A | D, P | D))
# What a PTE may point at: one of the four frames, or either address space's page table
# (writes through the window then edit page tables, which shadow paging write-protects).
TARGETS = (*(FRAME + 0x1000 * j for j in range(4)), *PT)
target = st.sampled_from(TARGETS)
# Values written: PTE-like (they may land in a page table), so that no mapping ever points
# outside RAM, where vmsim and QEMU answer differently for reasons other than paging.
value = st.builds(lambda t, f: t | f, target, flags)

ITEMS = st.one_of(
    st.tuples(st.just("pte"), st.integers(0, 1), page, target, flags),
    st.tuples(st.just("pde"), st.integers(0, 1), st.sampled_from((P | RW, P, RW))),
    # the window as one 4 MiB page onto physical 4-8 MiB (RAM on every backend)
    st.tuples(st.just("pde_large"), st.integers(0, 1),
              st.sampled_from((P | RW, P, P | RW | A | D, RW))),
    st.tuples(st.just("cr3"), st.integers(0, 1)),
    st.tuples(st.just("wp"), st.booleans()),
    st.tuples(st.just("read"), page, offset),
    st.tuples(st.just("write"), page, offset, value),
    st.tuples(st.just("inc"), page, offset),
    st.tuples(st.just("alias"), page, offset, value),
    st.tuples(st.just("read_pte"), st.integers(0, 1), page),
    st.tuples(st.just("exception"), st.sampled_from(tuple(EXCEPTIONS))),
)


_RELOAD = "\n        mov eax, cr3\n        mov cr3, eax"


def _item(k: int, item: tuple) -> str:
    kind, *a = item
    after = f".a{k}"
    guarded = f"mov dword [{RESUME:#x}], {after}\n        "
    if kind == "pte":
        t, i, frame, f = a
        return (f"mov dword [{PT[t] + 4 * i:#x}], {frame | f:#x}\n"
                f"        invlpg [{WINDOW + 0x1000 * i:#x}]")
    if kind == "pde":
        t, f = a
        return (f"mov dword [{PD[t] + 4:#x}], {PT[t] + f:#x}\n"
                "        mov eax, cr3\n        mov cr3, eax")
    if kind == "pde_large":
        t, f = a
        return (f"mov dword [{PD[t] + 4:#x}], {0x400000 | PS | f:#x}\n"
                "        mov eax, cr3\n        mov cr3, eax")
    if kind == "cr3":
        return f"mov eax, {PD[a[0]]:#x}\n        mov cr3, eax"
    if kind == "wp":
        op = "or eax, 0x10000" if a[0] else "and eax, 0xFFFEFFFF"
        return f"mov eax, cr0\n        {op}\n        mov cr0, eax"
    if kind == "read":
        return (guarded + f"xor edi, [{WINDOW + 0x1000 * a[0] + a[1]:#x}]\n"
                f"{after}:\n        rol edi, 5")
    # A write through the window may have edited a page table: a CR3 reload after it
    # drops every translation, so what follows does not depend on what a TLB keeps.
    if kind == "write":
        return (guarded + f"mov dword [{WINDOW + 0x1000 * a[0] + a[1]:#x}], {a[2]:#x}\n"
                f"{after}:{_RELOAD}")
    if kind == "inc":
        return guarded + f"inc dword [{WINDOW + 0x1000 * a[0] + a[1]:#x}]\n{after}:{_RELOAD}"
    if kind == "alias":
        return f"mov dword [{ALIAS + FRAME + 0x1000 * a[0] + a[1]:#x}], {a[2]:#x}"
    if kind == "exception":
        return guarded + f"{EXCEPTIONS[a[0]]}\n{after}:"
    t, i = a
    return f"xor esi, [{PT[t] + 4 * i:#x}]\n        rol esi, 3"


def program(items: list[tuple]) -> str:
    body = "\n        ".join(_item(k, it) for k, it in enumerate(items))
    shown = ([("edi", None), ("esi", None), (None, LOGN)]
             + [(None, LOG + 4 * n) for n in range(2 * LOG_ENTRIES)]
             + [(None, PD[t] + 4 * e) for t in (0, 1) for e in range(3)]
             + [(None, PT[t] + 4 * i) for t in (0, 1) for i in range(4)]
             + [(None, FRAME + 0x1000 * j + o) for j in range(4) for o in (0, 4, 8)])
    dump = "\n        ".join(
        (f"mov eax, {reg}" if reg else f"mov eax, [{at:#x}]") + "\n        call hex"
        for reg, at in shown)
    frames = "\n        ".join(
        f"mov dword [{FRAME + 0x1000 * j + o:#x}], {0x11111111 * (j + 1) + o:#x}"
        for j in range(4) for o in (0, 4, 8))
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
        lidt [idtr]
        xor ecx, ecx
.gate:  mov eax, [stubs + ecx * 8]
        mov ebx, [stubs + ecx * 8 + 4]
        mov [idt + eax * 8], bx
        mov word [idt + eax * 8 + 2], 0x08
        mov word [idt + eax * 8 + 4], 0x8E00
        shr ebx, 16
        mov [idt + eax * 8 + 6], bx
        inc ecx
        cmp ecx, 7
        jb .gate
        mov edi, {PD[0]:#x}
        mov ecx, 4 * 1024
        xor eax, eax
        rep stosd
        mov dword [{LOGN:#x}], 0
        {frames}
        mov dword [{PD[0]:#x}], 0x83
        mov dword [{PD[0] + 4:#x}], {PT[0] | P | RW:#x}
        mov dword [{PD[0] + 8:#x}], 0x83
        mov dword [{PD[1]:#x}], 0x83
        mov dword [{PD[1] + 4:#x}], {PT[1] | P | RW:#x}
        mov dword [{PD[1] + 8:#x}], 0x83
        mov dword [{PT[0]:#x}], {FRAME | P | RW:#x}
        mov dword [{PT[0] + 4:#x}], {FRAME + 0x1000 | P | RW:#x}
        mov dword [{PT[0] + 8:#x}], {FRAME + 0x2000 | P:#x}
        mov dword [{PT[1]:#x}], {FRAME + 0x3000 | P | RW:#x}
        mov dword [{PT[1] + 4:#x}], {FRAME + 0x2000 | P | RW:#x}
        mov dword [{PT[1] + 12:#x}], {FRAME | P | RW:#x}
        mov eax, cr4
        or eax, 0x10
        mov cr4, eax
        mov eax, {PD[0]:#x}
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80010000
        mov cr0, eax
        xor edi, edi
        xor esi, esi
        {body}
        {dump}
        mov dx, 0x501
        mov al, 0
        out dx, al
        hlt

; #DE #BP #OF #BR #UD #GP #PF: log (the first {LOG_ENTRIES}) the vector and error code, and
; CR2 for a #PF or else the saved EIP; count; resume after the instruction
stubs:  dd 0, v0, 3, v3, 4, v4, 5, v5, 6, v6, 13, v13, 14, v14
v0:     push 0
        push 0
        jmp exc
v3:     push 0
        push 3
        jmp exc
v4:     push 0
        push 4
        jmp exc
v5:     push 0
        push 5
        jmp exc
v6:     push 0
        push 6
        jmp exc
v13:    push 13
        jmp exc
v14:    push 14
exc:    mov eax, [{LOGN:#x}]
        cmp eax, {LOG_ENTRIES}
        jae .full
        mov ebx, [esp]
        shl ebx, 16
        mov ecx, [esp + 4]
        and ecx, 0xFFFF
        or ebx, ecx
        mov [{LOG:#x} + eax * 8], ebx
        mov ebx, [esp + 8]
        cmp dword [esp], 14
        jne .eip
        mov ebx, cr2
.eip:   mov [{LOG + 4:#x} + eax * 8], ebx
.full:  inc dword [{LOGN:#x}]
        mov esp, 0x90000
        jmp [{RESUME:#x}]
bounds: dd 0, 10

; hex: EAX as eight hex digits and a newline on COM1
hex:    mov ecx, 8
.digit: rol eax, 4
        mov ebx, eax
        and al, 15
        add al, '0'
        cmp al, '9'
        jbe .put
        add al, 7
.put:   call putc
        mov eax, ebx
        dec ecx
        jnz .digit
        mov al, 10
putc:   mov ah, al
        mov dx, 0x3FD
.wait:  in al, dx
        test al, 0x20
        jz .wait
        mov al, ah
        mov dx, 0x3F8
        out dx, al
        ret

        align 8
gdt:    dq 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF
gdtr:   dw 23
        dd gdt
idt:    times 32 dq 0
idtr:   dw 32 * 8 - 1
        dd idt
"""


def _vmsim(image, backend: str, paging: str = "ept") -> tuple[bytes, int | None, bool]:
    s = Session(image, backend, paging=paging) if backend == "sim" else Session(image, backend)
    outcome = s.run()
    return bytes(s.serial), outcome.exit_status, "triple fault" in outcome.reason


@settings(deadline=None, derandomize=not SOAK, database=None, max_examples=EXAMPLES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(items=st.lists(ITEMS, min_size=1, max_size=14))
def test_guest_paging_is_the_same_everywhere(items: list[tuple], tmp_path: Path) -> None:
    text = program(items)
    image = assemble(text, "<paging>")
    bare = _vmsim(image, "bare")
    assert bare[1] == 1, f"the guest did not finish on bare metal: {bare}\n{text}"
    for paging in ("ept", "shadow"):
        assert _vmsim(image, "sim", paging) == bare, f"{paging} differs from bare metal:\n{text}"
    qemu_out, qemu_status = run_qemu(image.data, tmp_path)
    assert (qemu_out, qemu_status) == bare[:2], f"QEMU differs from vmsim:\n{text}"


def test_a_4mib_page_dirtied_in_one_address_space_is_clean_in_the_other() -> None:
    """Found by the random test: both page directories map 0-4 MiB with a 4 MiB page. The
    #PF handler, run in the second address space, writes and dirties that PDE; back in the
    first, the dump's first write must dirty the first PDE too (SDM Vol. 3A 4.8: the
    processor sets the dirty bit of the entry that maps the page written). Shadow paging
    shared one writable shadow table between the two PDEs and left the first clean; kvm.ko
    keys such a direct page by the access its PDE gives (role.access)."""
    image = assemble(program([("cr3", 1), ("read", 2, 0), ("cr3", 0)]), "<paging>")
    bare = _vmsim(image, "bare")
    pd_a_0 = int(bare[0].split()[3 + 2 * LOG_ENTRIES], 16)  # after edi, esi, LOGN, the log
    assert pd_a_0 & (A | D) == A | D
    for paging in ("ept", "shadow"):
        assert _vmsim(image, "sim", paging) == bare, paging
    # The session shows the two direct pages of 0-4 MiB apart (the GUI's shadow-page view).
    s = Session(image, "sim", paging="shadow")
    s.run()
    direct = {(gfn, writable) for gfn, level, is_direct, _, _, writable in s.shadow_pages()
              if is_direct and level == 1}
    assert direct == {(0, False), (0, True)}
