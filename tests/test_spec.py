"""One spec per component (orchestra/spec.py), derived from constructor keywords.

The round trip builds every registered component type in Python with settings that differ from
the defaults, writes the pipeline with to_yaml(), reads it back with from_yaml_text() (a real
TransformersBackend over the tiny random Llama; the model is only plumbing here) and compares
every component's spec: an option a constructor takes but the spec loses fails here.
"""

from __future__ import annotations

import json

import pytest
import yaml

from orchestra import registry
from orchestra.backends.hf import TransformersBackend
from orchestra.config import load_config_text
from orchestra.pipeline import Pipeline
from orchestra.retrievers.bm25 import BM25Retriever
from orchestra.retrievers.dense import DenseRetriever
from orchestra.retrievers.graph import GraphRetriever
from orchestra.retrievers.hybrid import HybridRetriever
from orchestra.routers.fixed import FixedRouter
from orchestra.routers.learned import LearnedRouter
from orchestra.routers.tree import train
from orchestra.routers.llm import LLMRouter
from orchestra.routers.rules import RulesRouter
from orchestra.routers.self_route import SelfRouter
from orchestra.spec import entry, parameters
from orchestra.strategies.agents import ChainOfAgents, MapReduce
from orchestra.strategies.full_context import FullContext
from orchestra.strategies.kv_pages import KVPages
from orchestra.strategies.rag import RAG

TERSE = {"reader_system": "Answer in three words.",
         "reader": "Text:\n{context}\n\nQ: {question}\nA:"}


def _learned_model(tmp_path) -> str:
    rows = []
    for q, (tokens, best) in enumerate([(300, "full"), (400, "full"), (20000, "rag"),
                                         (30000, "rag"), (500, "full"), (25000, "rag")]):
        for strat in ("full", "rag"):
            rows.append({"sample_id": f"q{q}", "question": "q", "strategy": strat,
                         "scores": {"contains": float(strat == best)},
                         "cost": {"prompt_tokens": 10}, "features": {"corpus_tokens": tokens}})
    path = tmp_path / "router.json"
    train(rows, min_leaf=1).save(path)
    return str(path)


def _components(backend, tmp_path):
    bm25 = BM25Retriever(k1=1.2, stem=False)
    dense = DenseRetriever(batch_size=16, show_progress=False)
    retrievers = {"bm25": bm25, "dense": dense,
                  "hybrid": HybridRetriever(retrievers=[dense, bm25], rrf_k=30),
                  "graph": GraphRetriever(seed=bm25, alpha=0.3, hops=1)}
    strategies = {
        "full": FullContext(backend, truncation="head", max_tokens=20, prompts=TERSE),
        "rag": RAG(backend, retriever=retrievers["hybrid"], top_k_tokens=300, reorder="edges",
                   prompts=TERSE),
        "rag_inline": RAG(backend, retriever=BM25Retriever(chunk_tokens=64, overlap=0)),
        "pages": KVPages(backend, page_size=32, top_pages=4, local=64, chunk=64),
        "chain": ChainOfAgents(backend, chunk_tokens=300, note_tokens=100,
                               prompts={"manager": "N:{notes} Q:{question}"}),
        "mapreduce": MapReduce(backend, chunk_tokens=250, min_overlap=None),
    }
    routers = [
        FixedRouter(strategies, strategy="rag"),
        RulesRouter(strategies, effective_fraction=0.25, orders={"short": ["full", "rag"]}),
        SelfRouter(strategies, first="rag", fallback=["full", "chain"]),
        LearnedRouter(strategies, model=_learned_model(tmp_path)),
        LLMRouter(strategies, max_tokens=4, order_by_rules=False),
    ]
    return retrievers, strategies, routers


def _specs(pipe: Pipeline) -> dict:
    names = {id(v): k for k, v in {**pipe.retrievers, **pipe.strategies}.items()}
    return {"backend": entry(pipe.backend),
            **{f"retriever {n}": entry(r, names) for n, r in pipe.retrievers.items()},
            **{f"strategy {n}": entry(s, names) for n, s in pipe.strategies.items()},
            "router": entry(pipe.router, names)}


def test_every_registered_type_survives_to_yaml_and_back(tiny_llama_dir, tmp_path):
    backend = TransformersBackend(model=str(tiny_llama_dir), device="cpu", batch_size=2)
    retrievers, strategies, routers = _components(backend, tmp_path)
    seen = {"backend": {entry(backend)["type"]}, "retriever": set(), "strategy": set(),
            "router": set()}
    for router in routers:
        pipe = Pipeline(backend, strategies, router, retrievers, chunk_tokens=100, overlap=10)
        text = pipe.to_yaml()
        again = Pipeline.from_yaml_text(text)
        # Every option of every component, defaults included, as rebuilt from the file.
        assert again.to_config(full=True) == pipe.to_config(full=True), text
        assert again.to_yaml() == text
        assert _specs(again)["strategy rag"] == _specs(pipe)["strategy rag"]
        for name, spec in _specs(again).items():
            seen[name.split()[0]].add(spec["type"])
    # The inline retriever was written under a name of its own and rebuilt from it.
    assert again.retrievers["rag_inline_retriever"].spec(full=False) == {
        "chunk_tokens": 64, "overlap": 0}
    # Every registered type was built (vLLM needs its engine: test_vllm_backend.py checks its
    # spec against a stand-in; openai below; the LangChain/LlamaIndex adapters wrap a foreign
    # retriever, named in a file by its factory's import path: test_integrations.py).
    # The types the project registers (other tests register stand-ins of their own).
    builtin = {kind: set(registry._BUILTIN[kind]) for kind in registry.COMPONENT_KINDS}
    assert seen["backend"] | {"vllm", "openai"} == builtin["backend"]
    assert seen["retriever"] | {"langchain", "llama_index"} >= builtin["retriever"]
    for kind in ("strategy", "router"):
        assert seen[kind] == builtin[kind], kind


def test_a_python_strategy_keeps_its_prompts_and_the_dense_retriever_its_progress(tmp_path):
    from orchestra.backends.scripted import ScriptedBackend

    b = ScriptedBackend(["x"])
    dense = DenseRetriever(show_progress=False)
    pipe = Pipeline(b, {"full": FullContext(b, prompts=TERSE),
                        "rag": RAG(b, retriever=dense, max_tokens=12)}, retrievers={"d": dense})
    data = yaml.safe_load(pipe.to_yaml())
    assert data["strategies"]["full"] == {"type": "full_context", "prompts": TERSE}
    assert data["strategies"]["rag"] == {"type": "rag", "retriever": "d", "max_tokens": 12}
    assert data["retrievers"]["d"] == {"type": "dense", "show_progress": False}
    # What was left at its default is not written; the full spec (the eval report) has all.
    full = pipe.to_config(full=True)
    assert full["strategies"]["full"]["max_tokens"] == 64
    assert full["retrievers"]["d"]["ann_threshold"] == 20_000


def test_spec_is_the_constructor_keywords_and_validate_uses_the_same_list():
    assert "show_progress" in parameters(DenseRetriever)[0]
    # **kwargs are followed to the parent: a RAG accepts the base strategy's max_tokens.
    assert {"max_tokens", "prompts", "top_k_tokens"} <= set(parameters(RAG)[0])
    assert "backend" not in parameters(RAG)[0] and "strategies" not in parameters(RulesRouter)[0]
    bad = "strategies: {rag: {type: rag, retriever: bm25, show_progres: false}}\n"
    cfg, located = load_config_text(bad)
    from orchestra.config import check
    from orchestra.errors import ConfigError

    with pytest.raises(ConfigError, match="show_progres.*unknown option"):
        check(cfg, located)


def test_openai_backend_spec_round_trips_without_the_key():
    from orchestra.backends.openai_backend import OpenAIBackend

    b = OpenAIBackend(base_url="http://127.0.0.1:9/v1", model="m", api_key="sk-x",
                      max_retries=1, concurrency=2)
    spec = entry(b, full=False)
    assert spec == {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                    "max_retries": 1, "concurrency": 2}
    again = registry.resolve("backend", spec["type"])(**{k: v for k, v in spec.items()
                                                           if k != "type"})
    assert entry(again, full=False) == spec and "sk-x" not in json.dumps(b.spec())
