"""Where retrieved chunks go in the prompt.

- ``score``: best first.
- ``edges``: the strongest chunks at the start and the end, the weakest in the middle, where
  models attend least ("lost in the middle", Liu et al., 2023).
- ``document_order``: the order the chunks have in the corpus (OP-RAG, Yu et al., 2024), so the
  reader sees passages as the author wrote them; the default.
"""

from __future__ import annotations

from typing import Callable, Sequence

from orchestra.errors import ConfigError
from orchestra.retrievers.base import ScoredChunk


def by_score(items: Sequence[ScoredChunk]) -> list[ScoredChunk]:
    return sorted(items, key=lambda s: -s.score)  # stable: ties keep retrieval order


def edges(items: Sequence[ScoredChunk]) -> list[ScoredChunk]:
    """Ranks 1, 3, 5, ... from the front, ranks 2, 4, 6, ... from the back."""
    ranked = by_score(items)
    return ranked[0::2] + ranked[1::2][::-1]


def document_order(items: Sequence[ScoredChunk]) -> list[ScoredChunk]:
    return sorted(items, key=lambda s: (s.chunk.order, s.chunk.start))


POLICIES: dict[str, Callable[[Sequence[ScoredChunk]], list[ScoredChunk]]] = {
    "score": by_score,
    "edges": edges,
    "document_order": document_order,
}


def check_policy(name: str) -> str:
    if name not in POLICIES:
        raise ConfigError(f"unknown reorder policy {name!r}; choose one of "
                          f"{', '.join(POLICIES)}")
    return name


def reorder(items: Sequence[ScoredChunk], policy: str = "document_order") -> list[ScoredChunk]:
    return POLICIES[check_policy(policy)](items)
