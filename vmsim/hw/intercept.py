"""The seam between the CPU and a hypervisor: what an intercepted instruction or event
looks like (the ingredients of a VM exit), and the exception that stops the CPU from
inside an instruction."""

from __future__ import annotations

from dataclasses import dataclass, field

from vmsim.state import register


@register
@dataclass
class Intercept:
    """What the CPU knows about an instruction or event a hypervisor may intercept.

    These are the ingredients of a VM exit (SDM Vol. 3C 28.2): the kind, the instruction
    length, and the fields of its exit qualification.
    """

    # io hlt cpuid cr_read cr_write clts lmsw invlpg rdmsr wrmsr rdtsc vmcall exception
    # triple_fault
    kind: str
    eip: int
    insn_len: int = 0
    port: int = 0
    size: int = 0
    is_in: bool = False
    string: bool = False
    rep: bool = False
    cr: int = 0
    gpr: int = 0
    linear: int = 0
    vector: int = 0
    error_code: int | None = None
    extra: dict = field(default_factory=dict)


class InterceptExit(Exception):
    """Raised mid-instruction (e.g. by a guest-physical access the hypervisor traps, an EPT
    violation) to stop the CPU before the instruction takes effect: StopReason.INTERCEPT."""

    def __init__(self, info: Intercept):
        super().__init__(info.kind)
        self.info = info
