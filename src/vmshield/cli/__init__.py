"""The `vmshield` command.

Each subcommand lives in its own module of this package, which exposes
`register(subparsers) -> None`; the module adds its parser and sets `func` (taking the parsed
arguments, returning the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from vmshield import __version__

# Order is the order of `vmshield --help`.
COMMAND_MODULES = (
    "scan",
    "db",
    "quarantine",
    "nids",
    "rules",
    "url",
    "lab",
    "blocked",
    "svm",
    "introspection",
    "agent",
    "center",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmshield",
        description="Security for virtual infrastructure: file anti-virus and network threat "
        "detection, one Security VM per host.",
    )
    parser.add_argument("--version", action="version", version=f"vmshield {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"vmshield.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"vmshield.cli.{name}":
                continue  # that part is not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
