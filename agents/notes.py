"""Notes: what agents pass to each other, and how a raw model reply becomes one (or is dropped).

A note is text plus the chunks it came from. Citations are attached by the strategy (it knows
which chunk a worker read), not parsed from the reply: a 135M model cannot copy a 16-hex id
reliably, so prompts show short labels ("[chunk 7]") and the note keeps the real Chunk objects.

A reply is dropped, with the reason recorded, when it is
- ``empty``: nothing but whitespace;
- ``no_information``: the fixed NO_INFO form (prompts.NO_INFO);
- ``garbled``: too few letters or digits to be text, or one word repeated over and over;
- ``ungrounded``: no sentence of it is supported by its source (see ``Grounder``);
- ``repeated``: every sentence of it is already in an earlier note.

Grounding is part of the strategy, not a test device: workers are told to copy sentences, and
small models invent plausible facts ("The second magic number is 2.") for chunks that lack them.
A reply sentence is kept only if at least ``min_overlap`` of its word trigrams occur in the source
text and every number in it occurs there too. Sentences repeated from earlier notes are dropped
(chunk overlap and chain workers echoing notes), their chunk added to the earlier note's citations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from orchestra.agents.prompts import NO_INFO
from orchestra.corpus import Chunk

_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_BULLET = re.compile(r"^\s*(?:[-*•]+|\d+[.)]|\[chunk \d+\]:?|chunk \d+:)\s*", re.IGNORECASE)

DROP_REASONS = ("empty", "no_information", "garbled", "ungrounded", "repeated")


@dataclass
class Note:
    text: str
    chunks: list[Chunk] = field(default_factory=list)

    def label(self) -> str:
        """"[chunk 3]", "[chunk 1-4, 9]": runs collapse so merged notes keep short labels."""
        orders = sorted({c.order + 1 for c in self.chunks})
        runs: list[list[int]] = []
        for o in orders:
            if runs and o == runs[-1][1] + 1:
                runs[-1][1] = o
            else:
                runs.append([o, o])
        return "[chunk " + ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) + "]"


@dataclass
class Parsed:
    note: Note | None
    reason: str | None = None  # a DROP_REASONS entry when note is None
    dropped_sentences: list[str] = field(default_factory=list)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def render(notes: Sequence[Note]) -> str:
    return "\n".join(f"{n.label()} {n.text}" for n in notes)


def sentences(text: str) -> list[str]:
    out = []
    for part in _SENTENCE_END.split(text):
        part = _BULLET.sub("", part).strip()
        if part:
            out.append(part)
    return out


def is_no_info(text: str) -> bool:
    return " ".join(words(NO_INFO)) in " ".join(words(text))


def is_garbled(text: str) -> bool:
    stripped = "".join(text.split())
    if not stripped:
        return True
    alnum = sum(ch.isalnum() for ch in stripped)
    if alnum / len(stripped) < 0.5 or not re.search(r"[^\W\d_]{2,}|\d", text):
        return True
    ws = words(text)
    # Degenerate loops ("the the the ...") are a known failure of greedy decoding.
    return len(ws) >= 8 and len(set(ws)) <= len(ws) // 4


class Grounder:
    """Checks reply sentences against a source text (a chunk, or the notes being reduced)."""

    def __init__(self, source: str, min_overlap: float):
        ws = words(source)
        self.words = set(ws)
        self.trigrams = {tuple(ws[i:i + 3]) for i in range(len(ws) - 2)}
        self.numbers = {n for n in _NUMBER.findall(source)}
        self.min_overlap = min_overlap

    def supports(self, sentence: str) -> bool:
        if any(n not in self.numbers for n in _NUMBER.findall(sentence)):
            return False
        ws = words(sentence)
        if not ws:
            return False
        if len(ws) < 3:
            return all(w in self.words for w in ws)
        grams = [tuple(ws[i:i + 3]) for i in range(len(ws) - 2)]
        return sum(g in self.trigrams for g in grams) / len(grams) >= self.min_overlap


def is_decline(sentence: str) -> bool:
    """NO_INFO, or a worded decline ("The text does not mention ..."; orchestra.declines)."""
    from orchestra.declines import declined

    return is_no_info(sentence) or declined(sentence)


class Aligner:
    """Maps a reply sentence to the source sentence sharing the most content terms with it.

    A small worker asked to copy often paraphrases ("The civil disobedience shown in Antigone was
    a protest ...") instead; the sentence of its chunk it was paraphrasing is usually the one
    sharing the most content words with the reply, so that sentence, copied verbatim, becomes
    the note. Terms are bm25's (stopwords dropped, stemmed), so "conflicts" meets "conflict".
    """

    def __init__(self, source: str, min_terms: int = 2):
        from orchestra.retrievers.bm25 import terms

        self._terms = terms
        self.min_terms = min_terms
        self.sentences = [(t, set(terms(t))) for t in sentences(source)]

    def __call__(self, sentence: str) -> str | None:
        want = set(self._terms(sentence))
        best, score = None, 0
        for text, have in self.sentences:
            n = len(want & have)
            if n > score:
                best, score = text, n
        return best if score >= self.min_terms else None


def parse_reply(text: str, chunks: list[Chunk], source: str, min_overlap: float | None,
                earlier: Iterable[Note] = (), align: bool = False) -> Parsed:
    """Turn a worker (or reduce) reply into a Note, or say why it is dropped.

    ``min_overlap=None`` turns grounding off (for abstractive uses such as summaries).
    ``earlier`` notes receive this chunk's citation when the reply only repeats them.
    ``align``: a sentence the source does not support is replaced by the source sentence it
    shares the most content terms with (``Aligner``), rather than dropped; declines are not.
    """
    text = (text or "").strip()
    if not text:
        return Parsed(None, "empty")
    if is_garbled(text):
        return Parsed(None, "garbled")
    kept, dropped = [], []
    grounder = Grounder(source, min_overlap) if min_overlap is not None else None
    aligner = None
    for s in sentences(text):
        if is_no_info(s) or is_garbled(s):
            dropped.append(s)
        elif grounder is None or grounder.supports(s):
            kept.append(s)
        elif align and not is_decline(s):
            aligner = aligner or Aligner(source)
            found = aligner(s)
            (kept if found else dropped).append(found or s)
        else:
            dropped.append(s)
    if not kept:
        reason = "no_information" if is_no_info(text) else "ungrounded"
        return Parsed(None, reason, dropped)
    earlier = list(earlier)
    seen = {" ".join(words(s)): n for n in earlier for s in sentences(n.text)}
    fresh = []
    for s in kept:
        key = " ".join(words(s))
        if key in seen:
            prior = seen[key]
            prior.chunks.extend(c for c in chunks if c not in prior.chunks)
        elif key not in {" ".join(words(f)) for f in fresh}:
            fresh.append(s)
    if not fresh:
        return Parsed(None, "repeated", dropped)
    return Parsed(Note(" ".join(fresh), list(chunks)), None, dropped)


def supporting(text: str, chunks: Sequence[Chunk], min_overlap: float | None) -> list[Chunk]:
    """The chunks whose own text supports a sentence of ``text`` (all of them if none does)."""
    sents = sentences(text)
    found = []
    for c in chunks:
        grounder = Grounder(c.text, min_overlap or 0.5)
        if any(grounder.supports(s) for s in sents):
            found.append(c)
    return found or list(chunks)
