"""`orchestra tune`: search a pipeline's reading configuration on a dataset's dev split.

Usage::

    orchestra tune my_pipeline.yaml --dataset ruler_qa --lengths 4000 --limit 20 \\
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
- Output: ``OUT/best.yaml`` (with a comment saying what it was tuned on and its dev score),
  ``OUT/profile.yaml`` (the same values by strategy type: a model-family profile, see
  orchestra.profiles; name it as ``profile:`` in other pipelines), ``OUT/report.md`` (every
  trial; the Pareto front of quality against prompt tokens) and ``OUT/trials.png``.

- A model family's defaults: ``cp OUT/profile.yaml orchestra/profiles/smollm2.yaml`` (it
  keeps the family's ``match`` patterns and names the command and dev score in ``tuned``).
- Cost: each trial answers every dev sample once (answers already cached are free); with the
  embedded reader on CPU a RULER-QA answer at 2-4k tokens takes ~4-10 s, so 40 trials x 20
  questions is about an hour. A focused ``--params`` list (e.g.
  ``reorder,reader_template,reader_system,top_k_tokens,chunk_tokens,retriever``) lets TPE learn
  more from fewer trials than the whole space of every strategy.

From Python: ``orchestra.tune.tune(pipeline, dataset, out, trials=..., backend=...)``.
"""

from __future__ import annotations

import os
import sys
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


def tune(pipeline: str | Path | dict, dataset: str, out: str | Path, *,
         lengths: Sequence[int] = (), trials: int | None = None, minutes: float | None = None,
         limit: int = 20, target: str = "router", params: Sequence[str] | None = None,
         seed: int = 0, dev_fraction: float = 0.5, backend: Any = None,
         data_root: str | Path | None = None, allow_modules: Sequence[str] = (),
         progress: bool = True, command: str | None = None, allow_zero: bool = True,
         ray: dict | None = None):
    """Tune ``pipeline`` on the dev split of ``dataset``; write best.yaml, report.md and
    trials.png into ``out``. Returns the TuneResult. Bad input raises InputError/ConfigError
    (the CLI prints it and exits 2) before any model is loaded. With ``allow_zero=False`` (the
    CLI's default; --allow-zero sets it) a study whose every finished trial scored 0 writes no
    best.yaml and raises ZeroScoreError.
    ``ray``: ``{"address", "actors", "cpus", "gpus"}`` to answer each trial's questions on
    Ray actors (orchestra.cluster.tune)."""
    from orchestra.eval.datasets import check_spec, parse_split
    from orchestra.tune.space import plan as make_plan

    # -- everything the user gave is checked before a model loads -------------------------
    from orchestra.extras import require

    require("tune", "orchestra tune")
    require("plot", "orchestra tune's trials.png")
    if trials is None and minutes is None:
        raise InputError("give a budget: --trials N and/or --minutes M")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int)
                               or trials < 1):
        raise InputError(f"--trials must be at least 1, got {trials}")
    if minutes is not None and not minutes > 0:
        raise InputError(f"--minutes must be positive, got {minutes}")
    if limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    if not 0 < dev_fraction < 1:
        raise InputError(f"--dev-fraction must be between 0 and 1 (exclusive), got "
                         f"{dev_fraction}")
    check_spec(dataset)
    base, split = parse_split(dataset)
    if split == REFUSED_SPLIT:
        raise InputError(f"--dataset {dataset}: tune reads the dev split only (the test split "
                         f"is for reporting); use {base}:dev or {base}")
    cfg, data, source, pipeline_hash = _pipeline_data(pipeline, allow_modules)
    param_list = list(params) if params else None
    the_plan = make_plan(data, param_list, target, allow_modules)
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
        return _tune(cfg, data, source, pipeline_hash, the_plan, param_list, out_dir,
                     base=base, lengths=lengths, trials=trials, minutes=minutes, limit=limit,
                     target=target, seed=seed, dev_fraction=dev_fraction, backend=backend,
                     data_root=data_root, allow_modules=allow_modules, progress=progress,
                     command=command, allow_zero=allow_zero, ray=ray)


def _tune(cfg, data, source, pipeline_hash, the_plan, param_list, out_dir, *, base, lengths,
          trials, minutes, limit, target, seed, dev_fraction, backend, data_root,
          allow_modules, progress, command, allow_zero, ray=None):
    from orchestra.eval.datasets import load_dataset
    from orchestra.eval.metrics import headline
    from orchestra.tune import report
    from orchestra.tune.study import Tuner

    # -- the model and the data -----------------------------------------------------------
    if backend is None:
        from orchestra.backends import load_backend

        backend = load_backend(cfg.backend.type, allow_modules=tuple(allow_modules),
                               **cfg.backend.options)
    ds = load_dataset(base, backend.tokenizer, lengths, limit, seed,
                      Path(data_root) if data_root else None, split="dev",
                      dev_fraction=dev_fraction)
    for problem in ds.problems:
        print(f"orchestra tune: warning: {problem}", file=sys.stderr)
    info = {"dataset": f"{base}:dev", "lengths": list(lengths), "limit": limit,
            "pipeline_hash": pipeline_hash, "params": param_list, "dev_fraction": dev_fraction,
            "space": the_plan.signature()}
    kw = dict(target=target, seed=seed, progress=progress, allow_modules=allow_modules,
              info=info)
    if ray is None:
        result = Tuner(data, backend, ds.samples, out_dir, the_plan, **kw).run(trials, minutes)
    else:
        from orchestra.cluster.tune import run_on_ray

        result = run_on_ray(ray, data, backend, ds.samples, out_dir, the_plan, trials, minutes,
                            **kw)

    # -- what it found --------------------------------------------------------------------
    metric = ", ".join(sorted({headline(s.task) for s in ds.samples}))
    n_done = sum(t.state == "COMPLETE" for t in result.trials)
    header = [f"orchestra tune of {source} on {base}:dev (lengths "
              f"{','.join(map(str, lengths)) or 'as given'}; {len(ds.samples)} samples; seed "
              f"{seed}; target {target}); {n_done} trials finished"]
    if result.best is not None:
        header.append(f"best: trial {result.best.number}, dev quality "
                      f"{result.best.quality:.3f} ({metric}), "
                      f"{result.best.prompt_tokens:.0f} prompt tokens per answer")
    if command:
        header.append(f"command: {command}")
    title = f"orchestra tune: {source} on {base}:dev"
    report.write_report(result, out_dir / "report.md", title, header)
    report.write_plot(result, out_dir / "trials.png", title)
    if result.best is None:
        raise InputError(f"{out_dir}: no trial finished (see {out_dir / 'report.md'}); raise "
                         "--trials or --minutes")
    if not allow_zero and all(t.quality == 0 for t in result.trials if t.state == "COMPLETE"):
        raise ZeroScoreError(
            f"{out_dir}: every one of the {n_done} finished trials scored 0 on {base}:dev, so "
            f"there is no winner and best.yaml was not written (see {out_dir / 'report.md'}); "
            "check the dataset's answers and the reader, or pass --allow-zero to write it anyway")
    report.write_best(result, out_dir / "best.yaml", header)
    from orchestra.profiles import family_for_model
    from orchestra.tune.space import profile_values

    sections, notes = profile_values(data, the_plan, result.best.params)
    backend_section = data.get("backend") if isinstance(data.get("backend"), dict) else {}
    family = data.get("profile") or family_for_model(backend_section.get("model", "embedded"))
    report.write_profile(result, out_dir / "profile.yaml", str(family), header, sections)
    result.notes.extend(notes)
    return result


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed, for the comment in best.yaml."""
    args = list(sys.argv if argv is None else argv)
    args[0] = os.path.basename(args[0]) if args else "orchestra"
    return " ".join(args)
