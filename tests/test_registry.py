"""orchestra/registry.py: component types by kind and name; import paths only where allowed."""

import pytest

from orchestra import registry
from orchestra.errors import ConfigError
from orchestra.registry import allowing, import_allowed, names, register, registered, resolve


def test_builtins_resolve_to_their_classes_by_name():
    from orchestra.strategies.full_context import FullContext
    from orchestra.routers.fixed import FixedRouter

    assert resolve("strategy", "full_context") is FullContext
    assert resolve("router", "fixed") is FixedRouter
    assert {"transformers", "openai", "vllm"} <= set(names("backend"))
    assert names("strategy") == sorted(names("strategy"))  # listed in order, for messages


def test_an_unknown_kind_is_refused_naming_the_kinds():
    with pytest.raises(ConfigError, match="unknown component kind 'widget'; kinds: backend"):
        register("widget", "w", object)
    with pytest.raises(ConfigError, match="unknown component kind 'widget'"):
        resolve("widget", "x")


def test_registered_types_are_found_as_classes_or_import_paths(monkeypatch):
    monkeypatch.setitem(registry._extra, "retriever", dict(registry._extra["retriever"]))

    @register("retriever", "mine")
    class Mine:
        pass

    register("retriever", "by_path", "orchestra.retrievers.bm25:BM25Retriever")
    from orchestra.retrievers.bm25 import BM25Retriever

    assert resolve("retriever", "mine") is Mine
    assert resolve("retriever", "by_path") is BM25Retriever
    assert registered("retriever")["mine"] is Mine and "mine" in names("retriever")


def test_an_import_path_is_refused_unless_its_module_is_allowed():
    with pytest.raises(ConfigError, match="pipeline files may only name registered types"):
        resolve("backend", "orchestra.backends.scripted:ScriptedBackend")
    from orchestra.backends.scripted import ScriptedBackend

    assert resolve("backend", "orchestra.backends.scripted:ScriptedBackend",
                   ("orchestra.backends",)) is ScriptedBackend  # a parent package allows it
    with pytest.raises(ConfigError, match="has no Nope"):
        resolve("backend", "orchestra.backends.scripted:Nope", ("orchestra.backends.scripted",))
    with pytest.raises(ConfigError, match="cannot be loaded"):
        resolve("backend", "orchestra.no_such_module:X", ("orchestra",))


def test_import_allowed_reads_the_modules_allowed_while_building():
    with pytest.raises(ConfigError, match="has not allowed"):
        import_allowed("json:loads", "retriever 'x' factory")
    with allowing(["json"]):
        import json

        assert import_allowed("json:JSONDecoder.decode", "factory") is json.JSONDecoder.decode
        with pytest.raises(ConfigError, match="not an import path"):
            import_allowed("json.loads", "factory")
    with pytest.raises(ConfigError, match="has not allowed"):  # the allowance ended
        import_allowed("json:loads", "factory")
