"""A KVM_EXIT_INTERNAL_ERROR ends `vmsim run` alike on both backends: status 70 (KVM could
not go on: not the guest's own shutdown, which is 0) and one line naming the instruction,
its EIP and the suberror, in the same words after the backend's name. The host's KVM, where
there is one, is the oracle for which instruction fails and where."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest

from tests.stack.stackrun import host_kvm_problem, run_cli
from vmsim.cli import EXIT_UNSUPPORTED
from vmsim.hw.vmcs import F
from vmsim.kvm import api
from vmsim.kvm.kvm_main import SimKvm

EMULATION = "(KVM_EXIT_INTERNAL_ERROR, suberror 1: emulation failure)"
# Guest body -> what follows the backend's name on the last line of stderr.
CASES = {
    "jump_outside_ram": (
        "mov eax, 0x40000000\n        jmp eax",
        "could not fetch a guest instruction at eip 0x40000000: no RAM is there "
        f"{EMULATION[:-1]}); KVM runs guest code from RAM only"),
    "jump_into_vga": (
        "mov eax, 0xB8000\n        jmp eax",
        "could not fetch a guest instruction at eip 0x000b8000: no RAM is there "
        f"{EMULATION[:-1]}); KVM runs guest code from RAM only"),
    "bound_on_mmio": (
        "mov eax, 5\n        bound eax, [0xB8000]",
        "could not emulate the guest instruction `bound eax,[0B8000h]` at eip 0x00100005 "
        f"{EMULATION}: Linux's instruction emulator has no BOUND (emulate.c's opcode table)"),
    "arpl_on_mmio": (  # (arpl [0xB8000], bx: the assembler has no ARPL)
        "mov ebx, 3\n        db 0x63, 0x1D\n        dd 0xB8000",
        "could not emulate the guest instruction `arpl [0B8000h],bx` at eip 0x00100005 "
        f"{EMULATION}: Linux's instruction emulator has no ARPL (emulate.c's opcode 0x63 is "
        "MOVSXD, in 64-bit mode only: mode_dual_63)"),
    "lar_on_mmio": (
        "mov ebx, 3\n        lar eax, [0xB8000]",
        "could not emulate the guest instruction `lar eax,[0B8000h]` at eip 0x00100005 "
        f"{EMULATION}: Linux's instruction emulator has no LAR (emulate.c's twobyte_table)"),
    "enter_nested_on_mmio": (
        "mov esp, 0xB8100\n        enter 8, 1",
        "could not emulate the guest instruction `enter 8,1` at eip 0x00100005 "
        f"{EMULATION}: Linux's instruction emulator refuses an ENTER with a nesting level "
        "(em_enter)"),
}
SIM_WAYS = (["--paging", "ept"], ["--paging", "shadow"], ["--irqchip", "userspace"])


def _guest(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.asm"
    path.write_text(f"bits 32\norg 0x100000\n        {CASES[name][0]}\n        hlt\n")
    return path


def _last_line(p) -> str:
    err = p.stderr.decode(errors="replace").strip()
    return err.splitlines()[-1] if err else ""


@pytest.mark.parametrize("name", sorted(CASES))
def test_sim_backend(name: str, tmp_path: Path) -> None:
    guest = _guest(tmp_path, name)
    for way in SIM_WAYS:
        p = run_cli(["run", *way, str(guest)])
        assert (p.returncode, _last_line(p)) == (
            EXIT_UNSUPPORTED, f"vmsim: kvm.ko {CASES[name][1]}"), way


@pytest.mark.parametrize("name", sorted(CASES))
def test_host_kvm_agrees(name: str, tmp_path: Path) -> None:
    problem = host_kvm_problem()
    if problem is not None:
        pytest.skip(problem)
    p = run_cli(["run", "--backend", "kvm", str(_guest(tmp_path, name))])
    assert (p.returncode, _last_line(p)) == (
        EXIT_UNSUPPORTED, f"vmsim: the host's KVM {CASES[name][1]}")


def test_unexpected_exit_reason_is_named() -> None:
    # __vmx_handle_exit's KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: data[0] the reason.
    vm = SimKvm(None, "ept").create_vm()
    mem = mmap.mmap(-1, 1 << 20)
    vm.set_user_memory_region(0, 0, 0, 1 << 20, memoryview(mem))
    v = vm.create_vcpu(0)
    v.vmcs.write(F.GUEST_RIP, 0x1234)
    v.kvm_run.set_internal(api.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, [9])
    stop = v.explain_stop(api.KVM_EXIT_INTERNAL_ERROR)
    assert stop is not None and stop.exit_status == EXIT_UNSUPPORTED
    assert stop == ("kvm.ko has no handler for VM exit reason 9 (TASK_SWITCH) at eip 0x00001234 "
                    "(KVM_EXIT_INTERNAL_ERROR, suberror 4: unexpected exit reason)")
    assert v.explain_stop(api.KVM_EXIT_SHUTDOWN) is None
