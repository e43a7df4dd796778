"""`orchestra tune PIPELINE.yaml --dataset NAME --lengths 4000 --trials 40 --out DIR`"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "tune", help="search a pipeline's reading configuration on a dataset's dev split",
        description="Search each strategy's reading settings (chunking, retrieval, reorder, "
                    "reader template and system prompt, decoding guards, agents' prompts) with "
                    "Optuna TPE on the dev split of a dataset. The pipeline as given is the "
                    "baseline: a trial is chosen only when it beats it question by question "
                    "(more wins than losses, exact sign test p < 0.05) on 100 or more dev "
                    "questions. Writes DIR/report.md (every trial's wins, losses and p), "
                    "DIR/trials.png, DIR/best.yaml (the chosen pipeline, or the dev leader "
                    "marked NOT CHOSEN) and, for a chosen one, DIR/profile.yaml. Rerunning "
                    "with the same --out resumes the study.")
    p.add_argument("pipeline", help="pipeline YAML file to start from")
    p.add_argument("--dataset", required=True, metavar="NAME[:subset]",
                   help="niah, niah:multi, ruler_qa, leval, leval:FILE or a .jsonl file; its "
                        "dev split is used (a test split is refused)")
    p.add_argument("--lengths", default="",
                   help="target corpus sizes in tokens, comma-separated (required by niah and "
                        "ruler_qa)")
    p.add_argument("--limit", type=int, default=20,
                   help="dev questions per length (niah, ruler_qa) or in all (leval, jsonl)")
    p.add_argument("--trials", type=int, default=None, help="trials to finish (budget)")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop starting trials after this many minutes (budget)")
    p.add_argument("--target", default="router",
                   help="'router' (score the pipeline's routing, search every strategy) or one "
                        "strategy's name (score and search that strategy alone)")
    p.add_argument("--params", default=None,
                   help="comma-separated settings to search (default: all that apply); see "
                        "orchestra.tune.space")
    p.add_argument("--dev-fraction", type=float, default=0.5,
                   help="share of a .jsonl dataset's documents in its dev split")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling, splits and TPE")
    p.add_argument("--out", required=True, help="output directory (the study lives there)")
    p.add_argument("--data-root", help="folder with leval/, needle_haystack/, ruler/")
    p.add_argument("--allow-module", action="append", default=[], metavar="MODULE",
                   help="allow component types given as import paths from this module")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_choice_arguments(p)
    from orchestra.cluster.connect import add_ray_arguments

    add_ray_arguments(p, what="actors answering a trial's questions")
    p.set_defaults(func=run)


def _add_choice_arguments(p) -> None:
    """How trials are stopped early, and what a chosen one may write."""
    p.add_argument("--pruner", default="losing", metavar="losing|median|none",
                   help="stop a trial early on a prefix of its questions: 'losing' (default) "
                        "once even winning every question left cannot beat the baseline, "
                        "'median' Optuna's MedianPruner on wins minus losses, 'none' never")
    p.add_argument("--prune-first", type=int, default=20, metavar="N",
                   help="questions a trial reads before it may be pruned (default 20)")
    p.add_argument("--allow-zero", action="store_true",
                   help="write best.yaml even when every trial scored 0 (otherwise that is "
                        "an error: exit 2, nothing written but the report)")


def run(args) -> int:
    from orchestra.eval.datasets import parse_lengths
    from orchestra.tune import command_line, tune

    from orchestra.cluster.connect import check_ray_arguments

    check_ray_arguments(args)  # Ray installed, the address answers: before anything loads
    ray = None if args.ray is None else {"address": args.ray, "actors": args.ray_actors,
                                         "cpus": args.ray_cpus, "gpus": args.ray_gpus}
    params = [x.strip() for x in args.params.split(",") if x.strip()] if args.params else None
    result = tune(args.pipeline, args.dataset, args.out, lengths=parse_lengths(args.lengths),
                  trials=args.trials, minutes=args.minutes, limit=args.limit,
                  target=args.target, params=params, seed=args.seed,
                  dev_fraction=args.dev_fraction, data_root=args.data_root,
                  allow_modules=args.allow_module, progress=not args.no_progress,
                  command=command_line(), allow_zero=args.allow_zero, ray=ray,
                  pruner=args.pruner, prune_first=args.prune_first)
    for note in result.notes:
        print(f"orchestra tune: note: {note}")
    _summary(result, args.out)
    return 0


def _summary(result, out: str) -> None:
    b, base = result.best, result.baseline
    if base is not None and base.quality is not None:
        print(f"baseline (the pipeline as given): dev quality {base.quality:.3f}, "
              f"{base.prompt_tokens:.0f} prompt tokens ({base.n} samples)")
    if b is None:  # every trial pruned: the baseline stays
        print(result.decision)
        print(f"wrote {out}/report.md, {out}/trials.png; no best.yaml or profile.yaml")
        return
    what = "chosen" if result.chosen is not None else "dev leader"
    paired = f"; {b.paired.text()} against the baseline" if b.paired else ""
    print(f"{what}: trial {b.number}: dev quality {b.quality:.3f}, {b.prompt_tokens:.0f} "
          f"prompt tokens, {b.seconds:.2f} s per answer ({b.n} samples){paired}")
    print(result.decision)
    if result.chosen is not None:
        print(f"wrote {out}/best.yaml, {out}/profile.yaml, {out}/report.md, {out}/trials.png")
    else:
        print(f"wrote {out}/best.yaml (the dev leader, marked NOT CHOSEN: no replacement for "
              f"the default), {out}/report.md, {out}/trials.png; no profile.yaml")
