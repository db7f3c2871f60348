"""A bare VMX test bench: a Cpu on PhysicalMemory, a Vmcs holding vmsim's entry state, and
small guest programs. No kvm.ko run loop, no VMM: the tests drive `Vmx` the way kvm.ko
would (the host-state area is filled by kvm-intel's own functions).

Guest memory map (physical = linear unless a test turns paging on):
  0x1000  GDT (null, flat code 0x08, flat data 0x10, TSS 0x18)
  0x2000  IDT (256 interrupt gates, each to a stub that records its vector)
  0x3000  IDT stubs: `mov [VECTOR_LOG], vector; hlt` (8-byte slots, see `stub_address`)
  0x8000  the guest program (`CODE`)
  0x9000  guest data
  0xF000  top of the guest stack (`STACK`)
"""

from __future__ import annotations

from vmsim.asm import assemble
from vmsim.hw.cpu import Cpu
from vmsim.hw.ept import build_identity_ept
from vmsim.hw.memory import PhysicalMemory
from vmsim.hw.vmcs import (
    CPU_BASED_ACTIVATE_SECONDARY_CONTROLS,
    CPU_BASED_HLT_EXITING,
    CPU_BASED_UNCOND_IO_EXITING,
    CPU_BASED_USE_TSC_OFFSETTING,
    SECONDARY_EXEC_ENABLE_EPT,
    SECONDARY_EXEC_UNRESTRICTED_GUEST,
    F,
    Vmcs,
)
from vmsim.hw.vmx import ExitInfo, Vmx
from vmsim.kvm.vmx import (
    LINUX_HOST,
    vmx_prepare_switch_to_guest,
    vmx_set_constant_host_state,
    vmx_update_host_rsp,
    vmx_vcpu_load_vmcs,
    vmx_vmexit_ctrl,
)

MEM_SIZE = 0x100000
GDT, IDT, STUBS, CODE, DATA, STACK = 0x1000, 0x2000, 0x3000, 0x8000, 0x9000, 0xF000
VECTOR_LOG = 0x9F00  # the IDT stubs store the vector they ran for here
STUB_SIZE = 16

# Guest access rights (VMCS format: type S DPL P | AVL L D/B G << 12).
AR_CODE = 0xC09B  # type 11 (execute/read, accessed), S, P, D/B, G
AR_DATA = 0xC093  # type 3 (read/write, accessed), S, P, D/B, G
AR_TR = 0x008B  # type 11 (busy 32-bit TSS), P
AR_LDTR = 0x0082  # type 2 (LDT), P
AR_UNUSABLE = 0x10000

# Controls as kvm.ko sets them (vmsim/kvm/vmx.py) minus the bits a test picks itself.
CPU_BASED_DEFAULT1 = 0x0401E172


def gdt_entry(base: int, limit: int, access: int, flags: int) -> bytes:
    lo = (limit & 0xFFFF) | (base & 0xFFFF) << 16
    hi = ((base >> 16) & 0xFF) | access << 8 | (limit & 0xF0000) | flags << 20 | (base & 0xFF000000)
    return lo.to_bytes(4, "little") + hi.to_bytes(4, "little")


def stub_address(vector: int) -> int:
    return STUBS + vector * STUB_SIZE


class Bench:
    """One vCPU in VMX non-root operation, set up by hand."""

    def __init__(self, program: str | bytes = b"", cpu_based: int | None = None):
        self.mem = PhysicalMemory(MEM_SIZE)
        self.cpu = Cpu(self.mem)
        self.vmx = Vmx(self.cpu)
        self.vmcs = Vmcs()
        self._tables()
        self.set_guest_state()
        if cpu_based is None:
            cpu_based = (CPU_BASED_DEFAULT1 | CPU_BASED_HLT_EXITING | CPU_BASED_UNCOND_IO_EXITING
                         | CPU_BASED_USE_TSC_OFFSETTING | CPU_BASED_ACTIVATE_SECONDARY_CONTROLS)
        self.vmcs.write(F.CPU_BASED_VM_EXEC_CONTROL, cpu_based)
        # kvm.ko's: EPT (identity here: vmsim's guest-physical = the bench's memory) and
        # unrestricted guest, which lets CR0.PG be 0 (the entry state has paging off).
        self.vmcs.write(F.SECONDARY_VM_EXEC_CONTROL,
                        SECONDARY_EXEC_ENABLE_EPT | SECONDARY_EXEC_UNRESTRICTED_GUEST)
        self.vmcs.write(F.EPT_POINTER, build_identity_ept(self.vmx.host, MEM_SIZE))
        self.image = None
        if program:
            self.load(program)

    # -- memory -------------------------------------------------------------------------
    def _tables(self) -> None:
        gdt = (bytes(8) + gdt_entry(0, 0xFFFFF, 0x9B, 0xC) + gdt_entry(0, 0xFFFFF, 0x93, 0xC)
               + gdt_entry(0x9800, 0x67, 0x8B, 0))
        self.mem.load(GDT, gdt)
        idt = b""
        for v in range(256):
            off = stub_address(v)
            # mov dword [VECTOR_LOG], v ; hlt  (C7 05 disp32 imm32, F4)
            stub = (b"\xc7\x05" + VECTOR_LOG.to_bytes(4, "little") + v.to_bytes(4, "little")
                    + b"\xf4")
            self.mem.load(off, stub.ljust(STUB_SIZE, b"\x90"))
            lo = (off & 0xFFFF) | 0x08 << 16
            hi = (off & 0xFFFF0000) | 0x8E00  # 32-bit interrupt gate, P, DPL 0
            idt += lo.to_bytes(4, "little") + hi.to_bytes(4, "little")
        self.mem.load(IDT, idt)
        self.mem.write(VECTOR_LOG, 4, 0xFFFFFFFF)

    def load(self, program: str | bytes, at: int = CODE) -> None:
        if isinstance(program, str):
            self.image = assemble(f"bits 32\norg {at:#x}\n{program}\n")
            program = self.image.data
        self.mem.load(at, program)
        self.vmcs.write(F.GUEST_RIP, at)

    def sym(self, name: str) -> int:
        return self.image.symbols[name]

    @property
    def vector_log(self) -> int | None:
        v = self.mem.read(VECTOR_LOG, 4)
        return None if v == 0xFFFFFFFF else v

    # -- the VMCS -------------------------------------------------------------------------
    def set_guest_state(self) -> None:
        """vmsim's entry state: flat 32-bit protected mode, paging off, CPL 0."""
        w = self.vmcs.write
        for seg in ("ES", "SS", "DS", "FS", "GS"):
            w(F[f"GUEST_{seg}_SELECTOR"], 0x10)
            w(F[f"GUEST_{seg}_BASE"], 0)
            w(F[f"GUEST_{seg}_LIMIT"], 0xFFFFFFFF)
            w(F[f"GUEST_{seg}_AR_BYTES"], AR_DATA)
        w(F.GUEST_CS_SELECTOR, 0x08)
        w(F.GUEST_CS_BASE, 0)
        w(F.GUEST_CS_LIMIT, 0xFFFFFFFF)
        w(F.GUEST_CS_AR_BYTES, AR_CODE)
        w(F.GUEST_TR_SELECTOR, 0x18)
        w(F.GUEST_TR_BASE, 0x9800)
        w(F.GUEST_TR_LIMIT, 0x67)
        w(F.GUEST_TR_AR_BYTES, AR_TR)
        w(F.GUEST_LDTR_SELECTOR, 0)
        w(F.GUEST_LDTR_AR_BYTES, AR_UNUSABLE)
        w(F.GUEST_GDTR_BASE, GDT)
        w(F.GUEST_GDTR_LIMIT, 4 * 8 - 1)
        w(F.GUEST_IDTR_BASE, IDT)
        w(F.GUEST_IDTR_LIMIT, 256 * 8 - 1)
        w(F.GUEST_CR0, 0x31)
        w(F.GUEST_CR3, 0)
        w(F.GUEST_CR4, 0x2000)
        w(F.GUEST_RSP, STACK)
        w(F.GUEST_RIP, CODE)
        w(F.GUEST_RFLAGS, 0x2)
        w(F.GUEST_ACTIVITY_STATE, 0)
        w(F.GUEST_INTERRUPTIBILITY_INFO, 0)
        w(F.VMCS_LINK_POINTER, 0xFFFFFFFFFFFFFFFF)
        w(F.PIN_BASED_VM_EXEC_CONTROL, 0x16)
        w(F.VM_EXIT_CONTROLS, vmx_vmexit_ctrl())  # a 64-bit host: host address-space size
        w(F.VM_ENTRY_CONTROLS, 0x000011FF)
        # The host-state area as kvm-intel fills it (the bench's host is vmsim's Linux).
        vmx_set_constant_host_state(self.vmcs)
        vmx_vcpu_load_vmcs(self.vmcs, 0)
        vmx_prepare_switch_to_guest(self.vmcs)
        vmx_update_host_rsp(self.vmcs, LINUX_HOST.vcpu_thread_kernel_rsp)
        # No bits owned by the host: MOV to CR0/CR4 never exits unless a test says so.
        w(F.CR0_GUEST_HOST_MASK, 0)
        w(F.CR4_GUEST_HOST_MASK, 0)
        w(F.CR0_READ_SHADOW, 0x31)
        w(F.CR4_READ_SHADOW, 0)

    def controls(self, set_: int = 0, clear: int = 0) -> None:
        ctl = self.vmcs.read(F.CPU_BASED_VM_EXEC_CONTROL)
        self.vmcs.write(F.CPU_BASED_VM_EXEC_CONTROL, (ctl | set_) & ~clear)

    # -- running --------------------------------------------------------------------------
    def enter(self, launch: bool | None = None) -> bool:
        if launch is None:
            launch = not self.vmcs.launched
        return self.vmx.vm_entry(self.vmcs, launch=launch)

    def run(self, budget: int = 1000) -> ExitInfo | None:
        """VM entry, then run the guest to its first exit (None: budget used or halted)."""
        assert self.enter(), self.vmx.entry_failure
        return self.vmx.run(budget)

    def resume(self, budget: int = 1000) -> ExitInfo | None:
        """What kvm.ko does after handling an exit: skip the instruction, VMRESUME, run."""
        r = self.vmcs.read
        self.vmcs.write(F.GUEST_RIP, r(F.GUEST_RIP) + r(F.VM_EXIT_INSTRUCTION_LEN))
        return self.run(budget)

    def read(self, field: int) -> int:
        return self.vmcs.read(field)


PAGE_DIR, PAGE_TABLE = 0x20000, 0x21000


def identity_paging(b: Bench, not_present: tuple[int, ...] = (), read_only: tuple[int, ...] = ()
                    ) -> None:
    """Guest 32-bit paging: the first 4 MiB identity-mapped with 4-KiB pages, except the
    pages listed (not present, or present but read-only). CR0.PG=1, CR0.WP=1."""
    b.mem.write(PAGE_DIR, 4, PAGE_TABLE | 3)
    for i in range(1024):
        la = i << 12
        pte = 0 if la in not_present else la | (1 if la in read_only else 3)
        b.mem.write(PAGE_TABLE + 4 * i, 4, pte)
    b.vmcs.write(F.GUEST_CR3, PAGE_DIR)
    b.vmcs.write(F.GUEST_CR0, 0x80010031)
