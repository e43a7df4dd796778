"""Component types that pipelines may build, by kind and name.

Built-in types are listed as import paths so optional dependencies (vLLM) load only when used.
Third-party packages add types through the ``orchestra.components`` entry point group: an entry
named ``KIND.NAME`` (e.g. ``retriever.splade``) pointing at ``module:Class``. A dotted import
path in a pipeline file is refused unless the caller allows that module explicitly, so a file
cannot be used to run arbitrary code.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from contextvars import ContextVar
from importlib.metadata import entry_points
from typing import Any, Iterable, Iterator

from orchestra.errors import ConfigError

COMPONENT_KINDS = ("backend", "retriever", "strategy", "router")

_BUILTIN: dict[str, dict[str, str]] = {
    "backend": {
        "transformers": "orchestra.backends.hf:TransformersBackend",
        "vllm": "orchestra.backends.vllm_backend:VLLMBackend",
        "openai": "orchestra.backends.openai_backend:OpenAIBackend",
    },
    "retriever": {
        "bm25": "orchestra.retrievers.bm25:BM25Retriever",
        "dense": "orchestra.retrievers.dense:DenseRetriever",
        "hybrid": "orchestra.retrievers.hybrid:HybridRetriever",
        "graph": "orchestra.retrievers.graph:GraphRetriever",
        # A LangChain / LlamaIndex retriever named in a pipeline file by its factory's import
        # path (allowed modules only, see import_allowed); the extras bring the libraries.
        "langchain": "orchestra.integrations.langchain:LangChainRetriever",
        "llama_index": "orchestra.integrations.llama_index:LlamaIndexRetriever",
    },
    "strategy": {
        "full_context": "orchestra.strategies.full_context:FullContext",
        "rag": "orchestra.strategies.rag:RAG",
        "kv_pages": "orchestra.strategies.kv_pages:KVPages",
        "chain_of_agents": "orchestra.strategies.agents:ChainOfAgents",
        "map_reduce": "orchestra.strategies.agents:MapReduce",
    },
    "router": {
        "fixed": "orchestra.routers.fixed:FixedRouter",
        "rules": "orchestra.routers.rules:RulesRouter",
        "self_route": "orchestra.routers.self_route:SelfRouter",
        "learned": "orchestra.routers.learned:LearnedRouter",
        "llm": "orchestra.routers.llm:LLMRouter",
    },
}

_extra: dict[str, dict[str, Any]] = {k: {} for k in COMPONENT_KINDS}
_entry_points_loaded = False


def register(kind: str, name: str, target: Any | None = None):
    """Register ``target`` (a class or 'module:Class') as ``kind``/``name``; usable as decorator."""
    if kind not in COMPONENT_KINDS:
        raise ConfigError(f"unknown component kind {kind!r}; kinds: "
                          f"{', '.join(COMPONENT_KINDS)}")

    def deco(obj):
        _extra[kind][name] = obj
        return obj

    return deco(target) if target is not None else deco


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group="orchestra.components"):
        kind, _, name = ep.name.partition(".")
        if kind in COMPONENT_KINDS and name:
            _extra[kind].setdefault(name, ep.value)


def registered(kind: str) -> dict[str, Any]:
    """Name -> class or 'module:Class' of every type of ``kind`` (built-in, then added)."""
    _load_entry_points()
    return {**_BUILTIN.get(kind, {}), **_extra.get(kind, {})}


def names(kind: str) -> list[str]:
    _load_entry_points()
    return sorted({*_BUILTIN.get(kind, {}), *_extra.get(kind, {})})


def _import(path: str, what: str) -> Any:
    module, _, attr = path.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"{what} cannot be loaded: {e}") from None
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise ConfigError(f"{what}: {module} has no {attr}") from None


# The modules the caller allowed while a pipeline is being built (Pipeline.from_config sets it),
# for components whose options name code by import path (a foreign retriever's factory).
_allowed: ContextVar[tuple[str, ...]] = ContextVar("orchestra_allow_modules", default=())


@contextmanager
def allowing(allow_modules: Iterable[str]) -> Iterator[None]:
    token = _allowed.set(tuple(allow_modules))
    try:
        yield
    finally:
        _allowed.reset(token)


def check_allowed(path: Any, what: str) -> tuple[str, str]:
    """(module, attribute) of an import path the caller allowed, without importing anything:
    `orchestra validate` and the constructor refuse the same paths."""
    module, sep, attr = path.partition(":") if isinstance(path, str) else ("", "", "")
    if not sep or not module or not attr:
        raise ConfigError(f"{what}: {path!r} is not an import path of the form module:attribute")
    allowed = _allowed.get()
    if not any(module == m or module.startswith(m + ".") for m in allowed):
        raise ConfigError(f"{what}: {path!r} names code in module {module!r}, which the caller "
                          f"has not allowed (allow_modules= / --allow-module {module})")
    return module, attr


def import_allowed(path: str, what: str) -> Any:
    """The object at ``module:attr`` (``attr`` may be dotted, e.g. ``Class.from_documents``),
    refused unless the module is among those the caller allowed (``allow_modules=``, the
    CLI's ``--allow-module``): a pipeline file must not be a way to run arbitrary code."""
    module, attr = check_allowed(path, what)
    head, _, rest = attr.partition(".")
    obj = _import(f"{module}:{head}", what)
    for part in rest.split(".") if rest else []:
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what}: {module}:{head} has no {part}") from None
    return obj


def resolve(kind: str, type_name: str, allow_modules: Iterable[str] = ()) -> Any:
    """The class for ``type_name``: a registered name, or an allowed ``module:Class`` path."""
    _load_entry_points()
    if kind not in COMPONENT_KINDS:
        raise ConfigError(f"unknown component kind {kind!r}")
    if type_name in _extra[kind]:
        obj = _extra[kind][type_name]
        return _import(obj, f"{kind} {type_name!r}") if isinstance(obj, str) else obj
    if type_name in _BUILTIN[kind]:
        return _import(_BUILTIN[kind][type_name], f"{kind} {type_name!r}")
    if ":" in type_name or "." in type_name:
        module = type_name.split(":")[0] if ":" in type_name else type_name.rsplit(".", 1)[0]
        allowed = set(allow_modules)
        if not any(module == m or module.startswith(m + ".") for m in allowed):
            raise ConfigError(
                f"{kind} type {type_name!r} is an import path; pipeline files may only name "
                f"registered types ({', '.join(names(kind))}) unless the caller allows module "
                f"{module!r} with allow_modules="
            )
        path = type_name if ":" in type_name else ":".join(type_name.rsplit(".", 1))
        return _import(path, f"{kind} {type_name!r}")
    raise ConfigError(f"unknown {kind} type {type_name!r}; known: {', '.join(names(kind))}")
