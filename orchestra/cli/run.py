"""`orchestra run PIPELINE.yaml --docs ... --question ...`"""

from __future__ import annotations

from orchestra.cli.args import add_document_args, documents
from orchestra.cli.common import print_answer


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="answer questions with a pipeline file",
                       description="Build the pipeline in a YAML file and answer questions.")
    p.add_argument("pipeline", help="pipeline YAML file")
    add_document_args(p)
    p.add_argument("--question", "-q", action="append", required=True,
                   help="a question (repeat for several; the corpus is indexed once)")
    p.add_argument("--allow-module", action="append", default=[], metavar="MODULE",
                   help="allow component types given as import paths from this module")
    p.add_argument("--json", action="store_true", help="print Answers as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from orchestra.config import check, load_config
    from orchestra.errors import InputError
    from orchestra.pipeline import Pipeline
    from orchestra.strategies.base import check_question

    # Everything the user gave is checked before a model loads or a question is answered: a
    # bad last question must not cost (or hide) the answers to the others.
    cfg, located = load_config(args.pipeline)
    check(cfg, located, args.allow_module)
    docs = documents(args)
    questions = []
    for n, q in enumerate(args.question, 1):
        try:
            questions.append(check_question(q))
        except InputError as e:
            raise InputError(f"question {n} of {len(args.question)}: {e}") from None
    pipe = Pipeline.from_yaml(args.pipeline, allow_modules=args.allow_module)
    answers = pipe.run_batch(questions, docs)
    for i, a in enumerate(answers):
        if i:
            print("\n---\n")
        if len(answers) > 1 and not args.json:
            print(f"Q: {a.question}")
        print_answer(a, as_json=args.json)
    return 0
