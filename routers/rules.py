"""The rules router: decide from measured signals, no model call.

Rules, in order (defaults documented in routers/features.py and below):
1. The corpus fits the *effective* window (``effective_fraction`` x the backend's window,
   1/8 by default: 1024 tokens for SmolLM2): read it all (``short`` order: full context first).
2. An aggregation/summary question over a longer corpus needs every part read: agents first
   (``aggregation`` order).
3. A lookup, multi-value or multi-hop question over a longer corpus: retrieval first
   (``lookup`` / ``multi_value`` / ``multi_hop`` orders). When a RAG strategy exists its score shape is measured; a flat
   shape (the best hit under ``weak_rel_margin`` = 5% ahead of the second) means the
   retriever is unsure, so the ``weak_retrieval`` order is used (KV pages, which select inside
   attention, then agents, then RAG anyway). Measured with the dense retriever on 4k and 30k
   needle haystacks: a present needle leads by 62-85%; a "main ideas" question's best hit by
   1-6% (one outlier 31%); a question whose answer is absent by 1-68% (another needle often
   matches). Rank-fused (RRF, hybrid) scores are flat by construction, so the test is skipped
   for them.
Within an order, the first strategy that exists, that the backend can run and that says it can
take the corpus (``Strategy.fits``; full context only when the corpus fits the window or it
truncates) wins (routers/base.py ``first_feasible``). Orders name strategy kinds
(full_context, rag, kv_pages, agents) or a pipeline's own strategy names.
"""

from __future__ import annotations


from orchestra.errors import ConfigError
from orchestra.types import Route

from orchestra.routers import features as F
from orchestra.routers import kinds
from orchestra.routers.base import Router, first_feasible

DEFAULT_ORDERS: dict[str, list[str]] = {
    "short": [kinds.FULL, kinds.RAG, kinds.PAGES, kinds.AGENTS],
    "aggregation": [kinds.AGENTS, kinds.FULL, kinds.PAGES, kinds.RAG],
    "multi_hop": [kinds.RAG, kinds.AGENTS, kinds.PAGES, kinds.FULL],
    "lookup": [kinds.RAG, kinds.PAGES, kinds.AGENTS, kinds.FULL],
    # Several values of one thing: read as a lookup until paired evidence says otherwise.
    "multi_value": [kinds.RAG, kinds.PAGES, kinds.AGENTS, kinds.FULL],
    "weak_retrieval": [kinds.PAGES, kinds.AGENTS, kinds.RAG, kinds.FULL],
}
# A best hit under 5% ahead of the second is no clear winner (see the measurements above).
DEFAULT_WEAK_REL_MARGIN = 0.05
# Score kinds whose values are fused ranks, not similarities: no margin means anything.
RANK_SCORES = ("rrf",)


class RulesRouter(Router):
    name = "rules"

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Value checks shared with `orchestra validate` (orchestra.checks)."""
        from orchestra.errors import OptionError

        f = options.get("effective_fraction", F.DEFAULT_EFFECTIVE_FRACTION)
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise OptionError("effective_fraction", f"router 'rules': effective_fraction must "
                                                    f"be in (0, 1], got {f!r}")
        orders = options.get("orders") or {}
        if not isinstance(orders, dict):
            raise OptionError("orders", f"router 'rules': orders must map a case to a list of "
                                        f"strategy kinds, not {orders!r}")
        unknown = set(orders) - set(DEFAULT_ORDERS)
        if unknown:
            raise OptionError("orders", f"router 'rules': unknown order(s) "
                                        f"{', '.join(sorted(map(str, unknown)))}; known: "
                                        f"{', '.join(DEFAULT_ORDERS)}")

    def __init__(self, strategies, effective_fraction: float = F.DEFAULT_EFFECTIVE_FRACTION,
                 weak_rel_margin: float = DEFAULT_WEAK_REL_MARGIN,
                 use_retrieval: bool = True, orders: dict[str, list[str]] | None = None):
        super().__init__(strategies)
        self.effective_fraction = effective_fraction
        self.weak_rel_margin = weak_rel_margin
        self.use_retrieval = use_retrieval
        self.orders = {k: list(v) for k, v in DEFAULT_ORDERS.items()}
        for k, v in (orders or {}).items():
            if not isinstance(v, list) or not v:
                raise ConfigError(f"router 'rules': order {k!r} must be a non-empty list")
            self.orders[k] = list(v)

    def _route(self, question, corpus, backend, generation=None) -> Route:
        strategies = self.available(backend)
        if not strategies:
            raise ConfigError(f"router 'rules': none of {', '.join(self.strategies)} runs on "
                              f"the {backend.name} backend")
        # Retrieval is the one costly signal: measure it only where it changes the decision.
        feats = F.compute_features(question, corpus, backend, strategies,
                                   self.effective_fraction, retrieval=False)
        situation, why = self._situation(question, corpus, backend, strategies, feats)
        name, _, notes = first_feasible(self.orders[situation], strategies, corpus, question,
                                        backend, generation=generation)
        if name is None:
            name = next(iter(strategies))
            why += f"; none of {self.orders[situation]} is usable here, so {name}"
        else:
            why += f" -> {name}"
        if notes:
            why += f" (passed over: {'; '.join(notes)})"
        signals = {k: feats[k] for k in (
            "corpus_tokens", "context_window", "effective_window", "fits_window",
            "question_kind", "question_kind_rule", "retrieval_top", "retrieval_margin",
            "retrieval_rel_margin", "retrieval_lead") if k in feats}
        signals["situation"] = situation
        return Route(strategy=name, reason=why, signals=signals)

    def _situation(self, question, corpus, backend, strategies, feats) -> tuple[str, str]:
        size = (f"corpus of {feats['corpus_tokens']} tokens "
                f"{'within' if feats['fits_effective'] else 'over'} the effective window of "
                f"{feats['effective_window']} ({self.effective_fraction:g} of "
                f"{feats['context_window']})")
        if feats["fits_effective"]:
            return "short", size
        kind = feats["question_kind"]
        what = f"{size}; {kind.replace('_', '-')} question ({feats['question_kind_rule']})"
        if kind == "aggregation":
            return "aggregation", what
        rag = kinds.first_of(strategies, kinds.RAG)
        if self.use_retrieval and rag is not None:
            feats.update(F.retrieval_shape(strategies[rag], question, corpus))
            if "retrieval_rel_margin" in feats and \
                    feats.get("retrieval_score_kind") not in RANK_SCORES:
                m = feats["retrieval_rel_margin"]
                weak = m < self.weak_rel_margin
                what += (f"; retrieval {'flat' if weak else 'peaked'} (best hit "
                         f"{100 * m:.0f}% ahead of the second)")
                if weak:
                    return "weak_retrieval", what
        return kind, what
