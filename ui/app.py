"""`vmsim gui [GUEST]`: registered into the vmsim command through an entry point."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("gui", help="open the GUI on a guest (default: a sample guest)")
    p.add_argument("guest", nargs="?", metavar="GUEST", help=".asm source or flat binary")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    raise SystemExit("vmsim gui: not built yet")
