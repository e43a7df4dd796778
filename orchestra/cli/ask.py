"""`orchestra ask`: answer one question over documents with the embedded default."""

from __future__ import annotations

import argparse

from orchestra.cli.common import print_answer


def add_parser(sub) -> None:
    p = sub.add_parser("ask", help="answer a question over documents",
                       description="Answer a question over documents (files or directories of "
                                   ".txt/.md) on the embedded default backend.")
    p.add_argument("--docs", nargs="+", required=True, metavar="PATH",
                   help="files or directories to read")
    p.add_argument("--question", "-q", required=True, help="the question")
    p.add_argument("--strategy", default="auto",
                   help="auto (the router decides) or a strategy name: full_context, rag, "
                        "kv_pages, chain_of_agents, map_reduce")
    p.add_argument("--truncation", choices=["head", "tail", "middle-out"],
                   help="let full-context reading cut a corpus that exceeds the window")
    p.add_argument("--max-tokens", type=int, default=64, help="longest answer, in tokens")
    p.add_argument("--json", action="store_true", help="print the Answer as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestra.api import ask

    options = {"max_tokens": args.max_tokens}
    if args.truncation:
        options["truncation"] = args.truncation
    answer = ask(args.question, args.docs, strategy=args.strategy, **options)
    print_answer(answer, as_json=args.json)
    return 0
