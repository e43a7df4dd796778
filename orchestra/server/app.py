"""The app factory: one FastAPI app over a service object (served by uvicorn, see
orchestra/server/runner.py).

Two modes:

- pipeline (``orchestra serve [PIPELINE.yaml]``): a ``PipelineService``; the pipeline API
  (routes_pipeline.py: /v1/corpora, /v1/answer) and the OpenAI-compatible API
  (routes_openai.py: /v1/chat/completions with the pipeline as the model).
- model (``orchestra serve --model-only``): a ``ModelService``; the model-only API
  (routes_model.py: /v1/chat/completions, /tokenize).

Both: ``GET /v1/models``, ``GET /health`` (no key), ``GET /metrics`` (Prometheus text; no key,
or its own ``metrics_key``, as vLLM's), ``GET /docs`` and ``GET /openapi.json`` (behind the API
key when one is set), an API key (``Authorization: Bearer``) when one is set, a body cap checked from Content-Length before
anything is read (413), a body read timeout (408), a bounded queue of requests running or
waiting (429 when full), validated fields (400), tokenization on request threads (never in
the batch worker or the event loop), and one log line for a client that leaves early. The
layers: schemas.py (request and response models) -> service.py (no HTTP) -> routes_*.py
(thin) -> this factory; http.py holds what the routes share.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestra.backends.base import Backend
from orchestra.errors import OrchestraError
from orchestra.server.errors import ServiceError
from orchestra.server.http import BodyLimit, Context, CountRequests, Gate, ServeSettings, \
    authorizer, error_response, log
from orchestra.server.metrics import Metrics
from orchestra.server.routes_model import model_routes
from orchestra.server.routes_openai import chat_routes, models_routes
from orchestra.server.routes_pipeline import pipeline_routes
from orchestra.server.schemas import AnswerBody, ChatBody, CorpusBody, TokenizeBody
from orchestra.server.service import Limits, ModelService, PipelineService

__all__ = ["ServeSettings", "create_app"]


def create_app(*, pipeline=None, backend: Backend | None = None, name: str,
               settings: ServeSettings | None = None, service=None) -> FastAPI:
    """The app serving ``pipeline`` (as model ``name``) or, with ``backend`` alone, the
    model only; ``service``: a PipelineService or ModelService built by the caller."""
    settings = settings or ServeSettings()
    service = service or _service(pipeline, backend, settings)
    ctx = Context(settings, service.metrics, Gate(settings.max_queue, service.metrics),
                  name, int(time.time()))
    app = FastAPI(title="orchestra", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.metrics, app.state.gate = settings, ctx.metrics, ctx.gate
    app.state.name, app.state.service, app.state.backend = name, service, service.backend
    app.state.mode = "pipeline" if isinstance(service, PipelineService) else "model"
    app.state.batcher = getattr(service, "batcher", None)
    app.state.corpora = getattr(service, "corpora", None)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    _error_handlers(app)
    app.add_middleware(CountRequests, metrics=ctx.metrics)
    _common_routes(app, ctx, service)
    _doc_routes(app, ctx)
    app.include_router(models_routes(ctx, service.model_card))
    if isinstance(service, PipelineService):
        app.include_router(pipeline_routes(ctx, service))
        app.include_router(chat_routes(ctx, service))
    else:
        app.include_router(model_routes(ctx, service))
    return app


def _service(pipeline, backend: Backend | None, settings: ServeSettings):
    if pipeline is None and backend is None:
        raise ValueError("give a pipeline or a backend")
    if pipeline is not None:
        return PipelineService(pipeline, Limits(settings.max_documents,
                                                settings.max_request_tokens,
                                                settings.max_corpora))
    return ModelService(backend, max_batch=settings.max_batch)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, err: ServiceError):
        return error_response(err)

    @app.exception_handler(OrchestraError)
    async def _orchestra_error(request: Request, err: OrchestraError):
        # The request cannot be served as given (too long for the window, unknown strategy).
        return error_response(ServiceError(str(err)))

    @app.exception_handler(Exception)
    async def _server_error(request: Request, err: Exception):
        # A bug, not the request's fault: logged with its traceback, answered as JSON.
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(ServiceError(f"{type(err).__name__}: {err}", "server"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        if err.status_code == 404:
            return error_response(ServiceError(
                f"no route {request.method} {request.url.path}", "not_found"))
        body = {"error": {"message": str(err.detail), "type": "invalid_request_error",
                          "param": None, "code": None}}
        return JSONResponse(body, status_code=err.status_code)


def _common_routes(app: FastAPI, ctx: Context, service) -> None:
    corpora = getattr(service, "corpora", None)

    @app.get("/health", summary="Liveness and the queue (no key needed)")
    async def health():
        out = {"status": "ok", "mode": app.state.mode, "model": ctx.name,
               "in_flight": ctx.gate.n, "max_queue": ctx.gate.limit}
        if corpora is not None:
            out["corpora"] = len(corpora.all())
        return out

    # Scrapers hold no API key (vLLM's /metrics is open too); a metrics_key guards it apart.
    authorize_scrape = authorizer(ctx.settings.metrics_key)

    @app.get("/metrics", summary="Prometheus metrics (no key, or the metrics key)")
    async def metrics_text(request: Request):
        authorize_scrape(request)
        return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4")


# Bodies the routes read themselves (under the body cap and read timeout), documented by model.
REQUEST_MODELS = (AnswerBody, ChatBody, CorpusBody, TokenizeBody)


def openapi_spec(app: FastAPI) -> dict:
    """FastAPI's OpenAPI document plus the request models the routes check their bodies
    with (their ``$defs`` hoisted into components, where the routes' ``$ref``s point)."""
    if app.openapi_schema is None:
        spec = get_openapi(title=app.title, version=app.version, routes=app.routes,
                           description="orchestra serve: a pipeline (or a model) over HTTP")
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in REQUEST_MODELS:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        app.openapi_schema = spec
    return app.openapi_schema


def _doc_routes(app: FastAPI, ctx: Context) -> None:
    """/openapi.json and /docs (Swagger UI with the document inline, so one request with the
    key shows it all), behind the API key when one is set."""

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request):
        ctx.authorize(request)
        return JSONResponse(openapi_spec(app))

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request):
        ctx.authorize(request)
        return get_swagger_ui_html(openapi_url="/openapi.json", title="orchestra API",
                                   swagger_ui_parameters={"spec": openapi_spec(app)})
