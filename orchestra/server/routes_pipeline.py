"""The pipeline API: ``POST/GET/DELETE /v1/corpora`` (documents chunked, indexed and
KV-prefilled once) and ``POST /v1/answer`` (the Answer as JSON, or server-sent events with
``"stream": true``). Thin: each route checks its body (orchestra/server/schemas.py) and calls
the PipelineService on a worker thread."""

from __future__ import annotations

from typing import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from orchestra.server.errors import ServiceError
from orchestra.server.http import ERRORS, Context, as_service_error, guarded_stream, \
    json_body, read_body, read_json, sse
from orchestra.server.schemas import AnswerBody, CorpusBody, CorpusInfo, \
    documents_field, parse
from orchestra.server.service import PipelineService
from orchestra.streaming import iterate_in_thread

def pipeline_routes(ctx: Context, service: PipelineService) -> APIRouter:
    router = APIRouter()
    router.include_router(corpus_routes(ctx, service))
    router.include_router(answer_routes(ctx, service))
    return router


def corpus_routes(ctx: Context, service: PipelineService) -> APIRouter:
    router = APIRouter(responses=ERRORS)
    corpora = service.corpora

    @router.post("/v1/corpora", status_code=201, response_model=CorpusInfo,
                 openapi_extra=json_body(CorpusBody), summary="Register documents")
    async def create_corpus(request: Request):
        ctx.authorize(request)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            docs, warm = await _uploaded(request, ctx)
        else:
            body = parse(CorpusBody, await read_json(request, ctx.settings))
            docs, warm = body.pairs(ctx.settings.max_documents), body.warm
        entry, new = await ctx.gate.run(service.register, docs, warm)
        return JSONResponse({**entry.describe(), "new": new}, status_code=201 if new else 200)

    @router.get("/v1/corpora", summary="List registered corpora")
    async def list_corpora(request: Request):
        ctx.authorize(request)
        return {"object": "list", "data": [e.describe() for e in corpora.all()]}

    @router.get("/v1/corpora/{corpus_id}", response_model=CorpusInfo, summary="One corpus")
    async def get_corpus(corpus_id: str, request: Request):
        ctx.authorize(request)
        return corpora.get(corpus_id).describe()

    @router.delete("/v1/corpora/{corpus_id}", summary="Forget a corpus")
    async def delete_corpus(corpus_id: str, request: Request):
        ctx.authorize(request)
        entry = corpora.delete(corpus_id)
        return {"id": entry.id, "object": "corpus", "deleted": True}

    return router


def answer_routes(ctx: Context, service: PipelineService) -> APIRouter:
    router = APIRouter(responses=ERRORS)

    @router.post("/v1/answer", openapi_extra=json_body(AnswerBody),
                 summary="Answer a question (the Answer, or events with stream: true)")
    async def answer(request: Request):
        ctx.authorize(request)
        body = parse(AnswerBody, await read_json(request, ctx.settings),
                     window=service.backend.context_window)
        source = body.source(ctx.settings.max_documents)
        entry = service.check(source)
        args = (body.question, source, body.settings())
        if not body.stream:
            ans, entry = await ctx.gate.run(service.answer, *args)
            return answer_json(ans, entry)
        ctx.gate.enter()  # left by guarded_stream when the stream ends
        events = _answer_events(service, args, entry)
        return StreamingResponse(guarded_stream(events, ctx.gate, ctx.metrics, "/v1/answer"),
                                 media_type="text/event-stream")

    return router


async def _answer_events(service: PipelineService, args: tuple, entry
                         ) -> AsyncIterator[bytes]:
    try:
        async for ev in iterate_in_thread(lambda: service.stream(*args)):
            data = (answer_json(ev.answer, entry) if ev.type == "answer"
                    else ev.model_dump(mode="json", exclude={"type"}))
            yield sse(data, ev.type)
    except Exception as e:  # noqa: BLE001  (the client gets an error event)
        yield sse(as_service_error(e).body(), "error")


def answer_json(answer, entry) -> dict:
    out = answer.model_dump(mode="json")
    out["corpus_id"] = entry.id if entry is not None else None
    return out


async def _uploaded(request: Request, ctx: Context) -> tuple[list[tuple[str, str]], bool]:
    """A multipart upload's files (form field ``files``) as (name, text), and ``warm``."""
    body = await read_body(request, ctx.settings)

    async def replay() -> dict:  # the form parser reads the body already read, capped
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form()
    files = form.getlist("files") or form.getlist("file")
    if not files:
        raise ServiceError("upload the documents as form field 'files'")
    if len(files) > ctx.settings.max_documents:
        raise ServiceError(f"{len(files)} files; this server takes at most "
                           f"{ctx.settings.max_documents} per request (--max-documents)",
                           "too_large")
    docs = []
    for f in files:
        if isinstance(f, str):
            raise ServiceError("form field 'files' must hold uploaded files")
        raw = await f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ServiceError(f"{f.filename}: not UTF-8 text (invalid byte at offset "
                               f"{e.start})") from None
        docs.append({"name": f.filename or f"doc{len(docs)}", "text": text})
    warm = str(form.get("warm", "true")).lower() != "false"
    return documents_field(docs, "files", ctx.settings.max_documents), warm
