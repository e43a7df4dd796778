"""Registered corpora: chunked, indexed and KV-prefilled once, reused by every later question.

A corpus is registered under its content hash (the same documents give the same id). Building
it chunks the documents with the backend's tokenizer, indexes them in every retriever the
pipeline's strategies use and prefills them for KV-page strategies, so questions pay only for
retrieval and decoding.

Reuse is observable: the pipeline's retrievers' ``_build`` (where chunks are embedded or
BM25-indexed) and ``_load_state`` (an index read back from the disk cache) and the KV
readers' ``prefill`` are wrapped, per instance, to count calls for the
corpus being worked on (a ContextVar set around each request's work). The counts show in
``GET /v1/corpora/{id}`` and in /metrics; the integration tests assert they do not grow.
Wrapping instances here keeps the retriever and strategy classes free of server concerns.
"""

from __future__ import annotations

import contextvars
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from orchestra.corpus import Corpus, Document
from orchestra.errors import OrchestraError
from orchestra.server.metrics import Metrics
from orchestra.server.requests import ApiError

_current: contextvars.ContextVar["CorpusEntry | None"] = contextvars.ContextVar(
    "orchestra_corpus", default=None)


@dataclass
class CorpusEntry:
    id: str
    corpus: Corpus
    created: float = field(default_factory=time.time)
    index_builds: int = 0
    index_loads: int = 0  # indexes read back from the on-disk cache (nothing embedded)
    kv_prefills: int = 0
    questions: int = 0
    warm: dict[str, str] = field(default_factory=dict)  # component -> what warming did

    def describe(self) -> dict[str, Any]:
        c = self.corpus
        return {
            "id": self.id, "object": "corpus", "created": int(self.created),
            "documents": [{"name": d.id, "characters": len(d.text),
                           "tokens": c.doc_tokens(d)} for d in c.documents],
            "tokens": c.n_tokens, "chunks": len(c.chunks),
            "index_builds": self.index_builds, "index_loads": self.index_loads,
            "kv_prefills": self.kv_prefills,
            "questions": self.questions, "warm": self.warm,
        }


def _retrievers(pipeline) -> list[Any]:
    """Every retriever object the pipeline's strategies can index with (members of hybrids
    included), each once."""
    seen: dict[int, Any] = {}

    def add(r: Any) -> None:
        if r is None or isinstance(r, str) or id(r) in seen or not hasattr(r, "_build"):
            return
        seen[id(r)] = r
        for m in getattr(r, "retrievers", None) or []:
            add(m)

    for r in pipeline.retrievers.values():
        add(r)
    for s in pipeline.strategies.values():
        add(getattr(s, "retriever", None))
    return list(seen.values())


def _prefiller(strategy: Any) -> Any:
    """What prefills for a KV-page strategy (its PagedReader), or None for other strategies."""
    for attr in ("reader", "engine"):
        target = getattr(strategy, attr, None)
        if hasattr(strategy, "prefill") and hasattr(target, "prefill"):
            return target
    return None


def _kv_strategies(pipeline) -> list[tuple[str, Any]]:
    return [(n, s) for n, s in pipeline.strategies.items() if _prefiller(s) is not None]


class Corpora:
    def __init__(self, pipeline, metrics: Metrics, max_request_tokens: int,
                 max_corpora: int = 8):
        self.pipeline = pipeline
        self.metrics = metrics
        self.max_request_tokens = max_request_tokens
        self.max_corpora = max_corpora
        self._entries: dict[str, CorpusEntry] = {}
        self._lock = threading.Lock()
        self._instrument()
        for _, s in _kv_strategies(pipeline):
            # Keep every registered corpus prefilled (and one more for documents sent inline).
            s.max_handles = max(getattr(s, "max_handles", 1), max_corpora + 1)

    def _instrument(self) -> None:
        for r in _retrievers(self.pipeline):
            if getattr(r, "retrievers", None):
                continue  # a hybrid fuses its members' indexes; it builds nothing itself
            build = r._build

            def counted_build(*a, _build=build, _name=r.name, **kw):
                entry = _current.get()
                if entry is not None:
                    entry.index_builds += 1
                self.metrics.index_builds.labels(_name).inc()
                return _build(*a, **kw)

            r._build = counted_build
            load = r._load_state

            def counted_load(*a, _load=load, **kw):
                entry = _current.get()
                if entry is not None:
                    entry.index_loads += 1
                return _load(*a, **kw)

            r._load_state = counted_load
        for _, s in _kv_strategies(self.pipeline):
            target = _prefiller(s)
            prefill = target.prefill

            def counted_prefill(*a, _prefill=prefill, **kw):
                entry = _current.get()
                if entry is not None:
                    entry.kv_prefills += 1
                self.metrics.kv_prefills.inc()
                return _prefill(*a, **kw)

            target.prefill = counted_prefill

    # -- registry -----------------------------------------------------------------------------
    def build(self, docs: list[tuple[str, str]], warm: bool = True) -> tuple[CorpusEntry, bool]:
        """Register documents (blocking: run it off the event loop). Returns (entry, new)."""
        corpus = self.corpus_of(docs)
        with self._lock:
            existing = self._entries.get(corpus.hash[:16])
            if existing is not None:
                return existing, False
            if len(self._entries) >= self.max_corpora:
                raise ApiError(409, f"this server keeps at most {self.max_corpora} corpora "
                                    "(--max-corpora); DELETE /v1/corpora/{id} one first")
            entry = CorpusEntry(id=corpus.hash[:16], corpus=corpus)
            self._entries[entry.id] = entry
        if warm:
            token = _current.set(entry)
            try:
                self._warm(entry)
            finally:
                _current.reset(token)
        return entry, True

    def corpus_of(self, docs: list[tuple[str, str]]) -> Corpus:
        """The documents as the pipeline's Corpus (tokenized here, on a request thread)."""
        documents = [Document(id=name, text=text, source=name) for name, text in docs]
        corpus = self.pipeline.corpus(documents)
        if corpus.n_tokens > self.max_request_tokens:
            raise ApiError(413, f"the documents have {corpus.n_tokens} tokens; this server "
                                f"takes at most {self.max_request_tokens} per request "
                                "(--max-request-tokens)")
        return corpus

    def _warm(self, entry: CorpusEntry) -> None:
        corpus = entry.corpus
        corpus.chunks  # the default chunking, memoised on the Corpus
        for r in _retrievers(self.pipeline):
            with r._lock:
                r.index(corpus)
            entry.warm[f"retriever {r.name}"] = "indexed"
        for name, s in _kv_strategies(self.pipeline):
            try:
                s.prefill(corpus)
                entry.warm[f"strategy {name}"] = "prefilled"
            except OrchestraError as e:  # too short for a page, or over the window
                entry.warm[f"strategy {name}"] = f"not prefilled: {e}"

    def release(self, corpus: Corpus) -> None:
        """Forget documents sent inline once answered (the pipeline would keep them forever),
        unless they are a registered corpus."""
        with self._lock:
            if corpus.hash[:16] not in self._entries:
                self.pipeline._corpora.pop(corpus.hash, None)

    def get(self, corpus_id: str) -> CorpusEntry:
        entry = self._entries.get(corpus_id)
        if entry is None:
            raise ApiError(404, f"no corpus {corpus_id!r} (POST /v1/corpora registers one; "
                                "GET /v1/corpora lists them)", "not_found_error")
        return entry

    def delete(self, corpus_id: str) -> CorpusEntry:
        entry = self.get(corpus_id)
        with self._lock:
            self._entries.pop(corpus_id, None)
            self.pipeline._corpora.pop(entry.corpus.hash, None)
        return entry

    def all(self) -> list[CorpusEntry]:
        return list(self._entries.values())

    @staticmethod
    def working_on(entry: CorpusEntry | None):
        """Attribute index builds and prefills in this context to ``entry``."""
        return _current.set(entry)
