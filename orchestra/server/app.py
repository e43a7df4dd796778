"""The HTTP side: an OpenAI-compatible subset on the standard library's ThreadingHTTPServer.

Requests and replies follow OpenAI's chat-completions shapes (and vLLM's /tokenize), so the
``openai`` backend, the openai SDK, LangChain's ChatOpenAI and curl all work against it. Errors
come back as ``{"error": {"message", "type", "code"}}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import ValidationError

from orchestra.backends.base import Backend, GenerationRequest, Message
from orchestra.errors import OrchestraError
from orchestra.server.batcher import Batcher

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024
DEFAULT_MAX_TOKENS = 256


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.type = type_


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str):
                parts.append(p["text"])
            else:
                raise ApiError(400, f"{where}: only text content parts are supported")
        return "".join(parts)
    if content is None:
        return ""
    raise ApiError(400, f"{where}: content must be a string or a list of text parts")


def parse_messages(raw: Any) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise ApiError(400, f"messages[{i}] must be an object")
        role = m.get("role")
        role = "system" if role == "developer" else role
        try:
            out.append(Message(role=role, content=_text(m.get("content"), f"messages[{i}]")))
        except ValidationError:
            raise ApiError(400, f"messages[{i}].role must be system, user or assistant, "
                                f"not {role!r}") from None
    return out


def parse_chat_request(body: dict) -> GenerationRequest:
    """An OpenAI chat-completions body as our GenerationRequest (OpenAI's defaults)."""
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n=1 is supported")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or DEFAULT_MAX_TOKENS
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    temperature = body.get("temperature")
    try:
        return GenerationRequest(
            messages=parse_messages(body.get("messages")), max_tokens=max_tokens,
            temperature=1.0 if temperature is None else temperature, stop=stop,
            seed=body.get("seed"),
        )
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"])
        raise ApiError(400, f"invalid field {field!r}: {err['msg']}") from None


class OrchestraServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, backend: Backend, model_name: str, max_batch: int):
        self.backend = backend
        self.model_name = model_name
        self.created = int(time.time())
        self.batcher = Batcher(backend, max_batch=max_batch)
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def server_close(self) -> None:
        self.batcher.close()
        super().server_close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: OrchestraServer

    def log_message(self, fmt: str, *args: Any) -> None:
        log.info("%s " + fmt, self.address_string(), *args)

    # -- plumbing -------------------------------------------------------------------------
    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, err: ApiError) -> None:
        self._send(err.status, {"error": {"message": str(err), "type": err.type,
                                          "code": err.status}})

    def _body(self) -> dict:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
        if n > MAX_BODY:
            raise ApiError(413, f"request body of {n} bytes exceeds {MAX_BODY}")
        try:
            body = json.loads(self.rfile.read(n) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        return body

    def _dispatch(self, routes: dict) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        fn = routes.get(path)
        try:
            if fn is None:
                raise ApiError(404, f"no route {self.command} {path}", "not_found_error")
            fn()
        except ApiError as e:
            self._error(e)
        except OrchestraError as e:  # the user's request cannot be served (too long, ...)
            self._error(ApiError(400, str(e)))
        except Exception as e:  # noqa: BLE001
            log.exception("request failed")
            self._error(ApiError(500, f"{type(e).__name__}: {e}", "server_error"))

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch({"/v1/models": self.models, "/models": self.models,
                        "/health": self.health})

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch({"/v1/chat/completions": self.chat, "/chat/completions": self.chat,
                        "/tokenize": self.tokenize, "/v1/tokenize": self.tokenize})

    # -- endpoints ------------------------------------------------------------------------
    def health(self) -> None:
        self._send(200, {"status": "ok"})

    def models(self) -> None:
        s = self.server
        self._send(200, {"object": "list", "data": [{
            "id": s.model_name, "object": "model", "created": s.created, "owned_by": "orchestra",
            "max_model_len": s.backend.context_window,
            "capabilities": sorted(s.backend.capabilities),
        }]})

    def _check_model(self, body: dict) -> None:
        model = body.get("model")
        if model not in (None, "", self.server.model_name):
            raise ApiError(404, f"model {model!r} is not served here; this server serves "
                                f"{self.server.model_name!r}", "not_found_error")

    def chat(self) -> None:
        body = self._body()
        self._check_model(body)
        req = parse_chat_request(body)
        res = self.server.batcher.submit(req).result()
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        usage = {"prompt_tokens": res.prompt_tokens, "completion_tokens": res.generated_tokens,
                 "total_tokens": res.prompt_tokens + res.generated_tokens}
        created = int(time.time())
        if body.get("stream"):
            self._stream(rid, created, res.text, res.finish_reason, usage,
                         bool((body.get("stream_options") or {}).get("include_usage")))
            return
        self._send(200, {
            "id": rid, "object": "chat.completion", "created": created,
            "model": self.server.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": res.text},
                         "finish_reason": res.finish_reason, "logprobs": None}],
            "usage": usage,
        })

    def _stream(self, rid, created, text, finish, usage, include_usage) -> None:
        # The backend answers whole; the stream is the reply as one delta (server-sent events).
        def event(choices, extra=None):
            d = {"id": rid, "object": "chat.completion.chunk", "created": created,
                 "model": self.server.model_name, "choices": choices, **(extra or {})}
            return f"data: {json.dumps(d)}\n\n".encode()

        chunks = [
            event([{"index": 0, "delta": {"role": "assistant", "content": text},
                    "finish_reason": None}]),
            event([{"index": 0, "delta": {}, "finish_reason": finish}]),
        ]
        if include_usage:
            chunks.append(event([], {"usage": usage}))
        chunks.append(b"data: [DONE]\n\n")
        data = b"".join(chunks)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def tokenize(self) -> None:
        """vLLM's shape ({"prompt"} or {"messages"}) and llama.cpp's ({"content"}).

        ``"return_offsets": true`` (our extension) adds each token's character span, which
        the openai backend needs to chunk documents with the server's own tokenizer.
        """
        body = self._body()
        self._check_model(body)
        backend = self.server.backend
        out: dict[str, Any] = {"max_model_len": backend.context_window}
        if "messages" in body:
            out["count"] = backend.count_prompt_tokens(parse_messages(body["messages"]))
            out["tokens"] = []
        else:
            text = body.get("prompt", body.get("content"))
            if not isinstance(text, str):
                raise ApiError(400, "give 'prompt' (or 'content') as a string, or 'messages'")
            tok = backend.tokenizer
            offsets = tok.offsets(text)
            out["count"] = len(offsets)
            encode = getattr(tok, "encode", None)
            out["tokens"] = encode(text) if encode else []
            if body.get("return_offsets"):
                out["offsets"] = [list(o) for o in offsets]
        self._send(200, out)


def make_server(backend: Backend, host: str = "127.0.0.1", port: int = 0,
                model_name: str | None = None, max_batch: int = 16) -> OrchestraServer:
    """A bound server (``port=0`` picks a free one; see ``server.url``); call serve_forever.

    ``max_batch``: most concurrent requests generated as one backend batch (1 turns
    gathering off; benchmarks/serve_batching.py compares)."""
    name = model_name or str(backend.spec().get("model") or backend.name)
    return OrchestraServer((host, port), backend, name, max_batch=max_batch)


def serve_in_thread(backend: Backend, **kw: Any) -> OrchestraServer:
    """Start a server on a daemon thread (notebooks, tests); stop it with ``.shutdown()``."""
    server = make_server(backend, **kw)
    threading.Thread(target=server.serve_forever, name="orchestra-server", daemon=True).start()
    return server
