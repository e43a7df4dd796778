"""The HTTP side, on FastAPI (served by uvicorn, see orchestra/server/runner.py).

Two modes, one app factory:

- pipeline (``orchestra serve [PIPELINE.yaml]``): the pipeline is the model. ``POST/GET/DELETE
  /v1/corpora`` (documents chunked, indexed and KV-prefilled once), ``POST /v1/answer`` (the
  Answer as JSON, or server-sent events with ``"stream": true``) and ``POST
  /v1/chat/completions`` (OpenAI-compatible: documents as ``metadata.documents`` or
  ``metadata.corpus_id``, the question is the user message; ``stream: true`` sends tokens, the
  last chunk carries ``orchestra``: route, evidence and cost).
- model (``orchestra serve --model-only``): the backend's model as an OpenAI-compatible
  server (``/v1/chat/completions``, ``/tokenize``), requests gathered into batches; the
  ``openai`` backend is tested against it.

Both: ``GET /v1/models``, ``GET /health`` (no key), ``GET /metrics`` (Prometheus text), an API
key (``Authorization: Bearer``) when one is set, a body cap checked from Content-Length before
anything is read (413), a body read timeout (408), a bounded queue of requests running or
waiting (429 when full), validated fields (400), tokenization on request threads (never in
the batch worker or the event loop), and one log line for a client that leaves early.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterator

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestra.backends.base import Backend, GenerationResult
from orchestra.errors import OrchestraError
from orchestra.server.batcher import Batcher
from orchestra.server.corpora import Corpora
from orchestra.server.metrics import Metrics
from orchestra.streaming import iterate_in_thread
from orchestra.server.requests import (
    ApiError,
    check_fields,
    documents_field,
    generation_request,
    parse_messages,
    question_of,
    sampling,
)

log = logging.getLogger("orchestra.server")


@dataclass
class ServeSettings:
    api_key: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    max_documents: int = 64
    max_request_tokens: int = 1_000_000
    max_queue: int = 16  # requests running or waiting; one more is answered 429
    body_timeout: float = 30.0  # seconds to receive a request body
    max_batch: int = 16  # model mode: requests generated as one backend batch
    max_corpora: int = 8  # registered corpora kept (indexed and prefilled) at once


class Gate:
    """The bounded queue: requests running or waiting for the model (event-loop side only)."""

    def __init__(self, limit: int, metrics: Metrics):
        self.limit = max(1, int(limit))
        self.n = 0
        self.metrics = metrics

    def enter(self) -> None:
        if self.n >= self.limit:
            self.metrics.rejected.inc()
            raise ApiError(429, f"the server is busy: {self.n} requests are running or waiting "
                                f"(--max-queue {self.limit}); retry shortly",
                           "rate_limit_error", {"Retry-After": "1"})
        self.n += 1
        self.metrics.in_flight.set(self.n)

    def leave(self) -> None:
        self.n -= 1
        self.metrics.in_flight.set(self.n)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on a worker thread while holding a place in the queue."""
        self.enter()
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        finally:
            self.leave()


class BodyLimit:
    """ASGI middleware: refuse a body over the cap (or a bad Content-Length) from its header,
    before reading a byte of it; bodies without a length are counted as they arrive
    (read_body)."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None:
                err = None
                try:
                    n = int(length)
                    if n < 0:
                        raise ValueError
                except ValueError:
                    err = ApiError(400, f"bad Content-Length {length.decode(errors='replace')!r}")
                else:
                    if n > self.limit:
                        err = ApiError(413, f"request body of {n} bytes exceeds this server's "
                                            f"limit of {self.limit} (--max-body-bytes)")
                if err is not None:
                    await _error_response(err)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class CountRequests:
    """ASGI middleware: requests and latency per endpoint and status. (Starlette's
    BaseHTTPMiddleware would hide a client's disconnect from streaming responses.)"""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            # The route's template (/v1/corpora/{corpus_id}), not the path: ids would make
            # one series per corpus.
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)


def _error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def read_body(request: Request, settings: ServeSettings) -> bytes:
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise ApiError(413, f"request body exceeds this server's limit of "
                                    f"{settings.max_body_bytes} bytes (--max-body-bytes)")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), settings.body_timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within "
                            f"{settings.body_timeout:g} s", "timeout_error") from None
    body = b"".join(chunks)
    request._body = body  # noqa: SLF001  (starlette reads a form from the cached body)
    return body


async def read_json(request: Request, settings: ServeSettings) -> dict:
    body = await read_body(request, settings)
    try:
        data = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


def stream_error(e: Exception) -> ApiError:
    """An exception met mid-stream, as the error event sent before the stream ends (the
    status line is long gone): the request's fault is a 400, anything else a logged 500."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, OrchestraError):
        return ApiError(400, str(e))
    log.exception("a streamed answer failed")
    return ApiError(500, f"{type(e).__name__}: {e}", "server_error")


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {payload}\n\n".encode()


def create_app(*, pipeline=None, backend: Backend | None = None, name: str,
               settings: ServeSettings | None = None) -> FastAPI:
    """The app serving ``pipeline`` (as model ``name``) or, with ``backend`` alone, the
    model only."""
    settings = settings or ServeSettings()
    if pipeline is None and backend is None:
        raise ValueError("give a pipeline or a backend")
    backend = pipeline.backend if pipeline is not None else backend
    mode = "pipeline" if pipeline is not None else "model"
    metrics = Metrics()
    gate = Gate(settings.max_queue, metrics)
    app = FastAPI(title="orchestra", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.metrics, app.state.gate = settings, metrics, gate
    app.state.mode, app.state.name, app.state.backend = mode, name, backend
    created = int(time.time())
    corpora = (Corpora(pipeline, metrics, settings.max_request_tokens, settings.max_corpora)
               if pipeline is not None else None)
    batcher = Batcher(backend, max_batch=settings.max_batch) if pipeline is None else None
    app.state.corpora, app.state.batcher = corpora, batcher
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    # -- errors, auth, metrics -------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return _error_response(err)

    @app.exception_handler(OrchestraError)
    async def _orchestra_error(request: Request, err: OrchestraError):
        # The request cannot be served as given (too long for the window, unknown strategy).
        return _error_response(ApiError(400, str(err)))

    @app.exception_handler(Exception)
    async def _server_error(request: Request, err: Exception):
        # A bug, not the request's fault: logged with its traceback, answered as JSON.
        log.exception("%s %s failed", request.method, request.url.path)
        return _error_response(ApiError(500, f"{type(err).__name__}: {err}", "server_error"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        msg = (f"no route {request.method} {request.url.path}" if err.status_code == 404
               else str(err.detail))
        return _error_response(ApiError(err.status_code, msg, kind))

    app.add_middleware(CountRequests, metrics=metrics)

    def authorize(request: Request) -> None:
        if not settings.api_key:
            return
        given = request.headers.get("authorization", "")
        token = given[7:].strip() if given.lower().startswith("bearer ") else \
            request.headers.get("x-api-key", "")
        if not token or not hmac.compare_digest(token.encode(), settings.api_key.encode()):
            raise ApiError(401, "missing or wrong API key (send Authorization: Bearer <key>)",
                           "authentication_error", {"WWW-Authenticate": "Bearer"})

    def check_model(body: dict) -> None:
        model = body.get("model")
        if model not in (None, "", name):
            raise ApiError(404, f"model {model!r} is not served here; this server serves "
                                f"{name!r}", "not_found_error")

    # -- common endpoints -------------------------------------------------------------------
    @app.get("/health")
    async def health():
        out = {"status": "ok", "mode": mode, "model": name, "in_flight": gate.n,
               "max_queue": gate.limit}
        if corpora is not None:
            out["corpora"] = len(corpora.all())
        return out

    @app.get("/metrics")
    async def metrics_text(request: Request):
        authorize(request)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    @app.get("/models")
    async def models(request: Request):
        authorize(request)
        entry = {"id": name, "object": "model", "created": created, "owned_by": "orchestra",
                 "max_model_len": backend.context_window,
                 "capabilities": sorted(backend.capabilities)}
        if pipeline is not None:
            entry["strategies"] = list(pipeline.strategies)
            entry["router"] = getattr(pipeline.router, "name", type(pipeline.router).__name__)
        return {"object": "list", "data": [entry]}

    if pipeline is None:
        _model_routes(app, backend, name, settings, gate, metrics, batcher, authorize,
                      check_model)
    else:
        _pipeline_routes(app, pipeline, name, settings, gate, metrics, corpora, authorize,
                         check_model)
    return app


# -- pipeline mode ------------------------------------------------------------------------------
def _pipeline_routes(app, pipeline, name, settings, gate, metrics, corpora: Corpora,
                     authorize, check_model) -> None:
    window = pipeline.backend.context_window

    async def register(docs, warm: bool):
        return await gate.run(corpora.build, docs, warm)

    @app.post("/v1/corpora", status_code=201)
    async def create_corpus(request: Request):
        authorize(request)
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            await read_body(request, settings)
            form = await request.form()
            files = form.getlist("files") or form.getlist("file")
            if not files:
                raise ApiError(400, "upload the documents as form field 'files'")
            if len(files) > settings.max_documents:
                raise ApiError(413, f"{len(files)} files; this server takes at most "
                                    f"{settings.max_documents} per request (--max-documents)")
            docs = []
            for f in files:
                if isinstance(f, str):
                    raise ApiError(400, "form field 'files' must hold uploaded files")
                raw = await f.read()
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ApiError(400, f"{f.filename}: not UTF-8 text (invalid byte at offset "
                                        f"{e.start})") from None
                docs.append((f.filename or f"doc{len(docs)}", text))
            docs = documents_field([{"name": n, "text": t} for n, t in docs], "files",
                                   settings.max_documents)
            warm = str(form.get("warm", "true")).lower() != "false"
        else:
            body = await read_json(request, settings)
            unknown = set(body) - {"documents", "warm"}
            if unknown:
                raise ApiError(400, f"unknown field(s) {sorted(unknown)}; give 'documents' "
                                    "(and optionally 'warm')")
            docs = documents_field(body.get("documents"), "'documents'",
                                   settings.max_documents)
            warm = body.get("warm", True)
            if not isinstance(warm, bool):
                raise ApiError(400, "'warm' must be true or false")
        entry, new = await register(docs, warm)
        return JSONResponse({**entry.describe(), "new": new}, status_code=201 if new else 200)

    @app.get("/v1/corpora")
    async def list_corpora(request: Request):
        authorize(request)
        return {"object": "list", "data": [e.describe() for e in corpora.all()]}

    @app.get("/v1/corpora/{corpus_id}")
    async def get_corpus(corpus_id: str, request: Request):
        authorize(request)
        return corpora.get(corpus_id).describe()

    @app.delete("/v1/corpora/{corpus_id}")
    async def delete_corpus(corpus_id: str, request: Request):
        authorize(request)
        entry = corpora.delete(corpus_id)
        return {"id": entry.id, "object": "corpus", "deleted": True}

    def resolve_docs(corpus_id: Any, documents: Any, where: str):
        """A registered corpus entry, or documents to build one from (on the work thread)."""
        if (corpus_id is None) == (documents is None):
            raise ApiError(400, f"give exactly one of {where}corpus_id and {where}documents")
        if corpus_id is not None:
            if not isinstance(corpus_id, str):
                raise ApiError(400, f"{where}corpus_id must be a string")
            return corpora.get(corpus_id), None
        return None, documents_field(documents, f"{where}documents", settings.max_documents)

    def prepare(entry, docs):
        """(entry or None, corpus) on a work thread: tokenizing happens here."""
        if entry is not None:
            return entry, entry.corpus
        corpus = corpora.corpus_of(docs)
        return None, corpus

    def run_answer(entry, docs, question, strategy, overrides):
        from orchestra.streaming import generation_overrides

        corpora.working_on(entry)  # this thread's context copy only
        entry, corpus = prepare(entry, docs)
        try:
            with generation_overrides(**overrides):
                answer = pipeline.run(question, corpus, strategy=strategy)
        finally:
            if entry is None:
                corpora.release(corpus)
        if entry is not None:
            entry.questions += 1
        metrics.count_answer(answer)
        return answer

    def stream_answer(entry, docs, question, strategy, overrides) -> Callable[[], Iterator]:
        from orchestra.streaming import generation_overrides

        def make():
            corpora.working_on(entry)
            _, corpus = prepare(entry, docs)

            def events():
                try:
                    with generation_overrides(**overrides):
                        for ev in pipeline.stream(question, corpus, strategy=strategy):
                            if ev.type == "answer":
                                if entry is not None:
                                    entry.questions += 1
                                metrics.count_answer(ev.answer)
                            yield ev
                finally:
                    if entry is None:
                        corpora.release(corpus)

            return events()

        return make

    def check_strategy(strategy: Any) -> str | None:
        if strategy in (None, "auto"):
            return None
        if not isinstance(strategy, str) or strategy not in pipeline.strategies:
            raise ApiError(400, f"strategy {strategy!r} is not in this pipeline; its strategies: "
                                f"{', '.join(pipeline.strategies)} (or auto)")
        return strategy

    def answer_json(answer, entry) -> dict:
        out = answer.model_dump(mode="json")
        out["corpus_id"] = entry.id if entry is not None else None
        return out

    async def guarded_stream(chunks: AsyncIterator[bytes], what: str) -> AsyncIterator[bytes]:
        """Leaves the gate when the stream ends; a client that leaves is one log line."""
        sent = 0
        try:
            async for c in chunks:
                sent += 1
                yield c
        except (asyncio.CancelledError, GeneratorExit):
            metrics.disconnects.inc()
            log.info("client left %s after %d chunks; its generation was stopped", what, sent)
            raise
        finally:
            gate.leave()

    @app.post("/v1/answer")
    async def answer(request: Request):
        authorize(request)
        body = await read_json(request, settings)
        unknown = set(body) - {"question", "corpus_id", "documents", "strategy", "stream",
                               "max_tokens", "temperature", "seed", "stop"}
        if unknown:
            raise ApiError(400, f"unknown field(s) {sorted(unknown)}")
        question = body.get("question")
        if not isinstance(question, str) or not question.strip():
            raise ApiError(400, "'question' must be a non-empty string")
        entry, docs = resolve_docs(body.get("corpus_id"), body.get("documents"), "")
        strategy = check_strategy(body.get("strategy"))
        overrides = sampling(body, window)
        if not body.get("stream"):
            ans = await gate.run(run_answer, entry, docs, question, strategy, overrides)
            return answer_json(ans, entry)
        gate.enter()  # left by guarded_stream when the stream ends

        async def events() -> AsyncIterator[bytes]:
            try:
                async for ev in iterate_in_thread(stream_answer(entry, docs, question,
                                                                strategy, overrides)):
                    data = (answer_json(ev.answer, entry) if ev.type == "answer"
                            else ev.model_dump(mode="json", exclude={"type"}))
                    yield sse(data, ev.type)
            except Exception as e:  # noqa: BLE001  (the client gets an error event)
                err = stream_error(e)
                yield sse(err.body(), "error")

        return StreamingResponse(guarded_stream(events(), "/v1/answer"),
                                 media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    @app.post("/chat/completions")
    async def chat(request: Request):
        authorize(request)
        body = await read_json(request, settings)
        check_fields(body)
        check_model(body)
        question = question_of(parse_messages(body.get("messages")))
        meta = body.get("metadata") or {}
        if not isinstance(meta, dict):
            raise ApiError(400, "'metadata' must be an object")
        extra = set(meta) - {"documents", "corpus_id", "strategy"}
        if extra:
            raise ApiError(400, f"unknown metadata field(s) {sorted(extra)}; give "
                                "metadata.documents or metadata.corpus_id (and optionally "
                                "metadata.strategy)")
        entry, docs = resolve_docs(meta.get("corpus_id"), meta.get("documents"), "metadata.")
        strategy = check_strategy(meta.get("strategy"))
        overrides = sampling(body, window)
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not body.get("stream"):
            ans = await gate.run(run_answer, entry, docs, question, strategy, overrides)
            return {
                "id": rid, "object": "chat.completion", "created": created, "model": name,
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": ans.text}}],
                "usage": _usage(ans),
                "orchestra": _extras(ans, entry),
            }
        gate.enter()  # left by guarded_stream when the stream ends
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict, finish: str | None = None, **extra) -> bytes:
            return sse({"id": rid, "object": "chat.completion.chunk", "created": created,
                        "model": name, "choices": [{"index": 0, "delta": delta,
                                                    "finish_reason": finish}], **extra})

        async def events() -> AsyncIterator[bytes]:
            first = True
            try:
                async for ev in iterate_in_thread(stream_answer(entry, docs, question,
                                                                strategy, overrides)):
                    if ev.type == "token":
                        delta = {"content": ev.text}
                        if first:
                            delta["role"], first = "assistant", False
                        yield chunk(delta)
                    elif ev.type == "answer":
                        if first:
                            yield chunk({"role": "assistant", "content": ""})
                        ans = ev.answer
                        yield chunk({}, "stop", orchestra=_extras(ans, entry))
                        if include_usage:
                            yield sse({"id": rid, "object": "chat.completion.chunk",
                                       "created": created, "model": name, "choices": [],
                                       "usage": _usage(ans)})
            except Exception as e:  # noqa: BLE001  (the client gets an error event)
                err = stream_error(e)
                yield sse(err.body())
            yield sse("[DONE]")

        return StreamingResponse(guarded_stream(events(), "/v1/chat/completions"),
                                 media_type="text/event-stream")


def _usage(answer) -> dict:
    c = answer.cost
    return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.generated_tokens,
            "total_tokens": c.prompt_tokens + c.generated_tokens}


def _extras(answer, entry) -> dict:
    return {"route": answer.route.model_dump(mode="json") if answer.route else None,
            "evidence": [e.model_dump(mode="json") for e in answer.evidence],
            "cost": answer.cost.model_dump(mode="json"), "strategy": answer.strategy,
            "corpus_id": entry.id if entry is not None else None}


# -- model mode ---------------------------------------------------------------------------------
def _model_routes(app, backend: Backend, name, settings, gate, metrics, batcher: Batcher,
                  authorize, check_model) -> None:
    window = backend.context_window

    def checked_size(req) -> None:
        # Counted here, on a request thread: an oversized prompt never reaches the batch worker.
        n = backend.count_prompt_tokens(req.messages)
        if n + req.max_tokens > window:
            raise ApiError(400, f"the prompt ({n} tokens) plus max_tokens ({req.max_tokens}) "
                                f"exceeds the model's window of {window} tokens")
        return n

    @app.post("/v1/chat/completions")
    @app.post("/chat/completions")
    async def chat(request: Request):
        authorize(request)
        body = await read_json(request, settings)
        check_model(body)
        req = generation_request(body, window)
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        gate.enter()
        if not body.get("stream"):
            try:
                await anyio.to_thread.run_sync(checked_size, req)
                res = await asyncio.wrap_future(batcher.submit(req))
            finally:
                gate.leave()
            metrics.tokens.labels("prompt").inc(res.prompt_tokens)
            metrics.tokens.labels("generated").inc(res.generated_tokens)
            return {"id": rid, "object": "chat.completion", "created": created, "model": name,
                    "choices": [{"index": 0, "finish_reason": res.finish_reason,
                                 "logprobs": None,
                                 "message": {"role": "assistant", "content": res.text}}],
                    "usage": _result_usage(res)}
        try:
            await anyio.to_thread.run_sync(checked_size, req)
        except BaseException:
            gate.leave()
            raise
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            return sse({"id": rid, "object": "chat.completion.chunk", "created": created,
                        "model": name, "choices": [{"index": 0, "delta": delta,
                                                    "finish_reason": finish}]})

        async def events() -> AsyncIterator[bytes]:
            first, sent = True, 0
            try:
                async for item in iterate_in_thread(lambda: backend.stream(req)):
                    if isinstance(item, GenerationResult):
                        if first:
                            yield chunk({"role": "assistant", "content": ""})
                        yield chunk({}, item.finish_reason)
                        metrics.tokens.labels("prompt").inc(item.prompt_tokens)
                        metrics.tokens.labels("generated").inc(item.generated_tokens)
                        if include_usage:
                            yield sse({"id": rid, "object": "chat.completion.chunk",
                                       "created": created, "model": name, "choices": [],
                                       "usage": _result_usage(item)})
                    elif item:
                        delta = {"content": item}
                        if first:
                            delta["role"], first = "assistant", False
                        yield chunk(delta)
                        sent += 1
            except Exception as e:  # noqa: BLE001  (the client gets an error event)
                err = stream_error(e)
                yield sse(err.body())
            except (asyncio.CancelledError, GeneratorExit):
                metrics.disconnects.inc()
                log.info("client left /v1/chat/completions after %d chunks; its generation "
                         "was stopped", sent)
                raise
            finally:
                gate.leave()
            yield sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/tokenize")
    @app.post("/v1/tokenize")
    async def tokenize(request: Request):
        """vLLM's shape ({"prompt"} or {"messages"}) and llama.cpp's ({"content"}).

        ``"return_offsets": true`` (our extension) adds each token's character span, which
        the openai backend needs to chunk documents with the server's own tokenizer."""
        authorize(request)
        body = await read_json(request, settings)
        check_model(body)

        def work() -> dict:
            out: dict[str, Any] = {"max_model_len": window}
            if "messages" in body:
                out["count"] = backend.count_prompt_tokens(parse_messages(body["messages"]))
                out["tokens"] = []
                return out
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
            return out

        return await gate.run(work)


def _result_usage(res: GenerationResult) -> dict:
    return {"prompt_tokens": res.prompt_tokens, "completion_tokens": res.generated_tokens,
            "total_tokens": res.prompt_tokens + res.generated_tokens}
