"""The `vmsim` command. Subcommands only call into the library; none simulates anything.
`vmsim` with no arguments opens the GUI (`vmsim gui`, when it is installed).

Exit statuses: EXIT_STATUSES below, the one table that `vmsim run --help` and the README
list. The guest's own status ((v << 1) | 1 after it writes v to isa-debug-exit) is always
odd; vmsim's are even except EXIT_ASM (65, sysexits' EX_DATAERR) and 143 (SIGTERM), which
a guest writing 32 or 71 would also give: stderr tells them apart (a guest's exit says
nothing there). A reader of stdout that goes away (`| head`) does not stop the guest: its
output is dropped and the status is the guest's. Every error is one line on stderr,
naming the file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

EXIT_OK = 0  # the guest halted or shut down (and wrote no isa-debug-exit status)
EXIT_BAD_INPUT = 2  # bad usage, or an input that cannot be read (found before the guest runs)
EXIT_BREAK = 4  # a --break breakpoint stopped the run
EXIT_ASM = 65  # the source does not assemble (sysexits' EX_DATAERR); 1 is a guest's success
EXIT_UNAVAILABLE = 69  # `vmsim gui` cannot start here: no display, Qt's libraries (EX_UNAVAILABLE)
EXIT_UNSUPPORTED = 70  # vmsim does not model it, or KVM could not go on (EX_SOFTWARE)
EXIT_IO = 74  # an output could not be written (EX_IOERR: disk full, ...)
EXIT_LIMIT = 124  # --max-instructions ran out, or no progress (as timeout(1))
EXIT_SIGNAL = 128  # + the signal's number: 130 after Ctrl-C (SIGINT), 143 after SIGTERM

# (status, meaning): what `vmsim run --help` lists and the README's table repeats
# (tests/test_exit_status.py holds them to it).
EXIT_STATUSES: tuple[tuple[str, str], ...] = (
    ("(v<<1)|1", "the guest wrote v to isa-debug-exit (port 0x501), as QEMU: 1 when it "
                 "wrote 0; always odd"),
    (str(EXIT_OK), "the guest halted or shut down (a triple fault); the reason and EIP on stderr"),
    (str(EXIT_BAD_INPUT), "bad usage, or a guest, snapshot or input file that cannot be read"),
    (str(EXIT_BREAK), "a --break breakpoint stopped the run"),
    (str(EXIT_ASM), "the source does not assemble (file:line:col: message on stderr; "
                    "sysexits' EX_DATAERR); also vmsim asm"),
    (str(EXIT_UNAVAILABLE), "vmsim gui only: the GUI cannot start here (no display, Qt's "
                            "platform libraries or PySide6 missing; one line says which)"),
    (str(EXIT_UNSUPPORTED), "the guest did something vmsim does not model, or KVM could not go "
                            "on (KVM_EXIT_INTERNAL_ERROR: an instruction fetched from MMIO, one "
                            "Linux's emulator refuses; on --backend kvm also what the host's KVM "
                            "refuses)"),
    (str(EXIT_IO), "an output (trace, statistics, stdout, snapshot) could not be written; "
                   "what was written is kept"),
    (str(EXIT_LIMIT), "--max-instructions ran out, or the guest made no progress (the "
                      "watchdogs)"),
    (str(EXIT_SIGNAL + 2), "Ctrl-C (SIGINT), after the trace so far is written out"),
    (str(EXIT_SIGNAL + 15), "SIGTERM, likewise"),
)
EXIT_CLASH_NOTE = ("A guest's status is always odd; vmsim's own are even except 65 and 143, "
                   "which a guest writing 32 or 71 also gives (stderr tells them apart: a "
                   "guest's exit writes nothing there), and 69, which only vmsim gui gives.")
NO_LIMIT = 1 << 62


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM during a run: it ends, what was traced is kept."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _serial_input(text: str) -> bytes:
    """--serial-in TEXT: the bytes of TEXT with backslash escapes (\\n, \\x41 ...), or
    the contents of a file given as @FILE (a regular file of at most SERIAL_IN_LIMIT)."""
    from vmsim.files import SERIAL_IN_LIMIT, read_input_file

    if text.startswith("@"):
        return read_input_file(text[1:], SERIAL_IN_LIMIT, "the --serial-in limit")
    try:
        return text.encode("utf-8").decode("unicode_escape").encode("latin-1")
    except UnicodeError as e:
        raise ValueError(f"--serial-in: {e.reason} in {text!r} (escapes are \\n, \\xHH ...; "
                         "characters above \\xff are not bytes)") from None


def _stdout_name() -> str:
    """What stdout is, for a message: the file it was redirected to, when there is one."""
    try:
        target = os.readlink(f"/proc/self/fd/{sys.stdout.fileno()}")
    except (OSError, ValueError, AttributeError):
        return "stdout"
    return f"stdout ({target})" if target.startswith("/") else "stdout"


def _drop_stdout() -> None:
    """After a failed write, point stdout at /dev/null so that nothing more (not even the
    interpreter's flush at exit) fails on it, as the Python docs advise for SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


class _SerialOut:
    """COM1's output on stdout, written as the guest sends it.

    A reader that goes away (`vmsim run g.asm | head -c 3`) is not the guest's problem:
    like a QEMU chardev whose peer disconnected, further output is dropped and the guest
    runs on to its own end, whose status `vmsim run` still returns. Any other failed
    write (a full disk) ends the run with OutputError naming the file.
    """

    def __init__(self) -> None:
        # None when the shell closed stdout (`>&-`): nobody to read it, as after EPIPE.
        self.out = getattr(sys.stdout, "buffer", None)
        self.dropped = self.out is None

    def __call__(self, data: bytes) -> None:
        from vmsim.files import OutputError, is_broken_pipe

        if self.dropped:
            return
        try:
            self.out.write(data)
            self.out.flush()
        except OSError as e:
            self.dropped = True
            name = _stdout_name()
            _drop_stdout()
            if not is_broken_pipe(e):
                raise OutputError(name, e) from None


def _cmd_run(args: argparse.Namespace) -> int:
    # Only what every run needs is imported here; the trace writers, statistics,
    # snapshots and the host's KVM when an option asks for them (start-up time).
    from vmsim.asm import AsmError
    from vmsim.events import EventStream
    from vmsim.files import InputError, OutputError, refuse_overwrite
    from vmsim.hw.exceptions import Unsupported
    from vmsim.session import Session
    from vmsim.vmm.block import BlockBackend, parse_disk_option
    from vmsim.vmm.machine import LOAD_ADDRESS, GuestLoadError, MachineConfig, load_guest_file

    limit = args.max_instructions if args.max_instructions != NO_LIMIT else None
    bad = _check_load_options(args)
    if bad:
        print(f"vmsim: {bad}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.backend == "bare" and (args.irqchip is not None or (args.smp or 1) != 1
                                   or args.coalesced_mmio is not None):
        print("vmsim: --smp, --irqchip and --[no-]coalesced-mmio need a VM (--backend sim or "
              "kvm): the bare backend is one CPU with no hypervisor and no interrupt controllers",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    gdb = None
    if args.gdb is not None:
        if args.backend == "kvm":
            print("vmsim: --gdb needs vmsim's CPU (--backend sim or bare): the host's KVM "
                  "would need KVM_SET_GUEST_DEBUG, which vmsim does not use yet",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        from vmsim.gdbstub import GdbServer

        try:  # bound first: a port in use is found before anything else is done
            gdb = GdbServer(args.gdb)
        except OSError as e:
            print(f"vmsim: --gdb {args.gdb}: cannot listen on 127.0.0.1:{args.gdb}: "
                  f"{e.strerror or e}", file=sys.stderr)
            return EXIT_BAD_INPUT
    serial_file = args.serial_in[1:] if args.serial_in and args.serial_in.startswith("@") else None
    disk_path, disk_readonly = parse_disk_option(args.disk) if args.disk else (None, False)
    # stdout first: a trace into the file stdout already goes to would interleave with
    # the guest's output (`vmsim run g.asm --trace out > out`).
    inputs = [("guest file", args.guest), ("--serial-in file", serial_file),
              ("--disk image", disk_path)]
    refusal = refuse_overwrite([("stdout", "/dev/stdout"), ("--trace", args.trace),
                                ("--stats-json", args.stats_json)],
                               [*inputs, ("--load snapshot", args.load)]) \
        or refuse_overwrite([("--save", args.save)], inputs)
    if refusal:
        print(f"vmsim: {refusal}", file=sys.stderr)
        return EXIT_BAD_INPUT
    memory = args.memory or 16
    image = None
    try:
        serial_in = _serial_input(args.serial_in) if args.serial_in else b""
        if args.load is None:
            image = load_guest_file(args.guest, (memory << 20) - LOAD_ADDRESS)
        if disk_path is not None:  # refused here, before any output file is opened
            BlockBackend(disk_path, disk_readonly).close()
    except AsmError as e:
        print(str(e), file=sys.stderr)
        _close_gdb(gdb)
        return EXIT_ASM
    except (GuestLoadError, InputError, ValueError) as e:
        print(f"vmsim: {e}", file=sys.stderr)
        _close_gdb(gdb)
        return EXIT_BAD_INPUT

    events = EventStream()
    files: list = []
    trace = stats_file = None
    stats = None
    if args.stats or args.stats_json:
        from vmsim.stats import ExitStats

        stats = ExitStats()
    serial_out = _SerialOut()

    def open_outputs() -> None:
        nonlocal trace, stats_file
        if stats is not None:
            stats.attach(events)
        if args.stats_json:
            # Opened now, so that a path that cannot be written is found before the run;
            # in append mode, so that a run that fails keeps the old statistics.
            stats_file = open(args.stats_json, "a", encoding="utf-8")
            files.append(stats_file)
        if args.trace:
            trace_file = open(args.trace, "w", encoding="utf-8")
            files.append(trace_file)
            if args.trace_format == "text":
                from vmsim.tracecmd import TextTraceWriter

                trace = TextTraceWriter(events, trace_file, path=args.trace)
            elif args.trace_format == "perfetto":
                from vmsim.perfetto import PerfettoWriter

                trace = PerfettoWriter(events, trace_file, path=args.trace)
            else:
                from vmsim.trace import TraceWriter

                trace = TraceWriter(events, trace_file, args.trace_level, path=args.trace)

    try:
        if args.load is not None:
            # A resumed VM's trace goes on where the saved run's stood (its event numbers
            # and times): the rebuilt VM's creation is not part of it.
            session = Session.load_snapshot(args.load, backend=args.backend,
                                            paging=args.paging, disk=disk_path,
                                            serial_out=serial_out, max_instructions=limit,
                                            events=events, history=False)
            open_outputs()
        else:
            # Statistics and the trace listen before the VM exists: its creation (every
            # KVM ioctl) is part of the record.
            open_outputs()
            session = Session(image, args.backend or "sim",
                              MachineConfig(memory, serial_in, smp=args.smp or 1,
                                            irqchip=args.irqchip or "kernel", disk=disk_path,
                                            disk_readonly=disk_readonly,
                                            ioeventfd=not args.no_ioeventfd,
                                            coalesced_mmio=args.coalesced_mmio is not False),
                              serial_out=serial_out, max_instructions=limit,
                              paging=args.paging or "ept", events=events,
                              history=False)  # a batch run never steps back
        if args.breaks:
            if session.backend == "bare" or (session.backend == "kvm" and any(
                    kind != "event" for kind, _ in args.breaks)):
                raise ValueError("--break needs vmsim's kvm.ko (--backend sim); on the "
                                 "host's KVM only event:KIND breakpoints (event:"
                                 "kvm_userspace_exit, ...), which QEMU's side emits")
            _set_breakpoints(session, args.breaks)
    except _loaded_error("vmsim.snapshot_format", "SnapshotError") as e:
        print(f"vmsim: {e}", file=sys.stderr)
        _close_gdb(gdb)
        return _close(trace, files, EXIT_BAD_INPUT)
    except (_loaded_error("vmsim.hostkvm", "HostKvmError"), ValueError) as e:
        print(f"vmsim: {e}", file=sys.stderr)
        _close_gdb(gdb)
        return _close(trace, files, EXIT_BAD_INPUT)
    except OutputError as e:  # the trace of the VM's creation could not be written
        print(f"vmsim: {e}", file=sys.stderr)
        _close_gdb(gdb)
        return _close(trace, files, EXIT_IO)
    except OSError as e:
        print(f"vmsim: {e.filename}: {e.strerror}", file=sys.stderr)
        _close_gdb(gdb)
        return _close(trace, files, EXIT_BAD_INPUT)
    if trace is not None:
        from vmsim.trace import InstructionColumn

        for cpu in session.cpus:
            col = InstructionColumn(cpu.name)
            trace.add_column(col)
            if col.on_full is not None:
                cpu.recorder = col

    _end_of_startup()
    status: int | None = None
    # With --save, Ctrl-C stops the run between two steps, where the VM can be saved.
    with _signals_end_the_run(trace, graceful=bool(args.save)) as gate:
        closing = gate.closing
        try:
            if gdb is not None:
                outcome = _run_under_gdb(session, gdb)
            elif args.breaks or args.save:
                outcome = _run_to_stop(session, gate, args.break_hits)
            else:
                outcome = session.run()
            if args.save:
                status = _save(session, args.save)
        except Unsupported as e:
            print(f"vmsim: stopped: {e}", file=sys.stderr)
            status = EXIT_UNSUPPORTED
        except OutputError as e:
            print(f"vmsim: {e}", file=sys.stderr)
            status = EXIT_IO
        except Interrupted as e:
            name = signal.Signals(e.signum).name
            kept = f"; the trace so far is in {args.trace}" if args.trace else ""
            print(f"vmsim: {name}: stopped {_progress(session)}{kept}", file=sys.stderr)
            status = EXIT_SIGNAL + e.signum
            if args.save:
                status = _save(session, args.save) or status
        finally:
            closing()
            if trace is not None:
                try:
                    if status is None or status > 128:
                        # The totals `vmsim stats FILE` reports as --stats does.
                        events.emit("run_end", "vm", instructions=session.instructions,
                                    virtual_time=session.virtual_time)
                    trace.close()
                except OutputError as e:
                    if status is None:
                        print(f"vmsim: {e}", file=sys.stderr)
                        status = EXIT_IO
    interrupted = status is not None and status > 128
    if status is not None and not interrupted:
        return _close(None, files, status)
    if stats is not None:  # also after Ctrl-C, as perf stat reports what it counted
        stats.finish(session.instructions, session.virtual_time)
        if args.stats:
            stats.report(sys.stderr)
        if stats_file is not None:
            try:
                if stats_file.seekable():
                    stats_file.seek(0)
                    stats_file.truncate()
                stats.write_json(stats_file)
                stats_file.flush()
            except OSError as e:
                print(f"vmsim: {OutputError(args.stats_json, e)}", file=sys.stderr)
                return _close(None, files, EXIT_IO)
    if interrupted:
        return _close(None, files, status)
    status = _status(session, outcome, limit)
    return _close(None, files, status)


class _NeverRaised(Exception):
    """Stands in an `except` clause for an error whose module was never imported."""


def _loaded_error(module: str, name: str) -> type[BaseException]:
    """The exception class `name` of `module` if that module has been imported, else one
    nothing raises: an error cannot come from a module that never ran, and catching it
    this way spares importing the module (the host's KVM, snapshots) at start-up."""
    mod = sys.modules.get(module)
    return getattr(mod, name, _NeverRaised) if mod is not None else _NeverRaised


def _check_load_options(args: argparse.Namespace) -> str:
    """GUEST or --load, and with --load none of the options the snapshot fixes."""
    if args.load is None:
        return "" if args.guest is not None else \
            "a GUEST file (or --load FILE) is needed (see vmsim run --help)"
    if args.guest is not None:
        return "give GUEST or --load FILE, not both"
    fixed = next((opt for opt, given in (
        ("--memory", args.memory is not None), ("--smp", args.smp is not None),
        ("--irqchip", args.irqchip is not None), ("--serial-in", args.serial_in is not None),
        ("--no-ioeventfd", args.no_ioeventfd),
        ("--[no-]coalesced-mmio", args.coalesced_mmio is not None)) if given), None)
    if fixed:
        return f"{fixed}: the snapshot brings its machine's configuration (--load)"
    if args.disk and args.disk.endswith(",readonly"):
        return "--disk FILE,readonly: with --load, the snapshot says whether its disk is read-only"
    return ""


def _break_spec(text: str) -> tuple[str, object]:
    """--break WHERE as (kind, value): an address, exit:REASON, port:N, event:SPEC."""
    from vmsim.events import CATALOGUE
    from vmsim.hw.vmx import ExitReason

    kind, sep, rest = text.partition(":")
    if not sep:
        try:
            return "address", int(text, 0) & 0xFFFFFFFF
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: an address, exit:REASON, port:N or event:KIND") from None
    if kind == "exit":
        if rest not in ExitReason.__members__:
            raise argparse.ArgumentTypeError(f"unknown exit reason {rest!r} (Intel's names, "
                                             "e.g. IO_INSTRUCTION, HLT, EPT_VIOLATION)")
        return "exit", rest
    if kind == "port":
        try:
            port = int(rest, 0)
        except ValueError:
            port = -1
        if not 0 <= port <= 0xFFFF:
            raise argparse.ArgumentTypeError(f"port:{rest}: a port is 0 to 0xffff")
        return "port", port
    if kind == "event":
        if rest.partition(":")[0] not in CATALOGUE:
            raise argparse.ArgumentTypeError(f"unknown event kind {rest.partition(':')[0]!r} "
                                             "(docs/trace-format.md)")
        return "event", rest
    raise argparse.ArgumentTypeError(f"{text!r}: an address, exit:REASON, port:N or event:KIND")


def _set_breakpoints(session, breaks: list[tuple[str, object]]) -> None:
    bp = session.breakpoints
    for kind, value in breaks:
        {"address": bp.addresses, "exit": bp.exit_reasons, "port": bp.ports,
         "event": bp.events}[kind].add(value)


def _run_to_stop(session, gate, hits: int = 1):
    """Run in slices, so that a breakpoint (its `hits`-th hit) or Ctrl-C (with --save)
    stops it between two steps of the VM: the same run as session.run(), however it is
    sliced."""
    while True:
        outcome = session.run_for(seconds=0.2)
        if outcome.breakpoint and hits > 1:
            hits -= 1
            continue
        if outcome.breakpoint:
            print(f"vmsim: stopped at breakpoint: {outcome.breakpoint} "
                  f"{_progress(session)}", file=sys.stderr)
            return outcome
        if outcome.finished:
            return outcome
        if gate.signum is not None:
            raise Interrupted(gate.signum)


def _save(session, path: str) -> int | None:
    """--save: write the snapshot; None, or the status of a write that failed."""
    from vmsim.files import OutputError
    from vmsim.snapshot_format import SnapshotError

    try:
        print(f"vmsim: {session.save_snapshot(path)}", file=sys.stderr)
    except OutputError as e:
        print(f"vmsim: {e}", file=sys.stderr)
        return EXIT_IO
    except (SnapshotError, ValueError) as e:
        print(f"vmsim: --save {path}: not written: {e}", file=sys.stderr)
        return EXIT_IO if isinstance(e, SnapshotError) else None
    return None


def _cmd_stats(args: argparse.Namespace) -> int:
    from vmsim.files import InputError, open_input_file
    from vmsim.stats import TraceFormatError, stats_from_trace

    try:
        with open_input_file(args.tracefile) as f:
            stats = stats_from_trace(args.tracefile, f)
    except (TraceFormatError, InputError) as e:
        print(f"vmsim: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        print(f"vmsim: {args.tracefile}: {e.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    stats.report(sys.stdout)
    return 0


def _run_under_gdb(session, gdb):
    """`--gdb PORT`: wait for the debugger before the first instruction (qemu -s -S), let
    it drive; when it detaches or goes away the guest runs on to its end (as QEMU)."""
    from vmsim.session import Outcome

    print(f"vmsim: waiting for gdb on 127.0.0.1:{gdb.port} (target remote :{gdb.port})",
          file=sys.stderr, flush=True)
    try:
        stub = gdb.serve(session)
    finally:
        gdb.close()
    if stub.killed:
        return Outcome(True, reason="killed by the debugger (gdb kill)")
    return stub.ended or session.run()


def _close_gdb(gdb) -> None:
    if gdb is not None:
        gdb.close()


class _SignalGate:
    """What _signals_end_the_run gives the run: `closing()` marks the wind-up, `signum`
    the signal that asked a graceful run to stop (None while none has)."""

    def __init__(self) -> None:
        self.is_closing = False
        self.signum: int | None = None

    def closing(self) -> None:
        self.is_closing = True


@contextlib.contextmanager
def _signals_end_the_run(trace, graceful: bool = False):
    """SIGINT and SIGTERM raise Interrupted in the run, so that the `finally` that closes
    the trace runs; never in the middle of a trace record (TraceWriter.deferred), and not
    again once the run is being wound up (gate.closing() marks that point). `graceful`:
    the signal is only noted (gate.signum) for the run to stop at its next step."""
    gate = _SignalGate()

    def handler(signum: int, frame) -> None:
        if gate.is_closing:
            return
        if graceful:
            gate.signum = signum
            return
        exc = Interrupted(signum)
        if trace is not None and trace.busy:
            trace.deferred = exc
            return
        raise exc

    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            saved[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (an embedding program): keep its handlers
            pass
    try:
        yield gate
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def _close(trace, files: list, status: int) -> int:
    """Close the outputs after a run that ended (or did not start) with `status`. An error
    here is reported only if nothing was wrong before (then the status becomes EXIT_IO)."""
    from vmsim.files import OutputError

    ok = status not in (EXIT_BAD_INPUT, EXIT_IO)
    if trace is not None:
        try:
            trace.close()
        except OutputError as e:
            if ok:
                print(f"vmsim: {e}", file=sys.stderr)
                status, ok = EXIT_IO, False
    for f in files:
        try:
            f.close()
        except OSError as e:
            if ok:
                print(f"vmsim: {OutputError(f.name, e)}", file=sys.stderr)
                status, ok = EXIT_IO, False
    return status


def _registers(session) -> dict[str, int]:
    """The vCPU's registers where the backend can give them (the host's KVM too, through
    KVM_GET_REGS); empty before a VM exists."""
    try:
        return session.registers() if (session.cpus or session.vm is not None) else {}
    except (IndexError, OSError):
        return {}


def _progress(session) -> str:
    """How far a stopped run got: instructions where vmsim counts them, else the EIP (the
    host's KVM counts none)."""
    if session.cpus:
        return f"after {session.instructions} instructions"
    regs = _registers(session)
    return f"at eip {regs['EIP']:#010x}" if regs else "before the guest ran"


def _status(session, outcome, limit: int | None) -> int:
    if outcome.exit_status is not None:
        return outcome.exit_status
    if getattr(outcome, "breakpoint", ""):  # said when it stopped (_run_to_stop)
        return EXIT_BREAK
    if getattr(outcome, "stuck", ""):  # vmsim's no-progress watchdog: a budget too
        print(f"vmsim: stopped: {outcome.stuck}", file=sys.stderr)
        return EXIT_LIMIT
    if outcome.limit_reached:
        print(f"vmsim: stopped after {limit} instructions (--max-instructions)", file=sys.stderr)
        return EXIT_LIMIT
    cpus = session.cpus
    regs = _registers(session)
    where = f" at eip {regs['EIP']:#010x}" if regs else ""
    if outcome.halted:
        if_flag = bool(regs and regs["EFLAGS"] & 0x200)
        print(f"vmsim: the guest halted{where}"
              + (" (interrupts on, but nothing can interrupt it yet)" if if_flag else ""),
              file=sys.stderr)
        return EXIT_OK
    unsupported = getattr(outcome, "unsupported", "") or (cpus[0].stop_message if cpus else "")
    if unsupported:
        print(f"vmsim: stopped{where}: {unsupported}", file=sys.stderr)
        return EXIT_UNSUPPORTED
    reason = outcome.reason
    if reason in ("shutdown (triple fault)", "triple fault"):
        reason = "triple fault: guest shut down"
    # The host's KVM explains its stops with the EIP already in the words.
    print(f"vmsim: {reason}{'' if ' at eip ' in reason else where}", file=sys.stderr)
    # The host's KVM gives its stop reasons their status (vmsim.hostkvm.explain.HostKvmStop).
    return getattr(reason, "exit_status", EXIT_OK)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (status 2) rather than the usage text."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see {self.prog} --help)\n")


def exit_status_epilog(rows, note: str = "") -> str:
    """An --help epilog listing exit statuses, one per row, the meanings wrapped beside
    them (for argparse.RawDescriptionHelpFormatter)."""
    import textwrap

    width = max(len(status) for status, _ in rows) + 2
    lines = ["exit status:"]
    for status, meaning in rows:
        wrapped = textwrap.wrap(meaning, 88 - width - 2) or [""]
        lines.append(f"  {status:<{width}}{wrapped[0]}")
        lines += [" " * (width + 2) + more for more in wrapped[1:]]
    if note:
        lines += ["", *textwrap.wrap(note, 88)]
    return "\n".join(lines)


# The subcommands vmsim.cli itself registers (the GUI's come from entry points).
CORE_COMMANDS = ("run", "stats", "asm", "lesson")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `vmsim` parser. With `command` one of CORE_COMMANDS, only what parsing that
    command needs is registered: the other subcommands (the lessons' loader, the entry
    points of plugins) cost start-up time and cannot change how it parses."""
    parser = _Parser(
        prog="vmsim",
        description="Educational simulator of hardware-assisted virtualization (KVM + QEMU on VMX). "
                    "With no arguments, vmsim opens the GUI (vmsim gui) on the first lesson "
                    "or a sample guest.")
    from vmsim import __version__

    parser.add_argument("--version", action="version", version=f"vmsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="run a guest (.asm or flat binary) and show its serial output",
                         description="Load GUEST at 0x100000 and run it; what it writes to COM1 "
                                     "goes to stdout.",
                         epilog=exit_status_epilog(EXIT_STATUSES, EXIT_CLASH_NOTE),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("guest", metavar="GUEST", nargs="?",
                     help=".asm source (at most 16 MiB) or flat binary (at most what fits in "
                          "RAM above 0x100000); a regular file, not a pipe or device")
    run.add_argument("--memory", type=_memory_mib, default=None, metavar="MIB",
                     help=f"RAM size, {MEMORY_MIB[0]} to {MEMORY_MIB[1]} (default 16)")
    run.add_argument("--serial-in", metavar="TEXT",
                     help="what the guest receives on COM1 (backslash escapes allowed; "
                          "@FILE for a file's bytes, at most 1 MiB)")
    run.add_argument("--max-instructions", type=_positive, default=NO_LIMIT, metavar="N",
                     help="stop after N guest instructions (sim and bare backends)")
    run.add_argument("--backend", choices=("sim", "kvm", "bare"), default=None,
                     help="sim: vmsim's VMM on the simulated kvm.ko and VMX CPU (default); "
                          "kvm: the same VMM on the host's /dev/kvm; bare: vmsim's CPU with "
                          "no hypervisor")
    add_machine_arguments(run)
    run.add_argument("--paging", choices=("ept", "shadow"), default=None,
                     help="how the simulated kvm.ko virtualizes memory: EPT (default) or "
                          "shadow page tables (kvm_intel ept=0)")
    run.add_argument("--trace", metavar="FILE", help="write events as JSON Lines to FILE, "
                                                     "as they happen (docs/trace-format.md)")
    run.add_argument("--trace-level", choices=("vm", "insn", "all"), default="vm",
                     help="vm: every event but per-access MMU ones (default); insn: also "
                          "each instruction executed, as compact runs: about 2 bytes per "
                          "instruction in code that computes, more where it exits often "
                          "(docs/trace-format.md); "
                          "all: also TLB and page-walk steps")
    run.add_argument("--trace-format", choices=("jsonl", "text", "perfetto"), default="jsonl",
                     help="jsonl: every event as JSON Lines (default); text: kvm.ko's events "
                          "as `trace-cmd report` prints a host's; perfetto: a timeline for "
                          "ui.perfetto.dev or chrome://tracing (docs/trace-format.md)")
    run.add_argument("--stats", action="store_true",
                     help="print exit statistics to stderr at the end (like perf kvm stat)")
    run.add_argument("--stats-json", metavar="FILE", help="write the statistics as JSON")
    run.add_argument("--gdb", type=_port, metavar="PORT",
                     help="serve the GDB remote protocol on 127.0.0.1:PORT (0: any free "
                          "port, printed) and wait for `target remote :PORT` before the "
                          "first instruction, as qemu -s -S (docs/gdb.md; sim and bare)")
    run.add_argument("--break", dest="breaks", action="append", default=[], metavar="WHERE",
                     type=_break_spec,
                     help="stop at a breakpoint (repeatable): an address (0x100010), "
                          "exit:REASON (exit:IO_INSTRUCTION), port:N (port:0x3f8, at its "
                          "VM exit) or event:KIND[:FIELD=VALUE] (event:kvm_inj_virq); "
                          "sim backend")
    run.add_argument("--break-hits", type=_positive, default=1, metavar="N",
                     help="stop at the N-th hit of a --break breakpoint (default 1)")
    run.add_argument("--save", metavar="FILE",
                     help="when the run stops (the guest halts, --max-instructions, --break, "
                          "Ctrl-C), write a snapshot of the VM to FILE (docs/snapshots.md)")
    run.add_argument("--load", metavar="FILE",
                     help="resume the VM saved in FILE (instead of GUEST; the snapshot "
                          "brings the guest and the machine's configuration)")
    run.set_defaults(func=_cmd_run)

    stats = sub.add_parser("stats", help="print the exit statistics of a saved trace",
                           description="Print the `perf kvm stat report` table of a JSON "
                                       "Lines trace written by `vmsim run --trace`: the same "
                                       "table --stats prints for that run.")
    stats.add_argument("tracefile", metavar="TRACEFILE", help="a trace (--trace-format jsonl)")
    stats.set_defaults(func=_cmd_stats)

    if command in (None, "asm") or command not in CORE_COMMANDS:
        from vmsim.asm.cli import register

        register(sub)
    if command in (None, "lesson") or command not in CORE_COMMANDS:
        from vmsim.lessons.cli import register as register_lesson

        register_lesson(sub)
    if command not in CORE_COMMANDS:
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
    return EXIT_UNAVAILABLE


MEMORY_MIB = (2, 3072)  # the RAM sizes vmsim.vmm.machine.Machine accepts


def add_machine_arguments(p: argparse.ArgumentParser) -> None:
    """The machine's options, the same for `vmsim run` and `vmsim gui`: vCPUs, the
    irqchip, a virtio disk and its ioeventfd (None where not given: the defaults are
    MachineConfig's, and a backend without a VM refuses them)."""
    from vmsim.vmm.machine import IRQCHIP_MODES, MAX_SMP

    p.add_argument("--smp", type=smp_count, default=None, metavar="N",
                   help=f"vCPUs, 1 to {MAX_SMP} (default 1); each starts at the entry "
                        "point with its own stack (README: several vCPUs)")
    p.add_argument("--irqchip", choices=IRQCHIP_MODES, default=None,
                   help="kernel: PIC, PIT and local APICs in kvm.ko (KVM_CREATE_IRQCHIP, "
                        "QEMU's kernel-irqchip=on, the default); userspace: PIC and PIT "
                        "in the VMM, injected with KVM_INTERRUPT (no APIC)")
    p.add_argument("--disk", metavar="FILE[,readonly]",
                   help="a raw disk image for virtio-blk on the last virtio-mmio transport "
                        "(0xFEB00E00, IRQ 12); ',readonly' refuses the guest's writes")
    p.add_argument("--no-ioeventfd", action="store_true",
                   help="virtio QueueNotify exits to the VMM (KVM_EXIT_MMIO, handled in the "
                        "vCPU thread under the BQL) instead of signalling an ioeventfd that "
                        "the iothread waits on (QEMU's ioeventfd=off)")
    p.add_argument("--coalesced-mmio", action=argparse.BooleanOptionalAction, default=None,
                   help="the VGA window as a coalesced-MMIO zone, as QEMU's VGA always "
                        "registers it (KVM_REGISTER_COALESCED_MMIO; the default): its writes "
                        "queue in kvm.ko's ring with no exit each, and QEMU applies them "
                        "before the next access to the VGA. --no-coalesced-mmio: every VGA "
                        "store comes out of KVM_RUN as a KVM_EXIT_MMIO")


def smp_count(text: str) -> int:
    """--smp N: a vCPU count vmsim accepts (an argparse type; the GUI's too)."""
    from vmsim.vmm.machine import MAX_SMP

    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= n <= MAX_SMP:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_SMP}, not {n}")
    return n


def _memory_mib(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of MiB: {text!r}") from None
    lo, hi = MEMORY_MIB
    if not lo <= v <= hi:
        raise argparse.ArgumentTypeError(f"{v} MiB: RAM must be {lo} to {hi} MiB")
    return v


def _port(text: str) -> int:
    try:
        v = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"{v}: a TCP port is 0 to 65535")
    return v


def _positive(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return v


_startup_gc = {"paused": False}


def _pause_gc_for_startup() -> None:
    """`vmsim run` as the process's own program: no cycle collection while it starts. The
    imports, the assembler and the VM's creation make hundreds of thousands of objects
    that live as long as the process (or die by reference counting): the collector would
    scan them again and again for nothing (~10% of the start-up)."""
    import gc

    if gc.isenabled():
        gc.disable()
        _startup_gc["paused"] = True


def _end_of_startup() -> None:
    """Before the guest's first instruction: what start-up made is moved out of the
    collector's sight for good (gc.freeze: never scanned again), and it runs again."""
    if _startup_gc["paused"]:
        import gc

        _startup_gc["paused"] = False
        gc.freeze()
        gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    own = argv is None  # the command line of this process (not a caller's list)
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # `vmsim` alone: the GUI on its first guest (ui.app.default_guest)
        argv = ["gui"]
    if own and argv[0] == "run":
        _pause_gc_for_startup()
    parser = build_parser(argv[0])
    try:
        args = parser.parse_args(argv)
        status = args.func(args)
    except KeyboardInterrupt:
        print("vmsim: interrupted", file=sys.stderr)
        status = EXIT_SIGNAL + signal.SIGINT
    except BrokenPipeError:  # e.g. `vmsim asm --listing x.asm | head`: the reader is done
        _drop_stdout()
        status = 0
    finally:
        if _startup_gc["paused"]:  # a run that ended before its guest started
            import gc

            _startup_gc["paused"] = False
            gc.enable()
    if own and argv[0] == "run":
        _exit_without_teardown(status)
    return status


def _exit_without_teardown(status: int) -> None:
    """`vmsim run` as the process's own program, finished (its outputs closed): end the
    process with `status` now. The interpreter's teardown would free every object one by
    one (the VM, its decoded instructions, every module: tens of ms) for the kernel to
    take the memory back anyway. Only when nothing else could need the teardown: the
    standard streams flush, no other thread runs (the host KVM's vCPU threads)."""
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: the shell closed it (`>&-`)
                stream.flush()
    except (OSError, ValueError, AttributeError):  # the normal exit reports it, as before
        return
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
