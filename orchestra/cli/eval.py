"""`orchestra eval --pipeline FILE.yaml --dataset NAME[:subset] --lengths 4000,16000 --out DIR`"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a pipeline on a dataset (quality against cost)",
        description="Answer a dataset's questions with a pipeline (its router and/or each "
                    "strategy as a fixed route) and write results.jsonl, report.md and "
                    "quality_vs_cost.png into --out. Rerunning with the same --out resumes.")
    p.add_argument("--pipeline", help="pipeline YAML file (default: the embedded default)")
    p.add_argument("--dataset", required=True, metavar="NAME[:subset]",
                   help="niah, niah:single, niah:multi, niah:multivalue, ruler_qa, threading, "
                        "aggregation, unanswerable, leval, leval:FILE (e.g. leval:coursera), "
                        "leval_global, mix (all tasks of issue 20's mix), or jsonl:PATH / "
                        "PATH.jsonl")
    p.add_argument("--lengths", default="",
                   help="target corpus sizes in tokens, comma-separated (4000,16k); required "
                        "by niah and ruler_qa; for leval/jsonl an upper bound per bucket")
    p.add_argument("--limit", type=int, default=10,
                   help="questions per length (niah, ruler_qa) or in all (leval, jsonl)")
    p.add_argument("--strategies", default="router",
                   help="'router' (the pipeline's routing), comma-separated strategy names run "
                        "as fixed routes, or 'all' (every strategy and the router)")
    p.add_argument("--depths", default=None,
                   help="needle depths for niah, comma-separated fractions (default "
                        "0.1,0.3,0.5,0.7,0.9)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling and generation")
    p.add_argument("--split", choices=("dev", "test"), default=None,
                   help="read only this split (same as a :dev / :test suffix on --dataset); "
                        "tables report test, tuning reads dev")
    p.add_argument("--dev-fraction", type=float, default=0.5,
                   help="share of a .jsonl dataset's documents in its dev split (with --seed)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--data-root", help="folder with leval/, needle_haystack/, ruler/ "
                                       "(default: $ORCHESTRA_DATA or ../shared/data)")
    p.add_argument("--allow-module", action="append", default=[], metavar="MODULE",
                   help="allow component types given as import paths from this module")
    p.add_argument("--second-read", action="store_true",
                   help="RAG rows also read their best passage alone and record whether the "
                        "two replies agree (a routing signal; one small extra call per row, "
                        "not counted in the row's cost)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--report-only", action="store_true",
                   help="answer nothing: rewrite report.md and the plot from the results "
                        "already in --out (e.g. while a long run is still going)")
    from orchestra.cluster.connect import add_ray_arguments

    add_ray_arguments(p)
    p.set_defaults(func=run)


def _depths(text: str | None):
    from orchestra.errors import InputError
    from orchestra.eval.datasets import DEFAULT_DEPTHS

    if not text:
        return DEFAULT_DEPTHS
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"--depths: {text!r} is not a comma-separated list of fractions") from None


def run(args) -> int:
    from orchestra.errors import InputError
    from orchestra.eval.datasets import check_spec, parse_lengths
    from orchestra.config import check, load_config
    from orchestra.eval.runner import RESULTS, out_dir_lock, resolve_strategies

    from orchestra.extras import require

    require("plot", "orchestra eval's quality_vs_cost.png")

    from orchestra.cluster.connect import check_ray_arguments

    if args.ray is not None and args.report_only:
        raise InputError("--report-only answers nothing; drop --ray")
    check_ray_arguments(args)  # Ray installed, the address answers: before anything loads
    lengths = parse_lengths(args.lengths)
    check_spec(args.dataset)
    if args.split:  # written into the dataset's name, so run.json and the report say it
        from orchestra.eval.datasets import parse_split

        base, named = parse_split(args.dataset)
        if named and named != args.split:
            raise InputError(f"--dataset {args.dataset} and --split {args.split} disagree; "
                             "give one split")
        args.dataset, args.split = f"{base}:{args.split}", None
    if args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if args.pipeline:
        if not Path(args.pipeline).exists():
            raise InputError(f"{args.pipeline}: no such pipeline file")
        # A bad file is named before the output folder is touched or a model loads.
        cfg, located = load_config(args.pipeline)
        check(cfg, located, args.allow_module)
        names = list(cfg.strategies)
    else:
        from orchestra.pipeline import DEFAULT_PIPELINE

        names = list(DEFAULT_PIPELINE["strategies"])
    resolve_strategies(strategies, names)
    if args.report_only:  # nothing to report is known before the model loads
        results = Path(args.out) / RESULTS
        if not results.is_file() or results.stat().st_size == 0:
            raise InputError(f"{results}: no results to report yet")
    # Taken before any model loads: a second eval into the same --out stops at once.
    with nullcontext() if args.report_only else out_dir_lock(args.out):
        return _evaluate(args, lengths, strategies)


def _evaluate(args, lengths, strategies) -> int:
    from orchestra.errors import InputError
    from orchestra.eval.datasets import load_dataset
    from orchestra.eval.report import fmt, summarize, write_reports
    from orchestra.eval.runner import read_results

    pipe, pipeline_hash = _pipeline(args)
    dataset = load_dataset(args.dataset, pipe.backend.tokenizer, lengths, args.limit, args.seed,
                           Path(args.data_root) if args.data_root else None, _depths(args.depths),
                           split=args.split, dev_fraction=args.dev_fraction)
    for problem in dataset.problems:
        print(f"orchestra eval: warning: {problem}", file=sys.stderr)
    run_info = {"dataset": args.dataset, "lengths": lengths, "limit": args.limit,
                "pipeline": args.pipeline, "pipeline_hash": pipeline_hash,
                "strategies": strategies,
                # every component's every option, defaults included (spec.py)
                "pipeline_spec": pipe.to_config(full=True)}
    runner = _runner(args, pipe, strategies, run_info)
    if args.report_only:
        rows = runner.current_rows(read_results(runner.results_path, repair=False),
                                   dataset.samples)
        if not rows:
            raise InputError(f"{runner.results_path}: no results to report yet")
    elif args.ray is not None:
        from orchestra.cluster.connect import cluster

        with cluster(args.ray, num_cpus=_local_cpus(args)):
            rows = runner.run(dataset)
    else:
        rows = runner.run(dataset)
    out = write_reports(rows, args.out, title=f"orchestra eval: {args.dataset}")
    for s in summarize(rows):
        print(f"{s['strategy']:>16}: quality {s['quality']:.2f}, evidence recall "
              f"{fmt(s['evidence_recall'])}, {s['prompt_tokens']:.0f} prompt tokens, "
              f"{s['seconds']:.1f} s (n={s['n']})")
    print(f"wrote {runner.results_path}, {out['report']}, {out['plot']}")
    return 0


def _pipeline(args):
    """The pipeline evaluated and the hash of its file ("default" for the embedded one)."""
    from orchestra.cache import stable_hash
    from orchestra.errors import InputError
    from orchestra.pipeline import Pipeline

    if not args.pipeline:
        return Pipeline.default(), "default"
    path = Path(args.pipeline)
    if not path.is_file():
        raise InputError(f"{path}: no such pipeline file")
    return (Pipeline.from_yaml(path, allow_modules=args.allow_module),
            stable_hash(path.read_text()))


def _runner(args, pipe, strategies, run_info):
    """The local Runner, or with --ray the RayRunner over actors that build the pipeline."""
    kw = dict(seed=args.seed, progress=not args.no_progress)
    if args.ray is None:
        from orchestra.eval.runner import Runner

        return Runner(pipe, args.out, strategies, run_info=run_info,
                      second_read=args.second_read, **kw)
    from orchestra.cluster.eval import RayRunner

    return RayRunner(pipe, args.out, strategies, run_info=run_info,
                     second_read=args.second_read,
                     pipeline_file=args.pipeline, allow_modules=args.allow_module,
                     actors=args.ray_actors, cpus=args.ray_cpus, gpus=args.ray_gpus, **kw)


def _local_cpus(args) -> int:
    """A local cluster's CPUs: the machine's, or enough for every actor asked for (Ray's CPUs
    are a count for scheduling; more actors than cores share them)."""
    import math
    import os

    return max(os.cpu_count() or 1, math.ceil(args.ray_actors * args.ray_cpus))
