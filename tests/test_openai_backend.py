"""The openai backend and `orchestra serve`, over real HTTP on 127.0.0.1 only.

Fast tests drive the backend against small stdlib servers that misbehave on purpose (down,
slow, 429/5xx, no /tokenize) and against our own server over the scripted backend. The slow
test starts `orchestra serve` on the embedded model as a subprocess and checks answers and
token counts against the in-process backend.
"""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestra.backends.base import GenerationRequest, Message
from orchestra.backends.openai_backend import OpenAIBackend
from orchestra.backends.scripted import ScriptedBackend
from orchestra.errors import BackendError, ConfigError
from orchestra.server import serve_in_thread

FAST = dict(backoff=0.01, max_backoff=0.05, connect_timeout=1.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def completion(text="ok", prompt_tokens=7, completion_tokens=2, finish="stop"):
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class Stub:
    """A stdlib server replying from a list of (status, body, delay) per request path."""

    def __init__(self, replies: dict[str, list]):
        self.replies = replies
        self.hits: dict[str, int] = {}
        stub = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                path = self.path
                stub.hits[path] = stub.hits.get(path, 0) + 1
                seq = stub.replies.get(path, [(404, {"error": {"message": "no route"}}, 0)])
                status, body, delay = seq[min(stub.hits[path] - 1, len(seq) - 1)]
                time.sleep(delay)
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    made = []

    def make(replies):
        s = Stub(replies)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


REQ = GenerationRequest.user("hello", max_tokens=5)


def test_server_down_fails_clearly_after_the_configured_retries():
    url = f"http://127.0.0.1:{free_port()}/v1"
    b = OpenAIBackend(base_url=url, model="m", max_retries=2, **FAST)
    with pytest.raises(BackendError) as e:
        b.generate([REQ])
    msg = str(e.value)
    assert "after 3 attempts" in msg and "2 retries" in msg
    assert "could not connect" in msg and url in msg


def test_timeout_fails_clearly_after_retries(stub):
    s = stub({"/v1/chat/completions": [(200, completion(), 2.0)]})
    b = OpenAIBackend(base_url=s.url, model="m", timeout=0.3, max_retries=1, **FAST)
    t0 = time.perf_counter()
    with pytest.raises(BackendError, match=r"after 2 attempts.*0.3 s timeout"):
        b.generate([REQ])
    assert s.hits["/v1/chat/completions"] == 2
    assert time.perf_counter() - t0 < 5


def test_429_and_5xx_are_retried_then_succeed(stub):
    s = stub({"/v1/chat/completions": [
        (429, {"error": {"message": "slow down"}}, 0),
        (503, {"error": {"message": "loading"}}, 0),
        (200, completion("Paris", 11, 3, "length"), 0),
    ]})
    b = OpenAIBackend(base_url=s.url, model="m", max_retries=3, **FAST)
    [res] = b.generate([REQ])
    assert s.hits["/v1/chat/completions"] == 3
    assert (res.text, res.prompt_tokens, res.generated_tokens, res.finish_reason) == (
        "Paris", 11, 3, "length")


def test_5xx_exhausting_retries_names_the_last_status(stub):
    s = stub({"/v1/chat/completions": [(500, {"error": {"message": "boom"}}, 0)]})
    b = OpenAIBackend(base_url=s.url, model="m", max_retries=1, **FAST)
    with pytest.raises(BackendError, match=r"after 2 attempts.*HTTP 500: boom"):
        b.generate([REQ])
    assert s.hits["/v1/chat/completions"] == 2


def test_client_errors_are_not_retried(stub):
    s = stub({"/v1/chat/completions": [(400, {"error": {"message": "too long"}}, 0)]})
    b = OpenAIBackend(base_url=s.url, model="m", max_retries=3, **FAST)
    with pytest.raises(BackendError, match="HTTP 400: too long"):
        b.generate([REQ])
    assert s.hits["/v1/chat/completions"] == 1


def test_server_without_tokenize_asks_for_a_local_tokenizer(stub):
    s = stub({"/v1/models": [(200, {"data": [{"id": "m"}]}, 0)]})
    b = OpenAIBackend(base_url=s.url, max_retries=0, **FAST)
    with pytest.raises(BackendError, match="no /tokenize endpoint.*tokenizer="):
        b.count_tokens("some text")


def test_missing_window_and_bad_options_are_config_errors(stub):
    s = stub({"/v1/models": [(200, {"data": [{"id": "m"}]}, 0)]})
    with pytest.raises(ConfigError, match="context_window"):
        OpenAIBackend(base_url=s.url, **FAST).context_window
    with pytest.raises(ConfigError, match="base_url"):
        OpenAIBackend(base_url="localhost:8000")
    with pytest.raises(ConfigError, match="tokenizer"):
        OpenAIBackend(base_url=s.url, tokenizer="/nonexistent/tokenizer")


def test_base_url_forms_and_the_spec_hides_the_key():
    b = OpenAIBackend(base_url="http://127.0.0.1:9/", api_key="sk-secret", timeout=30.0)
    assert b.base_url == "http://127.0.0.1:9/v1" and b.root_url == "http://127.0.0.1:9"
    assert "sk-secret" not in json.dumps(b.spec()) and "api_key" not in b.spec()
    assert b.spec()["timeout"] == 30.0 and b.spec(full=False) == {
        "base_url": "http://127.0.0.1:9/", "timeout": 30.0}


# -- our server over the scripted backend ---------------------------------------------------
@pytest.fixture
def scripted_server():
    backend = ScriptedBackend(lambda r: "reply to " + r.messages[-1].content,
                              context_window=4096)
    server = serve_in_thread(backend, model_name="scripted-model")
    yield server, backend
    server.shutdown()
    server.server_close()


def test_concurrent_requests_are_batched_and_kept_in_order(scripted_server):
    server, backend = scripted_server
    b = OpenAIBackend(base_url=server.url, concurrency=8, max_retries=0, **FAST)
    reqs = [GenerationRequest.user(f"question {i}", max_tokens=50) for i in range(8)]
    results = b.generate(reqs)
    assert [r.text for r in results] == [f"reply to question {i}" for i in range(8)]
    for req, res in zip(reqs, results):
        assert res.prompt_tokens == backend.count_prompt_tokens(req.messages)
        assert res.generated_tokens == backend.tokenizer.count(res.text)
    assert b.model == "scripted-model" and b.context_window == 4096
    assert max(server.batcher.batch_sizes) > 1  # some requests shared a backend batch


def test_server_tokenize_and_offsets_match_the_backend(scripted_server):
    server, backend = scripted_server
    b = OpenAIBackend(base_url=server.url, max_retries=0, **FAST)
    text = "Alpha, beta; gamma delta."
    assert b.count_tokens(text) == backend.count_tokens(text)
    assert b.tokenizer.offsets(text) == backend.tokenizer.offsets(text)
    msgs = [Message(role="system", content="s"), Message(role="user", content="a b c")]
    assert b.count_prompt_tokens(msgs) == backend.count_prompt_tokens(msgs)


def test_server_rejects_bad_requests_with_openai_errors(scripted_server):
    import httpx

    server, _ = scripted_server
    url = server.url + "/v1/chat/completions"
    r = httpx.post(url, json={"messages": [{"role": "tool", "content": "x"}]})
    assert r.status_code == 400 and "role" in r.json()["error"]["message"]
    r = httpx.post(url, json={"model": "other", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and "scripted-model" in r.json()["error"]["message"]
    r = httpx.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = httpx.post(url, json={"messages": [{"role": "user", "content": "x"}], "stream": True,
                              "stream_options": {"include_usage": True}})
    events = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "reply to x"
    assert json.loads(events[-2])["usage"]["completion_tokens"] == 3


def test_serve_option_parsing():
    from orchestra.cli.serve import parse_options

    assert parse_options(["device=cpu", "batch_size=4"]) == {"device": "cpu", "batch_size": 4}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_options(["novalue"])


# -- a real server process on the embedded model --------------------------------------------
def _start_serve(timeout: float = 240.0):
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestra.cli.main", "serve", "--model-only", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if "listening on " in line:
            return proc, line.split("listening on ", 1)[1].split()[0]
    proc.kill()
    pytest.fail("orchestra serve did not start:\n" + "".join(seen[-20:]))


@pytest.mark.slow
def test_real_server_process_answers_with_server_token_counts(embedded):
    proc, url = _start_serve()
    try:
        b = OpenAIBackend(base_url=url, timeout=180, max_retries=1, **FAST)
        doc = "The museum opened in 1887. Its first curator was Ada Lindqvist, a botanist."
        reqs = [
            GenerationRequest.user(f"{doc}\n\nWho was the first curator? Reply with the name.",
                                   system="Answer briefly.", max_tokens=32),
            GenerationRequest.user(f"{doc}\n\nIn which year did the museum open?",
                                   system="Answer briefly.", max_tokens=32),
        ]
        results = b.generate(reqs)
        assert "Lindqvist" in results[0].text
        assert "1887" in results[1].text
        for req, res in zip(reqs, results):
            # Usage comes from the server; it must equal the model's own count of the prompt.
            assert res.prompt_tokens == embedded.count_prompt_tokens(req.messages)
            assert 0 < res.generated_tokens <= 32
        # Counting through the server's /tokenize matches the model's tokenizer.
        assert b.count_tokens(doc) == embedded.count_tokens(doc)
        assert b.context_window == embedded.context_window
        # Greedy decoding of one request is identical to the in-process backend.
        [local] = embedded.generate([reqs[0]])
        [remote] = b.generate([reqs[0]])
        assert (remote.text, remote.generated_tokens) == (local.text, local.generated_tokens)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # The same client once the server is gone: a clear error after its retries.
    with pytest.raises(BackendError, match=r"after 2 attempts.*could not connect"):
        b.generate([reqs[0]])
