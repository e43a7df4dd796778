"""Dataset families by name. A family is one loader (a module of this package) with the
checks it can make before a model loads; ``register`` adds one, and ``load_dataset``,
``check_spec`` and the ``unknown dataset`` message all read the one table here.

A new family: a module beside niah.py with a ``load(request) -> Dataset`` function, a
``register(Family(...))`` call at its end, and its import in ``__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from orchestra.backends.base import Tokenizer
from orchestra.errors import InputError
from orchestra.eval.datasets.base import Dataset

DEFAULT_DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)


@dataclass(frozen=True)
class Request:
    """What ``load_dataset`` was asked, handed to a family's loader as one argument."""
    tokenizer: Tokenizer
    lengths: Sequence[int]
    limit: int
    seed: int = 0
    root: Path | None = None
    subset: str = ""  # the part after ``NAME:`` (a file, a mode, a path)
    split: str | None = None
    depths: Sequence[float] = DEFAULT_DEPTHS
    dev_fraction: float = 0.5


def _no_check(subset: str) -> None:
    return None


@dataclass(frozen=True)
class Family:
    name: str
    load: Callable[[Request], Dataset]
    names: tuple[str, ...]  # how it is written in the list of known datasets
    check: Callable[[str], None] = _no_check  # the subset's check, before any model loads
    needs_lengths: bool = False  # built to a target length: --lengths is required
    suffix: str | None = None  # a spec ending so (and naming no family) belongs to it


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in FAMILIES and FAMILIES[family.name] is not family:
        raise ValueError(f"dataset family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


def known() -> str:
    names = [n for f in FAMILIES.values() for n in f.names]
    return ", ".join(names + ["(any of these):dev|test"])


def resolve(spec: str) -> tuple[Family, str]:
    """The family a split-free spec names and its subset, or one line naming the known ones."""
    name, _, subset = spec.partition(":")
    if name in FAMILIES:
        return FAMILIES[name], subset
    for family in FAMILIES.values():
        if family.suffix and spec.endswith(family.suffix):
            return family, spec
    raise InputError(f"unknown dataset {spec!r}; known: {known()}")
