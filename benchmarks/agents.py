"""Agents benchmark: the map phase as one batch against the same calls one by one, and the
tokens and calls each agent strategy spends, on a needle haystack of Paul Graham essays.

    python benchmarks/agents.py                        # 30k tokens, 1000-token chunks
    python benchmarks/agents.py --tokens 20000 --chunk-tokens 500,1000,2000   # chunk sweep

Everything runs on one backend in one run, so the ratios compare like with like. Two needles
("the first/second magic number is N") sit at 30% and 75% depth; "found" says whether both
numbers reached the answer. Data: ../shared/data/needle_haystack (or ORCHESTRA_DATA).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


from orchestra.backends import load_backend
from orchestra.corpus import Corpus, Document
from orchestra.eval.needles import cut_to_tokens, essays_text, insert_needles
from orchestra.spec import entry
from orchestra.strategies.agents import ChainOfAgents, MapReduce

DATA = Path(os.environ.get("ORCHESTRA_DATA",
                          Path(__file__).resolve().parents[2] / "shared" / "data"))
NEEDLES = {0.3: ("The first magic number is 482913.", "482913"),
           0.75: ("The second magic number is 771045.", "771045")}
QUESTION = "What are the first magic number and the second magic number?"


def haystack(tokenizer, n_tokens: int) -> Document:
    essays = DATA / "needle_haystack" / "PaulGrahamEssays"
    if not essays.is_dir():
        sys.exit(f"essays not found at {essays} (set ORCHESTRA_DATA)")
    hay = cut_to_tokens(tokenizer, essays_text(essays, strip=False), n_tokens)
    text, _ = insert_needles(hay,
                             [(depth, sentence) for depth, (sentence, _) in NEEDLES.items()],
                             after=True)  # the sentence after each depth, as measured
    return Document("essays", text)


def found(answer) -> str:
    return f"{sum(n in answer.text for _, n in NEEDLES.values())}/{len(NEEDLES)}"


def table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["| " + " | ".join(c.ljust(widths[c]) for c in cols) + " |",
             "|" + "|".join("-" * (widths[c] + 2) for c in cols) + "|"]
    lines += ["| " + " | ".join(str(r[c]).ljust(widths[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=30_000)
    ap.add_argument("--chunk-tokens", default="1000", help="comma-separated sizes to compare")
    ap.add_argument("--worker-max-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip-chain", action="store_true", help="map-reduce only (faster)")
    args = ap.parse_args()

    backend = load_backend("transformers", model="embedded", device=args.device,
                           batch_size=args.batch_size)
    corpus = Corpus([haystack(backend.tokenizer, args.tokens)], backend.tokenizer)
    print(f"backend: {entry(backend)}; corpus: {corpus.n_tokens} tokens; "
          f"question: {QUESTION!r}\n")
    backend.generate_one(MapReduce(backend, chunk_tokens=100).worker.request("Hi.", "Hi?"))

    batch_rows, strategy_rows = [], []
    for size in [int(s) for s in args.chunk_tokens.split(",")]:
        kw = dict(chunk_tokens=size, worker_max_tokens=args.worker_max_tokens, progress=True)
        mr = MapReduce(backend, **kw)
        requests = [mr.worker.request(p.text, QUESTION) for p in mr.pieces(corpus)]
        t0 = time.perf_counter()
        for r in requests:
            backend.generate([r])
        one_by_one = time.perf_counter() - t0
        answer = mr.answer(QUESTION, corpus)  # its map phase is the same requests, one batch
        batched = next(s.seconds for s in answer.trace.steps if s.name == "map")
        batch_rows.append({"chunk_tokens": size, "workers": len(requests),
                           "one_by_one_s": f"{one_by_one:.1f}", "one_batch_s": f"{batched:.1f}",
                           "speedup": f"{one_by_one / batched:.2f}x"})
        runs = [("map_reduce", answer)]
        if not args.skip_chain:
            runs.append(("chain_of_agents", ChainOfAgents(backend, **kw).answer(QUESTION, corpus)))
        for name, ans in runs:
            strategy_rows.append({
                "strategy": name, "chunk_tokens": size, "found": found(ans),
                "calls": ans.cost.model_calls, "prompt_tokens": ans.cost.prompt_tokens,
                "generated_tokens": ans.cost.generated_tokens,
                "wall_s": f"{ans.cost.wall_seconds:.1f}",
                "evidence_chunks": len(ans.evidence), "answer": ans.text[:60].replace("\n", " "),
            })
        print(file=sys.stderr)

    print("Map phase: the same worker requests, one generate() call vs one call each")
    print(table(batch_rows, list(batch_rows[0])))
    print("\nStrategies: cost per question")
    print(table(strategy_rows, list(strategy_rows[0])))


if __name__ == "__main__":
    main()
