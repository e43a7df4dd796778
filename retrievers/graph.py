"""Graph retrieval: seeds from another retriever, expanded over a chunk graph by personalized
PageRank, so evidence next to or linked to a hit is found (multi-hop questions).

Edges (undirected, weights summed when several kinds join one pair):
- sequence: neighbouring chunks of one document;
- shared terms: chunks sharing a named entity (capitalised phrase) or a rare term that occurs in
  at most ``max_df`` chunks (frequent terms would make hubs that link everything);
- similarity: each chunk to its ``similarity_neighbours`` nearest chunks by embedding, when the
  seed retriever is (or contains) a dense retriever whose vectors can be reused.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from itertools import combinations
from typing import Any

import numpy as np

from orchestra.corpus import Chunk, Corpus
from orchestra.errors import OptionError
from orchestra.retrievers.base import Retriever, ScoredChunk, make_retriever
from orchestra.retrievers.bm25 import _stopwords, terms

_ENTITY = re.compile(r"\b[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*)*")
_NUMBER = re.compile(r"\b\d[\d,.]{2,}\b")
EDGE_KINDS = ("sequence", "terms", "similarity")


def chunk_keys(text: str) -> set[str]:
    """Named entities (capitalised phrases), numbers and stemmed terms of one chunk."""
    stop = _stopwords()
    keys = set()
    for m in _ENTITY.finditer(text):
        phrase = m.group(0).lower()
        if phrase not in stop and len(phrase) > 2:
            keys.add("e:" + phrase)
    keys.update("n:" + m.group(0).rstrip(".,") for m in _NUMBER.finditer(text))
    keys.update("t:" + t for t in terms(text) if len(t) > 3)
    return keys


class GraphRetriever(Retriever):
    name = "graph"
    score_kind = "ppr"

    @classmethod
    def check_options(cls, options: dict) -> None:
        """networkx comes with the [graph] extra: its absence is named by `orchestra validate`
        and before a model loads, not as an ImportError at index time."""
        from orchestra.extras import require

        require("graph", "the graph retriever")
        if options.get("chunk_tokens") is not None or options.get("overlap") is not None:
            raise OptionError("chunk_tokens" if "chunk_tokens" in options else "overlap",
                              "retriever 'graph' uses its seed retriever's chunking; set "
                              "chunk_tokens/overlap on the seed")
        super().check_options(options)
        alpha = options.get("alpha", 0.5)
        if not 0 < alpha < 1:
            raise OptionError("alpha", f"retriever 'graph': alpha must be in (0, 1), got {alpha}")
        if options.get("seed_k", 8) < 1 or options.get("hops", 2) < 0 \
                or options.get("max_df", 5) < 2 or options.get("max_nodes", 5000) < 1:
            raise OptionError(next(iter(options), ""),
                              "retriever 'graph': need seed_k >= 1, hops >= 0, max_df >= 2, "
                              "max_nodes >= 1")

    def __init__(self, backend=None, seed: Any = "dense", seed_k: int = 8, alpha: float = 0.5,
                 hops: int = 2, max_df: int = 5, sequence_weight: float = 1.0,
                 terms_weight: float = 1.0, similarity_weight: float = 1.0,
                 similarity_neighbours: int = 3, similarity_threshold: float = 0.6,
                 max_nodes: int = 5000, cache: bool = True, *,
                 chunk_tokens: int | None = None, overlap: int | None = None):
        """``chunk_tokens`` and ``overlap`` are the seed's (check_options refuses them here)."""
        self.seed = make_retriever(seed, backend)
        super().__init__(backend, chunk_tokens=self.seed.chunk_tokens,
                         overlap=self.seed.overlap, cache=cache,
                         chunking=getattr(self.seed, "chunking", "tokens"))
        self.seed_k, self.alpha, self.hops, self.max_df = int(seed_k), float(alpha), int(hops), int(max_df)
        self.weights = {"sequence": float(sequence_weight), "terms": float(terms_weight),
                        "similarity": float(similarity_weight)}
        self.similarity_neighbours = int(similarity_neighbours)
        self.similarity_threshold = float(similarity_threshold)
        self.max_nodes = int(max_nodes)
        self.graph = None
        self._pos: dict[str, int] = {}

    def index(self, corpus: Corpus) -> "GraphRetriever":
        with self._lock:
            self.seed.index(corpus)  # first: similarity edges reuse the seed's vectors
            super().index(corpus)
            self._pos = {c.id: i for i, c in enumerate(self.chunks)}
        return self

    # -- building ----------------------------------------------------------------------------
    def _build(self, chunks: list[Chunk], corpus: Corpus) -> None:
        edges: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        w_seq, w_terms, w_sim = (self.weights[k] for k in EDGE_KINDS)
        for i in range(1, len(chunks)):
            if chunks[i].doc_id == chunks[i - 1].doc_id and w_seq:
                edges[(i - 1, i)][0] += w_seq
        if w_terms:
            postings: dict[str, list[int]] = defaultdict(list)
            for i, c in enumerate(chunks):
                for key in chunk_keys(c.text):
                    postings[key].append(i)
            n = len(chunks)
            for key, ids in postings.items():
                if 2 <= len(ids) <= self.max_df:
                    # Rarer shared keys say more; normalise so one key weighs at most 1.
                    w = w_terms * math.log(n / len(ids) + 1) / math.log(n / 2 + 1) if n > 2 else w_terms
                    for a, b in combinations(ids, 2):
                        edges[(a, b)][1] += w
        vectors = self._seed_vectors()
        if w_sim and vectors is not None and self.similarity_neighbours > 0 and len(chunks) > 1:
            for a, b, s in self._similar_pairs(vectors):
                edges[(min(a, b), max(a, b))][2] = max(edges[(min(a, b), max(a, b))][2], w_sim * s)
        if edges:
            pairs = np.array(list(edges.keys()), dtype=np.int64)
            kinds = np.array(list(edges.values()), dtype=np.float32)
        else:
            pairs, kinds = np.zeros((0, 2), np.int64), np.zeros((0, 3), np.float32)
        self._edges = (pairs, kinds)
        self._make_graph(len(chunks), pairs, kinds)

    def _seed_vectors(self) -> np.ndarray | None:
        from orchestra.retrievers.dense import DenseRetriever

        members = getattr(self.seed, "retrievers", [self.seed])
        for m in members:
            if isinstance(m, DenseRetriever) and m.vectors is not None:
                return m.chunk_vectors()
        return None

    def _similar_pairs(self, vectors: np.ndarray):
        import faiss

        m = min(self.similarity_neighbours + 1, len(vectors))
        if len(vectors) < 20_000:
            index = faiss.IndexFlatIP(vectors.shape[1])
        else:
            index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.add(vectors)
        scores, nbrs = index.search(vectors, m)
        for a in range(len(vectors)):
            for s, b in zip(scores[a], nbrs[a]):
                if b >= 0 and b != a and s >= self.similarity_threshold:
                    yield a, int(b), float(s)

    def _make_graph(self, n: int, pairs: np.ndarray, kinds: np.ndarray) -> None:
        import networkx as nx

        g = nx.Graph()
        g.add_nodes_from(range(n))
        total = kinds.sum(axis=1)
        g.add_edges_from((int(a), int(b), {"weight": float(w), "sequence": float(k[0]),
                                           "terms": float(k[1]), "similarity": float(k[2])})
                         for (a, b), w, k in zip(pairs, total, kinds) if w > 0)
        self.graph = g

    def _state(self):
        pairs, kinds = self._edges
        return {"pairs": pairs, "kinds": kinds}

    def _load_state(self, state, chunks):
        pairs, kinds = state["pairs"], state["kinds"]
        if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) != len(kinds):
            raise ValueError("its edge arrays are malformed")
        if len(pairs) and (pairs.min() < 0 or pairs.max() >= len(chunks)):
            raise ValueError("its edges name chunks the corpus lacks")
        self._edges = (pairs, kinds)
        self._make_graph(len(chunks), pairs, kinds)

    # -- retrieval ---------------------------------------------------------------------------
    def _retrieve(self, question: str, k: int) -> list[ScoredChunk]:
        import networkx as nx

        seeds = self.seed.retrieve(question, max(self.seed_k, k))
        if not seeds:
            return []
        # Teleport mass grows with the square of how far a seed's score rises above the weakest
        # (on a 0-1 scale, so any score kind works): a clear top hit dominates, a flat list
        # spreads evenly, and a crowd of middling seeds cannot outweigh the best one.
        lo, hi = min(s.score for s in seeds), max(s.score for s in seeds)
        pers = {}
        for s in seeds:
            i = self._pos[s.id]
            rel = (s.score - lo) / (hi - lo) if hi > lo else 1.0
            pers[i] = pers.get(i, 0.0) + rel * rel + 0.05
        nodes = set(pers)
        frontier = set(pers)
        for _ in range(self.hops):
            nxt = {n for f in frontier for n in self.graph.neighbors(f)} - nodes
            if len(nodes) + len(nxt) > self.max_nodes:
                break
            nodes |= nxt
            frontier = nxt
        sub = self.graph.subgraph(nodes)
        pr = nx.pagerank(sub, alpha=self.alpha, personalization=pers, weight="weight")
        ranked = sorted(pr.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [ScoredChunk(self.chunks[i], float(s)) for i, s in ranked]

    def neighbours(self, chunk_id: str) -> dict[str, dict[str, float]]:
        """The chunk's graph neighbours with their edge weights by kind (for inspection)."""
        i = self._pos[chunk_id]
        return {self.chunks[j].id: {k: d[k] for k in EDGE_KINDS}
                for j, d in self.graph[i].items()}
