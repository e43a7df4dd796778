"""The learned router's classifier: scikit-learn's DecisionTreeClassifier (gini), fitted on the
numeric features of ``orchestra.routers.features.NUMERIC_FEATURES`` present in the rows, and
kept as plain JSON so each decision stays readable ("effective_ratio > 1.4 and
kind_aggregation <= 0.5 -> rag"). Reading a file needs no scikit-learn object: the JSON tree
is walked as written. The file is versioned (``FORMAT``/``VERSION``) and refused with a clear
error when it is not a router file, comes from a newer version, or names features this
version lacks.
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

from orchestra.routers import features as F
from orchestra.routers.labels import labelled_questions

FORMAT = "orchestra-learned-router"
VERSION = 1


def _vector(feats: dict, names: Sequence[str]) -> list[float]:
    out = []
    for n in names:
        v = feats.get(n)
        out.append(float(v) if isinstance(v, (int, float)) and not isinstance(v, str)
                   and math.isfinite(float(v)) else math.nan)
    return out


def _grow(X: np.ndarray, y: np.ndarray, k: int, max_depth: int, min_leaf: int) -> dict:
    """A fitted DecisionTreeClassifier as nested dicts: ``counts`` (training questions per
    class) at every node; ``feature``, ``threshold`` (left: ``x <= threshold``), ``left`` and
    ``right`` at a split."""
    from sklearn.tree import DecisionTreeClassifier

    # min_impurity_decrease: a split must lower the impurity (scikit-learn otherwise takes a
    # split that gains nothing, which only makes the file longer). random_state: ties between
    # equally good features are broken the same way on every run.
    clf = DecisionTreeClassifier(criterion="gini", max_depth=max_depth, min_samples_leaf=min_leaf,
                                 min_impurity_decrease=1e-12, random_state=0).fit(X, y)
    t = clf.tree_
    # Counts from the training rows each node holds (tree_.value holds fractions in recent
    # releases and counts in older ones).
    counts = np.asarray(clf.decision_path(X).T @ np.eye(k)[y])

    def node(i: int) -> dict:
        out: dict[str, Any] = {"counts": [int(round(c)) for c in counts[i]]}
        if t.children_left[i] != t.children_right[i]:  # a split (a leaf has -1 for both)
            out.update(feature=int(t.feature[i]), threshold=float(t.threshold[i]),
                       left=node(int(t.children_left[i])), right=node(int(t.children_right[i])))
        return out

    return node(0)


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
        return cls(classes, present, impute, _grow(X, y, len(classes), max_depth, min_leaf))

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


def train_file(results: str | Path, out: str | Path, metric: str | None = None,
               threshold: float = 0.5, max_depth: int = 3, min_leaf: int = 2,
               holdout: float = 0.0) -> TreeModel:
    """``train`` on a results file, the tree written to ``out``."""
    model = train(read_results(results, missing_ok=False), metric=metric, threshold=threshold,
                  max_depth=max_depth, min_leaf=min_leaf, holdout=holdout, where=str(results))
    model.save(out)
    return model
