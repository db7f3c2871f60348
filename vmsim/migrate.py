"""The migration demo: stop a VM with QEMU's stop path and move it between the simulator
and the host's KVM (docs/snapshots.md, "Moving a VM between the simulator and the host's
KVM").

    python -m vmsim.migrate GUEST --from sim --to kvm --cut 120 [--trace FILE]
    python -m vmsim.migrate GUEST --stop-cont --cut 120 [--backend kvm] [--trace FILE]

The first runs GUEST on the source backend until COM1 has sent `--cut` bytes, saves the
portable state (qemu_savevm_portable: vm_stop, cpu_synchronize_all_states), loads it into
a fresh VM on the destination backend (qemu_loadvm_portable) and runs that to the end.
The second stops and continues one VM at the cut (QEMU's monitor `stop` then `cont`).
COM1's output goes to stdout, a line on stderr says where each half ran; the trace (JSON
Lines, docs/trace-format.md) has every event of both halves.
"""

from __future__ import annotations

import argparse
import sys

from vmsim.events import EventStream
from vmsim.session import Session
from vmsim.vmm.savevm import qemu_loadvm_portable, qemu_savevm_portable

STEP_LIMIT = 50_000_000


def _run_to(s: Session, cut: int) -> bool:
    for _ in range(STEP_LIMIT):
        if len(s.serial) >= cut:
            return True
        if s.machine.stop_requested or not s.vm.step():
            return False
    return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vmsim.migrate", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("guest", metavar="GUEST", help=".asm source or flat binary")
    p.add_argument("--from", dest="src", choices=("sim", "kvm"), default="sim",
                   help="where the first half runs (default sim)")
    p.add_argument("--to", dest="dst", choices=("sim", "kvm"), default="kvm",
                   help="where the second half runs (default kvm)")
    p.add_argument("--stop-cont", action="store_true",
                   help="stop and continue one VM at the cut instead of moving it")
    p.add_argument("--backend", choices=("sim", "kvm"), default="sim",
                   help="with --stop-cont: the backend (default sim)")
    p.add_argument("--cut", type=int, default=100, metavar="BYTES",
                   help="stop once COM1 has sent this many bytes (default 100)")
    p.add_argument("--trace", metavar="FILE", help="write every event as JSON Lines")
    args = p.parse_args(argv)
    if args.cut < 0:
        p.error("--cut must be 0 or more")

    from vmsim.trace import TraceWriter

    events = EventStream()
    trace_file = trace = None
    try:
        if args.trace:
            trace_file = open(args.trace, "w", encoding="utf-8")
            trace = TraceWriter(events, trace_file, "vm", path=args.trace)

        def out(data: bytes) -> None:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()

        first = args.backend if args.stop_cont else args.src
        a = Session(args.guest, first, serial_out=out, events=events)
        if not _run_to(a, args.cut):
            print(f"vmsim.migrate: the guest ended before {args.cut} bytes", file=sys.stderr)
            return 1
        if args.stop_cont:
            print(f"\n[stop at {len(a.serial)} bytes, cont, on {first}]", file=sys.stderr)
            a.vm.stop()
            a.vm.cont()
            r = a.run()
        else:
            state = qemu_savevm_portable(a.vm)
            print(f"\n[{args.src} -> {args.dst} after {len(a.serial)} bytes]", file=sys.stderr)
            b = Session(args.guest, args.dst, serial_out=out, events=events)
            qemu_loadvm_portable(b.vm, state)
            r = b.run()
        print(f"[exit status {r.exit_status}: {r.reason}]", file=sys.stderr)
        return 0 if r.exit_status is not None else 1
    except (ValueError, OSError) as e:
        print(f"vmsim.migrate: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    finally:
        if trace is not None:
            trace.close()
        if trace_file is not None:
            trace_file.close()


if __name__ == "__main__":
    sys.exit(main())
