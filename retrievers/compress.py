"""Query-aware compression of retrieved chunks (after LongLLMLingua / RECOMP's extractive mode).

A 135M reader given six whole passages often answers from the wrong one. ``compress`` keeps
only the sentences of the retrieved chunks most related to the question, up to a token
budget, and returns them as chunks of their own: each kept run of adjacent sentences is one
Chunk whose text is exactly ``document.text[start:end]``, so evidence spans stay exact.

Sentences are scored by the dense embedder when the retriever has one (cosine with the
question), otherwise by the share of the question's content words they contain; a sentence
inherits a small part of its chunk's retrieval rank so ties go to the better chunk.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from orchestra.corpus import Chunk, chunk_id
from orchestra.retrievers.base import ScoredChunk

# A sentence ends at . ! ? (optionally followed by a closing quote or bracket) before
# whitespace, or at a line break. Hand-written: nltk's punkt needs downloaded data, and the
# splitter only has to find boundaries, not to be perfect (a missed one keeps two sentences).
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]?\s+|\n+")
_WORD = re.compile(r"\w+")
_STOP = frozenset(
    "a an the of in on at to for by with from and or is are was were be been what which who "
    "whom whose when where why how did does do that this these those as it its into than".split())
# How much of a sentence's score its chunk's rank is worth (breaks ties toward rank 1).
RANK_WEIGHT = 0.02


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(start, end) offsets of the sentences in ``text[start:end]``, whitespace trimmed."""
    end = len(text) if end is None else end
    spans, pos = [], start
    for m in _BOUNDARY.finditer(text, start, end):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, end))
    out = []
    for a, b in spans:
        piece = text[a:b]
        lead = len(piece) - len(piece.lstrip())
        trail = len(piece) - len(piece.rstrip())
        if b - trail > a + lead:
            out.append((a + lead, b - trail))
    return out


def lexical_scores(question: str, sentences: Sequence[str]) -> np.ndarray:
    """Share of the question's content words each sentence contains."""
    q = {w for w in _WORD.findall(question.lower()) if w not in _STOP} or \
        set(_WORD.findall(question.lower()))
    if not q:
        return np.zeros(len(sentences))
    return np.array([len(q & set(_WORD.findall(s.lower()))) / len(q) for s in sentences])


def compress(question: str, scored: Sequence[ScoredChunk], budget: int,
             count: Callable[[str], int], documents: dict[str, str],
             encode: Callable[[list[str]], np.ndarray] | None = None) -> list[ScoredChunk]:
    """The most question-related sentences of ``scored`` (best first), within ``budget`` tokens.

    ``documents`` maps doc id to text (to cut exact spans); ``encode`` embeds texts into
    L2-normalised rows (None: lexical scoring). Adjacent kept sentences of one chunk are merged
    into one piece; a piece's score is its best sentence's.
    """
    sents: list[tuple[int, Chunk, int, int]] = []  # (chunk rank, chunk, start, end) in the doc
    for rank, sc in enumerate(scored):
        c = sc.chunk
        text = documents[c.doc_id]
        for a, b in sentence_spans(text, c.start, c.end):
            sents.append((rank, c, a, b))
    if not sents:
        return []
    texts = [documents[c.doc_id][a:b] for _, c, a, b in sents]
    if encode is not None:
        vecs = encode([question] + texts)
        sim = vecs[1:] @ vecs[0]
    else:
        sim = lexical_scores(question, texts)
    score = np.asarray(sim, dtype=float) - RANK_WEIGHT * np.array([r for r, *_ in sents])
    keep = _within_budget(score, texts, budget, count)
    pieces = _merge(sents, keep, score, documents, count)
    return sorted(pieces, key=lambda p: -p.score)


def _within_budget(score: np.ndarray, texts: list[str], budget: int,
                   count: Callable[[str], int]) -> set[int]:
    """The sentences kept, best score first, while they fit ``budget``."""
    keep: set[int] = set()
    used = 0
    for i in np.argsort(-score, kind="stable"):
        cost = count(texts[i]) + 1  # a separator at least
        if used + cost > budget:
            continue
        keep.add(int(i))
        used += cost
    return keep


def _merge(sents: list[tuple[int, Chunk, int, int]], keep: set[int], score: np.ndarray,
           documents: dict[str, str], count: Callable[[str], int]) -> list[ScoredChunk]:
    """Adjacent kept sentences of the same chunk as one piece, with exact offsets."""
    pieces: list[ScoredChunk] = []
    run: list[int] = []

    def flush() -> None:
        if not run:
            return
        _, c, a, _ = sents[run[0]]
        b = sents[run[-1]][3]
        text = documents[c.doc_id][a:b]
        piece = Chunk(id=chunk_id(c.doc_id, a, b, text), doc_id=c.doc_id, index=c.index,
                      order=c.order, start=a, end=b, text=text, n_tokens=count(text))
        pieces.append(ScoredChunk(piece, float(max(score[j] for j in run))))
        run.clear()

    for i in range(len(sents)):
        if i in keep and run and sents[run[-1]][1] is sents[i][1]:
            run.append(i)
        else:
            flush()
            if i in keep:
                run.append(i)
    flush()
    return pieces
