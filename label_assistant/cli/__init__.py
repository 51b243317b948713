"""The ``label-assistant`` command line.

Each command lives in its own module in this package and exposes ``register(subparsers)``,
which adds its parser and sets ``run=<function(args) -> int>``. Modules are found by name, so
adding a command is adding a file. Heavy imports (torch, smp) happen inside ``run``, keeping
``--help`` fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from label_assistant import __version__
from label_assistant.cli.common import CliError

# Order shown in --help; modules found but not listed here are appended.
_ORDER = ["serve", "prelabel", "inspect", "train", "select", "simulate", "rounds", "report",
          "import_", "measure", "worker"]


def _command_modules() -> list[str]:
    found = {
        m.name
        for m in pkgutil.iter_modules(__path__)
        if not m.name.startswith("_") and m.name not in ("common",)
    }
    return [n for n in _ORDER if n in found] + sorted(found - set(_ORDER))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="label-assistant",
        description="Active-learning labeling service for image segmentation "
        "(a Label Studio ML backend and the tools around it).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        importlib.import_module(f"label_assistant.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request
    try:
        return int(args.run(args) or 0)
    except CliError as error:
        print(f"label-assistant {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"label-assistant {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
