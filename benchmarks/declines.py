"""How Self-Route's decline rule (orchestra/declines.py) sorts a reader's replies, on questions
that all have an answer (ruler_qa): a reply it calls a decline escalates to the fallback.

- false escalations: replies that contain the gold answer but are called declines (the
  fallback must read again, and may lose the answer), as a share of all questions;
- caught: wrong replies called declines (the fallback gets a chance), as a share of the wrong.

It reads no model: it scores the replies a benchmarks/peers.py run stored (``--system``: the
peer or strategy whose replies Self-Route's first read gives; with the default profile the
first read is LangChain-RULER's, token for token), with the documents' titles from the same
samples.

    OMP_NUM_THREADS=1 python benchmarks/peers.py --pipeline examples/pipelines/embedded.yaml \\
        --dataset ruler_qa:dev --lengths 2000,4000 --limit 100 --systems langchain_ruler \\
        --out runs/dev-declines
    python benchmarks/declines.py --out runs/dev-declines --dataset ruler_qa:dev \\
        --lengths 2000,4000 --limit 100
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def classify(rows: list[dict], titles: dict[str, list[str]]) -> dict[int, dict[str, int]]:
    """Per length: questions, right replies, false escalations, wrong replies, caught."""
    from orchestra.declines import declined

    out: dict[int, dict[str, int]] = {}
    for r in rows:
        c = out.setdefault(r["length"], {"n": 0, "right": 0, "false": 0, "wrong": 0,
                                         "caught": 0})
        esc = declined(r["answer"], r["question"], titles.get(r["sample_id"], ()))
        right = r["quality"] > 0
        c["n"] += 1
        c["right" if right else "wrong"] += 1
        c["false" if right else "caught"] += int(esc)
    return out


def table(counts: dict[int, dict[str, int]], label: str) -> str:
    lines = [f"| {label} length | n | right | false escalations (of all) | wrong | caught "
             "(of wrong) |", "|---|---|---|---|---|---|"]
    total = {"n": 0, "right": 0, "false": 0, "wrong": 0, "caught": 0}
    for length in sorted(counts):
        c = counts[length]
        for k in total:
            total[k] += c[k]
        lines.append(_line(str(length), c))
    lines.append(_line("all", total))
    return "\n".join(lines)


def _line(name: str, c: dict[str, int]) -> str:
    return (f"| {name} | {c['n']} | {c['right']} | {c['false']} ({c['false'] / max(1, c['n']):.0%})"
            f" | {c['wrong']} | {c['caught']} ({c['caught'] / max(1, c['wrong']):.0%}) |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="a benchmarks/peers.py --out folder")
    ap.add_argument("--system", default="langchain_ruler")
    ap.add_argument("--dataset", default="ruler_qa:dev")
    ap.add_argument("--lengths", default="2000,4000")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from orchestra.backends.local import HFTokenizer
    from orchestra.backends.embedded import embedded_model_dir
    from orchestra.corpus import Corpus
    from orchestra.declines import corpus_titles
    from orchestra.eval.datasets import load_dataset, parse_lengths
    from orchestra.eval.runner import RESULTS, read_results
    from transformers import AutoTokenizer

    tok = HFTokenizer(AutoTokenizer.from_pretrained(embedded_model_dir(), local_files_only=True))
    ds = load_dataset(args.dataset, tok, parse_lengths(args.lengths), args.limit, args.seed)
    titles = {s.sample_id: corpus_titles(Corpus(s.documents, tok)) for s in ds.samples}
    rows = {(r["sample_id"]): r for r in read_results(Path(args.out) / RESULTS, repair=False)
            if r["strategy"] == args.system and r["sample_id"] in titles}
    print(f"{args.dataset}, {args.system}'s replies (Self-Route's first read), "
          f"N={len(rows)} of {len(titles)} questions, every question answerable")
    print(table(classify(list(rows.values()), titles), args.dataset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
