"""The task mix (issue 20): tasks where the best way of reading differs, by name.

Each task is a dataset family of its own (``orchestra eval --dataset NAME[:dev|:test]``:
niah:multivalue and threading in needle_tasks.py, aggregation.py, leval_global.py,
unanswerable.py); ``mix`` is all of them together with ruler_qa, niah and niah:multi,
``limit`` questions per task and length, interleaved, so one eval run compares strategies
across tasks. Each task's module holds its SOURCE note. Kinds (``TASK_KINDS``) are
what the report counts per task: single fact (ruler_qa, niah), several facts (niah:multi,
niah:multivalue), multi-hop (threading), aggregation, global (leval_global), unanswerable.
"""

from __future__ import annotations

from typing import Sequence

from orchestra.eval.datasets.base import Dataset, parse_split, split_suffix
from orchestra.eval.datasets.registry import Family, Request, register, resolve

# The mix, in report order: (dataset name as load_dataset takes it, kind).
MIX = (("ruler_qa", "single fact"), ("niah", "single fact"), ("niah:multi", "several facts"),
       ("niah:multivalue", "several facts"), ("threading", "multi-hop"),
       ("aggregation", "aggregation"), ("leval_global", "global"),
       ("unanswerable", "unanswerable"))
TASK_KINDS = dict(MIX)


def task_of(dataset: str) -> str:
    """The mix task a sample's dataset name belongs to ("niah:single:dev" -> "niah")."""
    base, _ = parse_split(dataset)
    base = {"niah:single": "niah"}.get(base, base)
    return base.split(":")[0] if base.startswith("leval") and base != "leval_global" else base


def load(r: Request) -> Dataset:
    per_task, problems = [], []
    for task, _ in MIX:
        # Through the registry (not load_dataset): the package imports this module.
        family, subset = resolve(task)
        ds = family.load(Request(r.tokenizer, r.lengths, r.limit, r.seed, r.root, subset,
                                 r.split))
        per_task.append(ds.samples)
        problems += ds.problems
    return Dataset("mix" + split_suffix(r.split), interleave(per_task, r.lengths), problems)


def interleave(per_task: list[list], lengths: Sequence[int]) -> list:
    """Question i of every task at every length, then question i + 1: an eval run stopped
    early (they answer in this order) still covers every task and length alike."""
    queues = {(t, L): [s for s in samples if s.length == L]
              for t, samples in enumerate(per_task) for L in lengths}
    out = []
    while any(queues.values()):
        for q in queues.values():
            if q:
                out.append(q.pop(0))
    return out


def _check(subset: str) -> None:
    from orchestra.errors import InputError

    if subset:
        raise InputError(f"dataset 'mix' has no subsets (got {subset!r}); its tasks are "
                         f"datasets of their own: {', '.join(n for n, _ in MIX)}")


FAMILY = register(Family("mix", load, names=("mix",), check=_check, needs_lengths=True))
