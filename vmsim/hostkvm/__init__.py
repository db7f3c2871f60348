"""The KVM API on the host's real /dev/kvm (DESIGN.md `vmsim.hostkvm`).

The same protocol as the simulated kvm.ko (vmsim.kvm.api), through `fcntl.ioctl` and
`mmap`, so the VMM above is provably the real thing. It sees only what userspace sees
(KVM_EXIT_*), never the VMCS or page walks.

Where the host's KVM ends a run (an internal error, a triple fault, a KVM_RUN that does not
return within VMSIM_KVM_WATCHDOG seconds), `HostVcpu.explain_stop` names the guest
instruction at RIP and says whether it is the guest's doing or a limit of the host's KVM
(vmsim.hostkvm.explain, vmsim.hostkvm.watchdog).
"""

from vmsim.hostkvm.explain import HostKvmStop
from vmsim.hostkvm.kvm import HostKvm, HostKvmError, open_kvm

__all__ = ["HostKvm", "HostKvmError", "HostKvmStop", "open_kvm"]
