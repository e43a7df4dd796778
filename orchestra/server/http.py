"""What every route shares on the HTTP side: settings, the bounded queue, the body cap and
read timeout, the API key, errors as OpenAI's error shape, server-sent events and request
metrics. Nothing here knows what a pipeline is."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse

from orchestra.errors import OrchestraError
from orchestra.server.errors import ServiceError
from orchestra.server.metrics import Metrics
from orchestra.server.schemas import ErrorBody, Usage

log = logging.getLogger("orchestra.server")


@dataclass
class ServeSettings:
    api_key: str | None = None
    metrics_key: str | None = None  # /metrics: open when None (scrapers hold no API key)
    max_body_bytes: int = 8 * 1024 * 1024
    max_documents: int = 64
    max_request_tokens: int = 1_000_000
    max_queue: int = 16  # requests running or waiting; one more is answered 429
    body_timeout: float = 30.0  # seconds to receive a request body
    max_batch: int = 16  # model mode: requests generated as one backend batch
    max_corpora: int = 8  # registered corpora kept (indexed and prefilled) at once


def error_response(err: ServiceError, headers: dict[str, str] | None = None) -> JSONResponse:
    if err.kind == "busy":
        headers = {"Retry-After": "1", **(headers or {})}
    if err.kind == "unauthorized":
        headers = {"WWW-Authenticate": "Bearer", **(headers or {})}
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def as_service_error(e: Exception) -> ServiceError:
    """An exception met while answering: the request's fault is a 400, anything else a
    logged 500."""
    if isinstance(e, ServiceError):
        return e
    if isinstance(e, OrchestraError):
        return ServiceError(str(e))
    log.exception("a streamed answer failed")
    return ServiceError(f"{type(e).__name__}: {e}", "server")


class Gate:
    """The bounded queue: requests running or waiting for the model (event-loop side only)."""

    def __init__(self, limit: int, metrics: Metrics):
        self.limit = max(1, int(limit))
        self.n = 0
        self.metrics = metrics

    def enter(self) -> None:
        if self.n >= self.limit:
            self.metrics.rejected.inc()
            raise ServiceError(f"the server is busy: {self.n} requests are running or waiting "
                               f"(--max-queue {self.limit}); retry shortly", "busy",
                               code="rate_limit_exceeded")
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
            err = None if length is None else self.check(length)
            if err is not None:
                await error_response(err)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def check(self, length: bytes) -> ServiceError | None:
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            return ServiceError(f"bad Content-Length {length.decode(errors='replace')!r}")
        if n > self.limit:
            return ServiceError(f"request body of {n} bytes exceeds this server's limit of "
                                f"{self.limit} (--max-body-bytes)", "too_large")
        return None


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


async def read_body(request: Request, settings: ServeSettings) -> bytes:
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise ServiceError(f"request body exceeds this server's limit of "
                                   f"{settings.max_body_bytes} bytes (--max-body-bytes)",
                                   "too_large")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), settings.body_timeout)
    except asyncio.TimeoutError:
        raise ServiceError(f"the request body did not arrive within "
                           f"{settings.body_timeout:g} s", "timeout") from None
    return b"".join(chunks)


async def read_json(request: Request, settings: ServeSettings) -> dict:
    body = await read_body(request, settings)
    try:
        data = json.loads(body or b"{}")
    except RecursionError:  # json's scanner recurses once per level
        raise ServiceError("the body is nested too deeply (arrays or objects inside each "
                           "other beyond Python's recursion limit); no request here needs "
                           "more than a few levels") from None
    except (ValueError, UnicodeDecodeError) as e:
        # JSONDecodeError, and the integer limit: "Exceeds the limit (4300 digits) ..."
        why = ("an integer has more digits than Python converts (4300)"
               if "digits" in str(e) else str(e))
        raise ServiceError(f"the body is not valid JSON: {why}") from None
    if not isinstance(data, dict):
        raise ServiceError("the body must be a JSON object")
    return data


def authorizer(key: str | None) -> Callable[[Request], None]:
    """Checks ``Authorization: Bearer KEY`` (or ``X-Api-Key``) when ``key`` is set."""

    def authorize(request: Request) -> None:
        if not key:
            return
        given = request.headers.get("authorization", "")
        token = given[7:].strip() if given.lower().startswith("bearer ") else \
            request.headers.get("x-api-key", "")
        if not token or not hmac.compare_digest(token.encode(), key.encode()):
            raise ServiceError("missing or wrong API key (send Authorization: Bearer <key>)",
                               "unauthorized", code="invalid_api_key")

    return authorize


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {payload}\n\n".encode()


async def guarded_stream(chunks: AsyncIterator[bytes], gate: Gate, metrics: Metrics,
                         what: str) -> AsyncIterator[bytes]:
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


@dataclass
class Context:
    """What the route modules of one app share."""

    settings: ServeSettings
    metrics: Metrics
    gate: Gate
    name: str  # the model id clients send and /v1/models lists
    created: int

    def __post_init__(self) -> None:
        self.authorize = authorizer(self.settings.api_key)

    def check_model(self, model: str | None) -> None:
        if model not in (None, "", self.name):
            raise ServiceError(f"model {model!r} is not served here; this server serves "
                               f"{self.name!r}", "not_found", code="model_not_found",
                               param="model")


# Error replies every route may give, for OpenAPI.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 408, 409, 413, 429, 500)}


def json_body(model) -> dict:
    """OpenAPI's request body for a route that reads its own body (under the body cap and
    read timeout) and checks it with ``model``."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


class Completion:
    """The id, clock and model of one chat completion, and its chunks."""

    def __init__(self, model: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model

    def whole(self, text: str, usage: Usage, finish: str | None = "stop",
              **extra: Any) -> dict:
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                             "message": {"role": "assistant", "content": text}}],
                "usage": usage.model_dump(), **extra}

    def chunk(self, delta: dict, finish: str | None = None, **extra: Any) -> bytes:
        return sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "choices": [{"index": 0, "delta": delta,
                                                      "finish_reason": finish}], **extra})

    def usage_chunk(self, usage: Usage) -> bytes:
        return sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "choices": [], "usage": usage.model_dump()})
