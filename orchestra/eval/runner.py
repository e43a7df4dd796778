"""Run a pipeline (each fixed strategy and/or its router) over a dataset; write results.jsonl.

The results file is append-only and written row by row (flushed and fsynced), so a crash or
Ctrl-C loses no finished question; a rerun with the same --out reads it and skips every
(sample, strategy) pair already there. Samples run in the outer loop and strategies in the
inner one, so an interrupted run still compares strategies on the samples it finished.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Iterable, Sequence

from tqdm.auto import tqdm

from orchestra.corpus import Corpus
from orchestra.errors import InputError, OrchestraError
from orchestra.eval import metrics
from orchestra.eval.datasets import Dataset, Sample
from orchestra.types import Answer, Cost, Route

log = logging.getLogger(__name__)

ROUTER = "router"
RESULTS = "results.jsonl"
RUN_INFO = "run.json"


def fix_seeds(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def _features_fn():
    try:
        from orchestra.routers.features import compute_features
    except ImportError:
        return None
    return compute_features


def read_results(path: Path, repair: bool = True) -> list[dict]:
    """Rows of a results file. A last line cut short by a crash is dropped (and, with
    ``repair``, cut from the file so appending continues on a clean line; readers that only
    look, perhaps while a run is writing, pass ``repair=False``). A malformed line elsewhere is
    an error."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        if repair:
            log.warning("%s: dropping an unfinished last line (%d bytes)", path,
                        len(data) - keep)
            with open(path, "r+b") as f:
                f.truncate(keep)
        data = data[:keep]
    rows = []
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as e:
            raise InputError(f"{path}:{n}: malformed results line ({e}); fix or remove it, "
                             "or use another --out") from None
    return rows


class Runner:
    """Evaluate ``pipeline`` on samples.

    ``strategies``: names of the pipeline's strategies to run as fixed routes, plus
    ``"router"`` for the pipeline's own routing (``["all"]`` means every strategy and the
    router). The pipeline needs ``backend``, ``strategies`` (name -> Strategy) and ``run``.
    """

    def __init__(self, pipeline: Any, out_dir: str | Path, strategies: Sequence[str] = ("router",),
                 seed: int = 0, progress: bool = True, run_info: dict | None = None):
        self.pipeline = pipeline
        self.backend = pipeline.backend
        self.out_dir = Path(out_dir)
        self.seed = seed
        self.progress = progress
        self.strategies = self._resolve(strategies)
        self.run_info = {**(run_info or {}), "seed": seed}
        self._features = _features_fn()
        self._feature_cache: dict[str, dict] = {}  # per sample: features do not depend on the route

    def _resolve(self, names: Sequence[str]) -> list[str]:
        known = list(self.pipeline.strategies)
        if list(names) == ["all"]:
            return known + [ROUTER]
        out = []
        for n in names:
            if n != ROUTER and n not in known:
                raise InputError(f"unknown strategy {n!r} in --strategies; the pipeline has "
                                 f"{', '.join(known)} (or 'router', or 'all')")
            if n not in out:
                out.append(n)
        if not out:
            raise InputError("no strategy to evaluate: give --strategies all, router or names")
        return out

    @property
    def results_path(self) -> Path:
        return self.out_dir / RESULTS

    def _check_run_info(self) -> None:
        path = self.out_dir / RUN_INFO
        if path.exists():
            old = json.loads(path.read_text())
            for key in ("dataset", "seed"):
                if key in old and key in self.run_info and old[key] != self.run_info[key]:
                    raise InputError(
                        f"{self.out_dir} holds results of another run ({key} was {old[key]!r}, "
                        f"now {self.run_info[key]!r}); use another --out to keep both")
            if old.get("pipeline_hash") != self.run_info.get("pipeline_hash"):
                # Adding a strategy to the pipeline and rerunning is a normal way to grow a run.
                log.warning("%s: the pipeline file changed since the earlier rows were written; "
                            "finished (question, strategy) pairs are kept as they are",
                            self.out_dir)
        path.write_text(json.dumps(self.run_info, indent=2, default=str) + "\n")

    def run(self, dataset: Dataset | Iterable[Sample]) -> list[dict]:
        samples = dataset.samples if isinstance(dataset, Dataset) else list(dataset)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._check_run_info()
        rows = read_results(self.results_path)
        done = {(r["sample_id"], r["strategy"]) for r in rows}
        todo = [(s, n) for s in samples for n in self.strategies if (s.sample_id, n) not in done]
        fix_seeds(self.seed)
        with open(self.results_path, "a", encoding="utf-8") as f, tqdm(
                total=len(samples) * len(self.strategies), initial=len(samples) *
                len(self.strategies) - len(todo), desc="eval", unit="answer",
                disable=not self.progress) as bar:
            for sample, name in todo:
                bar.set_postfix_str(f"{sample.sample_id} {name}"[-60:])
                row = self.evaluate(sample, name)
                f.write(json.dumps(row, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
                rows.append(row)
                bar.update(1)
        return rows

    def _corpus(self, sample: Sample) -> Corpus:
        # Built here rather than by pipeline.corpus(), which memoises corpora by content: a
        # fresh one per answer keeps every strategy's cost honest (no warm chunkings).
        return Corpus(sample.documents, self.backend.tokenizer,
                      chunk_tokens=getattr(self.pipeline, "chunk_tokens", 200),
                      overlap=getattr(self.pipeline, "overlap", 20))

    def answer(self, sample: Sample, name: str, corpus: Corpus) -> Answer:
        if name == ROUTER:
            return self.pipeline.run(sample.question, corpus)
        ans = self.pipeline.strategies[name].answer(sample.question, corpus)
        ans.route = Route(strategy=name, reason="fixed route for evaluation", router="fixed")
        return ans

    def evaluate(self, sample: Sample, name: str) -> dict:
        corpus = self._corpus(sample)
        error = None
        try:
            ans = self.answer(sample, name, corpus)
        except OrchestraError as e:
            # A strategy that cannot read this sample (a corpus over the window) scores 0 and
            # says why; the run goes on.
            error = f"{type(e).__name__}: {e}"
            ans = Answer(question=sample.question, text="", strategy=name,
                         route=Route(strategy=name, reason=f"failed: {error}"))
        scores = metrics.score(sample.task, ans.text, sample.answers, sample.question)
        # Option letters, True/False and summaries do not occur verbatim in the documents.
        recall = (metrics.evidence_recall(sample.answers, metrics.evidence_texts(ans, corpus))
                  if sample.task in metrics.EXTRACTIVE_TASKS else None)
        route = ans.route or Route(strategy=ans.strategy, reason="")
        row = {
            "sample_id": sample.sample_id, "dataset": sample.dataset, "length": sample.length,
            "task": sample.task, "question": sample.question, "gold": sample.answers,
            "strategy": name, "answer": ans.text, "scores": scores,
            "quality": scores[metrics.headline(sample.task)],
            "cost": (ans.cost or Cost()).model_dump(), "route": route.model_dump(),
            "reason": route.reason, "evidence_recall": recall,
            "unanswerable": ans.unanswerable, "features": self._compute_features(sample, corpus),
            "meta": sample.meta,
        }
        if error:
            row["error"] = error
        return row

    def _compute_features(self, sample: Sample, corpus: Corpus) -> dict:
        if self._features is None:
            return {}
        if sample.sample_id not in self._feature_cache:
            self._feature_cache[sample.sample_id] = self._features_of(sample, corpus)
        return self._feature_cache[sample.sample_id]

    def _features_of(self, sample: Sample, corpus: Corpus) -> dict:
        try:
            try:
                out = self._features(sample.question, corpus, self.backend,
                                     strategies=self.pipeline.strategies)
            except TypeError:  # an older signature without strategies
                out = self._features(sample.question, corpus, self.backend)
            return dict(out)
        except Exception as e:  # features are auxiliary: never lose an evaluation row to them
            log.warning("orchestra.routers.features.compute_features failed: %s", e)
            return {}
