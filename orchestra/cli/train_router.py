"""`orchestra train-router`: fit the learned router from evaluation results."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train-router", help="train the learned router from evaluation results",
        description="Fit a small decision tree that picks, from cheap features, the strategy "
                    "that answered correctly at least cost in RESULTS (the rows `orchestra "
                    "eval` writes), and write it as a versioned JSON file for "
                    "`router: {type: learned, model: FILE}`.")
    p.add_argument("results", metavar="RESULTS", help="results .jsonl (or .json) file")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="where to write the router (JSON)")
    p.add_argument("--metric", help="score deciding correctness (default: contains, f1, "
                                    "accuracy, exact_match or rouge_l, the first present)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="a score at or above this is correct (default 0.5)")
    p.add_argument("--max-depth", type=int, default=3, help="tree depth (default 3)")
    p.add_argument("--min-leaf", type=int, default=2,
                   help="fewest questions in a leaf (default 2)")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="fraction of questions kept out to report agreement (default 0.2); "
                        "the file is then fitted on every question")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestra.routers.tree import train_file

    if not 0 <= args.holdout < 1:
        from orchestra.errors import InputError

        raise InputError(f"--holdout must be in [0, 1), got {args.holdout}")
    model = train_file(args.results, args.output, metric=args.metric, threshold=args.threshold,
                       max_depth=args.max_depth, min_leaf=args.min_leaf, holdout=args.holdout)
    m = model.meta
    labels = ", ".join(f"{k} {v}" for k, v in sorted(m["label_counts"].items()))
    print(f"trained on {m['questions']} questions ({m['rows']} rows, "
          f"{m['rows_skipped']} skipped: no scores, an error or a router row); correct: "
          f"{m['metric']} >= {m['threshold']}")
    print(f"best strategy per question: {labels}")
    print(f"features used: {', '.join(model.features)}")
    if m["holdout_questions"]:
        print(f"agreement with the best strategy, tree fitted on {m['train_questions']} "
              f"questions: train {_pct(m['train_accuracy'])}, held out "
              f"({m['holdout_questions']} questions) {_pct(m['holdout_accuracy'])} vs always "
              f"{m['majority']} {_pct(m['holdout_majority_accuracy'])}; the file's tree is "
              "fitted on every question")
    else:
        print(f"agreement with the best strategy: train {_pct(m['train_accuracy'])}")
    print(f"wrote {args.output}")
    return 0


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"
