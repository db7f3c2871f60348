"""Host-physical pages that kvm.ko allocates for its own tables (EPT, shadow page tables).

Guest RAM is the VMM's mapping; vmsim gives it host-physical addresses equal to its
guest-physical ones (a simplification: Linux would scatter it). kvm.ko's pages come
from a separate pool above any guest RAM, so a table entry's address says which it is.
The hardware reads these pages when it walks EPT or a shadow root.
"""

from __future__ import annotations

POOL_BASE = 0xE0000000  # above the largest guest RAM vmsim allows (3 GiB)
PAGE = 4096


class _PageMap(dict):
    """HostPages.pages: a dict that counts its owner's generation up whenever it changes
    (kvm.ko's state restore puts pages back through it directly)."""

    __slots__ = ("owner",)

    def __init__(self, owner: HostPages) -> None:
        super().__init__()
        self.owner = owner

    def _changed(self) -> None:
        self.owner.generation += 1

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        self._changed()

    def clear(self) -> None:
        super().clear()
        self._changed()

    def update(self, *args, **kwargs) -> None:
        super().update(*args, **kwargs)
        self._changed()

    def pop(self, *args):
        try:
            return super().pop(*args)
        finally:
            self._changed()

    def popitem(self):
        try:
            return super().popitem()
        finally:
            self._changed()

    def setdefault(self, key, default=None):
        try:
            return super().setdefault(key, default)
        finally:
            self._changed()

    def __ior__(self, other):
        self.update(other)
        return self


class HostPages:
    def __init__(self) -> None:
        # Counts every change of the pool (a write, a page allocated or freed, a restore):
        # what caches translations through these tables (Ept's memo) compare it.
        self.generation = 0
        self.pages: dict[int, bytearray] = _PageMap(self)
        self._next = POOL_BASE
        self._free: list[int] = []

    def alloc(self) -> int:
        """A zeroed page; returns its host-physical address."""
        if self._free:
            hpa = self._free.pop()
        else:
            hpa = self._next
            self._next += PAGE
            if self._next > 0xFFFFF000:
                raise MemoryError("kvm.ko's page pool is exhausted")
        self.pages[hpa] = bytearray(PAGE)
        return hpa

    def free(self, hpa: int) -> None:
        del self.pages[hpa]
        self._free.append(hpa)

    def owns(self, hpa: int) -> bool:
        return (hpa & ~(PAGE - 1)) in self.pages

    def read(self, addr: int, size: int) -> int:
        page = self.pages[addr & ~(PAGE - 1)]
        off = addr & (PAGE - 1)
        return int.from_bytes(page[off:off + size], "little")

    def write(self, addr: int, size: int, value: int) -> None:
        page = self.pages[addr & ~(PAGE - 1)]
        off = addr & (PAGE - 1)
        page[off:off + size] = value.to_bytes(size, "little")
        self.generation += 1

    @property
    def used(self) -> int:
        return len(self.pages)


class HostPhysical:
    """Host-physical memory as the hardware sees it: guest RAM (host-physical = guest-
    physical) and kvm.ko's pool. The page walker reads shadow roots and EPT-translated
    guest tables through this."""

    def __init__(self, ram, pool: HostPages):
        self.ram = ram
        self.pool = pool

    def read(self, addr: int, size: int) -> int:
        page = self.pool.pages.get(addr & ~(PAGE - 1))
        if page is not None:  # HostPages.read, inline (walks read each entry through here)
            off = addr & (PAGE - 1)
            return int.from_bytes(page[off:off + size], "little")
        return self.ram.read(addr, size)

    def write(self, addr: int, size: int, value: int) -> None:
        if self.pool.owns(addr):
            self.pool.write(addr, size, value)
        else:
            self.ram.write(addr, size, value)
