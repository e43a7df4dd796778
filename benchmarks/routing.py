"""Routing overhead: time spent deciding, as a share of end-to-end time, per router.

Every router answers the same questions (needle-in-a-haystack and RULER-style QA at the given
lengths) over the same strategies, side by side in one run. For each router the table shows
- decide s: the router's own time (features, retrieval profile, tree, parsing), excluding
  every model call it made;
- router calls / router model s: model calls the router made while deciding (llm: its choice;
  self_route: the declined first attempts, retrieval included), reported separately;
- end-to-end s: route_and_answer, as Pipeline.run does it;
- overhead: decide s over end-to-end s (target under 5% for fixed, rules and learned).
Corpora are tokenized and indexed once before timing (work a pipeline does once per corpus and
shares between router and strategies), so every router sees the same warm corpus.

    python benchmarks/routing.py --lengths 2000,8000 --limit 2
    python benchmarks/routing.py --learned router.json   # include a trained learned router
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path



class TimedBackend:
    """Wraps the shared backend to add up the seconds spent in model calls."""

    def __init__(self, inner):
        self._inner = inner
        self.model_seconds = 0.0
        self.calls = 0

    def generate(self, requests):
        t0 = time.perf_counter()
        try:
            return self._inner.generate(requests)
        finally:
            self.model_seconds += time.perf_counter() - t0
            self.calls += len(list(requests))

    def generate_one(self, request):
        return self.generate([request])[0]

    def __getattr__(self, name):
        return getattr(self._inner, name)


def build(backend, retriever: str):
    from orchestra.strategies.full_context import FullContext
    from orchestra.strategies.rag import RAG

    strategies = {"full_context": FullContext(backend), "rag": RAG(backend, retriever=retriever)}
    try:
        from orchestra.strategies.agents import ChainOfAgents

        strategies["chain_of_agents"] = ChainOfAgents(backend, progress=False)
    except ImportError:
        pass
    try:
        from orchestra.backends.base import KV_PAGES
        from orchestra.strategies.kv_pages import KVPages

        if KV_PAGES in backend.capabilities:
            strategies["kv_pages"] = KVPages(backend)
    except ImportError:
        pass
    return strategies


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", default="2000,8000", help="corpus sizes in tokens")
    p.add_argument("--limit", type=int, default=2, help="questions per dataset and length")
    p.add_argument("--retriever", default="bm25", help="RAG's retriever (bm25, dense, hybrid)")
    p.add_argument("--routers", default="fixed,rules,self_route,llm,learned")
    p.add_argument("--learned", help="a router file from `orchestra train-router`")
    p.add_argument("--data-root", type=Path, default=None)
    args = p.parse_args(argv)

    from orchestra.backends import default_backend
    from orchestra.corpus import Corpus
    from orchestra.eval.datasets import niah, ruler_qa
    from orchestra.routers.fixed import FixedRouter
    from orchestra.routers.learned import LearnedRouter
    from orchestra.routers.llm import LLMRouter
    from orchestra.routers.rules import RulesRouter
    from orchestra.routers.self_route import SelfRouter

    lengths = [int(x) for x in args.lengths.split(",")]
    inner = default_backend()
    backend = TimedBackend(inner)
    strategies = build(backend, args.retriever)
    makers = {
        "fixed": lambda: FixedRouter(strategies, strategy="rag"),
        "rules": lambda: RulesRouter(strategies),
        "self_route": lambda: SelfRouter(strategies),
        "llm": lambda: LLMRouter(strategies),
        "learned": (lambda: LearnedRouter(strategies, model=args.learned)) if args.learned
        else None,
    }
    wanted = [r for r in args.routers.split(",") if makers.get(r)]
    samples = (niah(inner.tokenizer, lengths, args.limit, root=args.data_root).samples
               + ruler_qa(inner.tokenizer, lengths, args.limit, root=args.data_root).samples)
    corpora = {s.sample_id: Corpus(s.documents, inner.tokenizer) for s in samples}
    for s in samples:  # warm retrieval indexes so no router pays for building them
        strategies["rag"].retrieve(s.question, corpora[s.sample_id])

    from tqdm import tqdm

    rows = []
    for rname in wanted:
        router = makers[rname]()
        acc = defaultdict(float)
        chosen: Counter = Counter()
        probe = {}
        inner_route = router.route

        def timed_route(question, corpus, be, _inner=inner_route, _probe=probe):
            # Time route() inside route_and_answer, apart from the model calls it makes.
            m0, t0 = backend.model_seconds, time.perf_counter()
            out = _inner(question, corpus, be)
            _probe["total"] = time.perf_counter() - t0
            _probe["model"] = backend.model_seconds - m0
            return out

        router.route = timed_route
        for s in tqdm(samples, desc=rname, leave=False):
            corpus = corpora[s.sample_id]
            probe.clear()
            t1 = time.perf_counter()
            ans = router.route_and_answer(s.question, corpus, backend)
            e2e = time.perf_counter() - t1
            chosen[ans.route.strategy] += 1
            acc["e2e_s"] += e2e
            acc["router_calls"] += ans.route.cost.model_calls
            if rname == "self_route":
                # Self-Route decides by reading: its routing model time is the declined attempt.
                attempt = _attempt_seconds(ans)
                acc["router_model_s"] += attempt
                acc["decide_s"] += max(0.0, ans.route.cost.wall_seconds - attempt)
            else:
                acc["router_model_s"] += probe.get("model", 0.0)
                acc["decide_s"] += probe.get("total", 0.0) - probe.get("model", 0.0)
            acc["correct"] += any(a.lower() in ans.text.lower() for a in s.answers)
        n = len(samples)
        rows.append((rname, n, acc["decide_s"] / n, acc["router_calls"] / n,
                     acc["router_model_s"] / n, acc["e2e_s"] / n,
                     100 * acc["decide_s"] / max(acc["e2e_s"], 1e-9), acc["correct"] / n,
                     ", ".join(f"{k} {v}" for k, v in sorted(chosen.items()))))
    print(f"\nrouting overhead, {len(samples)} questions (lengths {args.lengths}, retriever "
          f"{args.retriever}), per question:\n")
    print("| router | decide s (no model) | router calls | router model s | end-to-end s | "
          "overhead % | contains | chosen |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[2]:.3f} | {r[3]:.1f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.2f} | "
              f"{r[7]:.2f} | {r[8]} |")
    return 0


def _attempt_seconds(ans) -> float:
    """Model seconds of Self-Route's declined first attempt (from its trace)."""
    return sum(s.seconds for s in ans.trace.steps if s.name.startswith("self_route."))


if __name__ == "__main__":
    sys.exit(main())
