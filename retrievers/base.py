"""The retriever interface: ``index(corpus)``, then ``retrieve(question, k) -> [ScoredChunk]``.

Each retriever chooses its own chunking (``corpus.chunk(chunk_tokens, overlap)``): a dense
retriever wants chunks its embedder can read whole, a lexical one does not care. Indexes persist
under ``cache_dir("indexes", <name>)`` in one ``.npz`` file per (corpus, settings), written with
``atomic_file`` so a crash never leaves a half-written index; an unreadable file is rebuilt with a
warning. Subclasses implement ``_build``, ``_retrieve`` and, to persist, ``_state`` /
``_load_state``.
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np

from orchestra import observe
from orchestra.cache import atomic_file, cache_dir, stable_hash
from orchestra.corpus import CHUNK_BOUNDARIES, Chunk, Corpus, check_chunking
from orchestra.errors import ConfigError, InputError, OptionError
from orchestra.spec import Component

log = logging.getLogger(__name__)

# Bump when the layout of stored index files changes, so old files are not misread.
INDEX_FORMAT = 1


class IndexCacheWarning(UserWarning):
    """A stored index could not be read and was rebuilt."""


@dataclass(frozen=True)
class ScoredChunk:
    chunk: Chunk
    score: float

    @property
    def id(self) -> str:
        return self.chunk.id

    @property
    def text(self) -> str:
        return self.chunk.text


def score_shape(scores: Iterable[float | ScoredChunk],
                  score_kind: str | None = None) -> dict[str, Any]:
    """How sure retrieval is, scale-free, for routers (no model call): ``retrieval_top`` (best
    score), ``retrieval_margin`` (best minus second), ``retrieval_rel_margin`` (margin over
    |best|), ``retrieval_lead`` ((best minus the mean) over |best|), ``retrieval_hits`` and,
    when given, ``retrieval_score_kind``. No scores: ``{}`` (the keys are absent)."""
    s = sorted((float(getattr(x, "score", x)) for x in scores), reverse=True)
    if not s:
        return {}
    top = s[0]
    second = s[1] if len(s) > 1 else top
    out: dict[str, Any] = {
        "retrieval_top": top,
        "retrieval_margin": top - second,
        "retrieval_rel_margin": (top - second) / abs(top) if top else 0.0,
        "retrieval_lead": (top - statistics.fmean(s)) / abs(top) if top else 0.0,
        "retrieval_hits": len(s),
    }
    if score_kind is not None:
        out["retrieval_score_kind"] = score_kind
    return out


class Retriever(Component, ABC):
    name: ClassVar[str] = "retriever"
    # What the scores mean; routers compare score shapes only within one kind.
    score_kind: ClassVar[str] = "score"
    # 128 tokens of SmolLM2's tokenizer are ~130-170 MiniLM word pieces: within its 256 limit.
    default_chunk_tokens: ClassVar[int] = 128
    default_overlap: ClassVar[int] = 16
    persistent: ClassVar[bool] = True
    # False for a retriever whose index is its members' (hybrid): it reports no index work.
    builds_index: ClassVar[bool] = True

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Value checks shared with `orchestra validate` (orchestra.checks): the constructor's
        own chunking checks."""
        from orchestra.checks import as_option_error

        given = {k: options[k] for k in ("chunk_tokens", "overlap") if k in options}
        if given:
            try:
                check_chunking(options.get("chunk_tokens") or cls.default_chunk_tokens,
                               cls.default_overlap if options.get("overlap") is None
                               else options["overlap"], f"retriever {cls.name!r}", ConfigError)
            except ConfigError as e:
                raise as_option_error(e, given) from None
        if options.get("chunking") not in (None, *CHUNK_BOUNDARIES):  # None: tokens
            raise OptionError("chunking", f"retriever {cls.name!r}: chunking must be one of "
                                          f"{', '.join(CHUNK_BOUNDARIES)}, not "
                                          f"{options['chunking']!r}")

    def __init__(self, backend: Any = None, chunk_tokens: int | None = None,
                 overlap: int | None = None, cache: bool = True, chunking: str = "tokens"):
        """``chunking``: ``tokens`` (fixed windows), ``structure`` (cut at paragraph, line,
        sentence, then word boundaries; at most ``chunk_tokens`` each) or ``characters``
        (LangChain's RecursiveCharacterTextSplitter defaults: ``chunk_tokens`` and ``overlap``
        then count characters); see Corpus.chunk."""
        # ``backend`` is accepted so a pipeline can build every component the same way.
        self.backend = backend
        self.chunk_tokens, self.overlap = check_chunking(
            chunk_tokens or self.default_chunk_tokens,
            self.default_overlap if overlap is None else overlap, f"retriever {self.name!r}",
            ConfigError)
        self.chunking = chunking or "tokens"
        self.cache = bool(cache)
        self.chunks: list[Chunk] | None = None
        self.corpus: Corpus | None = None
        self._key: str | None = None
        self._lock = threading.RLock()
        self.loaded_from_cache = False

    # -- public API --------------------------------------------------------------------------
    def index(self, corpus: Corpus) -> "Retriever":
        """Index ``corpus`` (a no-op when it is the corpus already indexed)."""
        if not isinstance(corpus, Corpus):
            raise InputError(f"index() needs a Corpus, got {type(corpus).__name__}")
        with self._lock:
            if corpus is self.corpus:
                return self
            chunks = corpus.chunk(self.chunk_tokens, self.overlap, self.chunking)
            key = self.cache_key(corpus, chunks)
            if key == self._key:
                self.corpus = corpus
                return self
            self._build_or_load(corpus, chunks, key)
            self.chunks, self.corpus, self._key = chunks, corpus, key
        return self

    def retrieve(self, question: str, k: int = 5) -> list[ScoredChunk]:
        """The ``k`` best chunks for ``question``, best first (fewer when fewer match)."""
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty")
        if not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        with self._lock:
            if self.chunks is None:
                raise InputError(f"the {self.name} retriever has no index: call index(corpus) "
                                 "first")
            if not self.chunks:
                return []
            return self._retrieve(question.strip(), min(k, len(self.chunks)))

    def exclusive(self) -> threading.RLock:
        """The retriever's lock, for a caller whose index() and retrieve() must see the same
        corpus (``with retriever.exclusive(): ...``): a shared retriever indexing another
        corpus in between would answer from the wrong documents. Re-entrant: index() and
        retrieve() take it too."""
        return self._lock

    @property
    def is_indexed(self) -> bool:
        return self.chunks is not None

    # -- persistence -------------------------------------------------------------------------
    def index_settings(self) -> dict[str, Any]:
        """The settings an index depends on (cache key): the spec with the chunking in effect;
        ``cache`` itself does not matter."""
        s = {k: v for k, v in self.spec().items() if k != "cache"}
        s.update(chunk_tokens=self.chunk_tokens, overlap=self.overlap, chunking=self.chunking)
        return s

    def cache_key(self, corpus: Corpus, chunks: Sequence[Chunk]) -> str:
        # Chunk ids pin the tokenizer too: the same text chunked by another tokenizer differs.
        return stable_hash(INDEX_FORMAT, self.name, self.index_settings(), corpus.hash,
                           [c.id for c in chunks])

    def index_path(self, corpus: Corpus, key: str) -> Path:
        return cache_dir("indexes", self.name) / f"{corpus.hash}-{key}.npz"

    def _build_or_load(self, corpus: Corpus, chunks: list[Chunk], key: str) -> None:
        self.loaded_from_cache = False
        path = self.index_path(corpus, key) if (self.cache and self.persistent) else None
        if path is not None and path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    state = {k: z[k] for k in z.files}
                meta = json.loads(str(state.pop("__meta__")))
                if meta.get("key") != key or meta.get("n_chunks") != len(chunks):
                    raise ValueError("it belongs to another corpus or settings")
                self._load_state(state, chunks)
                self.loaded_from_cache = True
                self._report(observe.INDEX_LOADED)
                log.info("loaded %s index from %s", self.name, path)
                return
            except Exception as e:  # any unreadable file is rebuilt, never trusted
                warnings.warn(f"{self.name} index file {path} is corrupt or partial ({e}); "
                              "rebuilding it", IndexCacheWarning, stacklevel=3)
        self._build(chunks, corpus)
        self._report(observe.INDEX_BUILT)
        if path is not None:
            state = self._state()
            if state is not None:
                meta = json.dumps({"key": key, "n_chunks": len(chunks), "name": self.name,
                                   "format": INDEX_FORMAT})
                with atomic_file(path) as f:
                    np.savez(f, __meta__=np.array(meta), **state)

    def _report(self, what: str) -> None:
        if self.builds_index:
            observe.work(what, retriever=self.name)

    # -- for subclasses ----------------------------------------------------------------------
    @abstractmethod
    def _build(self, chunks: list[Chunk], corpus: Corpus) -> None: ...

    @abstractmethod
    def _retrieve(self, question: str, k: int) -> list[ScoredChunk]: ...

    def _state(self) -> dict[str, np.ndarray] | None:
        """Arrays that restore the index (None: nothing to persist)."""
        return None

    def _load_state(self, state: dict[str, np.ndarray], chunks: list[Chunk]) -> None:
        raise ValueError(f"{self.name} indexes are not persisted")

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.spec(full=False).items())
        return f"{type(self).__name__}({opts})"


def make_retriever(spec: Any, backend: Any = None) -> Retriever:
    """A Retriever from an instance, a registered name ("dense") or a dict with a ``type``."""
    from orchestra.registry import resolve

    if isinstance(spec, Retriever):
        return spec
    if isinstance(spec, str):
        spec = {"type": spec}
    if isinstance(spec, dict):
        spec = dict(spec)
        type_name = spec.pop("type", None)
        if not type_name:
            raise ConfigError(f"a retriever setting needs a 'type' (one of bm25, dense, hybrid, "
                              f"graph), got {spec!r}")
        cls = resolve("retriever", type_name)
        try:
            return cls(backend=backend, **spec)
        except TypeError as e:
            raise ConfigError(f"retriever {type_name!r}: {e}") from None
    if callable(getattr(spec, "retrieve", None)) and callable(getattr(spec, "index", None)):
        return spec  # duck-typed retrievers (adapters) are used as they are
    raise ConfigError(f"cannot build a retriever from {type(spec).__name__} {spec!r}")
