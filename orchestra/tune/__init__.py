"""`orchestra tune`: search a pipeline's reading configuration on a dataset's dev split.

Usage::

    orchestra tune my_pipeline.yaml --dataset ruler_qa --lengths 2000,16000 --limit 100 \\
        --trials 40 --out runs/tune-ruler
    orchestra validate runs/tune-ruler/best.yaml          # the winner is a pipeline file
    orchestra eval --pipeline runs/tune-ruler/best.yaml --dataset ruler_qa:test --lengths 4000 ...

- It reads the dev split only (``ruler_qa`` means ``ruler_qa:dev``; a user's ``data.jsonl`` is
  split by ``--seed`` and ``--dev-fraction``); asking for a test split is refused.
- ``--trials N`` and/or ``--minutes M`` bound the search; rerunning the same command with the
  same ``--out`` resumes (the Optuna study is ``OUT/study.db``; answers are cached per
  (configuration, sample) in ``OUT/answers.jsonl``), so it can be stopped at any time.
- ``--target router`` (default) scores the pipeline's routing and searches every strategy's
  settings and the router's; ``--target NAME`` scores and searches one strategy.
- ``--params a,b,...`` limits the search to those settings (names in
  ``orchestra.tune.space.SPACE``: ``reorder``, ``reader_template``, ``chunk_tokens``, ...).
  Settings a strategy's constructor does not accept are skipped and listed in the report.
- The baseline is the pipeline as given (the current default), read first on every dev
  question. A trial may replace it only by beating it question by question: wins (the trial
  right where the baseline is wrong), losses (the reverse) and the exact two-sided sign test
  (scipy's ``binomtest``) at p < 0.05, on 100 or more questions (orchestra.tune.paired). Dev
  for a default means 200+ questions over 2+ lengths; the report says when a run has less.
- Pruning: a trial reads its questions as a growing prefix; after ``--prune-first N`` of them
  (default 20) ``--pruner losing`` (the default) stops it once even winning every question
  left cannot beat the baseline (so it never stops a trial that could be chosen), ``median``
  is Optuna's MedianPruner on wins minus losses (after 5 finished trials), ``none`` reads all.
- Output: ``OUT/report.md`` (the baseline and every trial with its wins, losses and p; the
  Pareto front of quality against prompt tokens), ``OUT/trials.png``, and ``OUT/best.yaml``: the
  chosen configuration, or, when none was chosen, the dev leader headed ``NOT CHOSEN`` (with
  why: fewer than 100 questions, or no trial beat the baseline). For a chosen configuration
  only, ``OUT/profile.yaml``: the same values by strategy type (a model-family profile, see
  orchestra.profiles; name it as ``profile:`` in other pipelines), its comment recording the
  wins, losses and p beside every value it changes.

- A model family's defaults: ``cp OUT/profile.yaml orchestra/profiles/smollm2.yaml`` (it
  keeps the family's ``match`` patterns and names the command and paired test in ``tuned``).
- Cost: each trial answers every dev sample once (answers already cached are free; a pruned
  trial stops early); with the embedded reader on CPU a RULER-QA answer at 2-4k tokens takes
  ~4-10 s, so 40 trials x 200 questions is many hours: a focused ``--params`` list (e.g.
  ``reorder,reader_template,reader_system,top_k_tokens,chunk_tokens,retriever``) lets TPE learn
  more from fewer trials than the whole space of every strategy.

From Python: ``orchestra.tune.tune(pipeline, dataset, out, trials=..., backend=...)``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from orchestra.errors import ConfigError, InputError, OrchestraError

__all__ = ["tune", "ZeroScoreError"]


class ZeroScoreError(OrchestraError):
    """Every trial of a tune scored 0: nothing to call the best (the CLI exits 2)."""

REFUSED_SPLIT = "test"


def _out_dir(out: str | Path) -> Path:
    """The output folder, created and probed for writing before any model loads."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError(f"{path}: cannot write the tune's output there "
                         f"({e.strerror or e})") from None
    return path


def _pipeline_data(pipeline: str | Path | dict, allow_modules: Sequence[str]):
    from orchestra.cache import stable_hash
    from orchestra.config import check, load_config, parse
    from orchestra.yaml_lines import Located

    if isinstance(pipeline, dict):
        located = Located(pipeline, {}, "<dict>")
        cfg = parse(located)
        name = "<dict>"
    else:
        path = Path(pipeline)
        if not path.is_file():
            raise InputError(f"{path}: no such pipeline file")
        cfg, located = load_config(path)
        name = str(path)
    check(cfg, located, allow_modules)
    return cfg, located.data, name, stable_hash(located.data)


@dataclass
class Options:
    """What a tune was asked for, beside the pipeline (tune()'s keywords)."""

    lengths: Sequence[int] = ()
    trials: int | None = None
    minutes: float | None = None
    limit: int = 20
    target: str = "router"
    params: list[str] | None = None
    seed: int = 0
    dev_fraction: float = 0.5
    data_root: str | Path | None = None
    allow_modules: Sequence[str] = ()
    progress: bool = True
    command: str | None = None
    allow_zero: bool = True
    ray: dict | None = None
    pruner: str = "losing"
    prune_first: int = 20


def tune(pipeline: str | Path | dict, dataset: str, out: str | Path, *,
         lengths: Sequence[int] = (), trials: int | None = None, minutes: float | None = None,
         limit: int = 20, target: str = "router", params: Sequence[str] | None = None,
         seed: int = 0, dev_fraction: float = 0.5, backend: Any = None,
         data_root: str | Path | None = None, allow_modules: Sequence[str] = (),
         progress: bool = True, command: str | None = None, allow_zero: bool = True,
         ray: dict | None = None, pruner: str = "losing", prune_first: int = 20):
    """Tune ``pipeline`` on the dev split of ``dataset``; write best.yaml, report.md and
    trials.png into ``out`` (and profile.yaml when a trial is chosen). Returns the TuneResult.
    Bad input raises InputError/ConfigError (the CLI prints it and exits 2) before any model is
    loaded. With ``allow_zero=False`` (the CLI's default; --allow-zero sets it) a study whose
    every finished trial scored 0 writes no best.yaml and raises ZeroScoreError.
    ``ray``: ``{"address", "actors", "cpus", "gpus"}`` to answer each trial's questions on
    Ray actors (orchestra.cluster.tune). ``pruner`` (``losing``, ``median`` or ``none``) and
    ``prune_first``: see orchestra.tune.study."""
    from orchestra.extras import require
    from orchestra.tune.space import plan as make_plan

    opts = Options(lengths, trials, minutes, limit, target, list(params) if params else None,
                   seed, dev_fraction, data_root, allow_modules, progress, command,
                   allow_zero, ray, pruner, prune_first)
    # -- everything the user gave is checked before a model loads -------------------------
    require("tune", "orchestra tune")
    require("plot", "orchestra tune's trials.png")
    _check_options(opts)
    base = _dev_dataset(dataset)
    cfg, data, source, pipeline_hash = _pipeline_data(pipeline, allow_modules)
    the_plan = make_plan(data, opts.params, target, allow_modules)
    if not the_plan.components:
        why = "; ".join(the_plan.notes) or "no setting of the search space applies"
        raise ConfigError(f"{source}: no tunable strategy: none of the strategies "
                          f"({', '.join(f'{n} ({c.type})' for n, c in cfg.strategies.items())})"
                          f" accepts a searched setting ({why})")
    out_dir = _out_dir(out)
    from orchestra.eval.runner import out_dir_lock

    # Held before any model loads, as eval's: a second tune into the same study would finish
    # trials under the first one's feet (optuna's UpdateFinishedTrialError, a FAIL stored).
    with out_dir_lock(out_dir, "tune"):
        return _tune(cfg, data, source, pipeline_hash, the_plan, out_dir, base, backend, opts)


def _check_options(o: Options) -> None:
    from orchestra.tune.study import PRUNERS

    if o.trials is None and o.minutes is None:
        raise InputError("give a budget: --trials N and/or --minutes M")
    if o.trials is not None and (isinstance(o.trials, bool) or not isinstance(o.trials, int)
                                 or o.trials < 1):
        raise InputError(f"--trials must be at least 1, got {o.trials}")
    if o.minutes is not None and not o.minutes > 0:
        raise InputError(f"--minutes must be positive, got {o.minutes}")
    if o.limit < 1:
        raise InputError(f"--limit must be at least 1, got {o.limit}")
    if not 0 < o.dev_fraction < 1:
        raise InputError(f"--dev-fraction must be between 0 and 1 (exclusive), got "
                         f"{o.dev_fraction}")
    if o.pruner not in PRUNERS:
        raise InputError(f"--pruner must be one of {', '.join(PRUNERS)}, got {o.pruner!r}")
    if isinstance(o.prune_first, bool) or not isinstance(o.prune_first, int) \
            or o.prune_first < 1:
        raise InputError(f"--prune-first must be a whole number of questions, at least 1, "
                         f"got {o.prune_first}")


def _dev_dataset(dataset: str) -> str:
    """The dataset's name, checked, and refused if it names the test split."""
    from orchestra.eval.datasets import check_spec, parse_split

    check_spec(dataset)
    base, split = parse_split(dataset)
    if split == REFUSED_SPLIT:
        raise InputError(f"--dataset {dataset}: tune reads the dev split only (the test split "
                         f"is for reporting); use {base}:dev or {base}")
    return base


def _tune(cfg, data, source, pipeline_hash, the_plan, out_dir, base, backend, o: Options):
    from orchestra.tune import report

    if backend is None:
        from orchestra.backends import load_backend

        backend = load_backend(cfg.backend.type, allow_modules=tuple(o.allow_modules),
                               **cfg.backend.options)
    samples = _dev_samples(base, backend, o)
    result = _search(data, backend, samples, out_dir, the_plan, pipeline_hash, base, o)
    header = _header(result, samples, source, base, o)
    title = f"orchestra tune: {source} on {base}:dev"
    report.write_report(result, out_dir / "report.md", title, header)
    report.write_plot(result, out_dir / "trials.png", title)
    if result.best is None:
        return _nothing_finished(result, out_dir)
    if not o.allow_zero and all(t.quality == 0 for t in result.trials
                                if t.state == "COMPLETE"):
        raise ZeroScoreError(
            f"{out_dir}: every one of the {_n_done(result)} finished trials scored 0 on "
            f"{base}:dev, so there is no winner and best.yaml was not written (see "
            f"{out_dir / 'report.md'}); check the dataset's answers and the reader, or pass "
            "--allow-zero to write it anyway")
    report.write_best(result, out_dir / "best.yaml", header)
    _write_profile(result, data, the_plan, out_dir, header)
    return result


def _nothing_finished(result, out_dir: Path):
    """No trial completed. Pruned ones lost to the pipeline as given (the pruner stops only
    a trial that can no longer beat it): that is a finding, the baseline stays, and there is
    no configuration to write. None pruned either: the budget ran out first (an error)."""
    pruned = sum(t.state == "PRUNED" and not t.error for t in result.trials)
    if not pruned:
        raise InputError(f"{out_dir}: no trial finished (see {out_dir / 'report.md'}); raise "
                         "--trials or --minutes")
    for stale in ("best.yaml", "profile.yaml"):  # an earlier run's would read as this one's
        if (out_dir / stale).exists():
            (out_dir / stale).unlink()
    return result


def _dev_samples(base: str, backend, o: Options) -> list:
    from orchestra.eval.datasets import load_dataset

    ds = load_dataset(base, backend.tokenizer, o.lengths, o.limit, o.seed,
                      Path(o.data_root) if o.data_root else None, split="dev",
                      dev_fraction=o.dev_fraction)
    for problem in ds.problems:
        print(f"orchestra tune: warning: {problem}", file=sys.stderr)
    return list(ds.samples)


def _search(data, backend, samples, out_dir, the_plan, pipeline_hash, base, o: Options):
    """The study (here, or with its questions answered on Ray)."""
    from orchestra.tune.study import Tuner

    info = {"dataset": f"{base}:dev", "lengths": list(o.lengths), "limit": o.limit,
            "pipeline_hash": pipeline_hash, "params": o.params,
            "dev_fraction": o.dev_fraction, "space": the_plan.signature()}
    kw = dict(target=o.target, seed=o.seed, progress=o.progress,
              allow_modules=o.allow_modules, info=info, pruner=o.pruner,
              prune_first=o.prune_first)
    if o.ray is None:
        return Tuner(data, backend, samples, out_dir, the_plan, **kw).run(o.trials, o.minutes)
    from orchestra.cluster.tune import run_on_ray

    return run_on_ray(o.ray, data, backend, samples, out_dir, the_plan, o.trials, o.minutes,
                      **kw)


def _n_done(result) -> int:
    return sum(t.state == "COMPLETE" for t in result.trials)


def _header(result, samples, source: str, base: str, o: Options) -> list[str]:
    """What the study was, what it found and whether it may replace the default: the comment
    of every file it writes."""
    from orchestra.eval.metrics import headline
    from orchestra.tune.paired import dev_shortfall

    metric = ", ".join(sorted({headline(s.task) for s in samples}))
    pruned = sum(t.state == "PRUNED" and not t.error for t in result.trials)
    lines = [f"orchestra tune of {source} on {base}:dev (lengths "
             f"{','.join(map(str, o.lengths)) or 'as given'}; {len(samples)} samples; seed "
             f"{o.seed}; target {o.target}); {_n_done(result)} trials finished, {pruned} "
             f"pruned (--pruner {o.pruner}, --prune-first {o.prune_first})"]
    b = result.baseline
    if b is not None and b.quality is not None:
        lines.append(f"baseline (the pipeline as given): dev quality {b.quality:.3f} "
                     f"({metric}), {b.prompt_tokens:.0f} prompt tokens per answer")
    if result.best is not None:
        what = "chosen" if result.chosen is not None else "dev leader (not chosen)"
        lines.append(f"{what}: trial {result.best.number}, dev quality "
                     f"{result.best.quality:.3f} ({metric}), "
                     f"{result.best.prompt_tokens:.0f} prompt tokens per answer")
    lines.append(result.decision)
    short = dev_shortfall(len(samples), [s.length for s in samples])
    if short:
        lines.append(short)
    if o.command:
        lines.append(f"command: {o.command}")
    return lines


def _write_profile(result, data: dict, the_plan, out_dir: Path, header: list[str]) -> None:
    """profile.yaml (the values by strategy type, to become a model family's defaults) for a
    chosen configuration only; a dev leader that was not chosen is no default to copy."""
    from orchestra.profiles import family_for_model
    from orchestra.tune import report
    from orchestra.tune.space import profile_values

    path = out_dir / "profile.yaml"
    if result.chosen is None:
        if path.exists():  # an earlier run's, written before it was refused
            path.unlink()
        return
    sections, notes = profile_values(data, the_plan, result.chosen.params)
    backend_section = data.get("backend") if isinstance(data.get("backend"), dict) else {}
    family = data.get("profile") or family_for_model(backend_section.get("model", "embedded"))
    report.write_profile(result, path, str(family), header, sections)
    result.notes.extend(notes)


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed, for the comment in best.yaml."""
    args = list(sys.argv if argv is None else argv)
    args[0] = os.path.basename(args[0]) if args else "orchestra"
    return " ".join(args)
