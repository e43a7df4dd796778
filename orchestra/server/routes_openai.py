"""The OpenAI-compatible API of a pipeline server: ``POST /v1/chat/completions`` with the
pipeline as the model (the question is the user message; documents or a ``corpus_id`` come as
top-level extra fields, the openai client's ``extra_body``, or in ``metadata``; ``stream:
true`` sends tokens, the last chunk carries ``orchestra``: route, evidence and cost), and
``GET /v1/models`` for either mode."""

from __future__ import annotations

from typing import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from orchestra.server.http import ERRORS, Completion, Context, as_service_error, \
    guarded_stream, json_body, read_json, sse
from orchestra.server.schemas import ChatBody, ChatCompletion, Usage, parse
from orchestra.server.service import PipelineService
from orchestra.streaming import iterate_in_thread


def models_routes(ctx: Context, card: Callable[[str, int], dict]) -> APIRouter:
    router = APIRouter(responses=ERRORS)

    @router.get("/v1/models", summary="The served model")
    @router.get("/models", include_in_schema=False)
    async def models(request: Request):
        ctx.authorize(request)
        return {"object": "list", "data": [card(ctx.name, ctx.created)]}

    return router


def chat_routes(ctx: Context, service: PipelineService) -> APIRouter:
    router = APIRouter(responses=ERRORS)

    @router.post("/v1/chat/completions", response_model=ChatCompletion,
                 openapi_extra=json_body(ChatBody),
                 summary="The pipeline's answer as a chat completion")
    @router.post("/chat/completions", include_in_schema=False)
    async def chat(request: Request):
        ctx.authorize(request)
        body = parse(ChatBody, await read_json(request, ctx.settings),
                     window=service.backend.context_window)
        ctx.check_model(body.model)
        question = body.question()
        source = body.source(ctx.settings.max_documents)
        entry = service.check(source)
        args = (question, source, body.settings())
        done = Completion(ctx.name)
        if not body.stream:
            ans, entry = await ctx.gate.run(service.answer, *args)
            return done.whole(ans.text, _usage(ans), orchestra=_extras(ans, entry))
        ctx.gate.enter()  # left by guarded_stream when the stream ends
        events = _chat_events(service, args, entry, done, body.include_usage)
        return StreamingResponse(
            guarded_stream(events, ctx.gate, ctx.metrics, "/v1/chat/completions"),
            media_type="text/event-stream")

    return router


async def _chat_events(service: PipelineService, args: tuple, entry, done: Completion,
                       include_usage: bool) -> AsyncIterator[bytes]:
    first = True
    try:
        async for ev in iterate_in_thread(lambda: service.stream(*args)):
            if ev.type == "token":
                delta = {"content": ev.text}
                if first:
                    delta["role"], first = "assistant", False
                yield done.chunk(delta)
            elif ev.type == "answer":
                if first:
                    yield done.chunk({"role": "assistant", "content": ""})
                yield done.chunk({}, "stop", orchestra=_extras(ev.answer, entry))
                if include_usage:
                    yield done.usage_chunk(_usage(ev.answer))
    except Exception as e:  # noqa: BLE001  (the client gets an error event)
        yield sse(as_service_error(e).body())
    yield sse("[DONE]")


def _usage(answer) -> Usage:
    return Usage.of(answer.cost.prompt_tokens, answer.cost.generated_tokens)


def _extras(answer, entry) -> dict:
    return {"route": answer.route.model_dump(mode="json") if answer.route else None,
            "evidence": [e.model_dump(mode="json") for e in answer.evidence],
            "cost": answer.cost.model_dump(mode="json"), "strategy_type": answer.strategy_type,
            "corpus_id": entry.id if entry is not None else None}
