"""vmsim's cost model: virtual cycles charged per step, in one table (DESIGN.md "time").

The figures are defaults of the right order of magnitude for a recent Intel core, not a
measurement of any one machine:
- a guest instruction: 1 cycle (an IPC of about 1);
- a VM exit and the following VM entry: about 1,200 cycles together for the hardware
  transition (kvm-unit-tests' `vmexit` cpuid test reports on the order of a thousand
  cycles per round trip on recent Intel cores; Intel's "Understanding VM Exits" speaks
  of "hundreds or thousands of cycles" per transition);
- kvm.ko's handling of an exit in the kernel: a few hundred cycles;
- a return to userspace and back (the KVM_RUN ioctl round trip): 2,500 cycles (an
  LKML measurement of the ioctl entry-to-exit path, Dec 2020, gave ~2,528 cycles);
- a paging-structure reference during a TLB miss (guest or EPT level): 20 cycles, about
  an L2 cache hit, since page-walk caches and data caches serve most of them;
- kvm.ko's instruction emulator: 2,000 cycles per emulated instruction (decode,
  guest page walk, emulation; the emulator is known to be slow, which is why KVM adds
  fast paths such as the MMIO misconfiguration and fast PIO);
- a shadow-MMU page fault beyond the exit itself: 1,000 cycles (software walk of the
  guest's tables, shadow page lookup or allocation, write protection).
- the block layer's file I/O (vmsim/vmm/block.py), charged by the device that asks for it:
  a pread or pwrite of a raw image served by the host's page cache about 1.2 us (the
  warm-cache p50 of 4 KiB preads measured in "Benchmark and the Page Cache",
  distributed-systems-engineer.pages.dev db-01 step 3: 3,600 cycles at NOMINAL_HZ), and
  an fsync about one device round trip (the same page's cold-cache NVMe p50, 64 us:
  192,000 cycles).
Change them here; every layer reads this table.
"""

from __future__ import annotations

COSTS: dict[str, int] = {
    "guest_instruction": 1,
    "vmexit": 600,
    "vmentry": 600,
    "exit_handler": 300,
    "ioctl": 2500,
    "device_access": 300,
    "walk_ref": 20,
    "emulate": 2000,
    "shadow_fault": 1000,
    "blk_pread": 3600,
    "blk_pwrite": 3600,
    "blk_flush": 192_000,
}

# The clock the virtual cycles are read against where a time in seconds is shown (the
# `text` trace format, docs/trace-format.md): a nominal 3 GHz core, of the order of the
# cores the figures above describe. Not a measurement; only a scale.
NOMINAL_HZ = 3_000_000_000
