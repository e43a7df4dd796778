"""Agents with the real embedded model on real data: two facts in different chunks of a
~20,000-token haystack of Paul Graham essays must both reach the answer.

Slow (the 135M model reads every chunk on the CPU); run with ``pytest -m slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra.corpus import Corpus, Document
from orchestra.eval.needles import cut_to_tokens, essays_text, insert_needles
from orchestra.strategies.agents import ChainOfAgents, MapReduce

NEEDLES = {0.3: ("The first magic number is 482913.", "482913"),
           0.75: ("The second magic number is 771045.", "771045")}
QUESTION = "What are the first magic number and the second magic number?"


def haystack(essays_dir, tokenizer, n_tokens: int) -> Document:
    """The essays (sorted by name) cut to ``n_tokens`` tokens, needles at sentence ends."""
    text = essays_text(essays_dir, strip=False)
    assert len(tokenizer.offsets(text)) > n_tokens, "the essays are shorter than asked for"
    text, _ = insert_needles(cut_to_tokens(tokenizer, text, n_tokens),
                             [(depth, sentence) for depth, (sentence, _) in NEEDLES.items()],
                             after=True)  # the sentence after each depth, as measured
    return Document("essays", text)


def check_answer(ans, corpus, chunks):
    text = corpus.documents[0].text
    needle_chunks = {c.order for c in chunks for s, _ in NEEDLES.values() if s in c.text}
    assert len(needle_chunks) >= 2, "the needles must sit in different chunks"
    for _, number in NEEDLES.values():
        assert number in ans.text, f"{number} missing from the answer {ans.text!r}"
        # The evidence spans hold the needles.
        assert any(number in text[e.start:e.end] for e in ans.evidence)
    assert not ans.unanswerable
    assert ans.cost.model_calls >= len(chunks) + 1
    assert ans.cost.prompt_tokens >= corpus.n_tokens


@pytest.mark.slow
def test_map_reduce_finds_two_facts_in_20k_tokens(embedded, essays_dir):
    corpus = Corpus([haystack(essays_dir, embedded.tokenizer, 20_000)], embedded.tokenizer)
    assert 19_000 <= corpus.n_tokens <= 21_000
    strategy = MapReduce(embedded, chunk_tokens=1000, worker_max_tokens=32, progress=False)
    chunks = strategy.chunks(corpus)
    ans = strategy.answer(QUESTION, corpus)
    check_answer(ans, corpus, chunks)
    # Workers that found nothing were dropped: few chunks survive as evidence.
    assert len(ans.evidence) < len(chunks) // 2
    steps = {s.name: s.detail for s in ans.trace.steps}
    assert steps["map"]["requests"] == len(chunks)  # one batched call for all workers


@pytest.mark.slow
def test_chain_of_agents_finds_two_facts(embedded, essays_dir):
    corpus = Corpus([haystack(essays_dir, embedded.tokenizer, 8_000)], embedded.tokenizer)
    strategy = ChainOfAgents(embedded, chunk_tokens=1000, worker_max_tokens=32, progress=False)
    chunks = strategy.chunks(corpus)
    ans = strategy.answer(QUESTION, corpus)
    check_answer(ans, corpus, chunks)
    assert ans.cost.model_calls == len(chunks) + 1 + sum(
        1 for s in ans.trace.steps if s.name == "compress")


SPEECH = Path(__file__).resolve().parent.parent / "examples" / "data" / "gettysburg_address.txt"


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["map_reduce", "chain_of_agents"])
def test_agents_answer_from_a_two_chunk_real_document(embedded, strategy):
    """Issue 22: map_reduce answered "unanswerable" over a 2-chunk document where
    chain_of_agents answered. Its workers (the same prompt as chain_of_agents' first worker)
    paraphrase ("The speech delivered by Abraham Lincoln ... is not a question"), and without
    the profile's align_notes grounding dropped every note, so the manager had nothing.
    Built as a pipeline file's data, so the SmolLM2 profile applies."""
    from orchestra.pipeline import Pipeline

    pipe = Pipeline.from_dict({"strategies": {"agents": {"type": strategy, "chunk_tokens": 200}}},
                              backend=embedded)
    agents = pipe.strategies["agents"]
    corpus = Corpus([Document("gettysburg_address", SPEECH.read_text())], embedded.tokenizer)
    assert len(agents.pieces(corpus)) == 2
    ans = pipe.run("Who delivered the Gettysburg Address?", [SPEECH], strategy="agents")
    assert "Lincoln" in ans.text, ans.text
    assert not ans.unanswerable and ans.evidence
    assert agents.align_notes is True  # the profile's value for both agent strategies
