"""The KVM API on the host's real /dev/kvm (DESIGN.md `vmsim.hostkvm`).

The same protocol as the simulated kvm.ko (vmsim.kvm.api), through `fcntl.ioctl` and
`mmap`, so the VMM above is provably the real thing. It sees only what userspace sees
(KVM_EXIT_*), never the VMCS or page walks.
"""

from vmsim.hostkvm.kvm import HostKvm, HostKvmError, open_kvm

__all__ = ["HostKvm", "HostKvmError", "open_kvm"]
