"""The learned router: a small decision tree from evaluation results to a strategy.

Training data is the evaluation runner's results (``results.jsonl``, read by
orchestra.eval.results.read_results: one JSON object a line, or a JSON list, or
``{"results": [...]}``). Each row is one question read by one strategy; the fields read here,
and only these, are:

- ``strategy_type`` (str): the registered type of the strategy that answered (``rag``,
  ``full_context``, ``chain_of_agents``, ...), the label; rows without it are labelled by
  ``strategy`` (a pipeline name, a kind or a type). A label is found in the routed pipeline
  by its name, its kind or its type (routers/kinds.py), never by guessing from other names.
- ``scores`` (dict metric -> float): quality; ``metric`` picks one (default: the first of
  ``contains``, ``f1``, ``accuracy``, ``exact_match``, ``rouge_l`` present in every row).
  A row is correct when that score >= ``threshold`` (0.5). Rows without scores, rows with an
  ``error`` (the strategy could not read that sample) and rows whose strategy is ``router``
  (answered through a router) are skipped.
- ``cost`` (Cost dict): ``prompt_tokens`` (then ``generated_tokens``, ``model_calls``) rank
  correct strategies by cost.
- ``features`` (dict): ``orchestra.routers.features.compute_features`` output for the question.
- ``sample_id`` (optional) groups the rows of one question; without it, ``question`` and the
  corpus size do.

The label of a question is the cheapest strategy that answered it correctly; when none did, the
best-scoring one (then the cheapest). The classifier is a shallow CART tree (gini, numpy only) on
the numeric features of ``orchestra.routers.features.NUMERIC_FEATURES`` present in the rows. A tree keeps
the file plain JSON and each decision readable ("effective_ratio > 1.4 and kind_aggregation <=
0.5 -> rag"). The file is versioned (``FORMAT``/``VERSION``) and refused with a clear error when
it is not a router file, comes from a newer version, or names features this version lacks.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from orchestra.errors import ConfigError, InputError
from orchestra.eval.results import read_results
from orchestra.types import Route

from orchestra.routers import features as F
from orchestra.routers.base import Router, first_feasible
from orchestra.routers.rules import RulesRouter

FORMAT = "orchestra-learned-router"
VERSION = 1
METRIC_PREFERENCE = ("contains", "f1", "accuracy", "exact_match", "rouge_l")
ROUTER_ROW = "router"  # the eval runner's name for rows answered through the pipeline's router


def _pick_metric(rows: Sequence[dict], metric: str | None, where: str) -> str:
    present = [set(r["scores"]) for r in rows]
    common = set.intersection(*present) if present else set()
    if metric is not None:
        if metric not in common:
            missing = next(i for i, p in enumerate(present) if metric not in p)
            raise InputError(f"{where}: row {missing + 1} has no score {metric!r} "
                             f"(it has: {', '.join(sorted(present[missing])) or 'none'})")
        return metric
    for m in METRIC_PREFERENCE:
        if m in common:
            return m
    if common:
        return sorted(common)[0]
    raise InputError(f"{where}: the rows share no score metric; pass metric=")


def _group_key(row: dict) -> str:
    if row.get("sample_id") is not None:
        return str(row["sample_id"])
    return f"{row['question']}\x00{row['features'].get('corpus_tokens')}"


def _cost_key(row: dict) -> tuple:
    c = row.get("cost") or {}
    return (c.get("prompt_tokens", 0), c.get("generated_tokens", 0), c.get("model_calls", 0))


def labelled_questions(rows: Sequence[dict], metric: str | None = None,
                       threshold: float = 0.5, where: str = "results"
                       ) -> tuple[list[dict], list[str], str, int]:
    """(features per question, label per question, metric used, rows skipped)."""
    usable, skipped = [], 0
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise InputError(f"{where}: row {i} is not a JSON object")
        if not row.get("scores") or row.get("error") or row.get("strategy") == ROUTER_ROW:
            # A failed run scores 0 at no cost and would look "cheapest"; a router's own row
            # names no strategy. Neither teaches which strategy to pick.
            skipped += 1
            continue
        for field in ("strategy", "features", "cost"):
            if field not in row:
                raise InputError(f"{where}: row {i} lacks the field {field!r} (fields read: "
                                 "strategy, scores, cost, features, sample_id or question)")
        if "sample_id" not in row and "question" not in row:
            raise InputError(f"{where}: row {i} has neither 'sample_id' nor 'question'")
        if not isinstance(row["features"], dict) or not isinstance(row["scores"], dict):
            raise InputError(f"{where}: row {i}: 'features' and 'scores' must be objects")
        usable.append(row)
    if not usable:
        raise InputError(f"{where}: no rows with scores to learn from")
    metric = _pick_metric(usable, metric, where)
    groups: dict[str, list[dict]] = {}
    for row in usable:
        groups.setdefault(_group_key(row), []).append(row)
    feats, labels = [], []
    for rs in groups.values():
        correct = [r for r in rs if float(r["scores"][metric]) >= threshold]
        if correct:
            best = min(correct, key=_cost_key)
        else:
            best = min(rs, key=lambda r: (-float(r["scores"][metric]), *_cost_key(r)))
        merged: dict[str, Any] = {}
        for r in rs:
            for k, v in r["features"].items():
                merged.setdefault(k, v)
        feats.append(merged)
        labels.append(str(best.get("strategy_type") or best["strategy"]))
    return feats, labels, metric, skipped


def _vector(feats: dict, names: Sequence[str]) -> list[float]:
    out = []
    for n in names:
        v = feats.get(n)
        out.append(float(v) if isinstance(v, (int, float)) and not isinstance(v, str)
                   and math.isfinite(float(v)) else math.nan)
    return out


# -- the tree ----------------------------------------------------------------------------------
def _gini(counts: np.ndarray) -> float:
    n = counts.sum()
    return 1.0 - float(((counts / n) ** 2).sum()) if n else 0.0


def _grow(X: np.ndarray, y: np.ndarray, k: int, depth: int, max_depth: int,
          min_leaf: int) -> dict:
    counts = np.bincount(y, minlength=k)
    node: dict[str, Any] = {"counts": counts.tolist()}
    if depth >= max_depth or len(y) < 2 * min_leaf or (counts > 0).sum() <= 1:
        return node
    parent = _gini(counts) * len(y)
    best = None
    for j in range(X.shape[1]):
        order = np.argsort(X[:, j], kind="stable")
        xs, ys = X[order, j], y[order]
        left = np.zeros(k)
        right = counts.astype(float).copy()
        for i in range(len(ys) - 1):
            left[ys[i]] += 1
            right[ys[i]] -= 1
            if xs[i] == xs[i + 1] or i + 1 < min_leaf or len(ys) - i - 1 < min_leaf:
                continue
            impurity = _gini(left) * (i + 1) + _gini(right) * (len(ys) - i - 1)
            if best is None or impurity < best[0] - 1e-12:
                best = (impurity, j, (xs[i] + xs[i + 1]) / 2)
    if best is None or best[0] >= parent - 1e-12:
        return node
    _, j, t = best
    mask = X[:, j] <= t
    node.update(feature=int(j), threshold=float(t),
                left=_grow(X[mask], y[mask], k, depth + 1, max_depth, min_leaf),
                right=_grow(X[~mask], y[~mask], k, depth + 1, max_depth, min_leaf))
    return node


def _leaf(node: dict, x: Sequence[float]) -> tuple[dict, list[tuple[int, float, bool]]]:
    path = []
    while "feature" in node:
        go_left = x[node["feature"]] <= node["threshold"]
        path.append((node["feature"], node["threshold"], go_left))
        node = node["left"] if go_left else node["right"]
    return node, path


class TreeModel:
    """The trained classifier and its JSON form."""

    def __init__(self, classes: list[str], features: list[str], impute: dict[str, float],
                 tree: dict, meta: dict | None = None):
        self.classes, self.features, self.impute, self.tree = classes, features, impute, tree
        self.meta = meta or {}

    # training ---------------------------------------------------------------------------
    @classmethod
    def fit(cls, feats: Sequence[dict], labels: Sequence[str], max_depth: int = 3,
            min_leaf: int = 2) -> "TreeModel":
        if len(labels) < 2:
            raise InputError(f"need at least 2 labelled questions to train, got {len(labels)}")
        present = [n for n in F.NUMERIC_FEATURES
                   if any(isinstance(f.get(n), (int, float)) for f in feats)]
        if not present:
            raise InputError("the rows' features hold none of the known numeric features "
                             f"({', '.join(F.NUMERIC_FEATURES)})")
        X = np.array([_vector(f, present) for f in feats], dtype=float)
        impute = {}
        for j, n in enumerate(present):
            col = X[:, j]
            fill = float(np.nanmedian(col)) if np.isfinite(col).any() else 0.0
            col[~np.isfinite(col)] = fill
            impute[n] = fill
        classes = sorted(set(labels))
        y = np.array([classes.index(label) for label in labels])
        tree = _grow(X, y, len(classes), 0, max_depth, min_leaf)
        return cls(classes, present, impute, tree)

    # use --------------------------------------------------------------------------------
    def vector(self, feats: dict) -> list[float]:
        v = _vector(feats, self.features)
        return [self.impute[n] if math.isnan(x) else x for n, x in zip(self.features, v)]

    def predict_dist(self, feats: dict) -> tuple[list[tuple[str, int]], str, int]:
        """(classes with leaf counts, most first; the path in words; questions in the leaf)."""
        leaf, path = _leaf(self.tree, self.vector(feats))
        counts = leaf["counts"]
        ranked = sorted(((c, n) for c, n in zip(self.classes, counts)), key=lambda t: -t[1])
        words = " and ".join(f"{self.features[j]} {'<=' if left else '>'} {t:.3g}"
                             for j, t, left in path) or "always"
        return ranked, words, int(sum(counts))

    def predict(self, feats: dict) -> str:
        return self.predict_dist(feats)[0][0][0]

    def uses(self, prefix: str) -> bool:
        def walk(n):
            return "feature" in n and (self.features[n["feature"]].startswith(prefix)
                                       or walk(n["left"]) or walk(n["right"]))
        return walk(self.tree)

    # files ------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "classes": self.classes,
                "features": self.features, "impute": self.impute, "tree": self.tree,
                "meta": self.meta}

    def save(self, path: str | Path) -> None:
        from orchestra.cache import atomic_file

        with atomic_file(Path(path), "w") as f:
            f.write(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "TreeModel":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such learned-router file "
                              "(write one with `orchestra train-router RESULTS -o FILE`)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not a JSON learned-router file ({e})") from None
        return cls.from_json(data, str(path))

    @classmethod
    def from_json(cls, data: Any, where: str = "learned router") -> "TreeModel":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"{where}: not a learned-router file (expected \"format\": "
                              f"\"{FORMAT}\")")
        version = data.get("version")
        if not isinstance(version, int) or version > VERSION or version < 1:
            raise ConfigError(f"{where}: learned-router file version {version!r} is not "
                              f"supported; this orchestra reads version {VERSION} (retrain it "
                              "with `orchestra train-router`)")
        for key in ("classes", "features", "impute", "tree"):
            if key not in data:
                raise ConfigError(f"{where}: learned-router file lacks {key!r}")
        unknown = [f for f in data["features"] if f not in F.NUMERIC_FEATURES]
        if unknown:
            raise ConfigError(f"{where}: incompatible learned-router file: features "
                              f"{', '.join(unknown)} are unknown to this orchestra")
        missing = [f for f in data["features"] if f not in data["impute"]]
        if missing:
            raise ConfigError(f"{where}: learned-router file lacks impute values for "
                              f"{', '.join(missing)}")
        model = cls(list(data["classes"]), list(data["features"]), dict(data["impute"]),
                    data["tree"], data.get("meta", {}))
        model._check_tree(model.tree, where)
        return model

    def _check_tree(self, node: Any, where: str) -> None:
        if not isinstance(node, dict) or len(node.get("counts", ())) != len(self.classes):
            raise ConfigError(f"{where}: malformed tree node (counts must list one number per "
                              f"class, {len(self.classes)} classes)")
        if "feature" in node:
            if not (isinstance(node["feature"], int)
                    and 0 <= node["feature"] < len(self.features)):
                raise ConfigError(f"{where}: tree node names feature {node['feature']!r}, "
                                  f"outside 0..{len(self.features) - 1}")
            self._check_tree(node.get("left"), where)
            self._check_tree(node.get("right"), where)


def _split(keys: Sequence[str], holdout: float) -> list[bool]:
    """Deterministic held-out flags, by a hash of each question's key."""
    return [int(hashlib.sha256(k.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < holdout
            for k in keys]


def train(rows: Sequence[dict], metric: str | None = None, threshold: float = 0.5,
          max_depth: int = 3, min_leaf: int = 2, holdout: float = 0.0,
          effective_fraction: float | None = None, where: str = "results",
          refit: bool = True) -> TreeModel:
    """Train on ``rows``. With ``holdout`` > 0, that fraction of questions is kept out and the
    tree's agreement with their labels is reported next to always choosing the most frequent
    label (``meta``); with ``refit`` the returned tree is then fitted again on every question
    (the reported figures stay those of the held-out test)."""
    feats, labels, metric, skipped = labelled_questions(rows, metric, threshold, where)
    keys = [str(i) + json.dumps(f, sort_keys=True, default=str) for i, f in enumerate(feats)]
    held = _split(keys, holdout) if holdout > 0 else [False] * len(labels)
    tr = [i for i, h in enumerate(held) if not h]
    te = [i for i, h in enumerate(held) if h]
    model = TreeModel.fit([feats[i] for i in tr], [labels[i] for i in tr], max_depth, min_leaf)
    majority = Counter(labels[i] for i in tr).most_common(1)[0][0]

    def accuracy(idx):
        if not idx:
            return None
        return sum(model.predict(feats[i]) == labels[i] for i in idx) / len(idx)

    fractions = {f.get("effective_window", 0) / f["context_window"] for f in feats
                 if f.get("context_window")}
    model.meta = {
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": len(rows), "rows_skipped": skipped, "questions": len(labels),
        "train_questions": len(tr), "holdout_questions": len(te),
        "metric": metric, "threshold": threshold, "max_depth": max_depth,
        "min_leaf": min_leaf, "label_counts": dict(Counter(labels)),
        "majority": majority, "train_accuracy": accuracy(tr),
        "holdout_accuracy": accuracy(te),
        "holdout_majority_accuracy": (sum(labels[i] == majority for i in te) / len(te)
                                      if te else None),
        "effective_fraction": (effective_fraction if effective_fraction is not None else
                               (round(fractions.pop(), 6) if len(fractions) == 1
                                else F.DEFAULT_EFFECTIVE_FRACTION)),
        "refit_on_all": bool(refit and te),
    }
    if refit and te:
        final = TreeModel.fit(feats, labels, max_depth, min_leaf)
        final.meta = model.meta
        return final
    return model


# -- the router --------------------------------------------------------------------------------
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

    def _route(self, question, corpus, backend) -> Route:
        strategies = self.available(backend)
        retrieval = self.model.uses("retrieval_")
        feats = F.compute_features(question, corpus, backend, strategies,
                                   self.effective_fraction, retrieval=retrieval)
        ranked, path, n = self.model.predict_dist(feats)
        signals = {k: feats[k] for k in self.model.features if k in feats}
        signals["question_kind"] = feats["question_kind"]
        counts = dict(ranked)
        name, cls, notes = first_feasible([c for c, count in ranked if count], strategies,
                                          corpus, question, backend, note_missing=True)
        if name is not None:
            reason = (f"learned tree: {path} -> {cls} ({counts[cls]} of {n} training questions "
                      f"in this leaf were best answered by it)")
            if name != cls:
                reason += f"; {cls} is {name} here"
            if notes:
                reason += f" (passed over: {'; '.join(notes)})"
            signals["leaf_counts"] = counts
            return Route(strategy=name, reason=reason, signals=signals)
        route = self._fallback.route(question, corpus, backend)
        route.reason = (f"learned tree: {path} -> none usable here ({'; '.join(notes)}); "
                        f"rules: {route.reason}")
        return route


def train_file(results: str | Path, out: str | Path, **kw) -> TreeModel:
    model = train(read_results(results, missing_ok=False), where=str(results), **kw)
    model.save(out)
    return model
