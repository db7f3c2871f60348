"""The simulated kvm.ko (DESIGN.md `vmsim.kvm`); `api` is the KVM API both backends share."""
