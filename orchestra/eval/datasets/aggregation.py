"""Aggregation: RULER's common-words extraction (``cwe``), where the answer is spread through
the whole text and no single passage holds it.

The document is a numbered list of words ("1. harbor 2. lantern 3. harbor ..."): ``COMMON``
words appear ``COMMON_FREQ`` times each, every other word at most ``RARE_FREQ`` times, in a
random order over the whole list. The question asks for the most common words; the score is
``contains_all``, the share of them the reply names (RULER's string_match_all). RULER's own
settings at 4k are 10 common words 30 times each; the embedded 135M reader is asked for 5.

SOURCE: generated here; the word pool is the lower-case words of 4-12 letters of the Paul
Graham essays in ../shared/data/needle_haystack (see its SOURCE.md), minus a stop list, split
dev/test by word (disjoint halves of the pool, by a stable hash, as ``niah`` splits cities).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Sequence

from orchestra.backends.base import Tokenizer
from orchestra.corpus import Document
from orchestra.errors import InputError
from orchestra.eval.datasets.base import (
    Dataset, Sample, check_split, default_data_root, fixed_half, read_essays, split_suffix,
)
from orchestra.eval.datasets.registry import Family, Request, register

COMMON = 5
COMMON_FREQ = 30
RARE_FREQ = 3
_STOP = frozenset(
    "about above after again against because been before being below between both could "
    "does doing down during each from further have having here hers herself himself into "
    "itself just more most myself once only other ourselves over same should some such than "
    "that their theirs them themselves then there these they this those through under until "
    "very were what when where which while whom will with would your yours yourself also "
    "like things thing think people even much many make made really something".split())


def word_pool(root: Path | None, split: str | None) -> list[str]:
    check_split(split)
    words = set()
    for essay in read_essays(root or default_data_root()):
        words.update(w for w in re.findall(r"\b[a-z]{4,12}\b", essay) if w not in _STOP)
    keep = fixed_half(sorted(words), split)
    return sorted(w for w in words if w in keep)


def word_list(words: Sequence[str]) -> str:
    return " ".join(f"{i}. {w}" for i, w in enumerate(words, 1))


def common_words(tokenizer: Tokenizer, lengths: Sequence[int], limit: int, seed: int = 0,
                 root: Path | None = None, split: str | None = None) -> Dataset:
    pool = word_pool(root, split)
    name = "aggregation" + split_suffix(split)
    probe = word_list(pool[:200])
    per_entry = tokenizer.count(probe) / 200  # tokens per "n. word " entry
    samples = []
    for length in lengths:
        n_entries = int(length / per_entry)
        n_rare = n_entries - COMMON * COMMON_FREQ  # at most (a rare word appears 1-3 times)
        if n_rare < COMMON * 2 * RARE_FREQ:
            raise InputError(f"length {length} is too small for the aggregation task: "
                             f"{COMMON} words {COMMON_FREQ} times each need about "
                             f"{int(COMMON * COMMON_FREQ * per_entry * 2)} tokens")
        for i in range(limit):
            rng = random.Random(f"{seed}:{name}:{length}:{i}")
            chosen = rng.sample(pool, min(len(pool), COMMON + n_rare))
            common, rare = chosen[:COMMON], chosen[COMMON:]
            words = [w for w in common for _ in range(COMMON_FREQ)]
            for w in rare:  # rare words fill the list up to the length
                words += [w] * min(rng.randint(1, RARE_FREQ), n_entries - len(words))
                if len(words) >= n_entries:
                    break
            if len(words) < n_entries:
                raise InputError(f"length {length} needs more distinct words than the "
                                 f"{split or 'whole'} word pool holds ({len(pool)})")
            rng.shuffle(words)
            text = word_list(words)
            while (n := tokenizer.count(text)) > length:  # longer numbers cost more tokens
                words = words[: int(len(words) * length / n) - 1]
                text = word_list(words)
            samples.append(Sample(
                sample_id=f"{name}:{length}:{i}", dataset=name,
                question=f"What are the {COMMON} most common words in the numbered list "
                         "above?",
                documents=[Document(id="words", text=text)], answers=common,
                task="multi_value", length=length,
                meta={"entries": len(words), "tokens": tokenizer.count(text)}))
    return Dataset(name, samples)


def load(r: Request) -> Dataset:
    return common_words(r.tokenizer, r.lengths, r.limit, r.seed, r.root, split=r.split)


FAMILY = register(Family("aggregation", load, names=("aggregation",), needs_lengths=True))
