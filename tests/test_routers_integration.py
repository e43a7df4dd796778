"""Routers with the real embedded model on real data (needle haystacks over Paul Graham essays).

Kept cheap: routing itself makes no model call except for llm and self_route, RAG uses BM25
(no embedding of a 30k-token corpus) and answers are capped at a few tokens.
"""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA, data_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def strategies(embedded):
    from orchestra.strategies.full_context import FullContext
    from orchestra.strategies.rag import RAG

    out = {"full_context": FullContext(embedded, max_tokens=20),
           "rag": RAG(embedded, retriever="bm25", max_tokens=20)}
    try:
        from orchestra.strategies.agents import ChainOfAgents
    except ImportError:  # pragma: no cover - the agents strategies are optional here
        pass
    else:
        out["chain_of_agents"] = ChainOfAgents(embedded, max_tokens=20, progress=False)
    return out


def _needle(embedded, length: int):
    from orchestra.corpus import Corpus
    from orchestra.eval.datasets import niah

    data_path("needle_haystack", "PaulGrahamEssays")
    sample = niah(embedded.tokenizer, [length], 1, root=SHARED_DATA).samples[0]
    return sample, Corpus(sample.documents, embedded.tokenizer)


@pytest.fixture(scope="module")
def haystack(embedded):
    return _needle(embedded, 30000)


@pytest.fixture(scope="module")
def small_haystack(embedded):
    return _needle(embedded, 1500)


@pytest.fixture(scope="module")
def short(embedded):
    from orchestra.corpus import Corpus, Document

    essay = sorted(data_path("needle_haystack", "PaulGrahamEssays").glob("*.txt"))[0]
    text = essay.read_text(encoding="utf-8")
    para = text[: text.index("\n\n", 1500) if "\n\n" in text[1500:] else 2000]
    corpus = Corpus([Document(id=essay.name, text=para)], embedded.tokenizer)
    assert corpus.n_tokens < 1024
    return corpus


AGGREGATION = "What are the main ideas of these essays?"
LOOKUP_SHORT = "What does the author say he worked on?"


def test_rules_choose_by_size_kind_and_retrieval(embedded, strategies, haystack, short):
    from orchestra.routers.rules import RulesRouter

    router = RulesRouter(strategies)
    sample, corpus = haystack
    assert corpus.n_tokens > 25000
    r = router.route(LOOKUP_SHORT, short, embedded)
    assert r.strategy == "full_context" and "within the effective window of 1024" in r.reason
    r = router.route(sample.question, corpus, embedded)
    assert r.strategy == "rag", r.reason
    assert "over the effective window" in r.reason and "peaked" in r.reason
    assert r.signals["retrieval_rel_margin"] > 0.05 and r.cost.model_calls == 0
    if "chain_of_agents" in strategies:
        r = router.route(AGGREGATION, corpus, embedded)
        assert r.strategy == "chain_of_agents" and "aggregation question" in r.reason


def test_learned_router_routes_real_corpora(embedded, strategies, haystack, short, tmp_path):
    from orchestra.routers.features import compute_features
    from orchestra.routers.learned import LearnedRouter
    from orchestra.routers.tree import train_file
    from test_routers import synthetic_rows

    # Rows in the eval runner's format; the features of the real corpora must land on the
    # same side of the learned splits as the synthetic training questions of their size.
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in synthetic_rows(150)))
    model = train_file(results, tmp_path / "router.json", holdout=0.25)
    assert model.meta["holdout_accuracy"] > model.meta["holdout_majority_accuracy"]
    router = LearnedRouter(strategies, model=str(tmp_path / "router.json"))
    sample, corpus = haystack
    assert router.route(LOOKUP_SHORT, short, embedded).strategy == "full_context"
    r = router.route(sample.question, corpus, embedded)
    assert r.strategy == "rag" and r.reason.startswith("learned tree:")
    if "chain_of_agents" in strategies:
        assert router.route(AGGREGATION, corpus, embedded).strategy == "chain_of_agents"
    feats = compute_features(sample.question, corpus, embedded, strategies)
    assert feats["retrieval_score_kind"] == "bm25" and feats["retrieval_rel_margin"] > 0


def test_self_route_accepts_a_found_answer(embedded, strategies, small_haystack):
    from orchestra.routers.self_route import SelfRouter

    sample, corpus = small_haystack
    ans = SelfRouter(strategies).route_and_answer(sample.question, corpus, embedded)
    assert ans.route.strategy == "rag" and not ans.route.signals["declined"], ans.text
    assert ans.cost.model_calls == 1 and ans.route.cost.model_calls == 0
    assert sample.answers[0] in ans.text


def test_self_route_escalates_when_rag_declines(embedded, strategies, small_haystack):
    from orchestra.routers.self_route import SelfRouter

    from orchestra.retrievers.bm25 import terms

    _, corpus = small_haystack
    # SmolLM2 rarely says "unanswerable" (it invents an answer instead), so the decline here
    # comes from retrieval: no term of this question occurs in the essays, RAG finds nothing
    # and declines without reading.
    question = "Quokka wombat hibernation?"
    assert not set(terms(question)) & set(terms(corpus.documents[0].text))
    ans = SelfRouter(strategies).route_and_answer(question, corpus, embedded)
    assert ans.route.signals["declined"] and ans.route.strategy == "full_context"
    assert "rag: it declined" in ans.route.reason and "fits the window" in ans.route.reason
    assert ans.cost.model_calls == 1 + ans.route.cost.model_calls
    assert ans.cost.prompt_tokens > corpus.n_tokens  # the full corpus was read
    assert any(s.name == "self_route.rag.retrieve" for s in ans.trace.steps)


def test_llm_router_chooses_among_feasible_options(embedded, strategies, haystack, short):
    from orchestra.routers.llm import LLMRouter

    _, corpus = haystack
    router = LLMRouter(strategies)
    r = router.route(AGGREGATION, corpus, embedded)
    # Full context cannot take 30k tokens, so the model is never offered it.
    assert "full_context" not in r.signals["options"] and r.strategy in r.signals["options"]
    assert r.cost.model_calls == 1 and r.cost.prompt_tokens > 0
    assert "names no option" in r.reason or r.signals["reply"].strip()[:20] in r.reason
    if "chain_of_agents" in strategies:
        assert r.strategy == "chain_of_agents", r.reason
    r = router.route(LOOKUP_SHORT, short, embedded)
    assert "full_context" in r.signals["options"] and r.strategy == "full_context", r.reason
