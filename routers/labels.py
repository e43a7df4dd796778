"""Labelling evaluation results for the learned router: which strategy was best per question.

Training data is the evaluation runner's results (``results.jsonl``, read by
orchestra.eval.results.read_results: one JSON object a line, or a JSON list, or
``{"results": [...]}``). Each row is one question read by one strategy; the fields read here,
and only these, are:

- ``strategy_type`` (str): the registered type of the strategy that answered (``rag``,
  ``full_context``, ``chain_of_agents``, ...), the label; rows without it are labelled by
  ``strategy`` (a pipeline name, a kind or a type). A label is found in the routed pipeline
  by its name, its kind or its type (routers/kinds.py), never by guessing from other names.
- ``scores`` (dict metric -> float): quality; ``metric`` picks one (default: the first of
  ``contains``, ``f1``, ``accuracy``, ``exact_match``, ``rouge_l`` present in every row; for
  rows of several tasks that share none, ``quality``, each row's headline metric).
  A row is correct when that score >= ``threshold`` (0.5). Rows without scores, rows with an
  ``error`` (the strategy could not read that sample) and rows whose strategy is ``router``
  (answered through a router) are skipped.
- ``cost`` (Cost dict): ``prompt_tokens`` (then ``generated_tokens``, ``model_calls``) rank
  correct strategies by cost.
- ``features`` (dict): ``orchestra.routers.features.compute_features`` output for the question.
- ``signals`` (dict, optional): the read's signals (orchestra/signals.py); those of the
  question's ``rag`` row join its features (``READ_FEATURES``: what a first RAG read measures).
- ``sample_id`` (optional) groups the rows of one question; without it, ``question`` and the
  corpus size do.

The label of a question is the cheapest strategy that answered it correctly; when none did, the
best-scoring one (then the cheapest).
"""

from __future__ import annotations

from typing import Any, Sequence

from orchestra.errors import InputError
from orchestra.routers.features import READ_FEATURES

METRIC_PREFERENCE = ("contains", "f1", "accuracy", "exact_match", "rouge_l")
ROUTER_ROW = "router"  # the eval runner's name for rows answered through the pipeline's router
QUALITY = "quality"  # a row's headline metric (the eval runner writes it beside its scores)


def score_of(row: dict, metric: str) -> float:
    return float(row[QUALITY] if metric == QUALITY else row["scores"][metric])


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
    if all(isinstance(r.get(QUALITY), (int, float)) for r in rows):
        return QUALITY  # a task mix: each task's own headline metric
    raise InputError(f"{where}: the rows share no score metric; pass metric=")


def _group_key(row: dict) -> str:
    if row.get("sample_id") is not None:
        return str(row["sample_id"])
    return f"{row['question']}\x00{row['features'].get('corpus_tokens')}"


def _cost_key(row: dict) -> tuple:
    c = row.get("cost") or {}
    return (c.get("prompt_tokens", 0), c.get("generated_tokens", 0), c.get("model_calls", 0))


def usable_rows(rows: Sequence[dict], where: str = "results") -> tuple[list[dict], int]:
    """The rows that teach something (scored, no error, not a router's own), and how many were
    skipped; a row lacking a field read here is refused, naming it."""
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
    return usable, skipped


def labelled_questions(rows: Sequence[dict], metric: str | None = None,
                       threshold: float = 0.5, where: str = "results"
                       ) -> tuple[list[dict], list[str], str, int]:
    """(features per question, label per question, metric used, rows skipped)."""
    usable, skipped = usable_rows(rows, where)
    metric = _pick_metric(usable, metric, where)
    groups: dict[str, list[dict]] = {}
    for row in usable:
        groups.setdefault(_group_key(row), []).append(row)
    feats, labels = [], []
    for rs in groups.values():
        correct = [r for r in rs if score_of(r, metric) >= threshold]
        if correct:
            best = min(correct, key=_cost_key)
        else:
            best = min(rs, key=lambda r: (-score_of(r, metric), *_cost_key(r)))
        merged: dict[str, Any] = {}
        for r in rs:
            for k, v in r["features"].items():
                merged.setdefault(k, v)
            if (r.get("strategy_type") or r["strategy"]) == "rag":
                merged.update({k: v for k, v in (r.get("signals") or {}).items()
                               if k in READ_FEATURES})
        feats.append(merged)
        labels.append(str(best.get("strategy_type") or best["strategy"]))
    return feats, labels, metric, skipped
