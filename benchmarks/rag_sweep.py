"""Choose RAG's defaults by measuring: chunk size x context budget, embedded reader, real data.

RULER-style SQuAD questions (QA1: the gold paragraph among other articles' paragraphs) and
6-digit needles in Paul Graham's essays (NIAH). For each setting: contains (the gold answer is in
the reply), evidence recall (the gold answer is in what the reader saw), prompt tokens and
seconds per question. All settings run side by side on the same cases in one run.

    python benchmarks/rag_sweep.py --qa 8 --niah 4 --tokens 12000 --chunks 64,128,200 \
        --budgets 512,1024
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from squad_haystack import needle_cases, squad_cases

from orchestra.backends import default_backend
from orchestra.corpus import Corpus, Document
from orchestra.strategies.rag import RAG
from orchestra.retrievers.base import make_retriever


def _norm(s: str) -> str:
    return re.sub(r"\W+", " ", s.lower()).strip()


def contains(text: str, answers: list[str]) -> bool:
    return any(_norm(a) in _norm(text) for a in answers)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--qa", type=int, default=8, help="SQuAD questions")
    ap.add_argument("--niah", type=int, default=4, help="needle questions")
    ap.add_argument("--tokens", type=int, default=12000, help="haystack length in tokens")
    ap.add_argument("--chunks", default="64,128,200", help="chunk sizes (reader tokens)")
    ap.add_argument("--budgets", default="512,1024", help="top_k_tokens values")
    ap.add_argument("--retriever", default="dense", help="bm25, dense, hybrid or graph")
    ap.add_argument("--reorder", default="document_order")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--per-haystack", type=int, default=1,
                    help="SQuAD questions sharing one haystack (cheaper to index)")
    ap.add_argument("--no-read", action="store_true",
                    help="measure evidence recall and context tokens only (no reader calls)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: leave the default); 1 is fastest on busy cores")
    args = ap.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    backend = default_backend()
    data = Path(args.data)
    count = backend.count_tokens
    cases = [("QA1", c) for c in squad_cases(data / "ruler" / "squad.json", args.qa, args.tokens,
                                             count, seed=args.seed,
                                             per_haystack=args.per_haystack)]
    cases += [("NIAH", c) for c in needle_cases(data / "needle_haystack" / "PaulGrahamEssays",
                                                args.niah, args.tokens, count, seed=args.seed)]
    chunk_sizes = [int(x) for x in args.chunks.split(",")]
    budgets = [int(x) for x in args.budgets.split(",")]
    rows: dict[tuple, list[tuple]] = {}
    total = len(cases) * len(chunk_sizes) * len(budgets)
    done = 0
    corpora: dict[str, Corpus] = {}
    retrievers: dict[tuple, object] = {}
    for task, case in cases:
        corpus = corpora.setdefault(case.text, Corpus([Document("haystack", case.text)],
                                                      backend.tokenizer))
        for ct in chunk_sizes:
            # One retriever per chunk size: it re-indexes only when the haystack changes.
            retriever = retrievers.setdefault(ct, make_retriever(
                {"type": args.retriever, "chunk_tokens": ct, "overlap": max(0, ct // 8)},
                backend))
            for budget in budgets:
                if budget < ct:
                    continue
                rag = RAG(backend, retriever=retriever, top_k_tokens=budget,
                          reorder=args.reorder, max_tokens=32)
                t0 = time.perf_counter()
                if args.no_read:
                    chunks, prof = rag.retrieve_with_shape(case.question, corpus)
                    seen = " ".join(c.chunk.text for c in chunks)
                    reply, prompt_tokens = "", prof["selected_tokens"]
                else:
                    ans = rag.answer(case.question, corpus)
                    seen = " ".join(corpus.document(e.doc_id).text[e.start:e.end]
                                    for e in ans.evidence)
                    reply, prompt_tokens = ans.text, ans.cost.prompt_tokens
                secs = time.perf_counter() - t0
                rows.setdefault((task, ct, budget), []).append(
                    (contains(reply, case.answers), contains(seen, case.answers),
                     prompt_tokens, secs))
                done += 1
                print(f"[{done}/{total}] {task} chunk={ct} budget={budget} "
                      f"contains={rows[(task, ct, budget)][-1][0]} "
                      f"recall={rows[(task, ct, budget)][-1][1]} {secs:.1f}s", file=sys.stderr)

    print(f"\nretriever={args.retriever} reorder={args.reorder} haystack={args.tokens} tokens, "
          f"{args.qa} QA1 + {args.niah} NIAH questions\n")
    tokens_col = "context tokens" if args.no_read else "prompt tokens"
    print(f"| task | chunk tokens | top_k_tokens | contains | evidence recall | {tokens_col} "
          "| s/question |")
    print("|---|---|---|---|---|---|---|")
    for (task, ct, budget), r in sorted(rows.items()):
        print(f"| {task} | {ct} | {budget} | {statistics.fmean(x[0] for x in r):.2f} | "
              f"{statistics.fmean(x[1] for x in r):.2f} | "
              f"{statistics.fmean(x[2] for x in r):.0f} | {statistics.fmean(x[3] for x in r):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
