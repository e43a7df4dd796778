"""Argument types and checks the subcommands share: bad values stop at parsing (exit status 2,
one line naming the option), before any model loads."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is outside the port range 0-65535")
    return value


def add_document_args(p: argparse.ArgumentParser) -> None:
    """``--docs PATH...`` (always paths) and ``--text TEXT`` (inline text); one is needed."""
    p.add_argument("--docs", nargs="+", default=[], metavar="PATH",
                   help="files or directories to read (.txt, .md); always paths: a missing "
                        "one is an error")
    p.add_argument("--text", action="append", default=[], metavar="TEXT",
                   help="a document given inline as text (repeat for several)")


def documents(args: argparse.Namespace) -> list:
    """The documents of --docs and --text, read and checked (before any model loads)."""
    from orchestra.corpus import load_documents
    from orchestra.errors import InputError

    if not args.docs and not args.text:
        raise InputError("no documents: give --docs PATH... or --text TEXT")
    return load_documents(args.docs, text=args.text)
