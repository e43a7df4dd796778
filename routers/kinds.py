"""Find a pipeline's strategies by what they do, not by the names a pipeline file gave them.

A pipeline may call its RAG strategy ``rag``, ``retrieval`` or ``dense_edges``; routers reason
about *kinds*, which each strategy declares (``Strategy.kind``: full_context, rag, kv_pages,
agents). A wanted name in a router's order or a learned router's labels is a pipeline name, a
kind, or a registered strategy type (``chain_of_agents`` finds a strategy of that type).
"""

from __future__ import annotations

from typing import Mapping

from orchestra.strategies.base import AGENTS, FULL, KINDS, PAGES, RAG, Strategy

__all__ = ["AGENTS", "FULL", "KINDS", "PAGES", "RAG", "by_kind", "candidates", "first_of",
           "resolve_name"]


def by_kind(strategies: Mapping[str, Strategy]) -> dict[str, list[str]]:
    """Kind -> pipeline names of the strategies of that kind, in the pipeline's order."""
    out: dict[str, list[str]] = {}
    for name, s in strategies.items():
        if s.kind is not None:
            out.setdefault(s.kind, []).append(name)
    return out


def candidates(strategies: Mapping[str, Strategy], wanted: str) -> list[str]:
    """Pipeline names ``wanted`` stands for: itself, else the strategies of that kind, else
    those of that registered type, in the pipeline's order."""
    if wanted in strategies:
        return [wanted]
    return ([n for n, s in strategies.items() if s.kind == wanted]
            or [n for n, s in strategies.items() if s.name == wanted])


def first_of(strategies: Mapping[str, Strategy], kind: str) -> str | None:
    names = by_kind(strategies).get(kind, [])
    return names[0] if names else None


def resolve_name(strategies: Mapping[str, Strategy], wanted: str) -> str | None:
    """A pipeline strategy name for ``wanted`` (see ``candidates``), or None."""
    names = candidates(strategies, wanted)
    return names[0] if names else None
