"""The `orchestra` command. Each subcommand lives in its own module with ``add_parser``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from orchestra import __version__
from orchestra.errors import OrchestraError

# Subcommand modules under orchestra.cli; each defines add_parser(subparsers).
SUBCOMMANDS = ["ask", "run", "validate", "serve", "train_router", "eval", "tune", "index"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestra",
        description="Answer questions over long documents, choosing per query how to read them.",
    )
    parser.add_argument("--version", action="version", version=f"orchestra {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"orchestra.cli.{name}").add_parser(sub)
    for command in sub.choices.values():  # `orchestra ask ... -v` as well as `orchestra -v ask`
        # SUPPRESS: left out after the subcommand, the value before it stands.
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="log progress details")
    return parser


# Libraries that log at INFO what a user of -v has no use for (faiss: 11 lines about which CPU
# instructions its loader tried).
QUIET_LOGGERS = ("faiss", "faiss.loader")


_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # orchestra's own warnings (a cache rebuilt, a cache not writable) in one line, not Python's
    # two with the source line: they are for the user. Other libraries' keep their form.
    if getattr(category, "__module__", "").startswith("orchestra."):
        print(f"orchestra: warning: {message}", file=file or sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except OrchestraError as e:
        print(f"orchestra: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("orchestra: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
