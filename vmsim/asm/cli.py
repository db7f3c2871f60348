"""`vmsim asm FILE.asm -o FILE.bin [-l LIST | --listing]`: the assembler on the command line.

The main `vmsim` CLI calls `register(subparsers)` and then `args.func(args)`, exiting with
the returned status. Errors are one line on stderr (`file:line:col: message`): status 65
(sysexits' EX_DATAERR, as `vmsim run`) when the source does not assemble, 2 when it cannot
be read or an output would overwrite it, 74 (EX_IOERR) when an output cannot be written.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from vmsim.asm.errors import AsmError

# As vmsim.cli's EXIT_* (the assembler is below the CLI and does not import it).
EXIT_OK, EXIT_BAD_INPUT, EXIT_ASM, EXIT_IO = 0, 2, 65, 74
ASM_STATUSES = (
    ("0", "assembled; the binary (and listing) written"),
    ("2", "bad usage, a source that cannot be read (or is not UTF-8), or an output that "
          "would overwrite the source"),
    ("65", "the source does not assemble (file:line:col: message; sysexits' EX_DATAERR)"),
    ("74", "an output (the binary, the listing, stdout) could not be written"),
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `asm` subcommand."""
    p = subparsers.add_parser(
        "asm",
        help="assemble NASM-syntax 32-bit x86 into a flat binary",
        description="Assemble a NASM-syntax 32-bit x86 source file into a flat binary, "
                    "byte-identical to `nasm -f bin`. Errors are reported as "
                    "file:line:col: message.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="source file (.asm; a regular file of at most 16 MiB)")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output binary (default: FILE with the extension .bin)")
    p.add_argument("-l", dest="listing_file", metavar="LISTFILE",
                   help="write a listing (line, address, bytes, source) to LISTFILE")
    p.add_argument("--listing", action="store_true",
                   help="print the listing to stdout instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler for `vmsim asm`; returns the exit status."""
    from vmsim.asm.assembler import Assembler
    from vmsim.asm.listing import format_listing
    from vmsim.files import SOURCE_LIMIT, InputError, read_input_file, refuse_overwrite

    src_path = Path(args.file)
    if not args.output and not src_path.name:
        print(f"{args.file}:1:1: cannot read source file: not a file name", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = Path(args.output) if args.output else src_path.with_suffix(".bin")
    # Checked before anything is read or written: an output onto the source (`-o x.asm`,
    # `-l x.asm`, or `vmsim asm x.bin` whose default output is itself) would destroy it.
    refusal = refuse_overwrite([("-o" if args.output else "the output", str(out)),
                                ("-l", args.listing_file)], [("source file", args.file)])
    if refusal:
        hint = "" if args.output else " (name another with -o)"
        print(f"{args.file}:1:1: {refusal}{hint}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        raw = read_input_file(src_path, SOURCE_LIMIT, "the source file limit")
        source = raw.decode("utf-8")
    except InputError as e:
        reason = str(e).removeprefix(f"{args.file}: ")
        print(f"{args.file}:1:1: cannot read source file: {reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        print(f"{args.file}:{line}:{col}: cannot read source file: not UTF-8 text "
              f"({e.reason})", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        asm = Assembler(source, args.file)
        image = asm.run()
    except AsmError as e:
        print(str(e), file=sys.stderr)
        return EXIT_ASM
    except RecursionError:
        print(f"{args.file}:1:1: expression nested too deeply", file=sys.stderr)
        return EXIT_ASM
    try:
        out.write_bytes(image.data)
        if args.listing or args.listing_file:
            bases = {name: s.base for name, s in asm.sections.items()}
            text = format_listing(asm.placed, bases)
            if args.listing_file:
                Path(args.listing_file).write_text(text, encoding="utf-8")
            if args.listing:
                if sys.stdout is None:  # closed by the shell (`>&-`)
                    raise OSError(errno.EBADF, "stdout is closed", "<stdout>")
                sys.stdout.write(text)
                sys.stdout.flush()
    except BrokenPipeError:
        raise  # `--listing | head`: the reader has what it wanted (vmsim.cli.main)
    except OSError as e:
        print(f"{e.filename or out}:1:1: cannot write output: {e.strerror}", file=sys.stderr)
        return EXIT_IO
    return EXIT_OK


def _epilog() -> str:
    import textwrap

    lines = ["exit status:"]
    for status, meaning in ASM_STATUSES:
        wrapped = textwrap.wrap(meaning, 80)
        lines += [f"  {status:<4}{wrapped[0]}", *(f"      {w}" for w in wrapped[1:])]
    return "\n".join(lines)
