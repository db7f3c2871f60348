"""vmsim: an educational, deterministic simulator of KVM + QEMU on Intel VMX."""

__version__ = "0.1.0"
