"""The learned router: a small decision tree from evaluation results to a strategy.

Its file is written by ``orchestra train-router`` (routers/tree.py: the tree and its JSON form,
fitted on questions labelled by routers/labels.py from the evaluation runner's results). A
label names a strategy by its pipeline name, its kind or its registered type (routers/kinds.py).
When no strategy the leaf names can read the corpus, the rules router decides.

A tree that splits on a signal of the first read (``features.READ_FEATURES``: the reply's
log-probabilities, whether its answer is in its passages, a decline, ...) reads RAG first, as
Self-Route does: the tree then decides from that read whether to keep it or to read again with
the strategy its leaf names (the first read's cost is the cost of routing). ``route()`` alone
(``orchestra ask --explain``) cannot read: it names RAG first and says so.
"""

from __future__ import annotations

import time

from orchestra.errors import ConfigError, InputError
from orchestra.types import Answer, Cost, Route

from orchestra.routers import features as F
from orchestra.routers import kinds as K
from orchestra.routers.base import Router, first_feasible, since
from orchestra.routers.rules import RulesRouter
from orchestra.routers.tree import TreeModel

__all__ = ["LearnedRouter", "TreeModel"]


class LearnedRouter(Router):
    name = "learned"

    @classmethod
    def check_options(cls, options: dict) -> None:
        """`orchestra validate` reads the model file as the constructor does (a small JSON
        file), so a missing or damaged one is named with the pipeline file's line."""
        from orchestra.errors import OptionError

        if options.get("model") is not None:
            try:
                TreeModel.load(options["model"])
            except (ConfigError, InputError) as e:
                raise OptionError("model", f"router 'learned': {e}") from None

    def __init__(self, strategies, model: str | None = None):
        super().__init__(strategies)
        if model is None:
            raise ConfigError("router 'learned' needs `model:`, a file written by "
                              "`orchestra train-router`")
        self.model_path = str(model)
        self.model = TreeModel.load(model)
        self.effective_fraction = float(self.model.meta.get(
            "effective_fraction", F.DEFAULT_EFFECTIVE_FRACTION))
        self._fallback = RulesRouter(self.strategies, effective_fraction=self.effective_fraction)

    def reads_first(self, strategies) -> str | None:
        """The RAG strategy to read first, when the tree splits on a read signal."""
        if not any(self.model.uses(f) for f in F.READ_FEATURES):
            return None
        return K.first_of(strategies, K.RAG)

    def _route(self, question, corpus, backend, generation=None) -> Route:
        strategies = self.available(backend)
        first = self.reads_first(strategies)
        if first is not None:
            return Route(strategy=first, signals={"stage": "first"},
                         reason=f"learned tree: it splits on signals of a read, so {first} reads "
                                "first and the tree decides from its reply")
        return self._decide(question, corpus, backend, strategies, {}, generation)

    def route_and_answer(self, question, corpus, backend, *, generation=None) -> Answer:
        from orchestra import signals as S
        from orchestra.strategies.base import given

        strategies = self.available(backend)
        first = self.reads_first(strategies)
        if first is None:
            return super().route_and_answer(question, corpus, backend, generation=generation)
        t0 = time.perf_counter()
        extra = given(generation)
        attempt = strategies[first].answer(question, corpus, may_decline=True, **extra)
        read = S.read_signals(attempt, corpus)
        if self.model.uses("second_read_agreement") and hasattr(strategies[first],
                                                                 "second_read"):
            second = strategies[first].second_read(question, corpus)
            read["second_read_agreement"] = S.agreement(attempt.text, second.text)
            attempt.cost = attempt.cost + second.cost
        route = self._decide(question, corpus, backend, strategies, read, generation)
        route.router = self.name
        route.reason = f"{first} read first; " + route.reason
        if route.strategy == first:
            route.cost = Cost(wall_seconds=max(0.0, since(t0) - attempt.cost.wall_seconds))
            attempt.route = route
            return attempt
        final = strategies[route.strategy].answer(question, corpus, **extra)
        routing = attempt.cost.model_copy()
        routing.wall_seconds = max(0.0, since(t0) - final.cost.wall_seconds)
        route.cost = routing
        final.route = route
        final.cost = final.cost + routing
        final.trace.extend(attempt.trace, prefix=f"learned.{first}.")
        return final

    def _decide(self, question, corpus, backend, strategies, read: dict, generation=None
                ) -> Route:
        """The leaf's decision from the features (and the first read's signals, if any)."""
        retrieval = self.model.uses("retrieval_")
        feats = F.compute_features(question, corpus, backend, strategies,
                                   self.effective_fraction, retrieval=retrieval)
        feats.update(read)
        ranked, path, n = self.model.predict_dist(feats)
        signals = {k: feats[k] for k in self.model.features if k in feats}
        signals["question_kind"] = feats["question_kind"]
        counts = dict(ranked)
        name, cls, notes = first_feasible([c for c, count in ranked if count], strategies,
                                          corpus, question, backend, note_missing=True,
                                          generation=generation)
        if name is not None:
            reason = (f"learned tree: {path} -> {cls} ({counts[cls]} of {n} training questions "
                      f"in this leaf were best answered by it)")
            if name != cls:
                reason += f"; {cls} is {name} here"
            if notes:
                reason += f" (passed over: {'; '.join(notes)})"
            signals["leaf_counts"] = counts
            return Route(strategy=name, reason=reason, signals=signals)
        route = self._fallback.route(question, corpus, backend, generation=generation)
        route.reason = (f"learned tree: {path} -> none usable here ({'; '.join(notes)}); "
                        f"rules: {route.reason}")
        return route
