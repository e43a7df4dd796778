"""orchestra/checks.py: a component's options are checked once, by its class's check_options,
when it is built (orchestra.spec.Component) and when a file is validated; the message names the
component that was built; constructors take every option explicitly (no **kwargs)."""

from __future__ import annotations

import pytest

from orchestra.backends.scripted import ScriptedBackend
from orchestra.errors import ConfigError, OptionError
from orchestra.registry import names, resolve
from orchestra.retrievers.bm25 import BM25Retriever
from orchestra.spec import parameters
from orchestra.strategies.full_context import FullContext
from orchestra.strategies.rag import RAG



@pytest.mark.parametrize("build, message", [
    (lambda b: FullContext(b, max_tokens=0),
     "strategy 'full_context': max_tokens must be a positive integer"),
    (lambda b: RAG(b, retriever="bm25", top_k_tokens=0),
     "strategy 'rag': top_k_tokens must be a positive integer"),
    (lambda b: RAG(b, retriever="bm25", reader_template="nope"), "strategy 'rag': reader_template"),
    (lambda b: BM25Retriever(b, k1=-1), "retriever 'bm25': need k1 >= 0"),
    (lambda b: BM25Retriever(b, chunking="pages"), "retriever 'bm25': chunking must be one of"),
])
def test_a_bad_option_names_the_component_built(build, message):
    with pytest.raises(OptionError, match=message) as e:
        build(ScriptedBackend())
    assert "strategy 'strategy'" not in str(e.value)


def test_options_are_checked_once_per_construction():
    calls = []

    class Counted(FullContext):
        @classmethod
        def check_options(cls, options):
            calls.append(dict(options))
            super().check_options(options)

    Counted(ScriptedBackend(), truncation="head", max_tokens=12)
    assert calls == [{"truncation": "head", "max_tokens": 12}]


def test_constructors_take_every_option_explicitly():
    open_kw = [(kind, name) for kind in ("backend", "retriever", "strategy", "router")
               for name in names(kind)
               if _open(kind, name)]
    assert not open_kw, f"constructors taking **kwargs: {open_kw}"


def _open(kind: str, name: str) -> bool:
    try:
        cls = resolve(kind, name)
    except ConfigError:  # an extra that is not installed here (vllm)
        return False
    return parameters(cls)[1]


def test_a_subclass_keeps_the_base_reading_defaults():
    from orchestra.strategies.base import Strategy

    base, _ = parameters(Strategy)
    for name in ("rag", "full_context", "kv_pages"):
        own, _ = parameters(resolve("strategy", name))
        assert {k: own[k] for k in base} == base, name
