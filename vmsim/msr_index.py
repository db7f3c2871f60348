"""Architectural MSR numbers (Intel SDM Vol. 4; Linux's arch/x86/include/asm/msr-index.h
names), the ones vmsim's CPU has: one table for the CPU (vmsim.hw) and the KVM API's
KVM_GET/SET_MSRS (vmsim.kvm.api), which may not import each other."""

MSR_IA32_TSC = 0x10
MSR_IA32_APICBASE = 0x1B
MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP = 0x174, 0x175, 0x176
MSR_IA32_MISC_ENABLE = 0x1A0
MSR_IA32_CR_PAT = 0x277
MSR_EFER = 0xC0000080
