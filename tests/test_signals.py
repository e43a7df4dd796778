"""Routing signals of a read (orchestra/signals.py), the backend's token log-probabilities,
and Self-Route escalating on them (scripted backend; the tiny random Llama for log-probs)."""

from __future__ import annotations

import math

import pytest

from orchestra.backends.base import GenerationRequest
from orchestra.backends.scripted import ScriptedBackend
from orchestra.corpus import Corpus, Document
from orchestra.errors import ConfigError
from orchestra.retrievers.bm25 import BM25Retriever
from orchestra.routers.self_route import SelfRouter
from orchestra.signals import agreement, answer_support, logprob_shape, read_signals
from orchestra.strategies.full_context import FullContext
from orchestra.strategies.rag import RAG

FACTS = ["The keeper of the Quorvath lighthouse counted 4217 gulls in the spring of 1931.",
         "Fishing boats in the harbour were painted blue and white by custom."]
Q = "How many gulls did the keeper of the Quorvath lighthouse count?"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path / "cache"))


def corpus(b, filler=5):
    docs = [Document(f"fact{i}", f) for i, f in enumerate(FACTS)]
    docs += [Document(f"filler{i}", f"Unrelated notes number {i} about weather and roads. " * 6)
             for i in range(filler)]
    return Corpus(docs, b.tokenizer)


def rag(b, **kw):
    return RAG(b, retriever=BM25Retriever(chunk_tokens=40, overlap=0), top_k_tokens=80,
               decline="implicit", **kw)


def test_transformers_logprobs_are_the_models_own(tiny_backend):
    import torch

    req = GenerationRequest.user("Say something about lighthouses.", max_tokens=6,
                                 logprobs=True)
    res = tiny_backend.generate([req])[0]
    assert res.token_logprobs is not None and len(res.token_logprobs) == res.generated_tokens
    # Recomputed by one forward pass over the prompt and the reply (teacher forcing).
    tok = tiny_backend.hf_tokenizer
    prompt = tok(tiny_backend.chat_text(req.messages), add_special_tokens=False,
                 return_tensors="pt")["input_ids"]
    again = tiny_backend.generate([req])[0]
    assert again.token_logprobs == pytest.approx(res.token_logprobs, abs=1e-5)
    gen = tiny_backend.generate([req.model_copy(update={"logprobs": False})])[0]
    assert gen.token_logprobs is None and gen.text == res.text
    with torch.inference_mode():
        out = tiny_backend.model.generate(prompt, max_new_tokens=6, do_sample=False,
                                          pad_token_id=tok.pad_token_id)
        logits = tiny_backend.model(out).logits[0].float().log_softmax(-1)
    n = prompt.shape[1]
    ids = out[0, n:n + res.generated_tokens]
    want = [logits[n - 1 + i, t].item() for i, t in enumerate(ids.tolist())]
    assert res.token_logprobs == pytest.approx(want, abs=1e-3)
    assert all(x <= 0 for x in res.token_logprobs)


def test_logprob_shape_and_answer_support():
    assert logprob_shape(None) == {} and logprob_shape([]) == {}
    p = logprob_shape([-0.1, -2.0, -0.3, -0.2, -5.0])
    assert p["logprob_min"] == -5.0 and p["logprob_head"] == pytest.approx(-2.6 / 4)
    assert p["logprob_mean"] == pytest.approx(-7.6 / 5)
    assert not math.isnan(logprob_shape([float("-inf"), -1.0])["logprob_mean"])
    assert answer_support("4217 gulls", FACTS) == (1, 1.0)
    assert answer_support("5000 gulls", FACTS) == (0, 0.5)
    assert agreement("The answer is 4217.", "4217") == 1.0
    assert agreement("Paris", "Lyon") == 0.0


def test_read_signals_of_a_rag_answer():
    b = ScriptedBackend(["4217", "The text does not mention the gulls."])
    r = rag(b)
    c = corpus(b)
    s = read_signals(r.answer(Q, c), c)
    assert s["answer_in_passages"] == 1 and s["declined"] == 0 and "logprob_mean" not in s
    s = read_signals(r.answer(Q, c), c)
    assert s["declined"] == 1


def test_self_route_escalates_on_an_unsupported_answer_and_says_why():
    b = ScriptedBackend(["5000", "4217", "4217"])
    c = corpus(b)
    router = SelfRouter({"rag": rag(b), "full_context": FullContext(b)},
                        escalate_on=["decline", "unsupported"])
    ans = router.route_and_answer(Q, c, b)
    assert ans.route.strategy == "full_context" and ans.text == "4217"
    assert "not in its passages" in ans.route.reason
    assert ans.route.signals["answer_support"] == 0.0
    assert ans.route.signals["corpus_tokens"] == c.n_tokens
    assert ans.cost.model_calls == 2
    ans = router.route_and_answer(Q, c, b)  # "4217" is in the passages: kept
    assert ans.route.strategy == "rag" and "no escalation signal: decline, unsupported" in \
        ans.route.reason
    # Without "unsupported" the same reply is kept (the default escalates on a decline only).
    b2 = ScriptedBackend(["5000"])
    default = SelfRouter({"rag": rag(b2), "full_context": FullContext(b2)})
    assert default.route_and_answer(Q, corpus(b2), b2).route.strategy == "rag"


def test_self_route_sends_an_aggregation_question_past_rag_and_keeps_within_budget():
    b = ScriptedBackend(["blue", "blue"])
    c = corpus(b)
    router = SelfRouter({"rag": rag(b), "full_context": FullContext(b)},
                        escalate_on=["decline", "kind"])
    ans = router.route_and_answer("How many times are boats mentioned throughout?", c, b)
    assert ans.route.strategy == "full_context" and len(b.requests) == 1
    assert "aggregation question" in ans.route.reason
    assert ans.route.signals["question_kind"] == "aggregation"
    # A budget below full context's read: rag reads instead, and the reason names the budget.
    tight = SelfRouter({"rag": rag(b), "full_context": FullContext(b)},
                       escalate_on=["decline", "kind"], budget=300)
    ans = tight.route_and_answer("How many times are boats mentioned throughout?", c, b)
    assert ans.route.strategy == "rag" and "over the budget of 300" in ans.route.reason


def test_self_route_sends_the_kinds_it_is_told_past_rag_and_reads_the_rest():
    b = ScriptedBackend(["blue", "blue", "blue"])
    c = corpus(b)
    router = SelfRouter({"rag": rag(b), "full_context": FullContext(b)},
                        escalate_on=["decline", "kind"], kinds=["multi_hop", "multi_value"])
    ans = router.route_and_answer("What is the special magic number for Oslo's partner city?",
                                  c, b)
    assert ans.route.strategy == "full_context" and len(b.requests) == 1
    assert "multi-hop question (relation of a relation)" in ans.route.reason
    ans = router.route_and_answer("What are all the special magic numbers for Oslo?", c, b)
    assert ans.route.strategy == "full_context" and ans.route.signals["question_kind"] == \
        "multi_value" and "multi-value question (all the values)" in ans.route.reason
    # An aggregation question is not among these kinds: rag reads it first.
    ans = router.route_and_answer("How many times are boats mentioned throughout?", c, b)
    assert ans.route.strategy == "rag"


def test_self_route_second_read_disagreement():
    b = ScriptedBackend(["4217", "1931", "4217", "4217", "4217"])
    c = corpus(b)
    router = SelfRouter({"rag": rag(b), "full_context": FullContext(b)},
                        escalate_on=["disagree"])
    ans = router.route_and_answer(Q, c, b)
    assert ans.route.strategy == "full_context"
    assert ans.route.signals["second_read_agreement"] == 0.0
    assert "second read" in ans.route.reason and ans.cost.model_calls == 3
    ans = router.route_and_answer(Q, c, b)
    assert ans.route.strategy == "rag" and ans.route.signals["second_read_agreement"] == 1.0


@pytest.mark.parametrize("options,field", [
    ({"escalate_on": ["sometimes"]}, "unknown escalation sometimes"),
    ({"min_support": 2}, "min_support"),
    ({"budget": 0}, "budget"),
    ({"kinds": ["everything"]}, "kinds"),
])
def test_self_route_refuses_bad_options(options, field):
    b = ScriptedBackend()
    with pytest.raises(ConfigError, match=field):
        SelfRouter({"rag": rag(b)}, **options)


def _signal_rows(n: int) -> list[dict]:
    """Rows of a task mix (no metric shared) where full context is right exactly when rag's
    short answer was not in its passages."""
    rows = []
    for q in range(n):
        unsupported = q % 2
        feats = {"corpus_tokens": 400 + q, "context_window": 2048, "effective_window": 256}
        for strat, prompt in (("rag", 100), ("full_context", 400)):
            right = (strat == "full_context") == bool(unsupported)
            scores = {"contains": float(right)} if q % 3 else {"rouge_l": float(right)}
            rows.append({"sample_id": f"q{q}", "strategy": strat, "strategy_type": strat,
                         "scores": scores, "quality": float(right),
                         "cost": {"prompt_tokens": prompt}, "features": feats,
                         "signals": {"answer_support": 0.0 if unsupported else 1.0}
                         if strat == "rag" else {"answer_support": 1.0}})
    return rows


def test_learned_router_trains_on_read_signals_and_reads_rag_first(tmp_path):
    from orchestra.routers.learned import LearnedRouter
    from orchestra.routers.tree import train

    model = train(_signal_rows(24))
    assert model.meta["metric"] == "quality" and model.uses("answer_support")
    path = tmp_path / "router.json"
    model.save(path)
    b = ScriptedBackend(["5000", "4217", "4217"])
    c = corpus(b)
    router = LearnedRouter({"rag": rag(b), "full_context": FullContext(b)}, model=str(path))
    assert router.route(Q, c, b).strategy == "rag"  # it cannot decide before reading
    ans = router.route_and_answer(Q, c, b)
    assert ans.route.strategy == "full_context" and ans.text == "4217"
    assert "answer_support" in ans.route.reason and ans.cost.model_calls == 2
    assert ans.route.cost.model_calls == 1  # the first read is what routing cost
    ans = router.route_and_answer(Q, c, b)
    assert ans.route.strategy == "rag" and ans.route.signals["answer_support"] == 1.0


def test_eval_second_read_keeps_its_agreement_and_its_prompt_tokens(tmp_path):
    from orchestra.eval.datasets import Sample
    from orchestra.eval.runner import Runner
    from orchestra.pipeline import Pipeline
    from orchestra.routers.fixed import FixedRouter

    b = ScriptedBackend(["4217", "1931"])
    strategies = {"rag": RAG(b, retriever=BM25Retriever(chunk_tokens=40, overlap=0),
                             top_k_tokens=300, decline="implicit")}
    pipe = Pipeline(b, strategies, FixedRouter(strategies, strategy="rag"))
    docs = list(corpus(b).documents)
    sample = Sample(sample_id="s0", dataset="toy", question=Q, documents=docs,
                    answers=["4217"], task="qa", length=400)
    row = Runner(pipe, tmp_path, ["rag"], progress=False, second_read=True).run([sample])[0]
    assert row["signals"]["second_read_agreement"] == 0.0
    # The second read (the best passage alone: here also the only one BM25 scores) is
    # measured, and kept out of the row's cost, which is the first read's.
    second = row["signals"]["second_read_prompt_tokens"]
    assert 0 < second <= row["cost"]["prompt_tokens"] and row["cost"]["model_calls"] == 1
