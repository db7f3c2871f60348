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
  LKML measurement of the ioctl entry-to-exit path, Dec 2020, gave ~2,528 cycles).
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
}
