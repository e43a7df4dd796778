"""Reciprocal rank fusion of any retrievers (Cormack et al., 2009).

RRF needs only ranks, so lexical and dense scores, on unrelated scales, combine without tuning.
The retrievers must share one chunking so their hits name the same chunks.
"""

from __future__ import annotations

from typing import Any, Sequence

from orchestra.corpus import Chunk, Corpus
from orchestra.errors import ConfigError
from orchestra.retrievers.base import Retriever, ScoredChunk, make_retriever


class HybridRetriever(Retriever):
    name = "hybrid"
    score_kind = "rrf"
    persistent = False  # each member persists its own index
    builds_index = False  # and reports its own index work

    def __init__(self, backend=None, retrievers: Sequence[Any] | None = None,
                 weights: Sequence[float] | None = None, rrf_k: int = 60, depth: int = 50,
                 chunk_tokens: int | None = None, overlap: int | None = None, cache: bool = True,
                 chunking: str | None = None):
        specs = list(retrievers) if retrievers is not None else ["dense", "bm25"]
        if not specs:
            raise ConfigError("retriever 'hybrid' needs at least one retriever to fuse")
        members = []
        for s in specs:
            if isinstance(s, (str, dict)) and (chunk_tokens or overlap is not None or chunking):
                s = {"type": s} if isinstance(s, str) else dict(s)
                if chunk_tokens:
                    s.setdefault("chunk_tokens", chunk_tokens)
                if overlap is not None:
                    s.setdefault("overlap", overlap)
                if chunking:
                    s.setdefault("chunking", chunking)
            members.append(make_retriever(s, backend))
        chunkings = {(getattr(m, "chunk_tokens", None), getattr(m, "overlap", None),
                      getattr(m, "chunking", "tokens")) for m in members}
        if len(chunkings) > 1:
            how = ", ".join(f"{m.name}: {c[0]}/{c[1]}/{c[2]}" for m, c in zip(members, [
                (m.chunk_tokens, m.overlap, getattr(m, "chunking", "tokens")) for m in members]))
            raise ConfigError(
                f"retriever 'hybrid': the fused retrievers chunk differently ({how}); "
                "give them the same chunk_tokens, overlap and chunking")
        ct, ov, ch = next(iter(chunkings))
        super().__init__(backend, chunk_tokens=ct, overlap=ov, cache=cache, chunking=ch)
        if weights is None:
            weights = [1.0] * len(members)
        if len(weights) != len(members) or any(w < 0 for w in weights):
            raise ConfigError(f"retriever 'hybrid': {len(weights)} weights for {len(members)} "
                              "retrievers (need one non-negative weight each)")
        if rrf_k < 1 or depth < 1:
            raise ConfigError("retriever 'hybrid': rrf_k and depth must be positive")
        self.retrievers = members
        self.weights = [float(w) for w in weights]
        self.rrf_k = int(rrf_k)
        self.depth = int(depth)

    def index(self, corpus: Corpus) -> "HybridRetriever":
        with self._lock:
            # Members may be shared with other strategies and indexed on another corpus since.
            for m in self.retrievers:
                m.index(corpus)
            return super().index(corpus)

    def _build(self, chunks: list[Chunk], corpus: Corpus) -> None:
        pass  # the members' indexes are the index

    def _retrieve(self, question: str, k: int) -> list[ScoredChunk]:
        fused: dict[str, float] = {}
        by_id: dict[str, Chunk] = {}
        depth = max(self.depth, 3 * k)
        for m, w in zip(self.retrievers, self.weights):
            for rank, sc in enumerate(m.retrieve(question, depth)):
                fused[sc.id] = fused.get(sc.id, 0.0) + w / (self.rrf_k + rank + 1)
                by_id[sc.id] = sc.chunk
        ranked = sorted(fused.items(), key=lambda kv: (-kv[1], by_id[kv[0]].order))[:k]
        return [ScoredChunk(by_id[i], s) for i, s in ranked]
