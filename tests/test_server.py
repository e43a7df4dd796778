"""`orchestra serve` as a real uvicorn process serving the embedded default pipeline.

One server process for the module (the session's pattern: load once, ask many), with an API
key, a 256 KiB body cap and a queue of 2. Questions use the shipped Gettysburg Address and
small max_tokens to stay short. The fast tests check argument refusals without a model.
"""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

DOC = Path(__file__).resolve().parent.parent / "examples" / "data" / "gettysburg_address.txt"
KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY_CAP = 256 * 1024


class Served:
    def __init__(self, proc: subprocess.Popen, url: str, lines: list[str]):
        self.proc, self.url, self.lines = proc, url, lines

    def post(self, path: str, **kw) -> httpx.Response:
        kw.setdefault("headers", AUTH)
        return httpx.post(self.url + path, timeout=300, **kw)

    def get(self, path: str, **kw) -> httpx.Response:
        kw.setdefault("headers", AUTH)
        return httpx.get(self.url + path, timeout=60, **kw)


def start_server(*extra: str, timeout: float = 300.0) -> Served:
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestra.cli.main", "serve", "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    seen: queue.Queue = queue.Queue()

    def pump() -> None:
        for ln in proc.stdout:
            lines.append(ln)
            seen.put(ln)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = seen.get(timeout=1.0)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if "listening on " in line:
            url = line.split("listening on ", 1)[1].split()[0]
            while time.monotonic() < deadline:  # the socket is bound before the model loads
                try:
                    if httpx.get(url + "/health", timeout=5).status_code == 200:
                        return Served(proc, url, lines)
                except httpx.TransportError:
                    time.sleep(0.5)
    proc.kill()
    pytest.fail("orchestra serve did not start:\n" + "".join(lines[-30:]))


@pytest.fixture(scope="module")
def served():
    s = start_server("--api-key", KEY, "--max-body-bytes", str(BODY_CAP), "--max-queue", "2")
    yield s
    s.proc.terminate()
    s.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def corpus_id(served) -> str:
    r = served.post("/v1/corpora", json={"documents": [
        {"name": DOC.name, "text": DOC.read_text()}]})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def sse_events(lines) -> list[tuple[str | None, str]]:
    out, event = [], None
    for ln in lines:
        if ln.startswith("event: "):
            event = ln[7:]
        elif ln.startswith("data: "):
            out.append((event, ln[6:]))
            event = None
    return out


# -- corpus reuse -----------------------------------------------------------------------------
@pytest.mark.slow
def test_ten_questions_reuse_the_corpus_nothing_reembedded_or_reprefilled(served, corpus_id):
    before = served.get(f"/v1/corpora/{corpus_id}").json()
    # Built at registration: chunks, every retriever's index, the KV prefill of 'pages'.
    # The default's one (dense) index, built (or read back from the on-disk index cache) once.
    assert before["index_builds"] + before["index_loads"] >= 1 and before["kv_prefills"] == 1
    assert before["warm"]["retriever dense"] == "indexed"
    assert before["warm"]["strategy kv_pages"] == "prefilled"
    assert before["documents"][0]["name"] == DOC.name and before["chunks"] >= 1
    strategies = ["auto", "rag", "full_context", "kv_pages", "auto", "rag", "full_context",
                  "kv_pages", "auto", "rag"]
    answers = []
    for i, strategy in enumerate(strategies):
        r = served.post("/v1/answer", json={
            "corpus_id": corpus_id, "strategy": strategy, "max_tokens": 8,
            "question": ["Where was the great battle fought?", "Who brought forth a new nation?",
                         "What shall not perish from the earth?"][i % 3]})
        assert r.status_code == 200, r.text
        answers.append(r.json())
    after = served.get(f"/v1/corpora/{corpus_id}").json()
    assert after["index_builds"] == before["index_builds"]  # nothing re-embedded or re-indexed
    assert after["index_loads"] == before["index_loads"]
    assert after["kv_prefills"] == before["kv_prefills"]  # nothing re-prefilled
    assert after["questions"] == before["questions"] + 10
    for a, strategy in zip(answers, strategies):
        assert a["text"] and a["corpus_id"] == corpus_id
        assert a["route"]["reason"] and a["cost"]["model_calls"] >= 1
        if strategy != "auto":
            assert a["route"]["strategy"] == strategy
        ev = a["evidence"][0]
        assert ev["doc_id"] == DOC.name and ev["end"] > ev["start"] and ev["snippet"]
    pages = [a for a, s in zip(answers, strategies) if s == "kv_pages"]
    assert all(a["cost"]["prefill_seconds"] == 0 for a in pages)  # the prefill was reused
    # Registering the same documents again finds the corpus.
    again = served.post("/v1/corpora", json={"documents": [
        {"name": DOC.name, "text": DOC.read_text()}]})
    assert again.status_code == 200 and again.json()["id"] == corpus_id
    assert not again.json()["new"]
    listed = served.get("/v1/corpora").json()["data"]
    assert corpus_id in [c["id"] for c in listed]
    metrics = served.get("/metrics").text
    assert 'orchestra_route_choices_total{strategy="kv_pages"}' in metrics
    assert "orchestra_tokens_total" in metrics and "orchestra_request_seconds" in metrics


@pytest.mark.slow
def test_upload_then_delete_a_corpus(served):
    r = served.post("/v1/corpora", files=[("files", ("speech.txt", DOC.read_bytes()))],
                    data={"warm": "false"})
    assert r.status_code in (200, 201), r.text
    cid = r.json()["id"]
    assert r.json()["documents"][0]["name"] == "speech.txt"
    assert served.get(f"/v1/corpora/{cid}").status_code == 200
    d = httpx.delete(f"{served.url}/v1/corpora/{cid}", headers=AUTH)
    assert d.status_code == 200 and d.json()["deleted"]
    gone = served.get(f"/v1/corpora/{cid}")
    assert gone.status_code == 404 and "no corpus" in gone.json()["error"]["message"]


# -- streaming ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_answer_streams_route_evidence_tokens_then_the_answer(served, corpus_id):
    with httpx.stream("POST", served.url + "/v1/answer", headers=AUTH, timeout=300, json={
            "corpus_id": corpus_id, "strategy": "full_context", "max_tokens": 16, "stream": True,
            "question": "Where was the great battle fought?"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.iter_lines())
    kinds = [e for e, _ in events]
    assert kinds[:2] == ["route", "evidence"] and kinds[-1] == "answer"
    tokens = [json.loads(d)["text"] for e, d in events if e == "token"]
    assert len(tokens) >= 2
    final = json.loads(events[-1][1])
    assert "".join(tokens) == final["text"]
    assert final["route"]["strategy"] == "full_context" and final["evidence"] and final["cost"]


@pytest.mark.slow
def test_chat_completion_streams_chunks_the_last_with_route_evidence_cost(served, corpus_id):
    with httpx.stream("POST", served.url + "/v1/chat/completions", headers=AUTH, timeout=300,
                      json={"model": "default", "stream": True, "max_tokens": 16,
                            "messages": [{"role": "user",
                                          "content": "Where was the great battle fought?"}],
                            "metadata": {"corpus_id": corpus_id, "strategy": "full_context"}}) as r:
        assert r.status_code == 200
        data = [d for _, d in sse_events(r.iter_lines())]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    content = [c["choices"][0]["delta"].get("content") for c in chunks
               if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) >= 2  # token by token, not one blob
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    extra = last["orchestra"]
    assert extra["route"]["strategy"] == "full_context" and extra["evidence"] and extra["cost"]


@pytest.mark.slow
def test_the_openai_client_works_plain_and_streamed(served, corpus_id):
    import openai

    client = openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["default"]
    q = [{"role": "user", "content": "Where was the great battle fought?"}]
    plain = client.chat.completions.create(model="default", messages=q, max_tokens=12,
                                           metadata={"corpus_id": corpus_id})
    assert plain.choices[0].message.content
    assert plain.usage.completion_tokens > 0
    assert plain.model_extra["orchestra"]["route"]["strategy"]
    # Documents sent with the request instead of a corpus id.
    inline = client.chat.completions.create(
        model="default", messages=q, max_tokens=12,
        extra_body={"metadata": {"documents": [DOC.read_text()], "strategy": "full_context"}})
    assert inline.choices[0].message.content
    pieces, last = [], None
    for chunk in client.chat.completions.create(model="default", messages=q, max_tokens=16,
                                                metadata={"corpus_id": corpus_id,
                                                          "strategy": "full_context"},
                                                stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        last = chunk
    assert len(pieces) >= 2
    assert last.model_extra["orchestra"]["evidence"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.url + "/v1", api_key="wrong",
                      max_retries=0).models.list()


# -- generation settings ------------------------------------------------------------------------
@pytest.mark.slow
def test_a_large_max_tokens_gets_a_prompt_sized_for_it(served):
    """Issue 21: a served max_tokens travelled in a ContextVar past the code that sizes the
    prompt, so RAG packed its usual passages and the model refused prompt + max_tokens. Now
    it reaches the strategy as an argument and the passages shrink to leave it room."""
    import openai

    window = served.get("/v1/models").json()["data"][0]["max_model_len"]
    filler = " ".join(f"Record {i}: the depot in town {i} keeps {7 * i} crates of pears."
                      for i in range(400))
    docs = [{"name": DOC.name, "text": DOC.read_text()}, {"name": "depots.txt", "text": filler}]
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)
    q = [{"role": "user", "content": "Where was the great battle fought?"}]
    extra = {"metadata": {"documents": docs, "strategy": "rag"}}
    usual = client.chat.completions.create(model="default", messages=q, max_tokens=8,
                                           extra_body=extra)
    large = window - 400
    assert usual.usage.prompt_tokens + large > window  # the usual prompt leaves no room
    sized = client.chat.completions.create(model="default", messages=q, max_tokens=large,
                                           stop=["\n"], extra_body=extra)
    assert sized.choices[0].message.content
    assert sized.usage.prompt_tokens + large <= window
    assert sized.usage.prompt_tokens < usual.usage.prompt_tokens
    # The same through the pipeline API, streamed: the answer's cost shows the smaller prompt.
    with httpx.stream("POST", served.url + "/v1/answer", headers=AUTH, timeout=300, json={
            "documents": docs, "strategy": "rag", "max_tokens": large, "stop": ["\n"],
            "stream": True, "question": "Where was the great battle fought?"}) as r:
        events = sse_events(r.iter_lines())
    final = json.loads(events[-1][1])
    assert events[-1][0] == "answer", events[-1]
    assert final["cost"]["prompt_tokens"] + large <= window


# -- security and limits -----------------------------------------------------------------------
@pytest.mark.slow
def test_wrong_or_missing_api_key_is_401_health_and_metrics_need_none(served):
    for headers in ({}, {"Authorization": "Bearer nope"}):
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/answer"),
                             ("GET", "/v1/corpora"), ("GET", "/docs"),
                             ("GET", "/openapi.json")):
            r = httpx.request(method, served.url + path, headers=headers, json={})
            assert r.status_code == 401, (path, r.text)
            assert "API key" in r.json()["error"]["message"]
    assert httpx.get(served.url + "/health").status_code == 200
    # Scrapers hold no API key (issue 22; vLLM's /metrics is open too).
    assert httpx.get(served.url + "/metrics").status_code == 200


def raw_request(url: str, head: str, body: bytes = b"") -> str:
    """Send bytes as they are (to lie about Content-Length) and read the reply's head."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(head.encode() + body)
        data = s.recv(65536)
        s.settimeout(1.0)
        try:  # the rest of the reply (the JSON error after the head)
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                more = s.recv(65536)
                if not more:
                    break
                data += more
        except socket.timeout:
            pass
        return data.decode(errors="replace")


@pytest.mark.slow
def test_over_limit_body_is_413_before_it_is_read(served):
    big = 10 * BODY_CAP
    # Only the headers are sent: the reply comes without the body ever being read, so
    # nothing of it is parsed or tokenized.
    t0 = time.perf_counter()
    reply = raw_request(served.url, (
        f"POST /v1/answer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {big}\r\n\r\n"))
    assert reply.startswith("HTTP/1.1 413") and "exceeds" in reply
    assert time.perf_counter() - t0 < 5
    # A body without a length (chunked) is counted as it arrives.
    r = httpx.post(served.url + "/v1/answer", headers=AUTH,
                   content=(b"x" * 65536 for _ in range(8)))
    assert r.status_code == 413
    reply = raw_request(served.url, "POST /v1/answer HTTP/1.1\r\nHost: x\r\n"
                                    "Content-Length: -1\r\n\r\n")
    assert reply.startswith("HTTP/1.1 400")
    assert served.proc.poll() is None


@pytest.mark.slow
def test_bad_fields_are_refused_with_400(served, corpus_id):
    base = {"model": "default", "messages": [{"role": "user", "content": "Who spoke?"}],
            "metadata": {"corpus_id": corpus_id}}
    cases = {
        "max_tokens": ({"max_tokens": 0}, "max_tokens"),
        "huge max_tokens": ({"max_tokens": 10**9}, "max_tokens"),
        "tools": ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        "response_format": ({"response_format": {"type": "json_object"}}, "response_format"),
        "seed": ({"seed": 2**70}, "seed"),
        "temperature": ({"temperature": "hot"}, "temperature"),
        "n": ({"n": 2}, "n=1"),
    }
    for what, (extra, word) in cases.items():
        r = served.post("/v1/chat/completions", json={**base, **extra})
        assert r.status_code == 400, (what, r.text)
        assert word in r.json()["error"]["message"], what
    r = served.post("/v1/chat/completions", json={**base, "metadata": {}})
    assert r.status_code == 400 and "corpus_id" in r.json()["error"]["message"]
    r = served.post("/v1/answer", json={"question": "q", "corpus_id": corpus_id,
                                        "strategy": "kv_page"})
    assert r.status_code == 400 and "kv_pages" in r.json()["error"]["message"]


@pytest.mark.slow
def test_full_queue_is_429_and_clients_leaving_mid_stream_leave_it_healthy(served, corpus_id):
    def stream_request():
        return httpx.stream("POST", served.url + "/v1/chat/completions", headers=AUTH,
                            timeout=300, json={
                                "stream": True, "max_tokens": 64,
                                "messages": [{"role": "user",
                                              "content": "Summarise the speech in detail."}],
                                "metadata": {"corpus_id": corpus_id, "strategy": "full_context"}})

    a, b = stream_request(), stream_request()
    ra, rb = a.__enter__(), b.__enter__()  # headers back: both are running or waiting
    try:
        assert ra.status_code == rb.status_code == 200
        r = served.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Who spoke?"}], "max_tokens": 4,
            "metadata": {"corpus_id": corpus_id}})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert "busy" in r.json()["error"]["message"]
        # Read a couple of chunks of the first answer, then leave mid-stream.
        got = 0
        for line in ra.iter_lines():
            if line.startswith("data: "):
                got += 1
                if got == 2:
                    break
    finally:
        a.__exit__(None, None, None)
        b.__exit__(None, None, None)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        health = httpx.get(served.url + "/health").json()
        if health["in_flight"] == 0:
            break
        time.sleep(0.5)
    assert health["status"] == "ok" and health["in_flight"] == 0
    r = served.post("/v1/answer", json={"corpus_id": corpus_id, "question": "Who spoke?",
                                        "strategy": "rag", "max_tokens": 8})
    assert r.status_code == 200 and r.json()["text"]
    log = "".join(served.lines)
    assert "client left /v1/chat/completions" in log
    assert "Traceback" not in log


# -- refused before anything loads -------------------------------------------------------------
def test_binding_beyond_localhost_without_a_key_is_refused(monkeypatch):
    monkeypatch.delenv("ORCHESTRA_API_KEY", raising=False)
    r = subprocess.run([sys.executable, "-m", "orchestra.cli.main", "serve", "--host",
                        "0.0.0.0", "--port", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "without an API key" in r.stderr and "Traceback" not in r.stderr


def test_limits_must_be_positive_and_model_options_need_model_only():
    r = subprocess.run([sys.executable, "-m", "orchestra.cli.main", "serve", "--max-queue",
                        "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--max-queue must be at least 1" in r.stderr
    r = subprocess.run([sys.executable, "-m", "orchestra.cli.main", "serve", "--model",
                        "embedded"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--model-only" in r.stderr


# -- the app in-process over the scripted backend (control flow, no model) ---------------------
@pytest.fixture
def scripted_pipeline_server():
    from orchestra.backends.scripted import ScriptedBackend
    from orchestra.pipeline import Pipeline
    from orchestra.server import ServeSettings, serve_in_thread
    from orchestra.strategies.full_context import FullContext

    b = ScriptedBackend(lambda r: "Four score and seven years ago", context_window=4096)
    pipe = Pipeline(b, {"full_context": FullContext(b)})
    server = serve_in_thread(pipeline=pipe, settings=ServeSettings(max_corpora=1))
    yield server, pipe
    server.shutdown()
    server.server_close()


def test_inline_documents_are_forgotten_and_registered_corpora_are_capped(
        scripted_pipeline_server):
    server, pipe = scripted_pipeline_server
    r = httpx.post(server.url + "/v1/answer", timeout=60, json={
        "question": "When?", "documents": ["One short text."]})
    assert r.status_code == 200 and r.json()["text"] == "Four score and seven years ago"
    assert r.json()["corpus_id"] is None and pipe._corpora == {}  # not kept after answering
    first = httpx.post(server.url + "/v1/corpora", json={"documents": ["A first text."]})
    assert first.status_code == 201
    second = httpx.post(server.url + "/v1/corpora", json={"documents": ["Another text."]})
    assert second.status_code == 409 and "--max-corpora" in second.json()["error"]["message"]
    r = httpx.post(server.url + "/v1/answer", json={"question": "When?",
                                                    "corpus_id": first.json()["id"]})
    assert r.status_code == 200 and list(pipe._corpora) != []  # the registered one stays
    assert httpx.get(server.url + "/v1/corpora/" + first.json()["id"]).json()["questions"] == 1


def test_a_client_that_never_finishes_its_headers_is_disconnected(monkeypatch):
    from orchestra.backends.scripted import ScriptedBackend
    from orchestra.server import runner, serve_in_thread

    monkeypatch.setattr(runner, "HEADER_SECONDS", 0.5)
    server = serve_in_thread(ScriptedBackend(lambda r: "ok", context_window=4096))
    try:
        parts = urlsplit(server.url)
        stalled = [socket.create_connection((parts.hostname, parts.port), timeout=5)
                   for _ in range(20)]
        for s in stalled:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # never ends
        ok = httpx.post(server.url + "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert ok.status_code == 200  # others are served meanwhile
        time.sleep(1.5)
        assert all(s.recv(10) == b"" for s in stalled)  # closed by the server
        for s in stalled:
            s.close()
    finally:
        server.shutdown()
        server.server_close()


def test_a_failing_backend_is_a_json_500_or_an_error_event_not_a_broken_connection():
    from orchestra.backends.scripted import ScriptedBackend
    from orchestra.pipeline import Pipeline
    from orchestra.server import serve_in_thread
    from orchestra.strategies.full_context import FullContext

    def reply(req):
        raise RuntimeError("the model fell over")

    b = ScriptedBackend(reply, context_window=4096)
    server = serve_in_thread(pipeline=Pipeline(b, {"full_context": FullContext(b)}))
    try:
        body = {"question": "When?", "documents": ["One short text."]}
        r = httpx.post(server.url + "/v1/answer", json=body, timeout=60)
        assert r.status_code == 500 and "the model fell over" in r.json()["error"]["message"]
        with httpx.stream("POST", server.url + "/v1/answer", json={**body, "stream": True}) as s:
            events = sse_events(s.iter_lines())
        assert events[-1][0] == "error" and "fell over" in events[-1][1]
        assert httpx.get(server.url + "/health").json()["in_flight"] == 0
    finally:
        server.shutdown()
        server.server_close()


def test_served_generation_settings_reach_the_strategy_and_size_its_prompt():
    """Issue 21: max_tokens, temperature, seed and stop are arguments through Pipeline.run,
    the router and the strategy; RAG's passages shrink to leave room for a large max_tokens
    (before, they were packed for the strategy's 64 tokens and prompt + max_tokens overflowed
    the window)."""
    import openai
    from orchestra.backends.scripted import ScriptedBackend
    from orchestra.pipeline import Pipeline
    from orchestra.retrievers.bm25 import BM25Retriever
    from orchestra.routers.self_route import SelfRouter
    from orchestra.server import serve_in_thread
    from orchestra.strategies.full_context import FullContext
    from orchestra.strategies.rag import RAG

    seen = []
    b = ScriptedBackend(lambda r: seen.append(r) or "Gettysburg", context_window=1024)
    strategies = {"rag": RAG(b, retriever=BM25Retriever(b, chunk_tokens=64, overlap=0),
                             top_k_tokens=640), "full_context": FullContext(b)}
    pipe = Pipeline(b, strategies, SelfRouter(strategies, first="rag",
                                              fallback=["full_context"]))
    server = serve_in_thread(pipeline=pipe)
    try:
        text = " ".join(f"Fact {i}: the battle of town {i} was fought in field {i}."
                        for i in range(300))
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        q = [{"role": "user", "content": "Where was the battle of town 7 fought?"}]
        for max_tokens in (16, 700):
            seen.clear()
            reply = client.chat.completions.create(
                model="default", messages=q, max_tokens=max_tokens, temperature=0.5, seed=7,
                stop=["\n"], extra_body={"metadata": {"documents": [text]}})
            assert reply.choices[0].message.content == "Gettysburg"
            [req] = seen
            assert (req.max_tokens, req.temperature, req.seed, req.stop) == (
                max_tokens, 0.5, 7, ["\n"])
            prompt = b.count_prompt_tokens(req.messages)
            assert prompt + max_tokens <= 1024, (max_tokens, prompt)
            if max_tokens == 16:
                usual = prompt
        assert prompt < usual  # fewer passages beside the longer reply
    finally:
        server.shutdown()
        server.server_close()


# -- issue 22: the server's conventions (in-process uvicorn over the scripted backend) ---------
def post(url: str, **kw) -> httpx.Response:
    # The first answer in a process imports nltk (Answer.short): seconds on a busy machine.
    return httpx.post(url, timeout=60, **kw)


def get(url: str, **kw) -> httpx.Response:
    return httpx.get(url, timeout=60, **kw)


def scripted_server(settings=None, reply=lambda r: "Four score and seven years ago"):
    from orchestra.backends.scripted import ScriptedBackend
    from orchestra.pipeline import Pipeline
    from orchestra.server import ServeSettings, serve_in_thread
    from orchestra.strategies.full_context import FullContext

    b = ScriptedBackend(reply, context_window=4096)
    return serve_in_thread(pipeline=Pipeline(b, {"full_context": FullContext(b)}),
                           settings=settings or ServeSettings())


def two_requests_on_one_connection(url: str, first: bytes) -> tuple[str, str]:
    """``first`` (a whole request), then GET /health on the same keep-alive connection: both
    replies' heads and bodies ('' for the second when the server dropped the connection)."""
    parts = urlsplit(url)
    replies = []
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        for req in (first, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"):
            try:
                s.sendall(req)
                data = b""
                while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                        data.split(b"content-length: ", 1)[-1].split(b"\r\n", 1)[0] or 0):
                    more = s.recv(65536)
                    if not more:
                        break
                    data += more
            except OSError:
                data = b""
            replies.append(data.decode(errors="replace"))
    return replies[0], replies[1]


def json_post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_deep_nesting_and_huge_integers_are_400_the_connection_stays_usable(caplog):
    """N-4: both answered 500 with a traceback (twice in the log) and dropped the keep-alive
    connection."""
    import logging

    server = scripted_server()
    try:
        bodies = {"nesting": b"[" * 100000 + b"]" * 100000,
                  "digits": b'{"question": "When?", "documents": ["A text."], "max_tokens": '
                            + b"9" * 5000 + b"}"}
        for what, body in bodies.items():
            with caplog.at_level(logging.INFO):
                first, second = two_requests_on_one_connection(
                    server.url, json_post("/v1/answer", body))
            assert first.startswith("HTTP/1.1 400"), (what, first[:300])
            message = json.loads(first.split("\r\n\r\n", 1)[1])["error"]["message"]
            assert ("nested" if what == "nesting" else "digits") in message, message
            assert second.startswith("HTTP/1.1 200") and '"status":"ok"' in second, what
        assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    finally:
        server.shutdown()
        server.server_close()


def test_stream_must_be_a_real_boolean():
    """N-5: "yes" and 1 were taken as true."""
    server = scripted_server()
    try:
        for value in ("yes", 1, "true", 0):
            r = post(server.url + "/v1/answer", json={
                "question": "When?", "documents": ["A text."], "stream": value})
            assert r.status_code == 400 and "'stream'" in r.json()["error"]["message"], value
            r = post(server.url + "/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "When?"}], "stream": value,
                "documents": ["A text."]})
            assert r.status_code == 400 and "'stream'" in r.json()["error"]["message"], value
        r = post(server.url + "/v1/answer", json={
            "question": "When?", "documents": ["A text."], "stream": False})
        assert r.status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_docs_and_openapi_are_served_behind_the_api_key():
    from orchestra.server import ServeSettings

    server = scripted_server(ServeSettings(api_key=KEY))
    try:
        for path in ("/docs", "/openapi.json"):
            assert get(server.url + path).status_code == 401, path
            assert get(server.url + path, headers=AUTH).status_code == 200, path
        spec = get(server.url + "/openapi.json", headers=AUTH).json()
        assert {"/v1/answer", "/v1/corpora", "/v1/chat/completions", "/v1/models"} <= set(
            spec["paths"])
        body = spec["paths"]["/v1/answer"]["post"]["requestBody"]["content"]
        ref = body["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        fields = spec["components"]["schemas"][ref]["properties"]
        assert {"question", "corpus_id", "documents", "max_tokens", "stream"} <= set(fields)
        page = get(server.url + "/docs", headers=AUTH).text
        assert "swagger" in page.lower() and "/v1/answer" in page  # the spec is in the page
    finally:
        server.shutdown()
        server.server_close()
    open_server = scripted_server()
    try:
        assert get(open_server.url + "/openapi.json").status_code == 200
    finally:
        open_server.shutdown()
        open_server.server_close()


def test_metrics_are_scrapable_without_the_key_or_with_their_own_key():
    from orchestra.server import ServeSettings

    server = scripted_server(ServeSettings(api_key=KEY))
    try:
        r = get(server.url + "/metrics")
        assert r.status_code == 200 and "orchestra_requests_total" in r.text
        assert get(server.url + "/v1/models").status_code == 401  # the rest needs it
    finally:
        server.shutdown()
        server.server_close()
    server = scripted_server(ServeSettings(api_key=KEY, metrics_key="scrape-me"))
    try:
        assert get(server.url + "/metrics").status_code == 401
        assert get(server.url + "/metrics", headers=AUTH).status_code == 401
        r = get(server.url + "/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert r.status_code == 200 and "orchestra_requests_total" in r.text
    finally:
        server.shutdown()
        server.server_close()


def test_error_codes_are_strings_or_null_as_in_openai():
    import openai
    from orchestra.server import ServeSettings

    server = scripted_server(ServeSettings(api_key=KEY))
    try:
        bad = post(server.url + "/v1/answer", headers=AUTH, json={"question": ""})
        wrong_model = post(server.url + "/v1/chat/completions", headers=AUTH, json={
            "model": "other", "messages": [{"role": "user", "content": "x"}]})
        unauthorized = get(server.url + "/v1/models")
        missing = get(server.url + "/v1/nothing", headers=AUTH)
        for r, status in ((bad, 400), (wrong_model, 404), (unauthorized, 401), (missing, 404)):
            err = r.json()["error"]
            assert r.status_code == status
            assert err["code"] is None or isinstance(err["code"], str), err
            assert set(err) == {"message", "type", "param", "code"}
        assert wrong_model.json()["error"]["code"] == "model_not_found"
        assert unauthorized.json()["error"]["code"] == "invalid_api_key"
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.NotFoundError) as e:
            client.chat.completions.create(model="other", messages=[
                {"role": "user", "content": "x"}])
        assert e.value.code == "model_not_found"
    finally:
        server.shutdown()
        server.server_close()


def test_documents_and_corpus_id_in_extra_body_beside_metadata():
    import openai

    server = scripted_server()
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        q = [{"role": "user", "content": "When?"}]
        inline = client.chat.completions.create(
            model="default", messages=q,
            extra_body={"documents": ["One short text."], "strategy": "full_context"})
        assert inline.choices[0].message.content == "Four score and seven years ago"
        assert inline.model_extra["orchestra"]["corpus_id"] is None
        cid = post(server.url + "/v1/corpora",
                         json={"documents": ["A registered text."]}).json()["id"]
        by_id = client.chat.completions.create(model="default", messages=q,
                                               extra_body={"corpus_id": cid})
        assert by_id.model_extra["orchestra"]["corpus_id"] == cid
        streamed = list(client.chat.completions.create(
            model="default", messages=q, stream=True, extra_body={"corpus_id": cid}))
        assert streamed[-1].model_extra["orchestra"]["corpus_id"] == cid
        with pytest.raises(openai.BadRequestError, match="not both"):
            client.chat.completions.create(model="default", messages=q,
                                           metadata={"corpus_id": cid},
                                           extra_body={"documents": ["x"]})
    finally:
        server.shutdown()
        server.server_close()
