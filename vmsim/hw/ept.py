"""EPT: the second translation stage, guest-physical -> host-physical (SDM Vol. 3C
"The Extended Page Table Mechanism"; LNX arch/x86/include/asm/vmx.h VMX_EPT_*).

A 4-level walk from EPTP over 8-byte entries in host memory (`HostPages`). Each entry has
R W X (bits 2:0; all zero: not present), a memory type in a leaf (bits 5:3), and the
next table or frame in bits 51:12. The walk ends in an EPT violation (the access is not
permitted, or an entry is not present) or an EPT misconfiguration (W without R, a leaf
memory type of 2, 3 or 7), both VM exits; the exit qualification is built here.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmsim.hw.hostmem import HostPages
from vmsim.hw.intercept import Intercept, InterceptExit

EPT_R, EPT_W, EPT_X = 1, 2, 4
EPT_RWX = 7
EPT_LARGE = 1 << 7
EPT_MT_WB = 6 << 3
EPT_IGNORE_PAT = 1 << 6
ADDR_MASK = 0x000FFFFFFFFFF000
LEVELS = ("PML4E", "PDPTE", "PDE", "PTE")  # level 4 .. 1
READ, WRITE, FETCH = 0, 1, 2
_NEED = (EPT_R, EPT_W, EPT_X)  # the permission each access needs (by READ, WRITE, FETCH)

# EPT-violation exit qualification bits (SDM; LNX EPT_VIOLATION_*).
EPT_VIOLATION_ACC_READ = 1 << 0
EPT_VIOLATION_ACC_WRITE = 1 << 1
EPT_VIOLATION_ACC_INSTR = 1 << 2
EPT_VIOLATION_GVA_IS_VALID = 1 << 7
EPT_VIOLATION_GVA_TRANSLATED = 1 << 8


@dataclass(frozen=True)
class EptStep:
    gpa: int
    level: str  # PML4E PDPTE PDE PTE
    table: int  # host-physical address of the table
    index: int
    entry_address: int
    entry: int
    outcome: str  # "table", "4K page", "2M page", "1G page", "not present", "denied", "misconfig"


def eptp_root(eptp: int) -> int:
    return eptp & ADDR_MASK


def _misconfigured(entry: int, leaf: bool) -> bool:
    if entry & (EPT_R | EPT_W) == EPT_W:  # writable but not readable
        return True
    return leaf and ((entry >> 3) & 7) in (2, 3, 7)


class Ept:
    """The walker the hardware uses while EPT is enabled."""

    def __init__(self, host: HostPages, eptp: int):
        self.host = host
        self._eptp = eptp
        self.refs = 0  # EPT paging-structure references made (the cost of 2D walks)
        # While kvm.ko's emulator replays an instruction it addresses guest memory by
        # guest-physical address itself: no EPT walk, no violation.
        self.software = False
        # The walks' results: guest-physical frame -> (host frame, entries read, the
        # permission the walk allowed), valid while the pool's generation is `_gen`.
        # A hit costs what the walk cost (refs), so it is only the same walk made cheaply;
        # it serves walks nobody records (no steps), and never one that would fail.
        self._memo: dict[int, tuple[int, int, int]] = {}
        # Frames whose walk ends in a misconfiguration (MMIO, kvm.ko's EPT_MISCONFIG
        # entries): the entries it read, under the same rule. Which entry a walk meets
        # does not depend on the access, so neither does the exit.
        self._misconfigs: dict[int, int] = {}
        self._gen = host.generation

    @property
    def eptp(self) -> int:
        return self._eptp

    @eptp.setter
    def eptp(self, value: int) -> None:
        self._eptp = value
        self._memo.clear()
        self._misconfigs.clear()

    def usable_memo(self) -> dict[int, tuple[int, int, int]] | None:
        """The memo of walks (guest-physical frame -> host frame, references, permission)
        when a hit in it may serve a walk nobody records now, as in translate: a hit
        whose permission allows the access gives its frame and counts its references."""
        if self.software or self._gen != self.host.generation:
            return None
        return self._memo

    def translate(self, gpa: int, access: int, la: int | None, final: bool,
                  steps: list | None = None) -> int:
        """Host-physical frame base for `gpa`; raises InterceptExit on violation/misconfig.

        `la` is the guest-linear address of the access (None: none, e.g. paging off is
        still an access with a linear address, so callers pass it); `final` says whether
        this is the data access itself or a reference to a guest paging structure.
        """
        if self.software:
            return gpa & ~0xFFF
        memo = self._memo
        if self._gen != self.host.generation:
            memo.clear()
            self._misconfigs.clear()
            self._gen = self.host.generation
        elif steps is None:
            hit = memo.get(gpa >> 12)
            if hit is not None and hit[2] & _NEED[access]:
                self.refs += hit[1]
                return hit[0]
            levels = self._misconfigs.get(gpa >> 12)
            if levels is not None:
                self.refs += levels
                raise _misconfig(gpa, la)
        frame, levels, perm = self._walk(gpa, access, la, final, steps)
        memo[gpa >> 12] = (frame, levels, perm)
        return frame

    def _walk(self, gpa: int, access: int, la: int | None, final: bool,
              steps: list | None) -> tuple[int, int, int]:
        table = eptp_root(self._eptp)
        perm = EPT_RWX
        host = self.host
        for depth in range(4):
            level = 4 - depth
            shift = 12 + 9 * (level - 1)
            index = (gpa >> shift) & 0x1FF
            addr = table + index * 8
            entry = host.read(addr, 8) if host.owns(addr) else 0
            self.refs += 1
            leaf = level == 1 or (level in (2, 3) and entry & EPT_LARGE)
            if entry & EPT_RWX == 0:
                self._step(steps, gpa, level, table, index, addr, entry, "not present")
                raise self._violation(gpa, access, la, final, 0)
            if _misconfigured(entry, leaf):
                self._step(steps, gpa, level, table, index, addr, entry, "misconfig")
                self._misconfigs[gpa >> 12] = depth + 1
                raise _misconfig(gpa, la)
            perm &= entry & EPT_RWX
            if leaf:
                need = _NEED[access]
                if not perm & need:
                    self._step(steps, gpa, level, table, index, addr, entry, "denied")
                    raise self._violation(gpa, access, la, final, perm)
                size = {1: "4K page", 2: "2M page", 3: "1G page"}[level]
                self._step(steps, gpa, level, table, index, addr, entry, size)
                page_mask = (1 << shift) - 1
                return ((entry & ADDR_MASK & ~page_mask) | (gpa & page_mask & ~0xFFF),
                        depth + 1, perm)
            self._step(steps, gpa, level, table, index, addr, entry, "table")
            table = entry & ADDR_MASK
        raise AssertionError("unreachable")

    @staticmethod
    def _step(steps: list | None, gpa: int, level: int, table: int, index: int, addr: int,
              entry: int, outcome: str) -> None:
        if steps is not None:
            steps.append(EptStep(gpa, LEVELS[4 - level], table, index, addr, entry, outcome))

    @staticmethod
    def _violation(gpa: int, access: int, la: int | None, final: bool,
                   perm: int) -> InterceptExit:
        q = (EPT_VIOLATION_ACC_WRITE if access == WRITE else
             EPT_VIOLATION_ACC_INSTR if access == FETCH else EPT_VIOLATION_ACC_READ)
        q |= perm << 3  # what the walk allowed: bits 5:3 (all 0: not present)
        if la is not None:
            q |= EPT_VIOLATION_GVA_IS_VALID | (EPT_VIOLATION_GVA_TRANSLATED if final else 0)
        return InterceptExit(Intercept("ept_violation", 0, linear=la or 0,
                                       extra={"gpa": gpa, "qualification": q,
                                              "write": access == WRITE}))


def _misconfig(gpa: int, la: int | None) -> InterceptExit:
    return InterceptExit(Intercept("ept_misconfig", 0, linear=la or 0, extra={"gpa": gpa}))


def build_identity_ept(host: HostPages, size: int) -> int:
    """EPT mapping guest-physical [0, size) 1:1 with 2 MiB leaves; returns the EPTP.

    What a hypervisor that maps all of guest RAM up front would build (tests use it)."""
    pml4, pdpt = host.alloc(), host.alloc()
    host.write(pml4, 8, pdpt | EPT_RWX)
    pds: dict[int, int] = {}
    for gpa in range(0, size, 1 << 21):
        i3 = (gpa >> 30) & 0x1FF
        if i3 not in pds:
            pds[i3] = host.alloc()
            host.write(pdpt + i3 * 8, 8, pds[i3] | EPT_RWX)
        host.write(pds[i3] + ((gpa >> 21) & 0x1FF) * 8, 8,
                   gpa | EPT_LARGE | EPT_RWX | EPT_MT_WB | EPT_IGNORE_PAT)
    return pml4 | (3 << 3) | 6  # 4-level walk, write-back
