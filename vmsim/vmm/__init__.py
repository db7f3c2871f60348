"""The QEMU side: the machine, its buses and device models (DESIGN.md `vmsim.vmm`)."""
