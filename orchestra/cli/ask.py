"""`orchestra ask`: answer one question over documents with the embedded default."""

from __future__ import annotations

import argparse

from orchestra.cli.args import add_document_args, documents, positive_int
from orchestra.cli.common import print_answer, progress


def add_parser(sub) -> None:
    p = sub.add_parser("ask", help="answer a question over documents",
                       description="Answer a question over documents (files or directories of "
                                   ".txt/.md) on the embedded default backend.")
    add_document_args(p)
    p.add_argument("--question", "-q", required=True, help="the question")
    # Checked at parsing (a typo lists the choices before any model loads); the default
    # pipeline names its strategies by these same type names, so routes read the same.
    p.add_argument("--strategy", default="auto", choices=strategy_choices(),
                   metavar="{" + ",".join(strategy_choices()) + "}",
                   help="auto (the router decides) or the strategy to read with")
    p.add_argument("--explain", action="store_true",
                   help="print the router's decision, its signals and reason, and each "
                        "strategy's cost estimate, without generating an answer")
    p.add_argument("--truncation", choices=["head", "tail", "middle-out"],
                   help="let full-context reading cut a corpus that exceeds the window")
    p.add_argument("--max-tokens", type=positive_int, default=64,
                   help="longest answer, in tokens")
    p.add_argument("--json", action="store_true",
                   help="print the Answer as JSON (once it is complete; never streamed)")
    p.add_argument("--no-stream", action="store_true",
                   help="wait for the whole answer instead of printing tokens as they come")
    p.set_defaults(func=run)


def strategy_choices() -> list[str]:
    from orchestra.registry import names

    return ["auto", *names("strategy")]


def run(args: argparse.Namespace) -> int:
    from orchestra.api import ask
    from orchestra.strategies.base import check_question

    # The entry point checks the question, before any model loads (later checks pass it as is).
    args.question = check_question(args.question)
    options = {"max_tokens": args.max_tokens}
    if args.truncation:
        options["truncation"] = args.truncation
    if args.explain:
        return explain(args, options)
    docs = documents(args)
    if not (args.json or args.no_stream):
        return stream_answer(args, docs, options)
    with progress():
        answer = ask(args.question, docs, strategy=args.strategy, **options)
    print_answer(answer, as_json=args.json)
    return 0


def stream_answer(args: argparse.Namespace, docs, options: dict) -> int:
    """Print the answer's tokens as the model writes them, then its route, cost and
    evidence (Pipeline.stream)."""
    import sys

    from orchestra.checks import run_checks
    from orchestra.pipeline import Pipeline
    from orchestra.registry import resolve

    name = None if args.strategy == "auto" else args.strategy
    if name is not None:
        run_checks(resolve("strategy", name), options)  # before the model loads
    pipeline = Pipeline.default(**options)
    corpus = pipeline.corpus(docs)
    status = progress()
    status.__enter__()  # the step line shows until the first token
    try:
        for ev in pipeline.stream(args.question, corpus, strategy=name):
            if ev.type == "token":
                if status is not None:
                    status.__exit__(None, None, None)
                    status = None
                sys.stdout.write(ev.text)
                sys.stdout.flush()
            elif ev.type == "answer":
                if status is not None:
                    status.__exit__(None, None, None)
                    status = None
                sys.stdout.write("\n\n")
                print_answer(ev.answer, show_text=False)
    finally:
        if status is not None:
            status.__exit__(None, None, None)
    return 0


def explain(args: argparse.Namespace, options: dict) -> int:
    from orchestra.explain import explain as explain_route, format_explanation
    from orchestra.pipeline import Pipeline

    docs = documents(args)  # bad input fails before the model loads
    pipeline = Pipeline.default(**options)
    ex = explain_route(pipeline, args.question, docs,
                       strategy=None if args.strategy == "auto" else args.strategy)
    if args.json:
        print(ex.model_dump_json(indent=2))
    else:
        print(format_explanation(ex), end="")
    return 0
