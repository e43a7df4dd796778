"""Evaluation datasets: each family's loader yields Samples (corpus documents, question, gold
answers, task kind, target length). One module per family, found by name in ``registry.py``:

- ``niah`` / ``niah:single`` / ``niah:multi`` (niah.py): needles in Paul Graham essays;
- ``ruler_qa`` (ruler_qa.py): a SQuAD question's gold paragraph among distractors;
- ``leval`` / ``leval:FILE`` (leval.py): L-Eval jsonl files;
- ``jsonl:PATH`` or a path ending in .jsonl (user_jsonl.py): a user's file;
- the task mix (mix.py): ``niah:multivalue`` and ``threading`` (needle_tasks.py),
  ``aggregation`` (aggregation.py), ``leval_global`` (leval_global.py), ``unanswerable``
  (unanswerable.py), and ``mix``, all of them with ruler_qa and niah.

Splits (``NAME[:subset]:dev`` / ``:test``, or ``split=``): every built-in dataset has a fixed
dev/test split, half and half, by what a question is built from, so nothing crosses it (each
module says by what). A user's JSONL is split by ``seed`` and ``dev_fraction``. No split:
everything. Tuning reads dev; reported tables read test.

Lengths are measured with the backend's own tokenizer. Randomness comes from one seed, so the
same arguments give the same samples (and the same sample ids) on every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from orchestra.backends.base import Tokenizer
from orchestra.errors import InputError
from orchestra.eval.datasets.base import (
    SPLITS, Dataset, Sample, check_split, default_data_root, parse_lengths, parse_split,
)
from orchestra.eval.datasets.registry import (
    DEFAULT_DEPTHS, FAMILIES, Family, Request, known, register, resolve,
)
# The built-in families register themselves on import, in the order `known()` lists them.
from orchestra.eval.datasets.niah import niah  # noqa: E402
from orchestra.eval.datasets.ruler_qa import ruler_qa  # noqa: E402
from orchestra.eval.datasets.leval import leval  # noqa: E402
from orchestra.eval.datasets.user_jsonl import user_jsonl  # noqa: E402
# The task mix (issue 20): tasks where the best way of reading differs; mix.py holds them all.
from orchestra.eval.datasets import (  # noqa: E402, F401
    aggregation, leval_global, mix, needle_tasks, unanswerable,
)
from orchestra.eval.needles import CITIES  # noqa: E402

__all__ = [
    "CITIES", "DEFAULT_DEPTHS", "FAMILIES", "SPLITS", "Dataset", "Family", "Request", "Sample",
    "check_spec", "check_split", "default_data_root", "known", "leval", "load_dataset", "niah",
    "parse_lengths", "parse_split", "register", "ruler_qa", "user_jsonl",
]


def check_spec(spec: str) -> None:
    """Refuse an unknown dataset name early (before a model is loaded)."""
    spec, _ = parse_split(spec)
    family, subset = resolve(spec)
    family.check(subset)


def load_dataset(spec: str, tokenizer: Tokenizer, lengths: Sequence[int] = (), limit: int = 10,
                 seed: int = 0, root: Path | None = None,
                 depths: Sequence[float] = DEFAULT_DEPTHS, split: str | None = None,
                 dev_fraction: float = 0.5) -> Dataset:
    """A dataset by ``NAME[:subset][:dev|:test]`` (see the module docstring); ``split`` says
    the same as the suffix (giving both, they must agree)."""
    spec, named = parse_split(spec)
    check_split(split)
    if named and split and named != split:
        raise InputError(f"dataset {spec}:{named} and split {split!r} disagree; give one split")
    if limit < 1:
        raise InputError(f"limit must be at least 1, got {limit}")
    for L in lengths:
        if L < 1:
            raise InputError(f"lengths must be positive token counts, got {L}")
    family, subset = resolve(spec)
    family.check(subset)
    if family.needs_lengths and not lengths:
        raise InputError(f"dataset {family.name!r} is built to a target length: give --lengths "
                         "(e.g. 4000,16000)")
    return family.load(Request(tokenizer, lengths, limit, seed, root, subset, named or split,
                               depths, dev_fraction))
