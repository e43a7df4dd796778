"""The embedded transformers backend: real model, exact counts, batching, threads."""

import threading
import time

import pytest

from orchestra.backends.base import GenerationRequest, Message

pytestmark = pytest.mark.slow


def test_embedded_model_reports_itself(embedded):
    assert embedded.context_window == 8192
    assert {"batching", "kv_pages"} <= embedded.capabilities
    assert embedded.count_tokens("hello world") == len(embedded.tokenizer.offsets("hello world"))


def test_batch_generation_counts_tokens_exactly(embedded):
    reqs = [GenerationRequest.user("What is the capital of France?", max_tokens=12),
            GenerationRequest.user("Name a color. Answer with one word, then stop. " * 3,
                                   max_tokens=5)]
    res = embedded.generate(reqs)
    assert "paris" in res[0].text.lower()
    for r, q in zip(res, reqs):
        assert r.prompt_tokens == embedded.count_prompt_tokens(q.messages)
        assert 1 <= r.generated_tokens <= q.max_tokens
    assert res[1].generated_tokens == 5 or res[1].finish_reason == "stop"
    # batched and single generation agree (left padding does not change greedy output)
    assert embedded.generate_one(reqs[0]).text == res[0].text


def test_stop_strings_cut_the_reply(embedded):
    req = GenerationRequest.user("Count from 1 to 10, separated by commas.", max_tokens=40,
                                 stop=["5"])
    r = embedded.generate_one(req)
    assert "5" not in r.text and "4" in r.text and r.finish_reason == "stop"


def test_two_threads_share_one_backend(embedded):
    questions = {"What is the capital of France?": "paris",
                 "What is the capital of Japan?": "tokyo"}
    answers = {}

    def ask(q):
        answers[q] = embedded.generate_one(GenerationRequest(
            messages=[Message(role="user", content=q)], max_tokens=12)).text

    threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for q, want in questions.items():
        assert want in answers[q].lower()


def test_second_load_is_fast(embedded):
    from orchestra.backends.hf import TransformersBackend

    t0 = time.perf_counter()
    again = TransformersBackend(model="embedded", device="cpu")
    assert again.load_seconds < 30  # benchmarks/load.py prints the real number
    assert time.perf_counter() - t0 < 60
