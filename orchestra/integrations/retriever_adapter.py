"""The shared half of the LangChain and LlamaIndex retriever adapters.

A foreign retriever returns texts (with metadata), not our Chunks. Hits are mapped back to the
corpus: by a ``chunk_id`` in their metadata (when the foreign index was built over our chunks),
by exact chunk text, by finding the text inside a document (so evidence keeps real character
offsets), and only as a last resort as a chunk of an outside source, so the reader still sees
what the foreign retriever found.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, Callable

from orchestra.corpus import Chunk, Corpus
from orchestra.errors import ConfigError, InputError
from orchestra.retrievers.base import Retriever, ScoredChunk


class ExternalRetriever(Retriever):
    """Base of the adapters; subclasses implement ``_make`` and ``_search``."""

    name = "external"
    persistent = False  # the foreign retriever owns its index
    spec_hidden = ("retriever",)  # a live object, not a setting a file could hold

    def spec(self, names=None, full=True):
        out = super().spec(names, full)
        if not isinstance(out.get("factory"), str):  # a callable given in Python: not a setting
            out.pop("factory", None)
        return out

    @classmethod
    def check_options(cls, options: dict) -> None:
        """A factory named by import path must be in an allowed module (orchestra.checks:
        `orchestra validate` refuses what building would, before any model loads)."""
        super().check_options(options)
        if isinstance(options.get("factory"), str):
            from orchestra.errors import OptionError
            from orchestra.registry import check_allowed

            try:
                check_allowed(options["factory"], f"retriever {cls.name!r}: factory")
            except ConfigError as e:
                raise OptionError("factory", str(e)) from None

    def __init__(self, retriever: Any = None, *,
                 factory: Callable[[list], Any] | str | None = None,
                 factory_options: dict | None = None, backend: Any = None,
                 chunk_tokens: int | None = None, overlap: int | None = None):
        """``factory`` may be an import path (``module:attr``, as a pipeline file names it,
        e.g. ``langchain_community.retrievers:BM25Retriever.from_documents``), resolved only
        in a module the caller allowed; ``factory_options`` are passed to it as keywords."""
        if (retriever is None) == (factory is None):
            raise ConfigError(f"{type(self).__name__}: give exactly one of retriever= (a ready "
                              "retriever) or factory= (builds one over the corpus chunks)")
        if isinstance(factory, str):
            from orchestra.registry import import_allowed

            factory = import_allowed(factory, f"retriever {self.name!r}: factory")
        if factory is not None and not callable(factory):
            raise ConfigError(f"retriever {self.name!r}: factory must be callable, "
                              f"got {type(factory).__name__}")
        if factory_options:
            if not isinstance(factory_options, dict):
                raise ConfigError(f"retriever {self.name!r}: factory_options must be a mapping")
            factory = functools.partial(factory, **factory_options)
        super().__init__(backend=backend, chunk_tokens=chunk_tokens, overlap=overlap,
                         cache=False)
        self.external = retriever
        self.factory = factory
        self._by_id: dict[str, Chunk] = {}
        self._by_text: dict[str, Chunk] = {}

    def retrieve(self, question: str, k: int = 5) -> list[ScoredChunk]:
        # A ready foreign retriever may hold more passages than our corpus has chunks, so k is
        # not capped at the chunk count as it is for our own retrievers.
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty")
        if not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        if self.chunks is None:
            raise InputError(f"the {self.name} retriever has no index: call index(corpus) first")
        with self._lock:
            return self._retrieve(question.strip(), k)

    # -- Retriever hooks --------------------------------------------------------------------
    def _build(self, chunks: list[Chunk], corpus: Corpus) -> None:
        self._by_id = {c.id: c for c in chunks}
        self._by_text = {c.text.strip(): c for c in chunks}
        self._corpus = corpus
        if self.factory is not None:
            self.external = self._make(chunks)

    def _retrieve(self, question: str, k: int) -> list[ScoredChunk]:
        out = []
        for rank, (text, meta, score) in enumerate(self._search(question, k)[:k]):
            chunk = self._chunk_for(text, meta, rank)
            out.append(ScoredChunk(chunk, float(score) if score is not None else 1 / (rank + 1)))
        return out

    # -- for subclasses ---------------------------------------------------------------------
    def _make(self, chunks: list[Chunk]) -> Any:
        raise NotImplementedError

    def _search(self, question: str, k: int) -> list[tuple[str, dict, float | None]]:
        raise NotImplementedError

    # -- mapping hits to chunks -------------------------------------------------------------
    def _chunk_for(self, text: str, meta: dict, rank: int) -> Chunk:
        cid = meta.get("chunk_id")
        if cid in self._by_id:
            return self._by_id[cid]
        key = text.strip()
        if key in self._by_text:
            return self._by_text[key]
        corpus = self._corpus
        for doc in corpus.documents:
            at = doc.text.find(key) if key else -1
            if at != -1:
                # The order of the corpus chunk it starts in, so document_order still sorts it.
                order = next((c.order for c in self._by_id.values()
                              if c.doc_id == doc.id and c.start <= at < c.end), 0)
                return Chunk(id=_hid(doc.id, at, key), doc_id=doc.id, index=-1, order=order,
                             start=at, end=at + len(key), text=key,
                             n_tokens=corpus.tokenizer.count(key))
        source = str(meta.get("doc_id") or meta.get("source") or meta.get("file_name")
                     or "external")
        return Chunk(id=_hid(source, 0, text), doc_id=source, index=-1,
                     order=len(corpus.documents) + rank, start=0, end=len(text), text=text,
                     n_tokens=corpus.tokenizer.count(text))


def _hid(doc_id: str, start: int, text: str) -> str:
    return hashlib.sha256(f"{doc_id}\x00{start}\x00{text}".encode()).hexdigest()[:16]
