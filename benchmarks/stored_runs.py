"""Keep an evaluation run's rows in the repository, so that a later session resumes it.

The runs behind issue 19's test report and issue 20's task mix take CPU-hours on these
machines (three answers per question at 6-30 s each, one core), more than one session holds,
and a run folder (``runs/``, ignored) does not outlive the machine. ``save`` writes a run's rows
without the dataset's own text (the question, the gold answers and the sample's metadata: the
data stays in ../shared/data) to ``benchmarks/results/NAME.jsonl``, with the run's settings;
``restore`` rebuilds the run folder from them and the dataset, so that rerunning the run's
command resumes where the last session stopped. Row keys are unchanged, so rows answered
under other settings are stale there and are answered again.

    python benchmarks/stored_runs.py save runs/report-2000 report-2000 \\
        --dataset ruler_qa:test --lengths 2000 --limit 200
    python benchmarks/stored_runs.py restore report-2000 runs/report-2000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from orchestra.errors import InputError
from orchestra.eval.results import read_results
from orchestra.eval.runner import RESULTS, RUN_INFO

STORE = Path(__file__).resolve().parent / "results"
DATA_FIELDS = ("question", "gold", "meta")  # what the dataset gives back on restore
HEAD = "stored_run"  # the first line's one key: the run's settings


def save(run_dir: Path, name: str, settings: dict, store: Path = STORE) -> Path:
    rows = read_results(run_dir / RESULTS, missing_ok=False)
    info = json.loads((run_dir / RUN_INFO).read_text()) if (run_dir / RUN_INFO).is_file() else {}
    store.mkdir(parents=True, exist_ok=True)
    out = store / f"{name}.jsonl"
    head = {HEAD: {"settings": settings, "run_info": info, "rows": len(rows)}}
    with open(out, "w", encoding="utf-8") as f:
        f.write(json.dumps(head) + "\n")
        for r in rows:
            f.write(json.dumps({k: v for k, v in r.items() if k not in DATA_FIELDS}) + "\n")
    return out


def load_stored(name: str, store: Path = STORE) -> tuple[dict, list[dict]]:
    path = store / f"{name}.jsonl"
    lines = read_results(path, missing_ok=False, required=())
    if not lines or HEAD not in lines[0]:
        raise InputError(f"{path}: not a stored run (its first line holds the run's settings)")
    return lines[0][HEAD], lines[1:]


def is_stored(path: str | Path) -> bool:
    """Whether the file at ``path`` is a stored run (its first line the settings' header)."""
    try:
        with open(path, encoding="utf-8") as f:
            head = json.loads(f.readline() or "{}")
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and HEAD in head


def restore(name: str, run_dir: Path, tok, store: Path = STORE) -> int:
    """Rebuild ``run_dir`` from the stored rows, the dataset built with the run's tokenizer
    ``tok``; returns how many rows it holds."""
    from orchestra.eval.datasets import load_dataset, parse_lengths

    head, rows = load_stored(name, store)
    st = head["settings"]
    ds = load_dataset(st["dataset"], tok, parse_lengths(str(st["lengths"])), int(st["limit"]),
                      int(st.get("seed", 0)))
    by_id = {s.sample_id: s for s in ds.samples}
    missing = sorted({r["sample_id"] for r in rows} - set(by_id))
    if missing:
        raise InputError(f"{store / name}.jsonl: {len(missing)} stored sample(s) are not in "
                         f"{st['dataset']} at {st['lengths']} (first: {missing[0]}); the "
                         f"dataset or its sampling changed")
    if (run_dir / RESULTS).exists():
        raise InputError(f"{run_dir / RESULTS} exists; restore into an empty folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_INFO).write_text(json.dumps(head["run_info"], indent=2))
    with open(run_dir / RESULTS, "w", encoding="utf-8") as f:
        for r in rows:
            s = by_id[r["sample_id"]]
            f.write(json.dumps({**r, "question": s.question, "gold": s.answers,
                                "meta": s.meta}, default=str) + "\n")
    return len(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save", help="store a run folder's rows under benchmarks/results/")
    s.add_argument("run_dir", type=Path)
    s.add_argument("name")
    s.add_argument("--dataset", required=True)
    s.add_argument("--lengths", required=True)
    s.add_argument("--limit", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("restore", help="rebuild a run folder from stored rows")
    r.add_argument("name")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--pipeline", default="examples/pipelines/embedded.yaml",
                   help="the pipeline whose tokenizer builds the dataset (the run's own)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "save":
            out = save(args.run_dir, args.name, {"dataset": args.dataset, "lengths":
                                                 args.lengths, "limit": args.limit,
                                                 "seed": args.seed})
            print(f"wrote {out}")
        else:
            from orchestra.pipeline import Pipeline

            n = restore(args.name, args.run_dir, Pipeline.from_yaml(args.pipeline).backend.tokenizer)
            print(f"restored {n} rows into {args.run_dir / RESULTS}")
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
