"""Bad input from a server (issue 14, C-5 and H-2): the OpenAI backend against servers that
misbehave (a reply it cannot read, a model list that is a list, a server that trickles)
names the URL and what was wrong, within its timeout. The table of command-line probes is
tests/test_bad_input.py."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestra.backends.base import GenerationRequest, Message
from orchestra.errors import BackendError


# -- C-5, H-2: the OpenAI backend against servers that misbehave ------------------------------
@contextmanager
def http_server(handler):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            handler(self)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            handler(self)

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _reply(body: bytes, ctype="application/json"):
    def handler(h):
        h.send_response(200)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    return handler


GOOD = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


@pytest.mark.parametrize("body, ctype, words", [
    (b"<html><body>Proxy login</body></html>", "text/html", "is not JSON"),
    (json.dumps(GOOD).encode()[:25], "application/json", "is not JSON"),
    (json.dumps({**GOOD, "usage": {"prompt_tokens": "three", "completion_tokens": 1}}).encode(),
     "application/json", "usage counts are not token counts"),
    (json.dumps([GOOD]).encode(), "application/json", r"no choices\[0\]\.message"),
], ids=["html", "truncated", "usage-not-numbers", "a-list"])
def test_c5_openai_backend_names_a_reply_it_cannot_read(body, ctype, words):
    from orchestra.backends.openai_backend import OpenAIBackend

    with http_server(_reply(body, ctype)) as url:
        b = OpenAIBackend(url, model="m", context_window=512, max_retries=0)
        with pytest.raises(BackendError, match=words):
            b.generate_one(GenerationRequest(messages=[Message(role="user", content="hi")],
                                             max_tokens=4))


def test_c5_openai_backend_names_a_model_list_that_is_a_list():
    from orchestra.backends.openai_backend import OpenAIBackend

    with http_server(_reply(json.dumps([{"id": "m"}]).encode())) as url:
        with pytest.raises(BackendError, match="did not reply with"):
            OpenAIBackend(url, max_retries=0).context_window


def test_h2_openai_timeout_bounds_the_whole_request():
    from orchestra.backends.openai_backend import OpenAIBackend

    body = json.dumps(GOOD).encode()

    def trickle(h):  # one byte every 0.2 s: each read is quick, the reply takes 20 s
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        try:
            for i in range(len(body)):
                h.wfile.write(body[i:i + 1])
                h.wfile.flush()
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass

    with http_server(trickle) as url:
        b = OpenAIBackend(url, model="m", context_window=512, timeout=1.0, max_retries=0)
        t0 = time.monotonic()
        with pytest.raises(BackendError, match="within the 1 s timeout"):
            b.generate_one(GenerationRequest(messages=[Message(role="user", content="hi")],
                                             max_tokens=4))
        assert time.monotonic() - t0 < 3
