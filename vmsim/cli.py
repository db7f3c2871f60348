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


def _serial_input(text: str) -> bytes:
    """--serial-in TEXT: the bytes of TEXT with backslash escapes (\\n, \\x41 ...), or
    the contents of a file given as @FILE."""
    if text.startswith("@"):
        with open(text[1:], "rb") as f:
            return f.read()
    return text.encode("utf-8").decode("unicode_escape").encode("latin-1")


def _cmd_run(args: argparse.Namespace) -> int:
    from vmsim.asm import AsmError
    from vmsim.events import EventStream
    from vmsim.hostkvm import HostKvmError
    from vmsim.hw.exceptions import Unsupported
    from vmsim.session import Session
    from vmsim.stats import ExitStats
    from vmsim.trace import InstructionColumn, TraceWriter
    from vmsim.vmm.machine import GuestLoadError, MachineConfig

    out = sys.stdout.buffer

    def write_serial(data: bytes) -> None:
        out.write(data)
        out.flush()

    limit = args.max_instructions if args.max_instructions != NO_LIMIT else None
    events = EventStream()
    trace_file = trace = None
    # Statistics and the trace listen before the VM exists: its creation (every KVM
    # ioctl) is part of the record.
    stats = ExitStats() if (args.stats or args.stats_json) else None
    if stats is not None:
        stats.attach(events)
    try:
        serial_in = _serial_input(args.serial_in) if args.serial_in else b""
        if args.trace:
            trace_file = open(args.trace, "w", encoding="utf-8")
            trace = TraceWriter(events, trace_file, args.trace_level)
        session = Session(args.guest, args.backend, MachineConfig(args.memory, serial_in),
                          serial_out=write_serial, max_instructions=limit, paging=args.paging,
                          events=events)
    except AsmError as e:
        print(str(e), file=sys.stderr)
        return _close(trace, trace_file, EXIT_ASM)
    except (GuestLoadError, HostKvmError, ValueError, UnicodeDecodeError) as e:
        print(f"vmsim: {e}", file=sys.stderr)
        return _close(trace, trace_file, EXIT_BAD_INPUT)
    except OSError as e:
        print(f"vmsim: {e.filename}: {e.strerror}", file=sys.stderr)
        return _close(trace, trace_file, EXIT_BAD_INPUT)
    if trace is not None and args.trace_level in ("insn", "all"):
        for cpu in session.cpus:
            col = InstructionColumn(cpu.name)
            cpu.recorder = col.eips
            trace.columns.append(col)
    try:
        outcome = session.run()
    except Unsupported as e:
        print(f"vmsim: stopped: {e}", file=sys.stderr)
        return EXIT_UNSUPPORTED
    finally:
        if trace is not None:
            trace.close()
        if trace_file is not None:
            trace_file.close()
    if stats is not None:
        stats.finish(session.instructions, session.virtual_time)
        if args.stats:
            stats.report(sys.stderr)
        if args.stats_json:
            try:
                with open(args.stats_json, "w", encoding="utf-8") as f:
                    stats.write_json(f)
            except OSError as e:
                print(f"vmsim: {args.stats_json}: {e.strerror}", file=sys.stderr)
                return EXIT_BAD_INPUT
    return _status(session, outcome, limit)


def _close(trace, trace_file, status: int) -> int:
    if trace is not None:
        trace.close()
    if trace_file is not None:
        trace_file.close()
    return status


def _status(session, outcome, limit: int | None) -> int:
    if outcome.exit_status is not None:
        return outcome.exit_status
    if outcome.limit_reached:
        print(f"vmsim: stopped after {limit} instructions (--max-instructions)", file=sys.stderr)
        return EXIT_LIMIT
    cpus = session.cpus
    regs = session.registers() if cpus else {}
    where = f" at eip {regs['EIP']:#010x}" if cpus else ""
    if outcome.halted:
        if_flag = bool(cpus and regs["EFLAGS"] & 0x200)
        print(f"vmsim: the guest halted{where}"
              + (" (interrupts on, but nothing can interrupt it yet)" if if_flag else ""),
              file=sys.stderr)
        return EXIT_OK
    if cpus and cpus[0].stop_message:
        print(f"vmsim: stopped{where}: {cpus[0].stop_message}", file=sys.stderr)
        return EXIT_UNSUPPORTED
    reason = outcome.reason
    if reason in ("shutdown (triple fault)", "triple fault"):
        reason = "triple fault: guest shut down"
    print(f"vmsim: {reason}{where}", file=sys.stderr)
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
    run.add_argument("--serial-in", metavar="TEXT",
                     help="what the guest receives on COM1 (backslash escapes allowed; "
                          "@FILE for a file's bytes)")
    run.add_argument("--max-instructions", type=_positive, default=NO_LIMIT, metavar="N",
                     help="stop after N guest instructions (sim and bare backends)")
    run.add_argument("--backend", choices=("sim", "kvm", "bare"), default="sim",
                     help="sim: vmsim's VMM on the simulated kvm.ko and VMX CPU (default); "
                          "kvm: the same VMM on the host's /dev/kvm; bare: vmsim's CPU with "
                          "no hypervisor")
    run.add_argument("--paging", choices=("ept", "shadow"), default="ept",
                     help="how the simulated kvm.ko virtualizes memory: EPT (default) or "
                          "shadow page tables (kvm_intel ept=0)")
    run.add_argument("--trace", metavar="FILE", help="write events as JSON Lines to FILE "
                                                     "(docs/trace-format.md)")
    run.add_argument("--trace-level", choices=("vm", "insn", "all"), default="vm",
                     help="vm: every event but per-access MMU ones (default); insn: also "
                          "each instruction executed; all: also TLB and page-walk steps")
    run.add_argument("--stats", action="store_true",
                     help="print exit statistics to stderr at the end (like perf kvm stat)")
    run.add_argument("--stats-json", metavar="FILE", help="write the statistics as JSON")
    run.set_defaults(func=_cmd_run)

    from vmsim.asm.cli import register

    register(sub)
    _register_plugins(sub)
    return parser


def _register_plugins(sub) -> None:
    """Subcommands that packages above the core provide (the GUI's `gui`), found through
    the `vmsim.commands` entry points so that the core never imports them."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="vmsim.commands"):
        try:
            register = ep.load()
        except ImportError as e:  # e.g. Qt missing: the other commands still work
            missing = sub.add_parser(ep.name, help=f"(unavailable: {e})")
            missing.set_defaults(func=lambda args, e=e, name=ep.name: _unavailable(name, e))
            continue
        register(sub)


def _unavailable(name: str, error: Exception) -> int:
    print(f"vmsim: '{name}' is unavailable: {error}", file=sys.stderr)
    return EXIT_BAD_INPUT


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
