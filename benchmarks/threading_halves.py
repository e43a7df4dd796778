"""Threading's dev/test turnover (issue 20): is it the essays or the cities?

On mix:dev at 4k, full context reads 17 of 43 threading questions and rag 4; on mix:test,
1 of 17 and 4. Dev and test are built by the same code from different halves of the essays
and of the city list (orchestra/eval/datasets/needle_tasks.py). This crosses the halves:
every (essay half, city half) cell is built with ``threading_from`` under the city half's
name, so a cell shares its chains, numbers and questions with the split of its cities; only
the essay text (and, where the essay pools differ in size, the start and depths drawn after
it) changes. The (dev, dev) and (test, test) cells are mix:dev's and mix:test's own samples,
so their replies must match the stored rows (the script checks when given them).

It reads each cell with the given strategies through orchestra's eval runner (rows in
``--out``, resumable), scores them with the eval's own metric, and prints per cell the score
and, for the cells that share questions, wins/losses and an exact sign-test p.

    OMP_NUM_THREADS=1 python benchmarks/threading_halves.py --limit 16 \\
        --check runs/mix-dev-4k/results.jsonl runs/mix-test-4k/results.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import product
from pathlib import Path

from scipy.stats import binomtest

HALVES = ("dev", "test")


def cells(tokenizer, length: int, limit: int, seed: int):
    """{(essay half, city half): samples}, ids renamed to name their cell."""
    from orchestra.eval.datasets.needle_tasks import _pools, threading_from

    pools = {h: _pools(None, h) for h in HALVES}
    out = {}
    for e, c in product(HALVES, HALVES):
        ds = threading_from(tokenizer, pools[e][0], pools[c][1], [length], limit, seed,
                            f"threading:{c}")
        for s in ds.samples:
            s.meta["own_id"] = s.sample_id
            s.sample_id = f"threading:essays-{e}:cities-{c}:{length}:{s.sample_id.rsplit(':', 1)[1]}"
        out[(e, c)] = ds.samples
    return out


def check_reproduced(rows: list[dict], stored: list[Path]) -> list[str]:
    """Where a (dev, dev) or (test, test) reply differs from the split's stored row."""
    known = {}
    for path in stored:
        for line in path.read_text().splitlines():
            r = json.loads(line)
            known[(r["sample_id"], r["strategy"])] = r["answer"]
    bad = []
    for r in rows:
        own = r["meta"]["own_id"]
        e, c = r["sample_id"].split(":")[1:3]
        if e.split("-")[1] == c.split("-")[1] and (own, r["strategy"]) in known:
            if known[(own, r["strategy"])] != r["answer"]:
                bad.append(f"{own} {r['strategy']}")
    return bad


def table(rows: list[dict]) -> None:
    by = {}
    for r in rows:
        _, e, c, _, i = r["sample_id"].split(":")
        by[(e[7:], c[7:], r["strategy"], int(i))] = r["quality"]
    strategies = sorted({k[2] for k in by})
    print(f"| essays | cities | {' | '.join(strategies)} | n |")
    print("|---|---|" + "---|" * len(strategies) + "---|")
    for e, c in product(HALVES, HALVES):
        qs = [[v for k, v in by.items() if k[:3] == (e, c, s)] for s in strategies]
        print(f"| {e} | {c} | " + " | ".join(f"{sum(q) / len(q):.2f}" if q else "-" for q in qs)
              + f" | {max(len(q) for q in qs)} |")
    print("\nSame questions, essays swapped (cities fixed): wins of dev essays / wins of test essays")
    for c, s in product(HALVES, strategies):
        shared = sorted(i for (e, cc, ss, i) in by
                        if (e, cc, ss) == ("dev", c, s) and ("test", c, s, i) in by)
        pairs = [(by[("dev", c, s, i)], by[("test", c, s, i)]) for i in shared]
        w = sum(a > b for a, b in pairs)
        lo = sum(a < b for a, b in pairs)
        p = binomtest(w, w + lo).pvalue if w + lo else 1.0
        print(f"- cities {c}, {s}: {w}/{lo} of {len(pairs)} (sign test p={p:.3f})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--length", type=int, default=4000)
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategies", default="full_context")
    ap.add_argument("--out", default="runs/threading-halves")
    ap.add_argument("--check", nargs="*", type=Path, default=[],
                    help="stored results.jsonl of mix:dev / mix:test at the same length")
    args = ap.parse_args(argv)
    for p in args.check:
        if not p.is_file():
            print(f"threading_halves: {p}: no such results file", file=sys.stderr)
            return 2
    from orchestra.eval.runner import Runner
    from orchestra.pipeline import Pipeline

    pipe = Pipeline.default()
    samples = [s for cell in cells(pipe.backend.tokenizer, args.length, args.limit,
                                   args.seed).values() for s in cell]
    rows = Runner(pipe, args.out, args.strategies.split(","), seed=args.seed).run(samples)
    table(rows)
    if args.check:
        bad = check_reproduced(rows, args.check)
        print(f"\nreproduction: {len(bad)} of the own-split replies differ from the stored rows"
              + (": " + ", ".join(bad) if bad else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
