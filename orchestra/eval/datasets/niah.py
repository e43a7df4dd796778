"""``niah`` / ``niah:single`` / ``niah:multi``: needles "The special magic number for <city> is
<6 digits>." in Paul Graham essays at chosen depths and token lengths; ``multi`` hides several
needles (other cities) and asks about one of them. Split by essay and by city."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from orchestra.backends.base import Tokenizer
from orchestra.corpus import Document
from orchestra.errors import InputError
from orchestra.eval.datasets.base import (
    Dataset, Sample, check_split, default_data_root, fixed_half, read_essays, split_suffix,
)
from orchestra.eval.datasets.registry import DEFAULT_DEPTHS, Family, Request, register
from orchestra.eval.needles import CITIES, cut_to_tokens, insert_needles, magic_number, \
    magic_question

MULTI_NEEDLES = 3


def niah(tokenizer: Tokenizer, lengths: Sequence[int], limit: int, seed: int = 0,
         root: Path | None = None, multi: bool = False,
         depths: Sequence[float] = DEFAULT_DEPTHS, split: str | None = None) -> Dataset:
    """``limit`` samples per length; depths cycle over the samples. ``split``: dev or test
    essays and cities (disjoint halves)."""
    check_split(split)
    essays = read_essays(root or default_data_root())
    keep = fixed_half(essays, split)
    essays = [e for e in essays if e in keep]
    city_keep = fixed_half(CITIES, split)
    cities_pool = [c for c in CITIES if c in city_keep]
    name = ("niah:multi" if multi else "niah:single") + split_suffix(split)
    k = MULTI_NEEDLES if multi else 1
    for d in depths:
        if not 0.0 <= d <= 1.0:
            raise InputError(f"needle depth {d} is outside [0, 1]")
    probe = "The special magic number for Mexico City is 123456. "
    question_tokens = tokenizer.count("What is the special magic number for Mexico City?")
    needed = k * tokenizer.count(probe) + question_tokens + 16
    samples = []
    for length in lengths:
        if length < needed:
            raise InputError(f"length {length} is below the size of the needle task: {name} "
                             f"needs at least {needed} tokens (needles and question)")
        for i in range(limit):
            rng = random.Random(f"{seed}:{name}:{length}:{i}")
            samples.append(_sample(tokenizer, rng, name, length, i, k, depths[i % len(depths)],
                                   essays, cities_pool))
    return Dataset(name, samples)


def _sample(tokenizer: Tokenizer, rng: random.Random, name: str, length: int, i: int, k: int,
            depth: float, essays: list[str], cities_pool: list[str]) -> Sample:
    cities = rng.sample(cities_pool, k)
    numbers = [str(rng.randint(100000, 999999)) for _ in cities]
    needles = [magic_number(c, n) for c, n in zip(cities, numbers)]
    target = rng.randrange(k)
    # The asked needle sits at `depth`; the others are spread evenly around the haystack.
    others = [j for j in range(k) if j != target]
    placed = [(depth, target)] + [((depth + (j + 1) / k) % 1.0, o) for j, o in enumerate(others)]
    start = rng.randrange(len(essays))
    hay = "\n\n".join(essays[start:] + essays[:start])
    while tokenizer.count(hay[: 8 * length]) < length:  # enough essay text
        hay = hay + "\n\n" + hay
    hay = hay[: 8 * length]
    hay = cut_to_tokens(tokenizer, hay, length - sum(tokenizer.count(" " + n + " ")
                                                     for n in needles))
    text, _ = insert_needles(hay, [(nd, needles[idx]) for nd, idx in placed])
    return Sample(
        sample_id=f"{name}:{length}:{i}", dataset=name, question=magic_question(cities[target]),
        documents=[Document(id="haystack", text=text)], answers=[numbers[target]],
        task="niah", length=length,
        meta={"depth": depth, "needles": len(needles), "tokens": tokenizer.count(text)},
    )


def niah_mode(subset: str) -> bool:
    """Whether a ``niah`` subset asks for several needles (``multivalue``: needle_tasks.py)."""
    if subset in ("", "single"):
        return False
    if subset in ("multi", "multivalue"):
        return True
    raise InputError(f"unknown niah subset {subset!r}; known: single, multi, multivalue")


def load(r: Request) -> Dataset:
    if r.subset == "multivalue":  # several values of one key (issue 20's task mix)
        from orchestra.eval.datasets.needle_tasks import multivalue

        return multivalue(r.tokenizer, r.lengths, r.limit, r.seed, r.root, split=r.split)
    return niah(r.tokenizer, r.lengths, r.limit, r.seed, r.root, multi=niah_mode(r.subset),
                depths=r.depths, split=r.split)


FAMILY = register(Family("niah", load, names=("niah", "niah:single", "niah:multi",
                                              "niah:multivalue"),
                         check=niah_mode, needs_lengths=True))
