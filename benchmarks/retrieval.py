"""Indexing throughput and query latency of every retriever at growing corpus sizes.

The corpus is real text (SQuAD paragraphs, then Paul Graham's essays), chunked with the
embedded reader's tokenizer at the retrievers' default chunk size; past the unique text
available it repeats the documents under new ids (identical chunk texts are embedded once, which
the table says). Queries are SQuAD questions, one at a time, as a pipeline asks them.

    python benchmarks/retrieval.py --sizes 1000,10000,100000 --queries 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from orchestra.corpus import Corpus, Document


def texts(data: Path) -> list[str]:
    squad = json.loads((data / "ruler" / "squad.json").read_text())["data"]
    out = [p["context"] for art in squad for p in art["paragraphs"]]
    for p in sorted((data / "needle_haystack" / "PaulGrahamEssays").glob("*.txt")):
        out.append(p.read_text())
    return out


def build_corpus(sources: list[str], n_chunks: int, tokenizer, chunk_tokens: int,
                 overlap: int) -> tuple[Corpus, int]:
    """A corpus of at least ``n_chunks`` chunks (cut to exactly that many documents' worth)."""
    docs, total, rep = [], 0, 0
    while total < n_chunks:
        for i, t in enumerate(sources):
            doc = Document(f"r{rep}-{i}", t)
            n = len(Corpus([doc], tokenizer).chunk(chunk_tokens, overlap))
            docs.append(doc)
            total += n
            if total >= n_chunks:
                break
        rep += 1
    return Corpus(docs, tokenizer), rep


def latency(retriever, questions: list[str], k: int) -> tuple[float, float]:
    retriever.retrieve(questions[0], k)  # warm-up (lazy model load)
    times = []
    for q in questions:
        t0 = time.perf_counter()
        retriever.retrieve(q, k)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--sizes", default="1000,10000,100000", help="corpus sizes in chunks")
    ap.add_argument("--retrievers", default="bm25,dense,hybrid,graph")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch/FAISS threads (0: leave the defaults)")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoTokenizer

    from orchestra.backends.embedded import embedded_model_dir
    from orchestra.backends.local import HFTokenizer
    from orchestra.retrievers.bm25 import BM25Retriever
    from orchestra.retrievers.dense import DenseRetriever
    from orchestra.retrievers.graph import GraphRetriever
    from orchestra.retrievers.hybrid import HybridRetriever

    if args.threads:
        import faiss

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    data = Path(args.data)
    tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(
        embedded_model_dir(), local_files_only=True, trust_remote_code=False))
    squad = json.loads((data / "ruler" / "squad.json").read_text())["data"]
    questions = [q["question"] for art in squad for p in art["paragraphs"] for q in p["qas"]]
    questions = questions[:: max(1, len(questions) // args.queries)][: args.queries]
    sources = texts(data)
    wanted = args.retrievers.split(",")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        ct, ov = DenseRetriever.default_chunk_tokens, DenseRetriever.default_overlap
        corpus, reps = build_corpus(sources, size, tokenizer, ct, ov)
        n = len(corpus.chunk(ct, ov))
        unique = len({c.text for c in corpus.chunk(ct, ov)})
        print(f"corpus: {n} chunks ({unique} distinct texts, sources used {reps}x)",
              file=sys.stderr)
        built = {}
        # cache=False: time the work itself, not a load from an earlier run.
        need = {"bm25": {"bm25", "hybrid"}, "dense": {"dense", "hybrid", "graph"}}
        for name in ("bm25", "dense"):
            if need[name] & set(wanted):
                r = (BM25Retriever(cache=False) if name == "bm25"
                     else DenseRetriever(cache=False))
                t0 = time.perf_counter()
                r.index(corpus)
                built[name] = (r, time.perf_counter() - t0)
        if "hybrid" in wanted:
            h = HybridRetriever(retrievers=[built["dense"][0], built["bm25"][0]], cache=False)
            h.index(corpus)  # members are indexed: fusion has no index of its own
            built["hybrid"] = (h, built["dense"][1] + built["bm25"][1])
        if "graph" in wanted:
            g = GraphRetriever(seed=built["dense"][0], cache=False)
            t0 = time.perf_counter()
            g.index(corpus)  # the seed is indexed: this is the graph build alone
            built["graph"] = (g, time.perf_counter() - t0)
        for name in wanted:
            r, secs = built[name]
            p50, p95 = latency(r, questions, args.k)
            rows.append((name, n, unique, secs, n / secs if secs else float("inf"), p50, p95))
            print(f"  {name}: index {secs:.1f}s, p50 {p50:.1f} ms, p95 {p95:.1f} ms",
                  file=sys.stderr)

    print(f"\n{len(questions)} queries, k={args.k}, torch threads {torch.get_num_threads()}\n")
    print("| retriever | chunks | distinct texts | index s | index chunks/s | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, n, unique, secs, rate, p50, p95 in rows:
        print(f"| {name} | {n} | {unique} | {secs:.1f} | {rate:.0f} | {p50:.1f} | {p95:.1f} |")
    print("\nhybrid's index time is its members' (dense + bm25); graph's is the graph alone "
          "(its dense seed is already indexed).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
