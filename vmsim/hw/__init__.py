"""The simulated hardware: physical memory, the MMU and the CPU (DESIGN.md `vmsim.hw`)."""

from vmsim.hw.cpu import Cpu, Intercept, IoBus, Segment, StopReason, UnclaimedIo
from vmsim.hw.exceptions import CpuException, Unsupported
from vmsim.hw.memory import PhysicalMemory

__all__ = ["Cpu", "CpuException", "Intercept", "IoBus", "PhysicalMemory", "Segment",
           "StopReason", "UnclaimedIo", "Unsupported"]
