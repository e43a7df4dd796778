"""The tuning loop: Optuna TPE over the space, answers cached per (configuration, sample).

Everything lives in the output folder, so a killed tune resumes where it stopped:
- ``study.db``: the Optuna study (SQLite). A trial left RUNNING by a killed process is marked
  failed on resume and its configuration is asked again first, so no configuration is lost.
- ``answers.jsonl``: one row per (configuration, sample) answered, written and fsynced row by
  row; a configuration asked again (by the resumed trial, or by TPE drawing it twice) reads its
  answers from here instead of calling the model.
- ``tune.json``: what the study tunes on; a rerun with other data or another pipeline is refused.

The pipeline as given (the current default) is read first, on every sample: the baseline. Each
trial is then compared with it question by question (orchestra.tune.paired: wins, losses and an
exact sign test), and a trial's questions are read as a growing prefix, so a pruner can stop a
trial that is losing before it has read them all (``pruner``: ``losing`` stops a trial that can
no longer beat the baseline even by winning every question left, ``median`` is Optuna's
MedianPruner on wins minus losses, ``none`` reads every question).

Trials are cheap where they can be: each sample's Corpus (its tokenization and chunkings) is
built once and shared by every trial, and retriever indexes persist per (corpus, chunking) in
orchestra's index cache, so a chunking is embedded once and loaded by later trials.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm  # plain tqdm: tqdm.auto warns in a kernel without ipywidgets

from orchestra.cache import stable_hash
from orchestra.config import PipelineConfig, check, parse
from orchestra.corpus import Corpus
from orchestra.errors import InputError, OrchestraError
from orchestra.eval import metrics
from orchestra.eval.datasets import Sample
from orchestra.tune import paired as P
from orchestra.tune import space as S
from orchestra.yaml_lines import Located

log = logging.getLogger(__name__)

STUDY_DB = "study.db"
ANSWERS = "answers.jsonl"
INFO = "tune.json"
STUDY_NAME = "orchestra-tune"
PRUNERS = ("losing", "median", "none")
BASELINE = -1  # the number the baseline's TrialResult carries (Optuna's trials count from 0)


@dataclass
class TrialResult:
    number: int
    state: str
    params: dict[str, str]
    quality: float | None = None
    prompt_tokens: float | None = None
    seconds: float | None = None
    n: int = 0  # questions read (fewer than the samples when pruned)
    error: str | None = None
    paired: P.Paired | None = None  # against the baseline, on the questions read


@dataclass
class TuneResult:
    best: TrialResult | None  # what best.yaml holds: the chosen trial, else the dev leader
    trials: list[TrialResult]
    best_data: dict | None
    notes: list[str] = field(default_factory=list)
    answered: int = 0  # model answers computed in this run (cached ones not counted)
    baseline: TrialResult | None = None  # the pipeline as given
    chosen: TrialResult | None = None  # the trial that may replace the default, if any
    decision: str = ""  # why it was chosen, or why none was
    n_questions: int = 0


class Pruned(Exception):
    """A trial stopped on a prefix of its questions, with what it scored on them."""

    def __init__(self, stats: dict[str, Any]):
        super().__init__(f"pruned after {stats['n']} questions")
        self.stats = stats


def _read_cache(path: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    if not path.exists():
        return out
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):  # a row cut short by a kill: drop it
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                out[row["key"]] = row
            except (ValueError, KeyError):
                raise InputError(f"{path}:{n}: malformed cached answer; remove the line or use "
                                 "another --out") from None
    return out


class Tuner:
    """Tune ``data`` (a pipeline file's data) on ``samples`` with ``backend``."""

    def __init__(self, data: dict, backend: Any, samples: Sequence[Sample], out_dir: str | Path,
                 the_plan: S.Plan, target: str = "router", seed: int = 0,
                 progress: bool = True, allow_modules: Sequence[str] = (),
                 info: dict | None = None, pruner: str = "losing", prune_first: int = 20):
        if not samples:
            raise InputError("the dataset gave no sample to tune on")
        self.data = data
        self.backend = backend
        self.samples = list(samples)
        self.out = Path(out_dir)
        self.plan = the_plan
        self.target = target
        self.seed = seed
        self.progress = progress
        self.allow = tuple(allow_modules)
        self.pruner, self.prune_first = pruner, prune_first
        model = getattr(backend, "model_name", None) or getattr(backend, "model", None)
        self.info = {**(info or {}), "target": target, "seed": seed,
                     "backend": f"{type(backend).__name__}:"
                                f"{model if isinstance(model, str) else ''}",
                     "samples": [s.sample_id for s in self.samples]}
        self._corpora: dict[tuple, Corpus] = {}
        self._cache = _read_cache(self.out / ANSWERS)
        self.answered = 0
        self.baseline: dict[str, Any] | None = None  # the pipeline as given, read by run()

    # -- the study ------------------------------------------------------------------------
    def _check_info(self) -> None:
        path = self.out / INFO
        if path.exists():
            old = json.loads(path.read_text())
            for key in ("dataset", "lengths", "pipeline_hash", "target", "samples", "params",
                        "space", "backend"):
                if key in old and old.get(key) != self.info.get(key):
                    raise InputError(
                        f"{self.out} holds a tune of another setting ({key} was "
                        f"{_short(old.get(key))}, now {_short(self.info.get(key))}); use another "
                        "--out, or delete that folder to start over")
        path.write_text(json.dumps(self.info, indent=2, default=str) + "\n")

    def _study(self):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = f"sqlite:///{(self.out / STUDY_DB).resolve()}"
        sampler = optuna.samplers.TPESampler(seed=self.seed)
        # The pruner is not stored with the study: a resumed run may take another.
        study = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler,
                                    pruner=make_pruner(self.pruner, self.prune_first),
                                    direction="maximize", load_if_exists=True)
        # Trials a killed run left RUNNING: fail them and ask their configuration again first
        # (its finished answers come from the cache).
        for t in study.get_trials(deepcopy=False,
                                  states=(optuna.trial.TrialState.RUNNING,)):
            study._storage.set_trial_user_attr(t._trial_id, "error", "interrupted; asked again")
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            if t.params:
                study.enqueue_trial(t.params, skip_if_exists=False)
        return study

    def run(self, trials: int | None = None, minutes: float | None = None) -> TuneResult:
        import optuna

        self.out.mkdir(parents=True, exist_ok=True)
        self._check_info()
        study = self._study()
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

        def done() -> int:
            return len(study.get_trials(deepcopy=False, states=finished))

        deadline = time.monotonic() + minutes * 60 if minutes else None
        total = trials if trials else None
        with open(self.out / ANSWERS, "a", encoding="utf-8") as cache_file:
            self.baseline = self._read_baseline(cache_file)
            with tqdm(total=total, initial=min(done(), total or done()), desc="tune",
                      unit="trial", disable=not self.progress) as bar:
                # The time budget stops new trials; a study with none finished still runs one.
                while (trials is None or done() < trials) and \
                        (deadline is None or time.monotonic() < deadline or done() == 0):
                    self._trial(study, cache_file, bar)
        return self.result(study)

    def _read_baseline(self, cache_file) -> dict[str, Any]:
        """The pipeline as given, on every sample (cached like any configuration): what a trial
        has to beat, question by question."""
        try:
            return self.evaluate({}, cache_file)
        except OrchestraError as e:
            raise type(e)(f"the pipeline as given (the baseline every trial is compared "
                          f"with) cannot be read: {e}") from None

    def _trial(self, study, cache_file, bar) -> None:
        """Ask Optuna for one configuration, read it (pruned, failed or complete), tell it."""
        import optuna

        trial = study.ask()
        labels = S.suggest(trial, self.plan)
        try:
            res = self.evaluate(labels, cache_file, bar, trial=trial)
        except Pruned as e:
            _set_attrs(trial, e.stats)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except Exception as e:  # noqa: BLE001 - reported, see below
            # This combination cannot be built or read (a chunk over the budget, or a
            # component failing on it): it is pruned with its reason, which the report
            # lists, and the search goes on. (Ctrl-C is not an Exception: it stops.)
            what = str(e) if isinstance(e, OrchestraError) else f"{type(e).__name__}: {e}"
            if not isinstance(e, OrchestraError):
                log.warning("trial %d failed: %s", trial.number, what)
                print(f"orchestra tune: warning: trial {trial.number} failed: {what}",
                      file=sys.stderr)
            trial.set_user_attr("error", what)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            _set_attrs(trial, res)
            study.tell(trial, res["quality"])
        bar.update(1)
        bar.set_postfix_str(f"best {study.best_value:.2f}" if _has_complete(study) else "")

    def result(self, study) -> TuneResult:
        rows = [self._trial_result(t) for t in study.get_trials(deepcopy=False)]
        complete = [r for r in rows if r.state == "COMPLETE"]
        leader = None
        if complete:
            # Highest quality; among equals, the fewest prompt tokens, then the earliest.
            leader = min(complete, key=lambda r: (-r.quality, r.prompt_tokens or 0, r.number))
        chosen, decision = P.choose(rows, len(self.samples))
        best = chosen or leader
        best_data = S.apply(self.data, self.plan, best.params) if best else None
        b = self.baseline or {}
        baseline = TrialResult(BASELINE, "BASELINE", {}, b.get("quality"),
                               b.get("prompt_tokens"), b.get("seconds"), b.get("n", 0))
        return TuneResult(best, rows, best_data, list(self.plan.notes), self.answered,
                          baseline=baseline, chosen=chosen, decision=decision,
                          n_questions=len(self.samples))

    def _trial_result(self, t) -> TrialResult:
        import optuna

        a = t.user_attrs
        finished = t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        # Optuna stores each attribute on its own, so a trial killed while they were written
        # (then failed on resume) may hold "wins" without "losses": only a told trial has all.
        if not finished:
            paired = None
        elif "wins" in a:
            paired = P.Paired(a["wins"], a["losses"], a.get("n", 0))
        else:
            paired = self._paired_from_cache(t)
        return TrialResult(
            number=t.number, state=t.state.name, params=dict(t.params),
            quality=t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
            prompt_tokens=a.get("prompt_tokens"), seconds=a.get("seconds"),
            n=a.get("n", 0), error=a.get("error"), paired=paired)

    def _paired_from_cache(self, t) -> P.Paired | None:
        """A finished trial of a study from before paired tests were stored: compared from
        its cached answers (every one is there, since it finished)."""
        if t.state.name != "COMPLETE" or self.baseline is None:
            return None
        keys = self._keys(S.apply(self.data, self.plan, dict(t.params)))
        if not all(k in self._cache for k in keys.values()):
            return None
        return P.compare(self.baseline["per_sample"],
                         {sid: self._cache[k]["quality"] for sid, k in keys.items()})

    # -- one configuration ----------------------------------------------------------------
    def build(self, data: dict):
        """A Pipeline from ``data`` on the shared backend, checked as a file would be."""
        from orchestra.pipeline import Pipeline

        located = Located(data, {}, "<trial>")
        cfg: PipelineConfig = parse(located)
        check(cfg, located, self.allow)
        return Pipeline.from_config(cfg, self.allow, backend=self.backend)

    def corpus(self, sample: Sample, chunk_tokens: int, overlap: int) -> Corpus:
        key = (sample.sample_id, chunk_tokens, overlap)
        if key not in self._corpora:
            self._corpora[key] = Corpus(sample.documents, self.backend.tokenizer,
                                        chunk_tokens=chunk_tokens, overlap=overlap)
        return self._corpora[key]

    def _keys(self, data: dict) -> dict[str, str]:
        """Each sample's cache key under configuration ``data``."""
        config_key = stable_hash(data, self.target)
        return {s.sample_id: stable_hash(config_key, s.sample_id) for s in self.samples}

    def evaluate(self, labels: dict[str, str], cache_file=None, bar=None,
                 trial=None) -> dict[str, Any]:
        """Mean quality, prompt tokens and seconds of one configuration over the samples, and
        its wins and losses against the baseline. With ``trial`` (an Optuna trial), the
        questions are a growing prefix and a pruner may stop it: Pruned, with the prefix's
        figures."""
        from contextlib import closing

        rows: dict[str, dict] = {}
        with closing(self._rows(S.apply(self.data, self.plan, labels), cache_file, bar)) as it:
            for sample, row in it:
                rows[sample.sample_id] = row
                if trial is not None and self._should_prune(trial, rows):
                    raise Pruned(self._stats(rows))
        return self._stats(rows)

    def _rows(self, data: dict, cache_file=None, bar=None):
        """(sample, row) for every sample under ``data``: the cached ones first (free), then
        each as it is answered (cached, and written to ``cache_file`` row by row)."""
        keys = self._keys(data)
        missing = []
        for s in self.samples:
            if keys[s.sample_id] in self._cache:
                yield s, self._cache[keys[s.sample_id]]
            else:
                missing.append(s)
        for sample, row in self.answer_samples(data, missing):
            row["key"] = keys[sample.sample_id]
            self._cache[row["key"]] = row
            self.answered += 1
            if cache_file is not None:
                cache_file.write(json.dumps(row, default=str) + "\n")
                cache_file.flush()
                os.fsync(cache_file.fileno())
            if bar is not None:
                bar.set_postfix_str(f"answered {self.answered}")
            yield sample, row

    def _stats(self, rows: dict[str, dict]) -> dict[str, Any]:
        out = {
            "quality": statistics.fmean(r["quality"] for r in rows.values()),
            "prompt_tokens": statistics.fmean(r["prompt_tokens"] for r in rows.values()),
            "seconds": statistics.fmean(r["seconds"] for r in rows.values()),
            "n": len(rows),
            "per_sample": {sid: r["quality"] for sid, r in rows.items()},
        }
        if self.baseline is not None:
            paired = P.compare(self.baseline["per_sample"], out["per_sample"])
            out.update(wins=paired.wins, losses=paired.losses, p=paired.p)
        return out

    def _should_prune(self, trial, rows: dict[str, dict]) -> bool:
        """Whether to stop ``trial`` after the questions in ``rows`` (never before
        ``prune_first`` of them, nor after the last: a trial that read them all finished)."""
        n = len(rows)
        if self.pruner == "none" or n < self.prune_first or n >= len(self.samples):
            return False
        paired = P.compare(self.baseline["per_sample"],
                           {sid: r["quality"] for sid, r in rows.items()})
        trial.report(paired.wins - paired.losses, step=n)
        if self.pruner == "losing":
            # Our own rule, not an Optuna pruner: Optuna's see one number per step and compare
            # it with other trials' (median, percentile, successive halving, Hyperband) or
            # with a fixed bound (ThresholdPruner), while "can it still beat the baseline"
            # needs wins and losses apart, the questions left, and the exact sign test.
            return P.cannot_win(paired.wins, paired.losses, len(self.samples) - n)
        return trial.should_prune()

    def answer_samples(self, data: dict, samples: Sequence[Sample]):
        """(sample, row) for each of ``samples`` answered with configuration ``data``, as each
        is done (here in order, on this backend; orchestra.cluster.tune answers them on Ray
        actors)."""
        pipe = self.build(data) if samples else None
        for sample in samples:
            yield sample, self.answer(pipe, sample)

    def answer(self, pipe, sample: Sample) -> dict[str, Any]:
        corpus = self.corpus(sample, pipe.chunk_tokens, pipe.overlap)
        t0 = time.perf_counter()
        if self.target == "router":
            ans = pipe.run(sample.question, corpus)
        else:
            ans = pipe.strategies[self.target].answer(sample.question, corpus)
        seconds = time.perf_counter() - t0
        scores = metrics.score(sample.task, ans.text, sample.answers, sample.question)
        return {"sample_id": sample.sample_id, "answer": ans.text, "scores": scores,
                "quality": scores[metrics.headline(sample.task)],
                "prompt_tokens": ans.cost.prompt_tokens, "seconds": seconds,
                "strategy": ans.route.strategy if ans.route else ans.strategy_type}


def make_pruner(name: str, prune_first: int):
    """The Optuna pruner behind ``--pruner`` (``losing`` is the tuner's own rule: none here)."""
    import optuna

    if name == "median":
        # Steps are questions read, so warm-up is --prune-first; Optuna's default of 5 finished
        # trials before it prunes stands (a median of fewer says little).
        return optuna.pruners.MedianPruner(n_warmup_steps=prune_first)
    return optuna.pruners.NopPruner()


def _set_attrs(trial, stats: dict[str, Any]) -> None:
    for k, v in stats.items():
        if k != "per_sample":  # per-question scores live in answers.jsonl
            trial.set_user_attr(k, v)


def _has_complete(study) -> bool:
    import optuna

    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def _short(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) < 80 else text[:77] + "..."
