"""The RAG strategy: control flow on a scripted backend, then end to end on the embedded model."""

from __future__ import annotations

import re

import pytest

from conftest import data_path
from orchestra.backends.scripted import ScriptedBackend
from orchestra.corpus import Corpus, Document
from orchestra.errors import ConfigError, InputError
from orchestra.prompts import UNANSWERABLE
from orchestra.registry import resolve
from orchestra.strategies.rag import RAG
from orchestra.retrievers.bm25 import BM25Retriever
from orchestra.retrievers.hybrid import HybridRetriever
from squad_haystack import squad_cases


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path / "cache"))


FACTS = [
    "The Quorvath lighthouse stands on a granite cliff above the harbour.",
    "The keeper of the Quorvath lighthouse counted 4217 gulls in the spring of 1931.",
    "Fishing boats in the harbour were painted blue and white by custom.",
    "The keeper of the Quorvath lighthouse counted 4217 gulls in the spring of 1931.",
    "Winters at the harbour were long and the lamp burned whale oil.",
]


def _corpus(backend, facts=FACTS, filler: int = 30) -> Corpus:
    docs = [Document(f"fact{i}", f) for i, f in enumerate(facts)]
    docs += [Document(f"filler{i}", f"Unrelated notes number {i} about weather, bread and roads. "
                                    * 6) for i in range(filler)]
    return Corpus(docs, backend.tokenizer)


def _rag(backend, **kw) -> RAG:
    kw.setdefault("retriever", BM25Retriever(chunk_tokens=40, overlap=0))
    kw.setdefault("top_k_tokens", 80)
    return RAG(backend, **kw)


def test_registry_builds_rag_with_the_dense_default():
    b = ScriptedBackend()
    rag = resolve("strategy", "rag")(b)
    assert rag.retriever.name == "dense" and rag.reorder == "document_order"
    assert rag.spec()["retriever"] is None  # rebuilt as the default
    assert RAG(b, retriever="bm25").spec()["retriever"] == "bm25"


def test_reads_within_budget_without_duplicates_in_document_order():
    b = ScriptedBackend(["4217"])
    rag = _rag(b)
    corpus = _corpus(b)
    q = "How many gulls did the keeper of the Quorvath lighthouse count?"
    ans = rag.answer(q, corpus)
    assert ans.text == "4217" and ans.strategy_type == "rag"
    prompt = b.requests[0].messages[-1].content
    # the duplicate fact was read once, and the chunks are in corpus order
    assert prompt.count("4217 gulls") == 1
    docs = [e.doc_id for e in ans.evidence]
    assert "fact1" in docs and "fact3" not in docs
    orders = [corpus.document(d) for d in docs]
    assert docs == sorted(docs, key=lambda d: [x.id for x in corpus.documents].index(d))
    assert len(orders) >= 2
    # the spans cited are exactly the text the reader was given
    for e in ans.evidence:
        assert corpus.document(e.doc_id).text[e.start:e.end] in prompt
    step = ans.trace.steps[0]
    assert step.name == "retrieve"
    assert step.detail["selected_tokens"] <= 80 and step.detail["duplicates_dropped"] >= 1
    assert step.detail["retrieval_top"] >= step.detail["retrieval_margin"] >= 0
    assert step.detail["retrieval_score_kind"] == "bm25"
    # routers see the same score shape through the Strategy interface
    assert {k: v for k, v in step.detail.items() if k.startswith("retrieval_")} == \
        rag.signals(q, corpus)
    # cost is what the backend measured for the prompt it actually got
    assert ans.cost.model_calls == 1
    assert ans.cost.prompt_tokens == b.count_prompt_tokens(b.requests[0].messages)


def test_retrieve_returns_what_answer_reads_and_budget_is_respected():
    b = ScriptedBackend(["x"])
    rag = _rag(b, top_k_tokens=60)
    corpus = _corpus(b)
    q = "What colour were the fishing boats in the harbour?"
    chunks = rag.retrieve(q, corpus)
    sep = b.count_tokens("\n\n")
    used = sum(b.count_tokens(c.chunk.text.strip()) for c in chunks) + sep * (len(chunks) - 1)
    assert 0 < used <= 60
    ans = rag.answer(q, corpus)
    assert [e.chunk_id for e in ans.evidence] == [c.id for c in chunks]


@pytest.mark.parametrize("policy", ["score", "edges", "document_order"])
def test_reorder_policy_decides_the_prompt_order(policy):
    b = ScriptedBackend(["x"])
    rag = _rag(b, reorder=policy, top_k_tokens=200)
    corpus = _corpus(b)
    q = "Quorvath lighthouse harbour keeper gulls"
    chunks = rag.retrieve(q, corpus)
    assert len(chunks) >= 3
    scores = [c.score for c in chunks]
    if policy == "score":
        assert scores == sorted(scores, reverse=True)
    elif policy == "edges":
        assert max(scores) == scores[0] and sorted(scores)[-2] == scores[-1]
    else:
        assert [c.chunk.order for c in chunks] == sorted(c.chunk.order for c in chunks)
    ans = rag.answer(q, corpus)
    prompt = b.requests[0].messages[-1].content
    positions = [prompt.index(corpus.document(e.doc_id).text[e.start:e.end]) for e in ans.evidence]
    assert positions == sorted(positions)  # evidence is listed in reading order


def test_question_that_retrieves_nothing_makes_no_model_call():
    b = ScriptedBackend([])  # any model call would fail: no replies scripted
    rag = _rag(b)
    ans = rag.answer("xyzzy plugh?", _corpus(b))
    assert ans.unanswerable and ans.evidence == [] and ans.cost.model_calls == 0
    assert ans.trace.steps[0].detail["candidates"] == 0
    declined = rag.answer("xyzzy plugh?", _corpus(b), may_decline=True)
    assert declined.text == UNANSWERABLE and declined.unanswerable


def test_may_decline_uses_the_decline_prompt_and_sets_unanswerable():
    b = ScriptedBackend(["Unanswerable.", "4217"])
    rag = _rag(b)
    corpus = _corpus(b)
    q = "How many gulls did the keeper count?"
    ans = rag.answer(q, corpus, may_decline=True)
    assert ans.unanswerable and "does not contain the answer" in b.requests[0].messages[-1].content
    ans2 = rag.answer(q, corpus)
    assert not ans2.unanswerable and "does not contain" not in b.requests[1].messages[-1].content


def test_implicit_decline_reads_with_the_reader_prompt_and_self_route_hears_plain_words():
    from orchestra.routers.self_route import SelfRouter
    from orchestra.strategies.full_context import FullContext

    b = ScriptedBackend(["The text does not mention the gulls.", "4217", "4217"])
    rag = _rag(b, decline="implicit")
    corpus = _corpus(b, filler=5)  # small enough for full context to be the fallback
    q = "How many gulls did the keeper count?"
    router = SelfRouter({"rag": rag, "full_context": FullContext(b)})
    ans = router.route_and_answer(q, corpus, b)
    first = b.requests[0].messages[-1].content
    assert "unanswerable" not in first and "does not contain" not in first
    assert ans.route.signals["declined"] and ans.route.strategy == "full_context"
    # a reply in the reader's own words is kept: the same prompt as a plain rag read
    ans2 = router.route_and_answer(q, corpus, b)
    assert ans2.text == "4217" and ans2.route.signals["first"] == "rag"
    assert ans2.route.signals["declined"] == 0 and ans2.route.signals["answer_in_passages"] == 1
    assert b.requests[2].messages == rag.reader_request(
        rag.format_context([c.chunk for c in rag.retrieve(q, corpus)]), q).messages
    with pytest.raises(ConfigError, match="never be used"):
        _rag(b, decline="implicit", prompts={"reader_may_decline": "{context} {question}"})
    with pytest.raises(ConfigError, match="decline must be one of explicit, implicit"):
        _rag(b, decline="sometimes")


def test_budget_smaller_than_one_chunk_is_refused_clearly():
    b = ScriptedBackend()
    with pytest.raises(ConfigError, match=r"top_k_tokens=10 is smaller than one chunk.*40"):
        _rag(b, top_k_tokens=10)
    # a window too small to hold any chunk next to the prompt is refused at answer time
    tiny = ScriptedBackend(["x"], context_window=100)
    rag = _rag(tiny, top_k_tokens=80, max_tokens=50)
    with pytest.raises(ConfigError, match="smaller than any retrieved chunk"):
        rag.answer("How many gulls did the keeper of the Quorvath lighthouse count?",
                   _corpus(tiny))


def test_bad_settings_and_inputs():
    b = ScriptedBackend()
    with pytest.raises(ConfigError, match="reorder policy"):
        _rag(b, reorder="shuffle")
    with pytest.raises(ConfigError, match="top_k_tokens"):
        _rag(b, top_k_tokens=0)
    with pytest.raises(ConfigError, match="unknown retriever"):
        RAG(b, retriever="splade")
    with pytest.raises(InputError, match="empty"):
        _rag(b).answer("  ", _corpus(b))
    with pytest.raises(InputError, match="Corpus"):
        _rag(b).retrieve("question", ["a document"])


def test_a_list_of_retrievers_means_hybrid_fusion_and_options_rebuild_it():
    b = ScriptedBackend(["x"])
    rag = RAG(b, retriever=[BM25Retriever(chunk_tokens=40, overlap=0),
                            {"type": "bm25", "chunk_tokens": 40, "overlap": 0, "stem": False}],
              top_k_tokens=100, reorder="edges")
    assert isinstance(rag.retriever, HybridRetriever)
    opts = rag.spec()
    again = RAG(b, **opts)
    assert again.spec() == opts
    chunks, shape = again.retrieve_with_shape("Quorvath lighthouse gulls", _corpus(b))
    assert shape["retrieval_score_kind"] == "rrf" and chunks


# -- end to end on the embedded model ------------------------------------------------------
def _contains(reply: str, answers: list[str]) -> bool:
    norm = lambda s: re.sub(r"\W+", " ", s.lower()).strip()  # noqa: E731
    return any(norm(a) in norm(reply) for a in answers)


@pytest.mark.slow
def test_orchestra_ask_with_rag_answers_squad_questions_in_a_30k_haystack(embedded, tmp_path,
                                                                         capsys):
    from orchestra.cli.main import main
    from orchestra.strategies.full_context import FullContext

    cases = squad_cases(data_path("ruler", "squad.json"), 10, 30_000, embedded.count_tokens,
                        seed=11)
    # Only questions the model answers from the gold paragraph alone test retrieval + reading.
    reader = FullContext(embedded, max_tokens=24)
    readable = []
    for c in cases:
        alone = reader.answer(c.question, Corpus([Document("gold", c.gold_paragraph)],
                                                 embedded.tokenizer))
        if _contains(alone.text, c.answers):
            readable.append(c)
        if len(readable) == 3:
            break
    assert len(readable) >= 2, "the model should read at least some gold paragraphs correctly"
    assert embedded.count_tokens(readable[0].text) > embedded.context_window
    right = 0
    for i, c in enumerate(readable):
        path = tmp_path / f"haystack{i}.txt"
        path.write_text(c.text)
        rc = main(["ask", "--docs", str(path), "-q", c.question, "--strategy", "rag",
                   "--max-tokens", "24", "--json"])
        assert rc == 0
        from orchestra.types import Answer

        ans = Answer.model_validate_json(capsys.readouterr().out)
        assert ans.strategy_type == "rag"
        # the gold paragraph was among what the reader saw, and the cost is that small prompt
        assert any(e.start < c.gold_end and e.end > c.gold_start for e in ans.evidence)
        assert ans.cost.prompt_tokens < 1200
        right += _contains(ans.text, c.answers)
    assert right == len(readable), f"{right}/{len(readable)} answered right"
