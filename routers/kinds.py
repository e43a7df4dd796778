"""Find a pipeline's strategies by what they do, not by the names a pipeline file gave them.

A pipeline may call its RAG strategy ``rag``, ``retrieval`` or ``dense_edges``; routers reason
about *kinds* (full context, RAG, KV pages, agents). A strategy's kind is its class's ``name``
(``full_context``, ``rag``, ``kv_pages``, ``chain_of_agents``, ``map_reduce``); the two agent
strategies share the kind ``agents``. Strategies are never imported here, so a router works with
whichever of them exist and degrades when one is missing.
"""

from __future__ import annotations

from typing import Any, Mapping

FULL = "full_context"
RAG = "rag"
PAGES = "kv_pages"
AGENTS = "agents"
KINDS = (FULL, RAG, PAGES, AGENTS)

_ALIASES = {
    "full_context": FULL, "full": FULL, "fullcontext": FULL, "long_context": FULL,
    "rag": RAG, "retrieval": RAG,
    "kv_pages": PAGES, "kvpages": PAGES, "pages": PAGES,
    "chain_of_agents": AGENTS, "map_reduce": AGENTS, "agents": AGENTS, "agent": AGENTS,
}


def kind_of(name: str, strategy: Any) -> str | None:
    """The kind of ``strategy`` (known by its class ``name``, else by its pipeline name)."""
    for key in (getattr(strategy, "name", None), name):
        if isinstance(key, str) and key.lower() in _ALIASES:
            return _ALIASES[key.lower()]
    return None


def by_kind(strategies: Mapping[str, Any]) -> dict[str, list[str]]:
    """Kind -> pipeline names of the strategies of that kind, in the pipeline's order."""
    out: dict[str, list[str]] = {}
    for name, s in strategies.items():
        k = kind_of(name, s)
        if k is not None:
            out.setdefault(k, []).append(name)
    return out


def first_of(strategies: Mapping[str, Any], kind: str) -> str | None:
    names = by_kind(strategies).get(kind, [])
    return names[0] if names else None


def resolve_name(strategies: Mapping[str, Any], wanted: str) -> str | None:
    """A pipeline strategy name for ``wanted``: the exact name, else the first of that kind."""
    if wanted in strategies:
        return wanted
    kind = _ALIASES.get(wanted.lower())
    return first_of(strategies, kind) if kind else None
