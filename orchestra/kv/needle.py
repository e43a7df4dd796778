"""Needle-in-a-haystack samples for probing page selection (tests and benchmarks/kv_pages.py).

The haystack is the essays of a folder concatenated in name order, cut to a token length with
the backend's tokenizer; the needle sentence goes in at a sentence boundary near the depth asked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from orchestra.errors import InputError

CITIES = ("Chicago", "Lisbon", "Nairobi", "Osaka", "Toronto", "Santiago", "Oslo", "Cairo",
          "Denver", "Hanoi", "Quito", "Dublin", "Perth", "Tbilisi", "Montreal", "Seville")


@dataclass(frozen=True)
class Needle:
    text: str  # the document, needle included
    question: str
    answer: str
    needle_start: int  # character offsets of the needle sentence in ``text``
    needle_end: int
    depth: float
    tokens: int


def haystack_text(folder: str | Path) -> str:
    files = sorted(Path(folder).glob("*.txt"))
    if not files:
        raise InputError(f"{folder}: no .txt essays to build a haystack from")
    return "\n\n".join(f.read_text(encoding="utf-8").strip() for f in files)


def make_needle(tokenizer, haystack: str, tokens: int, depth: float, seed: int = 0) -> Needle:
    """A document of about ``tokens`` tokens with the needle at ``depth`` (0..1)."""
    if not 0.0 <= depth <= 1.0:
        raise InputError(f"depth must be between 0 and 1, got {depth}")
    rng = random.Random(f"{seed}-{tokens}-{depth}")
    city = rng.choice(CITIES)
    number = str(rng.randint(100000, 999999))
    needle = f"The special magic number for {city} is {number}."
    offs = tokenizer.offsets(haystack)
    room = tokens - tokenizer.count(needle) - 2
    if room > len(offs):
        raise InputError(f"the haystack has {len(offs)} tokens, fewer than the {tokens} asked")
    hay = haystack[: offs[room][0]] if room < len(offs) else haystack
    cut = int(len(hay) * depth)
    # Back up to the end of a sentence so the needle does not split one.
    dot = hay.rfind(". ", 0, cut)
    cut = dot + 1 if dot > 0 else cut
    text = hay[:cut] + " " + needle + hay[cut:]
    question = f"What is the special magic number for {city} mentioned in the provided text?"
    start = cut + 1
    return Needle(text, question, number, start, start + len(needle), depth, tokens)
