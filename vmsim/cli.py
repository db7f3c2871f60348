"""The `vmsim` command. Subcommands only call into the library; none simulates anything.

Exit status of `vmsim run`: the isa-debug-exit status ((v << 1) | 1, always odd) when the
guest wrote one; otherwise 0 when the guest halted or shut down (the reason on stderr), 1
when the guest does not assemble, 2 for bad usage or unreadable input, 70 when the guest
did something vmsim does not model, 124 when --max-instructions ran out.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_OK, EXIT_ASM, EXIT_BAD_INPUT, EXIT_UNSUPPORTED, EXIT_LIMIT = 0, 1, 2, 70, 124
NO_LIMIT = 1 << 62


def _cmd_run(args: argparse.Namespace) -> int:
    from vmsim.asm import AsmError
    from vmsim.events import EventStream
    from vmsim.trace import TraceWriter
    from vmsim.vmm.machine import GuestLoadError, Machine, MachineConfig, load_guest_file

    try:
        image = load_guest_file(args.guest)
        serial_in = b""
        if args.serial_in:
            with open(args.serial_in, "rb") as f:
                serial_in = f.read()
        out = sys.stdout.buffer

        def write_serial(data: bytes) -> None:
            out.write(data)
            out.flush()

        events = EventStream()
        machine = Machine(MachineConfig(args.memory, serial_in), events=events,
                          serial_out=write_serial)
        machine.load_image(image)
        trace_file = open(args.trace, "w", encoding="utf-8") if args.trace else None
    except AsmError as e:
        print(str(e), file=sys.stderr)
        return EXIT_ASM
    except (GuestLoadError, ValueError) as e:
        print(f"vmsim: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        print(f"vmsim: {e.filename}: {e.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    trace = TraceWriter(events, trace_file) if trace_file else None
    try:
        if args.backend == "bare":
            return _run_bare(machine, args, events)
        return _run_vm(machine, args, events)
    finally:
        if trace is not None:
            trace.close()
            trace_file.close()


def _run_bare(machine, args: argparse.Namespace, events) -> int:
    from vmsim.bare import BareMetal
    from vmsim.hw.cpu import StopReason

    bare = BareMetal(machine, events)
    result = bare.run(args.max_instructions)
    cpu = bare.cpu
    if result.exit_status is not None:
        return result.exit_status
    if result.reason is StopReason.HLT:
        return EXIT_OK
    if result.reason is StopReason.SHUTDOWN:
        print(f"vmsim: triple fault at eip {cpu.eip:#010x}: guest shut down", file=sys.stderr)
        return EXIT_OK
    if result.reason is StopReason.UNSUPPORTED:
        print(f"vmsim: stopped at eip {cpu.eip:#010x}: {result.message}", file=sys.stderr)
        return EXIT_UNSUPPORTED
    print(f"vmsim: stopped after {result.instructions} instructions (--max-instructions)",
          file=sys.stderr)
    return EXIT_LIMIT


def _run_vm(machine, args: argparse.Namespace, events) -> int:
    """The guest under a hypervisor: vmsim's QEMU-side VMM over the simulated kvm.ko or
    the host's /dev/kvm."""
    from vmsim.hostkvm import HostKvmError, open_kvm
    from vmsim.hw.exceptions import Unsupported
    from vmsim.kvm.kvm_main import SimKvm
    from vmsim.vmm.vm import VirtualMachine

    limit = args.max_instructions if args.max_instructions != NO_LIMIT else None
    try:
        kvm = SimKvm(events) if args.backend == "sim" else open_kvm()
        vm = VirtualMachine(machine, kvm, max_instructions=limit)
        result = vm.run()
    except HostKvmError as e:
        print(f"vmsim: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as e:
        print(f"vmsim: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Unsupported as e:
        print(f"vmsim: stopped: {e}", file=sys.stderr)
        return EXIT_UNSUPPORTED
    if result.exit_status is not None:
        return result.exit_status
    if result.limit_reached:
        print(f"vmsim: stopped after {limit} instructions (--max-instructions)", file=sys.stderr)
        return EXIT_LIMIT
    if result.halted:
        return EXIT_OK
    print(f"vmsim: {result.stop_reason}", file=sys.stderr)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmsim",
        description="Educational simulator of hardware-assisted virtualization (KVM + QEMU on VMX).")
    from vmsim import __version__

    parser.add_argument("--version", action="version", version=f"vmsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="run a guest (.asm or flat binary) and show its serial output",
                         description="Load GUEST at 0x100000 and run it; what it writes to COM1 "
                                     "goes to stdout.")
    run.add_argument("guest", metavar="GUEST", help=".asm source or flat binary")
    run.add_argument("--memory", type=int, default=16, metavar="MIB", help="RAM size (default 16)")
    run.add_argument("--serial-in", metavar="FILE", help="bytes the guest receives on COM1")
    run.add_argument("--max-instructions", type=_positive, default=NO_LIMIT, metavar="N",
                     help="stop after N guest instructions (sim and bare backends)")
    run.add_argument("--backend", choices=("sim", "kvm", "bare"), default="sim",
                     help="sim: vmsim's VMM on the simulated kvm.ko and VMX CPU (default); "
                          "kvm: the same VMM on the host's /dev/kvm; bare: vmsim's CPU with "
                          "no hypervisor")
    run.add_argument("--trace", metavar="FILE", help="write every event as JSON Lines to FILE")
    run.set_defaults(func=_cmd_run)

    try:
        from vmsim.asm.cli import register
    except ImportError:  # the assembler's CLI is optional while it is being built
        pass
    else:
        register(sub)
    return parser


def _positive(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return v


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("vmsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
