"""orchestra/pipeline.py: every way of building a Pipeline reads its settings through one path
(from_located), run and stream take the same arguments, and a caller's generation settings
reach the strategy's read."""

from __future__ import annotations

import inspect

import pytest
import yaml

from conftest import REPO
from orchestra.backends.base import GenerationSettings
from orchestra.backends.scripted import ScriptedBackend
from orchestra.corpus import Document
from orchestra.errors import ConfigError
from orchestra.pipeline import DEFAULT_PIPELINE, Pipeline
from orchestra.strategies.full_context import FullContext
from orchestra.yaml_lines import load_located

DOC = REPO / "examples" / "data" / "gettysburg_address.txt"
GETTYSBURG = Document(id=DOC.name, text=DOC.read_text(), source=str(DOC))
SCRIPTED = "orchestra.backends.scripted"
DATA = {
    "backend": {"type": f"{SCRIPTED}:ScriptedBackend", "context_window": 4096},
    "retrievers": {"lexical": {"type": "bm25", "chunk_tokens": 64}},
    "strategies": {"rag": {"type": "rag", "retriever": "lexical", "top_k_tokens": 256},
                   "full": {"type": "full_context", "max_tokens": 24}},
    "router": {"type": "self_route", "first": "rag", "fallback": ["full"]},
}


def _every_way(data: dict, tmp_path) -> dict[str, Pipeline]:
    text = yaml.safe_dump(data, sort_keys=False)
    path = tmp_path / "pipe.yaml"
    path.write_text(text)
    allow = [SCRIPTED]
    return {
        "from_yaml": Pipeline.from_yaml(path, allow),
        "from_yaml_text": Pipeline.from_yaml_text(text, allow),
        "from_dict": Pipeline.from_dict(data, allow),
        "from_located": Pipeline.from_located(load_located(text, "<text>"), allow),
    }


def test_every_construction_path_builds_the_same_pipeline(tmp_path):
    pipes = _every_way(DATA, tmp_path)
    full = {name: p.to_config(full=True) for name, p in pipes.items()}
    assert all(c == full["from_dict"] for c in full.values()), full
    # Each keeps its source for to_yaml, and the model profile filled in what it left out.
    assert all(p.to_config() == DATA for p in pipes.values())
    assert full["from_dict"]["strategies"]["rag"]["top_k_tokens"] == 256
    assert all(type(p.router).__name__ == "SelfRouter" for p in pipes.values())


@pytest.mark.parametrize("bad, field", [
    ({"strategies": {"rag": {"type": "rag", "retriever": "lexical", "top_k_tokens": 0}}},
     "strategies.rag.top_k_tokens"),
    ({"strategies": {"rag": {"type": "rag", "retriever": "nowhere"}}}, "strategies.rag.retriever"),
    ({"strategies": {"rag": {"type": "rag", "typo_option": 1}}}, "strategies.rag.typo_option"),
])
def test_every_construction_path_refuses_the_same_way(tmp_path, bad, field):
    data = {**DATA, **bad, "router": {"type": "fixed", "strategy": "rag"}}
    text = yaml.safe_dump(data, sort_keys=False)
    (tmp_path / "pipe.yaml").write_text(text)
    ways = [lambda: Pipeline.from_yaml(tmp_path / "pipe.yaml", [SCRIPTED]),
            lambda: Pipeline.from_yaml_text(text, [SCRIPTED]),
            lambda: Pipeline.from_dict(data, [SCRIPTED])]
    for way in ways:
        with pytest.raises(ConfigError, match=f"field {field}"):
            way()


def test_from_dict_refuses_what_is_not_a_mapping():
    with pytest.raises(ConfigError, match="mapping"):
        Pipeline.from_dict(["not", "a", "pipeline"])


def test_default_pipeline_names_its_strategies_by_type():
    from orchestra.registry import names

    strategies = DEFAULT_PIPELINE["strategies"]
    assert all(name == spec["type"] for name, spec in strategies.items())
    assert set(strategies) <= set(names("strategy"))
    router = DEFAULT_PIPELINE["router"]
    assert set([router["first"], *router["fallback"]]) <= set(strategies)


def test_run_and_stream_take_the_same_arguments():
    run = inspect.signature(Pipeline.run).parameters
    stream = inspect.signature(Pipeline.stream).parameters
    assert [(p.name, p.kind, p.default) for p in run.values()] == \
        [(p.name, p.kind, p.default) for p in stream.values()]
    assert run["generation"].kind is inspect.Parameter.KEYWORD_ONLY


def test_a_strategy_not_in_the_pipeline_is_refused():
    b = ScriptedBackend(lambda r: "1863", context_window=4096)
    pipe = Pipeline(b, {"full": FullContext(b)})
    with pytest.raises(Exception, match="'pages' is not in this pipeline.*full"):
        pipe.run("When?", [GETTYSBURG], strategy="pages")
    with pytest.raises(Exception, match="'pages' is not in this pipeline.*full"):
        list(pipe.stream("When?", [GETTYSBURG], strategy="pages"))


@pytest.mark.parametrize("how", ["run", "stream", "routed"])
def test_generation_settings_reach_the_strategys_read(how):
    b = ScriptedBackend(lambda r: "In 1863.", context_window=4096)
    pipe = Pipeline(b, {"full": FullContext(b, max_tokens=24)})
    settings = GenerationSettings(max_tokens=9, temperature=0.5, seed=7, stop=["\n\n"])
    strategy = None if how == "routed" else "full"
    if how == "stream":
        list(pipe.stream("When?", [GETTYSBURG], strategy, generation=settings))
    else:
        pipe.run("When?", [GETTYSBURG], strategy, generation=settings)
    last = b.requests[-1]
    assert (last.max_tokens, last.temperature, last.seed, last.stop) == (9, 0.5, 7, ["\n\n"])
    pipe.run("When?", [GETTYSBURG], strategy)  # none given: the strategy's own
    assert (b.requests[-1].max_tokens, b.requests[-1].seed) == (24, None)


def test_the_same_documents_are_one_corpus_and_the_table_is_bounded():
    b = ScriptedBackend(lambda r: "x", context_window=4096)
    pipe = Pipeline(b, {"full": FullContext(b)})
    first = pipe.corpus([GETTYSBURG])
    assert pipe.corpus([GETTYSBURG]) is first
    for i in range(40):
        pipe.corpus([Document(id=f"d{i}", text=f"text number {i}")])
    assert pipe.corpus([GETTYSBURG]) is not first  # the oldest were let go
