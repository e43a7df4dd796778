"""The tuning loop: Optuna TPE over the space, answers cached per (configuration, sample).

Everything lives in the output folder, so a killed tune resumes where it stopped:
- ``study.db``: the Optuna study (SQLite). A trial left RUNNING by a killed process is marked
  failed on resume and its configuration is asked again first, so no configuration is lost.
- ``answers.jsonl``: one row per (configuration, sample) answered, written and fsynced row by
  row; a configuration asked again (by the resumed trial, or by TPE drawing it twice) reads its
  answers from here instead of calling the model.
- ``tune.json``: what the study tunes on; a rerun with other data or another pipeline is refused.

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
from orchestra.tune import space as S
from orchestra.yaml_lines import Located

log = logging.getLogger(__name__)

STUDY_DB = "study.db"
ANSWERS = "answers.jsonl"
INFO = "tune.json"
STUDY_NAME = "orchestra-tune"


@dataclass
class TrialResult:
    number: int
    state: str
    params: dict[str, str]
    quality: float | None = None
    prompt_tokens: float | None = None
    seconds: float | None = None
    n: int = 0
    error: str | None = None


@dataclass
class TuneResult:
    best: TrialResult | None
    trials: list[TrialResult]
    best_data: dict | None
    notes: list[str] = field(default_factory=list)
    answered: int = 0  # model answers computed in this run (cached ones not counted)


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
                 info: dict | None = None):
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
        model = getattr(backend, "model_name", None) or getattr(backend, "model", None)
        self.info = {**(info or {}), "target": target, "seed": seed,
                     "backend": f"{type(backend).__name__}:"
                                f"{model if isinstance(model, str) else ''}",
                     "samples": [s.sample_id for s in self.samples]}
        self._corpora: dict[tuple, Corpus] = {}
        self._cache = _read_cache(self.out / ANSWERS)
        self.answered = 0

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
        study = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler,
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
        with tqdm(total=total, initial=min(done(), total or done()), desc="tune",
                  unit="trial", disable=not self.progress) as bar, \
                open(self.out / ANSWERS, "a", encoding="utf-8") as cache_file:
            # The time budget stops new trials; a study with none finished still runs one.
            while (trials is None or done() < trials) and \
                    (deadline is None or time.monotonic() < deadline or done() == 0):
                trial = study.ask()
                labels = S.suggest(trial, self.plan)
                try:
                    res = self.evaluate(labels, cache_file, bar)
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
                    bar.update(1)
                    continue
                for k, v in res.items():
                    trial.set_user_attr(k, v)
                study.tell(trial, res["quality"])
                bar.update(1)
                bar.set_postfix_str(f"best {study.best_value:.2f}" if _has_complete(study)
                                    else "")
        return self.result(study)

    def result(self, study) -> TuneResult:
        import optuna

        rows = []
        for t in study.get_trials(deepcopy=False):
            a = t.user_attrs
            rows.append(TrialResult(
                number=t.number, state=t.state.name, params=dict(t.params),
                quality=t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
                prompt_tokens=a.get("prompt_tokens"), seconds=a.get("seconds"),
                n=a.get("n", 0), error=a.get("error")))
        complete = [r for r in rows if r.state == "COMPLETE"]
        best = None
        if complete:
            # Highest quality; among equals, the fewest prompt tokens, then the earliest.
            best = min(complete, key=lambda r: (-r.quality, r.prompt_tokens or 0, r.number))
        best_data = S.apply(self.data, self.plan, best.params) if best else None
        return TuneResult(best, rows, best_data, list(self.plan.notes), self.answered)

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

    def evaluate(self, labels: dict[str, str], cache_file=None, bar=None) -> dict[str, Any]:
        """Mean quality, prompt tokens and seconds of one configuration over the samples."""
        data = S.apply(self.data, self.plan, labels)
        config_key = stable_hash(data, self.target)
        keys = {s.sample_id: stable_hash(config_key, s.sample_id) for s in self.samples}
        missing = [s for s in self.samples if keys[s.sample_id] not in self._cache]
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
        rows = [self._cache[keys[s.sample_id]] for s in self.samples]
        return {
            "quality": statistics.fmean(r["quality"] for r in rows),
            "prompt_tokens": statistics.fmean(r["prompt_tokens"] for r in rows),
            "seconds": statistics.fmean(r["seconds"] for r in rows),
            "n": len(rows),
        }

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
                "strategy": ans.route.strategy if ans.route else ans.strategy}


def _has_complete(study) -> bool:
    import optuna

    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def _short(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) < 80 else text[:77] + "..."
