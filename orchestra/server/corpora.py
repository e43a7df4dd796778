"""Registered corpora: chunked, indexed and KV-prefilled once, reused by every later question.

A corpus is registered under its content hash (the same documents give the same id). Building
it chunks the documents with the backend's tokenizer, indexes them in every retriever the
pipeline's strategies use and prefills them for KV-page strategies, so questions pay only for
retrieval and decoding.

Reuse is observable: retrievers report an index built or read back from the disk cache, and
KV-page strategies a document prefilled, through ``orchestra.observe.work``. A ``WorkCounter``
listening around a request's work (``counting(entry)``) adds them to that corpus's counts and
to /metrics; ``GET /v1/corpora/{id}`` shows them and the integration tests assert they do not
grow.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from orchestra import observe
from orchestra.corpus import Corpus, Document
from orchestra.errors import OrchestraError
from orchestra.server.errors import ServiceError
from orchestra.server.metrics import Metrics


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


class WorkCounter:
    """An observe listener: the index builds and loads and the KV prefills of the work it
    watches, counted for a corpus entry (if any) and in the metrics."""

    def __init__(self, entry: CorpusEntry | None, metrics: Metrics):
        self.entry = entry
        self.metrics = metrics

    def step_started(self, step: Any) -> None:
        return None

    def step_ended(self, step: Any, token: Any, error: BaseException | None) -> None:
        pass

    def work_done(self, name: str, detail: dict) -> None:
        e = self.entry
        if name == observe.INDEX_BUILT:
            self.metrics.index_builds.labels(detail.get("retriever", "?")).inc()
            if e is not None:
                e.index_builds += 1
        elif name == observe.INDEX_LOADED and e is not None:
            e.index_loads += 1
        elif name == observe.KV_PREFILLED:
            self.metrics.kv_prefills.inc()
            if e is not None:
                e.kv_prefills += 1


def retrievers_of(pipeline) -> list[Any]:
    """Every retriever object the pipeline's strategies can index with (members of hybrids
    included), each once."""
    from orchestra.retrievers.base import Retriever

    seen: dict[int, Any] = {}

    def add(r: Any) -> None:
        if not isinstance(r, Retriever) or id(r) in seen:
            return
        seen[id(r)] = r
        for m in getattr(r, "retrievers", None) or []:
            add(m)

    for r in pipeline.retrievers.values():
        add(r)
    for s in pipeline.strategies.values():
        add(getattr(s, "retriever", None))
    return list(seen.values())


def _kv_strategies(pipeline) -> list[tuple[str, Any]]:
    # A pipeline holding a KVPages has imported its module; looking it up instead of
    # importing it keeps torch out of servers that have no KV-page strategy.
    module = sys.modules.get("orchestra.strategies.kv_pages")
    if module is None:
        return []
    return [(n, s) for n, s in pipeline.strategies.items() if isinstance(s, module.KVPages)]


class Corpora:
    def __init__(self, pipeline, metrics: Metrics, max_request_tokens: int,
                 max_corpora: int = 8):
        self.pipeline = pipeline
        self.metrics = metrics
        self.max_request_tokens = max_request_tokens
        self.max_corpora = max_corpora
        self._entries: dict[str, CorpusEntry] = {}
        self._lock = threading.Lock()
        for _, s in _kv_strategies(pipeline):
            # Keep every registered corpus prefilled (and one more for documents sent inline).
            s.max_handles = max(s.max_handles, max_corpora + 1)

    @contextmanager
    def counting(self, entry: CorpusEntry | None) -> Iterator[None]:
        """Count the index and prefill work done in this block (this context) for ``entry``
        and the metrics."""
        with observe.listening(WorkCounter(entry, self.metrics)):
            yield

    # -- registry -----------------------------------------------------------------------------
    def build(self, docs: list[tuple[str, str]], warm: bool = True) -> tuple[CorpusEntry, bool]:
        """Register documents (blocking: run it off the event loop). Returns (entry, new)."""
        corpus = self.corpus_of(docs)
        with self._lock:
            existing = self._entries.get(corpus.hash[:16])
            if existing is not None:
                return existing, False
            if len(self._entries) >= self.max_corpora:
                raise ServiceError(f"this server keeps at most {self.max_corpora} corpora "
                                   "(--max-corpora); DELETE /v1/corpora/{id} one first",
                                   "conflict")
            entry = CorpusEntry(id=corpus.hash[:16], corpus=corpus)
            self._entries[entry.id] = entry
        if warm:
            with self.counting(entry):
                self._warm(entry)
        return entry, True

    def corpus_of(self, docs: list[tuple[str, str]]) -> Corpus:
        """The documents as the pipeline's Corpus (tokenized here, on a request thread)."""
        documents = [Document(id=name, text=text, source=name) for name, text in docs]
        corpus = self.pipeline.corpus(documents)
        if corpus.n_tokens > self.max_request_tokens:
            raise ServiceError(f"the documents have {corpus.n_tokens} tokens; this server "
                               f"takes at most {self.max_request_tokens} per request "
                               "(--max-request-tokens)", "too_large")
        return corpus

    def _warm(self, entry: CorpusEntry) -> None:
        corpus = entry.corpus
        corpus.chunks  # the default chunking, memoised on the Corpus
        for r in retrievers_of(self.pipeline):
            r.index(corpus)  # under the retriever's own lock
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
                self.pipeline.forget(corpus)

    def holds(self, corpus_id: str) -> bool:
        """Whether ``corpus_id`` is registered here."""
        return corpus_id in self._entries

    def get(self, corpus_id: str) -> CorpusEntry:
        entry = self._entries.get(corpus_id)
        if entry is None:
            raise ServiceError(f"no corpus {corpus_id!r} (POST /v1/corpora registers one; "
                               "GET /v1/corpora lists them)", "not_found")
        return entry

    def delete(self, corpus_id: str) -> CorpusEntry:
        entry = self.get(corpus_id)
        with self._lock:
            self._entries.pop(corpus_id, None)
            self.pipeline.forget(entry.corpus)
        return entry

    def all(self) -> list[CorpusEntry]:
        return list(self._entries.values())
