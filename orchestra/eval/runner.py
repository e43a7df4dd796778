"""Run a pipeline (each fixed strategy and/or its router) over a dataset; write results.jsonl.

The results file is append-only and written row by row (flushed and fsynced), so a crash or
Ctrl-C loses no finished question; a rerun with the same --out reads it and skips every
(sample, strategy) pair already there. A row is matched by its ``key``: a hash of the sample's
content (documents, question, answers, task) and of the spec of what answered it (the
strategy's settings and the backend's; for the router, the whole pipeline), so a dataset line
or a strategy edited since is answered again, and the stale row is neither reused nor reported.
One run at a time holds an output folder (a lock file naming its pid); a second is refused. Samples run in the outer loop and strategies in the
inner one, so an interrupted run still compares strategies on the samples it finished.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from tqdm import tqdm  # plain tqdm: tqdm.auto warns in a kernel without ipywidgets

from orchestra.cache import CacheWarning, atomic_file, stable_hash
from orchestra.corpus import Corpus
from orchestra.errors import InputError, OrchestraError
from orchestra.eval import metrics
from orchestra.eval.datasets import Dataset, Sample
from orchestra.eval.results import read_results  # noqa: F401  (the one reader; also used here)
from orchestra.routers.features import compute_features
from orchestra.types import Answer, Cost, Route

log = logging.getLogger(__name__)

ROUTER = "router"
RESULTS = "results.jsonl"
RUN_INFO = "run.json"


def fix_seeds(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


LOCK = ".lock"
_held: dict[Path, int] = {}  # output folders this process holds (the lock is re-entrant)
_held_lock = threading.Lock()


def resolve_strategies(names: Sequence[str], known: Sequence[str]) -> list[str]:
    """``--strategies`` against the pipeline's strategy names (the CLI checks them from the
    file, before a model loads; the Runner again from the built pipeline)."""
    known = list(known)
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


@contextmanager
def out_dir_lock(folder: str | Path, what: str = "eval"):
    """Hold ``folder`` for one eval (or tune: ``what``) run. fcntl.flock (hand-written, not
    filelock: it needs no dependency and the kernel drops the lock when its holder dies, so a
    killed run never leaves a stale lock); the file names the holder's pid for the refusal
    message."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    with _held_lock:
        if key in _held:
            _held[key] += 1
            f = None
        else:
            path = folder / LOCK
            f = open(path, "a+", encoding="utf-8")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                holder = f.read().strip() or "unknown"
                f.close()
                raise InputError(f"{folder} is in use by another orchestra {what} (pid {holder}, "
                                 f"lock file {path}); wait for it to finish or use another "
                                 "--out") from None
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            _held[key] = 1
    try:
        yield
    finally:
        with _held_lock:
            _held[key] -= 1
            if _held[key] == 0:
                del _held[key]
                if f is not None:
                    f.close()  # closing releases the flock


def sample_key(sample: Sample) -> str:
    """What a sample asks: its documents, question, answers and task (not its id or line)."""
    return stable_hash([[d.id, d.text] for d in sample.documents], sample.question,
                       list(sample.answers), sample.task)


class Runner:
    """Evaluate ``pipeline`` on samples.

    ``strategies``: names of the pipeline's strategies to run as fixed routes, plus
    ``"router"`` for the pipeline's own routing (``["all"]`` means every strategy and the
    router). The pipeline needs ``backend``, ``strategies`` (name -> Strategy) and ``run``.
    """

    def __init__(self, pipeline: Any, out_dir: str | Path, strategies: Sequence[str] = ("router",),
                 seed: int = 0, progress: bool = True, run_info: dict | None = None,
                 second_read: bool = False):
        self.pipeline = pipeline
        self.backend = pipeline.backend
        self.out_dir = Path(out_dir)
        self.seed = seed
        self.progress = progress
        self.strategies = self._resolve(strategies)
        self.run_info = {**(run_info or {}), "seed": seed}
        self._feature_cache: dict[str, dict] = {}  # per sample: features do not depend on the route
        self._spec_hash: dict[str, str] = {}
        # RAG rows also read their best passage alone (one small call, not in the row's
        # cost): the "agrees with a second cheap read" routing signal.
        self.second_read = second_read

    def _resolve(self, names: Sequence[str]) -> list[str]:
        return resolve_strategies(names, list(self.pipeline.strategies))

    @property
    def results_path(self) -> Path:
        return self.out_dir / RESULTS

    def _check_run_info(self) -> None:
        path = self.out_dir / RUN_INFO
        old = None
        if path.exists():
            try:
                old = json.loads(path.read_bytes().decode("utf-8"))
                if not isinstance(old, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                # Our own record, cut short by an older crash: the rows are keyed by content, so
                # nothing depends on it; rewrite it rather than block every later resume.
                warnings.warn(f"{path} is unreadable ({e}); writing it again", CacheWarning,
                              stacklevel=3)
                old = None
        if old is not None:
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
        with atomic_file(path, "w") as f:  # a crash never leaves it cut short
            f.write(json.dumps(self.run_info, indent=2, default=str) + "\n")

    # -- row keys --------------------------------------------------------------------------
    def spec(self, name: str) -> dict:
        """What answers for ``name``: the strategy's settings with the backend, corpus and
        retriever settings it reads with; the whole pipeline for the router."""
        try:
            # Every option, defaults and the model profile's values included: a pipeline file
            # that stays the same while its profile changes must answer again.
            cfg = self.pipeline.to_config(full=True)
        except Exception:  # a pipeline-like object without a config: its strategies' specs
            cfg = {"strategies": {n: s.spec() for n, s in self.pipeline.strategies.items()}}
        if name == ROUTER:
            return cfg
        return {k: cfg.get(k) for k in ("backend", "corpus", "retrievers")} | {
            "strategy": (cfg.get("strategies") or {}).get(name)}

    def row_key(self, sample: Sample, name: str) -> str:
        if name not in self._spec_hash:
            self._spec_hash[name] = stable_hash(self.spec(name))
        return stable_hash(sample_key(sample), name, self._spec_hash[name])

    def current_rows(self, rows: Sequence[dict], samples: Sequence[Sample]) -> list[dict]:
        """The rows that answer ``samples`` as the pipeline is now (the last such row per
        sample and strategy), in sample order; stale rows stay in the file, unreported."""
        by_key = {r.get("key"): r for r in rows if r.get("key")}
        out = [by_key[k] for s in samples for n in self.strategies
               if (k := self.row_key(s, n)) in by_key]
        stale = len(rows) - len(out)
        if stale > 0:
            log.warning("%s: %d earlier row(s) answer other samples, another dataset version or "
                        "other settings; they stay in the file and are not reported",
                        self.results_path, stale)
        return out

    def run(self, dataset: Dataset | Iterable[Sample]) -> list[dict]:
        samples = dataset.samples if isinstance(dataset, Dataset) else list(dataset)
        with out_dir_lock(self.out_dir):
            return self._run(samples)

    def _run(self, samples: list[Sample]) -> list[dict]:
        self._check_run_info()
        rows = read_results(self.results_path, repair=True, required=("sample_id", "strategy"),
                            hint="fix or remove it, or use another --out")
        done = {r.get("key") for r in rows}
        todo = [(s, n) for s in samples for n in self.strategies
                if self.row_key(s, n) not in done]
        fix_seeds(self.seed)
        with open(self.results_path, "a", encoding="utf-8") as f, tqdm(
                total=len(samples) * len(self.strategies), initial=len(samples) *
                len(self.strategies) - len(todo), desc="eval", unit="answer",
                disable=not self.progress) as bar:
            for row in self.answers(todo, bar):
                f.write(json.dumps(row, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
                rows.append(row)
                bar.update(1)
        return self.current_rows(rows, samples)

    def answers(self, todo: Sequence[tuple[Sample, str]], bar) -> Iterator[dict]:
        """The rows of ``todo``, as each is answered (here in order; orchestra.cluster.eval
        answers them on Ray actors, in the order they finish)."""
        for sample, name in todo:
            bar.set_postfix_str(f"{sample.sample_id} {name}"[-60:])
            yield self.evaluate(sample, name)

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
            ans = Answer(question=sample.question, text="",
                         strategy_type=self._type_of(name) or name,
                         route=Route(strategy=name, reason=f"failed: {error}"))
        scores = metrics.score(sample.task, ans.text, sample.answers, sample.question)
        # Option letters, True/False and summaries do not occur verbatim in the documents.
        recall = (metrics.evidence_recall(sample.answers, metrics.evidence_texts(ans, corpus))
                  if sample.task in metrics.EXTRACTIVE_TASKS else None)
        route = ans.route or Route(strategy=name, reason="")
        row = {
            "key": self.row_key(sample, name),
            "sample_id": sample.sample_id, "dataset": sample.dataset, "length": sample.length,
            "task": sample.task, "question": sample.question, "gold": sample.answers,
            "strategy": name, "answer": ans.text, "scores": scores,
            # the strategy's registered type: what a learned router's label names, whatever
            # this pipeline called it
            "strategy_type": self._type_of(name),
            "quality": scores[metrics.headline(sample.task)],
            "cost": (ans.cost or Cost()).model_dump(), "route": route.model_dump(),
            "reason": route.reason, "evidence_recall": recall,
            "unanswerable": ans.unanswerable, "features": self._compute_features(sample, corpus),
            "signals": self._read_signals(name, ans, corpus) if not error else {},
            "meta": sample.meta,
        }
        if error:
            row["error"] = error
        return row

    def _read_signals(self, name: str, ans: Answer, corpus: Corpus) -> dict:
        """The routing signals of this read (orchestra/signals.py): what a router could have
        measured from it, kept so their power to predict the winner can be measured."""
        from orchestra import signals as S

        out = S.read_signals(ans, corpus)
        strategy = self.pipeline.strategies.get(name)
        if self.second_read and hasattr(strategy, "second_read"):
            second = strategy.second_read(ans.question, corpus)
            out["second_read_agreement"] = S.agreement(ans.text, second.text)
            # What a router reading twice would also pay (the row's cost is the first read's).
            out["second_read_prompt_tokens"] = second.cost.prompt_tokens
        return out

    def _type_of(self, name: str) -> str | None:
        from orchestra.spec import type_name

        s = self.pipeline.strategies.get(name)
        return type_name(s) if s is not None else None

    def _compute_features(self, sample: Sample, corpus: Corpus) -> dict:
        if sample.sample_id not in self._feature_cache:
            self._feature_cache[sample.sample_id] = self._features_of(sample, corpus)
        return self._feature_cache[sample.sample_id]

    def _features_of(self, sample: Sample, corpus: Corpus) -> dict:
        try:
            return dict(compute_features(sample.question, corpus, self.backend,
                                         strategies=self.pipeline.strategies))
        except Exception as e:  # features are auxiliary: never lose an evaluation row to them
            log.warning("orchestra.routers.features.compute_features failed: %s", e)
            return {}
