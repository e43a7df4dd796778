"""Lexical retrieval with BM25 (bm25s): exact names, numbers and rare words that embeddings blur."""

from __future__ import annotations

import json
import logging
import re
from functools import lru_cache

import numpy as np

from orchestra.corpus import Chunk, Corpus
from orchestra.errors import OptionError
from orchestra.retrievers.base import Retriever, ScoredChunk

_WORD = re.compile(r"(?u)\b\w\w+\b")


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


@lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem import PorterStemmer  # pure Python, needs no downloaded data

    return PorterStemmer()


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return _stemmer().stem(word)


def terms(text: str, stem: bool = True) -> list[str]:
    """Lower-cased word terms without English stopwords, optionally Porter-stemmed."""
    stop = _stopwords()
    words = [w for w in _WORD.findall(text.lower()) if w not in stop]
    return [_stem(w) for w in words] if stem else words


class BM25Retriever(Retriever):
    name = "bm25"
    score_kind = "bm25"

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Value checks shared with `orchestra validate` (orchestra.checks)."""
        super().check_options(options)
        k1, b = options.get("k1", 1.5), options.get("b", 0.75)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (k1, b))
        if not (numbers and k1 >= 0 and 0 <= b <= 1):
            raise OptionError("k1" if "k1" in options else "b",
                              f"retriever 'bm25': need k1 >= 0 and 0 <= b <= 1, got k1={k1}, "
                              f"b={b}")

    def __init__(self, backend=None, k1: float = 1.5, b: float = 0.75, stem: bool = True, *,
                 chunk_tokens: int | None = None, overlap: int | None = None,
                 cache: bool = True, chunking: str = "tokens"):
        super().__init__(backend, chunk_tokens, overlap, cache, chunking)
        self.k1, self.b, self.stem = float(k1), float(b), bool(stem)
        self._bm = None

    def _new(self):
        import bm25s

        # bm25s sets its own logger to DEBUG, which floods any root handler (the CLI's).
        logging.getLogger("bm25s").setLevel(logging.WARNING)

        return bm25s.BM25(k1=self.k1, b=self.b)

    def _build(self, chunks: list[Chunk], corpus: Corpus) -> None:
        bm = self._new()
        # A chunk with no terms still needs a row; the empty term keeps bm25s from failing on it.
        bm.index([terms(c.text, self.stem) or [""] for c in chunks], show_progress=False)
        self._bm = bm

    def _retrieve(self, question: str, k: int) -> list[ScoredChunk]:
        ids = self._bm.get_tokens_ids([t for t in terms(question, self.stem) if t])
        if not ids:
            return []  # no query term occurs in the corpus: nothing matches
        scores = self._bm.get_scores_from_ids(ids)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [ScoredChunk(self.chunks[i], float(scores[i])) for i in top if scores[i] > 0]

    def _state(self):
        s = self._bm.scores
        return {"data": s["data"], "indices": s["indices"], "indptr": s["indptr"],
                "num_docs": np.array(s["num_docs"]),
                "vocab": np.array(json.dumps(self._bm.vocab_dict))}

    def _load_state(self, state, chunks):
        num_docs = int(state["num_docs"])
        if num_docs != len(chunks):
            raise ValueError(f"it indexes {num_docs} chunks, the corpus has {len(chunks)}")
        vocab = json.loads(str(state["vocab"]))
        if max((v for t, v in vocab.items() if t), default=-1) >= len(state["indptr"]) - 1:
            raise ValueError("its vocabulary and score matrix disagree")
        if not np.isfinite(state["data"]).all():  # loads fine, then ranks nothing: damaged
            raise ValueError("its scores hold NaN or infinite values")
        bm = self._new()
        bm.scores = {"data": state["data"], "indices": state["indices"],
                     "indptr": state["indptr"], "num_docs": num_docs}
        bm.vocab_dict = vocab
        bm.unique_token_ids_set = set(vocab.values())
        bm.nonoccurrence_array = None  # only BM25L/BM25+ have one; we use Lucene's BM25
        self._bm = bm
