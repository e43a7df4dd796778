"""Where retrieved chunks go in the prompt.

- ``score``: best first.
- ``edges``: the strongest chunks at the start and the end, the weakest in the middle, where
  models attend least ("lost in the middle", Liu et al., 2023).
- ``document_order``: the order the chunks have in the corpus (OP-RAG, Yu et al., 2024), so the
  reader sees passages as the author wrote them; the default.
- ``score_last``: best last, so rank 1 sits right before the question (templates put the
  question after the passages).
- ``edges_last``: LangChain's LongContextReorder: rank 1 last (next to the question), rank 2
  first, the weakest in the middle.
- ``long_context_reorder``: LangChain's LongContextReorder exactly, for any count (for an odd
  count it puts rank 1 first); what a plain LangChain pipeline reads (the parity pipeline).
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


def score_last(items: Sequence[ScoredChunk]) -> list[ScoredChunk]:
    return by_score(items)[::-1]


def edges_last(items: Sequence[ScoredChunk]) -> list[ScoredChunk]:
    """Ranks 2, 4, 6, ... from the front, ranks ..., 5, 3, 1 towards the back: rank 1 last.
    For an even count this is exactly LangChain's LongContextReorder; for an odd count that
    one puts rank 1 first, which is not the point of it."""
    ranked = by_score(items)
    return ranked[1::2] + ranked[0::2][::-1]


def long_context_reorder(items: Sequence[ScoredChunk]) -> list[ScoredChunk]:
    """langchain_community's LongContextReorder (its litm_reordering), step for step: the
    ranked list reversed, then every other item to the back, the rest to the front."""
    out: list[ScoredChunk] = []
    for i, item in enumerate(by_score(items)[::-1]):
        if i % 2 == 1:
            out.append(item)
        else:
            out.insert(0, item)
    return out


def document_order(items: Sequence[ScoredChunk]) -> list[ScoredChunk]:
    return sorted(items, key=lambda s: (s.chunk.order, s.chunk.start))


POLICIES: dict[str, Callable[[Sequence[ScoredChunk]], list[ScoredChunk]]] = {
    "score": by_score,
    "edges": edges,
    "document_order": document_order,
    "score_last": score_last,
    "edges_last": edges_last,
    "long_context_reorder": long_context_reorder,
}


def check_policy(name: str) -> str:
    if name not in POLICIES:
        raise ConfigError(f"unknown reorder policy {name!r}; choose one of "
                          f"{', '.join(POLICIES)}")
    return name


def reorder(items: Sequence[ScoredChunk], policy: str = "document_order") -> list[ScoredChunk]:
    return POLICIES[check_policy(policy)](items)
