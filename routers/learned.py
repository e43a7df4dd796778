"""The learned router: a small decision tree from evaluation results to a strategy.

Its file is written by ``orchestra train-router`` (routers/tree.py: the tree and its JSON form,
fitted on questions labelled by routers/labels.py from the evaluation runner's results). A
label names a strategy by its pipeline name, its kind or its registered type (routers/kinds.py).
When no strategy the leaf names can read the corpus, the rules router decides.
"""

from __future__ import annotations

from orchestra.errors import ConfigError, InputError
from orchestra.types import Route

from orchestra.routers import features as F
from orchestra.routers.base import Router, first_feasible
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

    def _route(self, question, corpus, backend, generation=None) -> Route:
        strategies = self.available(backend)
        retrieval = self.model.uses("retrieval_")
        feats = F.compute_features(question, corpus, backend, strategies,
                                   self.effective_fraction, retrieval=retrieval)
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
