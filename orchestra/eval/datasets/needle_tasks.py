"""Needle tasks beyond one fact: several values for one key, and chains of facts.

- ``niah:multivalue`` (RULER's niah_multivalue): four needles "One of the special magic numbers
  for <city> is <n>." for the same city, spread through the essays; the question asks for all
  of them, scored by ``contains_all`` (the share of the numbers the reply holds). The
  multi-key task is ``niah:multi`` (RULER's niah_multikey: needles for other cities around the
  one asked).
- ``threading`` ("needle threading", Roberts et al. 2024, in RULER's needle phrasing): a chain
  of two or three facts, each naming the next ("Lima's partner city is Oslo."; "Oslo's partner
  city is Cairo."; "The special magic number for Cairo is 123456.") spread through the essays,
  and distractors that a lookup finds first: a magic number for the chain's first city and an
  unrelated pair. The question names only the first city ("... for the partner city of Lima's
  partner city?"), so the answer needs every fact.

``niah:multivalue`` is a subset of the niah family (niah.py hands it here).

SOURCE: generated here from the Paul Graham essays in ../shared/data/needle_haystack
(see its SOURCE.md) and the city list of orchestra/eval/needles.py; split dev/test by essay and
by city, as ``niah`` is. Same seed, same samples.
"""

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
from orchestra.eval.datasets.registry import Family, Request, register
from orchestra.eval.needles import CITIES, cut_to_tokens, insert_needles, magic_number

MULTI_VALUES = 4
HOPS = (2, 3)


def _pools(root: Path | None, split: str | None) -> tuple[list[str], list[str]]:
    """The split's essays and cities (the halves ``niah`` uses)."""
    check_split(split)
    essays = read_essays(root or default_data_root())
    keep = fixed_half(essays, split)
    cities = fixed_half(CITIES, split)
    return [e for e in essays if e in keep], [c for c in CITIES if c in cities]


def haystack(tokenizer: Tokenizer, essays: Sequence[str], tokens: int,
             rng: random.Random) -> str:
    """Essays from a random start, repeated as needed, cut to ``tokens`` tokens."""
    start = rng.randrange(len(essays))
    hay = "\n\n".join(list(essays[start:]) + list(essays[:start]))
    while tokenizer.count(hay[: 8 * tokens]) < tokens:
        hay = hay + "\n\n" + hay
    return cut_to_tokens(tokenizer, hay[: 8 * tokens], tokens)


def _plant(tokenizer, essays, length, rng, sentences: list[str]) -> str:
    """The haystack of ``length`` tokens with ``sentences`` at evenly spread random depths."""
    room = length - sum(tokenizer.count(" " + s + " ") for s in sentences)
    if room < length // 4:
        raise InputError(f"length {length} is too small for {len(sentences)} needles")
    hay = haystack(tokenizer, essays, room, rng)
    k = len(sentences)
    depths = [(j + rng.uniform(0.1, 0.9)) / k for j in range(k)]
    rng.shuffle(depths)
    text, _ = insert_needles(hay, list(zip(depths, sentences)))
    return text


def multivalue(tokenizer: Tokenizer, lengths: Sequence[int], limit: int, seed: int = 0,
               root: Path | None = None, split: str | None = None) -> Dataset:
    essays, cities = _pools(root, split)
    name = "niah:multivalue" + split_suffix(split)
    samples = []
    for length in lengths:
        for i in range(limit):
            rng = random.Random(f"{seed}:{name}:{length}:{i}")
            city = rng.choice(cities)
            numbers = [str(n) for n in rng.sample(range(100000, 1000000), MULTI_VALUES)]
            needles = [f"One of the special magic numbers for {city} is {n}." for n in numbers]
            text = _plant(tokenizer, essays, length, rng, needles)
            samples.append(Sample(
                sample_id=f"{name}:{length}:{i}", dataset=name,
                question=f"What are all the special magic numbers for {city} mentioned in "
                         "the provided text?",
                documents=[Document(id="haystack", text=text)], answers=numbers,
                task="multi_value", length=length,
                meta={"needles": MULTI_VALUES, "tokens": tokenizer.count(text)}))
    return Dataset(name, samples)


def chain_question(first: str, hops: int) -> str:
    """"... for Lima's partner city?" (2 facts), "... for the partner city of Lima's partner
    city?" (3 facts)."""
    target = f"{first}'s partner city"
    for _ in range(hops - 2):
        target = f"the partner city of {target}"
    return f"What is the special magic number for {target}?"


def threading(tokenizer: Tokenizer, lengths: Sequence[int], limit: int, seed: int = 0,
              root: Path | None = None, split: str | None = None) -> Dataset:
    """Samples alternate 2 and 3 facts (``HOPS``)."""
    essays, cities = _pools(root, split)
    return threading_from(tokenizer, essays, cities, lengths, limit, seed,
                          "threading" + split_suffix(split))


def threading_from(tokenizer: Tokenizer, essays: Sequence[str], cities: Sequence[str],
                   lengths: Sequence[int], limit: int, seed: int, name: str) -> Dataset:
    """``threading`` from given essay and city pools; ``name`` seeds the draws, so the same
    name over pools of the same sizes draws the same chains, numbers, starts and depths
    (benchmarks/threading_halves.py crosses the dev and test halves this way)."""
    samples = []
    for length in lengths:
        for i in range(limit):
            hops = HOPS[i % len(HOPS)]
            rng = random.Random(f"{seed}:{name}:{length}:{i}")
            chain = rng.sample(cities, hops + 2)
            other = chain[hops:]  # an unrelated pair: a partner fact and its magic number
            chain = chain[:hops]
            answer, decoy, decoy2 = (str(n) for n in rng.sample(range(100000, 1000000), 3))
            facts = [f"{a}'s partner city is {b}." for a, b in zip(chain, chain[1:])]
            facts.append(magic_number(chain[-1], answer))
            distractors = [magic_number(chain[0], decoy),
                           f"{other[0]}'s partner city is {other[1]}.",
                           magic_number(other[1], decoy2)]
            text = _plant(tokenizer, essays, length, rng, facts + distractors)
            samples.append(Sample(
                sample_id=f"{name}:{length}:{i}", dataset=name,
                question=chain_question(chain[0], hops),
                documents=[Document(id="haystack", text=text)], answers=[answer],
                task="niah", length=length,
                meta={"hops": hops, "chain": chain, "decoy": decoy,
                      "tokens": tokenizer.count(text)}))
    return Dataset(name, samples)


def load_threading(r: Request) -> Dataset:
    return threading(r.tokenizer, r.lengths, r.limit, r.seed, r.root, split=r.split)


FAMILY = register(Family("threading", load_threading, names=("threading",), needs_lengths=True))
