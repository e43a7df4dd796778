"""vLLM (vLLM's CPU build here; CUDA vLLM on a GPU) against the transformers backend, on the
same prompts, side by side in one run, greedy, the embedded SmolLM2-135M reader in float32:

- batch: 8 independent ~1,500-token prompts (Paul Graham essays, ../shared/data) as one batch;
- prefix: one 4,000-token document asked 5 questions in turn (vLLM's prefix cache prefills the
  document once; the transformers backend reads it whole every time), with vLLM's own
  prefix-cache hit counts;
- serve: `orchestra serve` (in-process, a real uvicorn server) with a rag pipeline over a
  registered corpus, 1/4/16 concurrent clients, requests/s; and how a request's time splits
  between prefill (time to the first streamed token) and decode, measured alone.

Run it in the vLLM venv (bash .ci/vllm-env), which has both backends:

    OMP_NUM_THREADS=2 nice -n 10 .venv-vllm/bin/python benchmarks/vllm_cpu.py

Its tables are in benchmarks/README.md, "vLLM's CPU build against transformers".
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ESSAYS = Path(os.environ.get("ORCHESTRA_DATA", REPO.parent / "shared" / "data")) / \
    "needle_haystack" / "PaulGrahamEssays"
QUESTIONS = ["What is the main argument of the text?", "Which people are named in the text?",
             "What advice does the author give?", "What does the author say about money?",
             "How does the text end?"]


def truncated(backend, text: str, n: int) -> str:
    offsets = backend.tokenizer.offsets(text)
    return text[:offsets[min(n, len(offsets)) - 1][1]]


def essays(backend, n_docs: int, tokens: int) -> list[str]:
    files = sorted(ESSAYS.glob("*.txt"))
    if not files:
        raise SystemExit(f"no essays in {ESSAYS} (set ORCHESTRA_DATA)")
    texts = [f.read_text() for f in files]
    long = [t for t in texts if backend.count_tokens(t) >= tokens] or ["\n\n".join(texts)]
    return [truncated(backend, t, tokens) for t in long[:n_docs]]


def request(doc: str, question: str, max_tokens: int):
    from orchestra.backends.base import GenerationRequest

    return GenerationRequest.user(f"{doc}\n\n{question}", system="Answer briefly.",
                                  max_tokens=max_tokens)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_batch(backends, max_tokens: int) -> list[tuple]:
    docs = essays(backends["transformers"], 8, 1500)
    reqs = [request(d, "Summarise the text in one sentence.", max_tokens) for d in docs]
    rows, texts = [], {}
    for name, b in backends.items():
        res, s = timed(lambda: b.generate(reqs))
        texts[name] = [r.text for r in res]
        rows.append((name, len(reqs), sum(r.prompt_tokens for r in res) // len(res), s))
    same = sum(a == b for a, b in zip(texts["transformers"], texts["vllm"]))
    return rows, same


def bench_prefix(backends, max_tokens: int) -> tuple[list, int, dict]:
    doc = essays(backends["transformers"], 1, 4000)[0]
    reqs = [request(doc, q, max_tokens) for q in QUESTIONS]
    rows, texts = [], {}
    before = backends["vllm"].engine_stats()
    for name, b in backends.items():
        per = []
        for r in reqs:
            res, s = timed(lambda: b.generate([r]))
            per.append(s)
            texts.setdefault(name, []).append(res[0].text)
        rows.append((name, len(reqs), res[0].prompt_tokens, sum(per), per))
    after = backends["vllm"].engine_stats()
    hits = {k: after[k] - before[k] for k in ("prefix_cache_queries", "prefix_cache_hits")}
    same = sum(a == b for a, b in zip(texts["transformers"], texts["vllm"]))
    return rows, same, hits


def split_prefill_decode(backend, doc: str, max_tokens: int) -> tuple[float, float, int]:
    """Time to the first streamed token (prefill) and the rest (decode), one request alone."""
    t0 = time.perf_counter()
    first = None
    for item in backend.stream(request(doc, QUESTIONS[0], max_tokens)):
        if first is None and isinstance(item, str):
            first = time.perf_counter() - t0
        result = item
    total = time.perf_counter() - t0
    return first or total, total - (first or total), result.generated_tokens


def bench_serve(name: str, backend, levels, n: int, max_tokens: int) -> list[tuple]:
    import httpx

    from orchestra.pipeline import Pipeline
    from orchestra.server.runner import serve_in_thread

    from orchestra.strategies.rag import RAG

    pipe = Pipeline(backend, {"rag": RAG(backend, retriever="bm25")})
    server = serve_in_thread(pipeline=pipe)
    doc = essays(backend, 1, 4000)[0]
    rows = []
    try:
        r = httpx.post(f"{server.url}/v1/corpora", timeout=600,
                       json={"documents": [{"name": "essay.txt", "text": doc}]})
        r.raise_for_status()
        cid = r.json()["id"]

        def one(i):
            r = httpx.post(f"{server.url}/v1/answer", timeout=900, json={
                "corpus_id": cid, "question": QUESTIONS[i % len(QUESTIONS)],
                "max_tokens": max_tokens})
            return r.status_code == 200 and bool(r.json().get("text", "").strip())

        one(0)  # warm-up: first-call costs are not load
        for c in levels:
            with ThreadPoolExecutor(c) as pool:
                ok, s = timed(lambda: list(pool.map(one, range(n))))
            rows.append((name, c, n, n - sum(ok), n / s))
    finally:
        server.shutdown()
        server.server_close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="batch,prefix,serve")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=16, help="serve requests per level")
    args = ap.parse_args()
    from orchestra.backends import load_backend

    backends = {"transformers": load_backend("transformers", model="embedded", device="cpu"),
                "vllm": load_backend("vllm", model="embedded")}
    parts = args.parts.split(",")
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} "
          f"CPUs, load average {os.getloadavg()[0]:.1f} at start; greedy, float32, "
          f"max_tokens {args.max_tokens}; vLLM engine loaded in "
          f"{backends['vllm'].load_seconds:.0f} s")
    if "batch" in parts:
        rows, same = bench_batch(backends, args.max_tokens)
        print("\n| batch: 8 independent prompts as one batch | prompts | prompt tokens each "
              "| seconds | speed-up |\n|---|---:|---:|---:|---:|")
        for name, n, p, s in rows:
            print(f"| {name} | {n} | {p} | {s:.1f} | {rows[0][3] / s:.1f}x |")
        print(f"replies equal in both: {same} of 8")
    if "prefix" in parts:
        rows, same, hits = bench_prefix(backends, args.max_tokens)
        print("\n| prefix: one document, 5 questions in turn | questions | prompt tokens "
              "| seconds | per question | speed-up |\n|---|---:|---:|---:|---|---:|")
        for name, n, p, s, per in rows:
            print(f"| {name} | {n} | {p} | {s:.1f} | {', '.join(f'{x:.1f}' for x in per)} | "
                  f"{rows[0][3] / s:.1f}x |")
        print(f"replies equal in both: {same} of 5; vLLM prefix cache over these questions: "
              f"{hits['prefix_cache_hits']} of {hits['prefix_cache_queries']} prompt tokens hit")
    if "serve" in parts:
        levels = [int(c) for c in args.clients.split(",")]
        doc = essays(backends["transformers"], 1, 4000)[0]
        for name, b in backends.items():
            pre, dec, n = split_prefill_decode(b, doc, args.max_tokens)
            print(f"{name}: one 4,000-token request alone: prefill (to the first token) "
                  f"{pre:.1f} s, decode {dec:.1f} s for {n} tokens")
        rows = [r for name, b in backends.items()
                for r in bench_serve(name, b, levels, args.requests, args.max_tokens)]
        print(f"\n| serve: rag over a registered 4,000-token corpus | clients | requests | "
              f"errors | requests/s |\n|---|---:|---:|---:|---:|")
        for name, c, n, err, rps in rows:
            print(f"| {name} | {c} | {n} | {err} | {rps:.3f} |")


if __name__ == "__main__":
    main()
