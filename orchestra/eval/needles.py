"""Needles in a haystack of essays: the one builder behind the ``niah`` dataset, the KV-page
probes (tests/test_kv_pages.py, benchmarks/kv_pages.py), the agents' two-fact haystacks and the
passkey tests.

The haystack is essays joined by blank lines, cut to a token count with the backend's
tokenizer; each needle goes in at the start of the sentence at or before its depth (so it never
splits one), followed by a space.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from orchestra.errors import InputError

# The needle task's cities (RULER's phrasing, "The special magic number for <city> is <n>.");
# the dev and test splits of ``niah`` use disjoint halves of this list.
CITIES = (
    "Chicago", "Yangon", "Antananarivo", "Colombo", "Almaty", "Sydney", "Mexico City",
    "Seattle", "Lagos", "Amsterdam", "Belgrade", "Cairo", "Baghdad", "Damascus", "Kigali",
    "Dakar", "Sofia", "Victoria", "Tashkent", "Mumbai", "Barcelona", "Helsinki", "Lima",
    "Montevideo", "Oslo", "Quito", "Riga", "Santiago", "Tbilisi", "Vilnius", "Winnipeg",
    "Zagreb", "Accra", "Bogota", "Dublin", "Hanoi", "Jakarta", "Kyoto", "Lisbon", "Nairobi",
)


def magic_number(city: str, number: str) -> str:
    return f"The special magic number for {city} is {number}."


def magic_question(city: str) -> str:
    return f"What is the special magic number for {city}?"


def essays_text(folder: str | Path, strip: bool = True) -> str:
    """The folder's .txt essays in name order, joined by blank lines (``strip=False``: each
    file's text as it is, trailing newlines included, as the agents' measurements read it)."""
    files = sorted(Path(folder).glob("*.txt"))
    texts = [t for t in (f.read_text(encoding="utf-8") for f in files) if t.strip()]
    texts = [t.strip() for t in texts] if strip else texts
    if not texts:
        raise InputError(f"{folder}: no .txt essays to build a haystack from")
    return "\n\n".join(texts)


def cut_to_tokens(tokenizer, text: str, tokens: int) -> str:
    """The start of ``text`` holding ``tokens`` tokens (all of it when it is shorter)."""
    offs = tokenizer.offsets(text)
    return text[: offs[tokens][0]].rstrip() if tokens < len(offs) else text


def sentence_start(text: str, pos: int, after: bool = False) -> int:
    """The start of the sentence at or before ``pos`` (needles go between sentences); with
    ``after``, of the first sentence after ``pos`` (the end when there is none)."""
    if after:
        cut = text.find(". ", pos)
        return len(text) if cut < 0 else cut + 2
    if pos <= 0:
        return 0
    cut = max(text.rfind(". ", 0, pos), text.rfind("\n", 0, pos))
    return 0 if cut < 0 else cut + (2 if text[cut] == "." else 1)


def insert_needles(hay: str, needles: Sequence[tuple[float, str]],
                   after: bool = False) -> tuple[str, list[int]]:
    """``hay`` with each (depth, sentence) put at the sentence start nearest before ``depth``
    (a fraction of ``hay``'s length), or with ``after`` the next one after it; the needles'
    character starts, in the order given."""
    text = hay
    at: dict[int, int] = {}
    # From the deepest: earlier offsets hold while later ones move.
    for i, (depth, sentence) in sorted(enumerate(needles), key=lambda t: -t[1][0]):
        if not 0.0 <= depth <= 1.0:
            raise InputError(f"needle depth {depth} is outside [0, 1]")
        pos = sentence_start(text, int(len(hay) * depth), after)
        text = text[:pos] + sentence + " " + text[pos:]
        at = {j: (s + len(sentence) + 1 if s >= pos else s) for j, s in at.items()}
        at[i] = pos
    return text, [at[i] for i in range(len(needles))]


@dataclass(frozen=True)
class Needle:
    text: str  # the document, needle included
    question: str
    answer: str
    needle_start: int  # character offsets of the needle sentence in ``text``
    needle_end: int
    depth: float
    tokens: int


def make_needle(tokenizer, haystack: str, tokens: int, depth: float, seed: int = 0,
                city: str | None = None) -> Needle:
    """A document of about ``tokens`` tokens with one magic-number needle at ``depth``; the
    city is drawn by ``seed`` unless given."""
    if not 0.0 <= depth <= 1.0:
        raise InputError(f"depth must be between 0 and 1, got {depth}")
    rng = random.Random(f"{seed}-{tokens}-{depth}")
    drawn = rng.choice(CITIES)
    city = city or drawn
    number = str(rng.randint(100000, 999999))
    needle = magic_number(city, number)
    room = tokens - tokenizer.count(needle) - 2
    n = len(tokenizer.offsets(haystack))
    if room > n:
        raise InputError(f"the haystack has {n} tokens, fewer than the {tokens} asked")
    text, [start] = insert_needles(cut_to_tokens(tokenizer, haystack, room), [(depth, needle)])
    question = f"What is the special magic number for {city} mentioned in the provided text?"
    return Needle(text, question, number, start, start + len(needle), depth, tokens)
