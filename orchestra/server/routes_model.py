"""The model-only API (``orchestra serve --model-only``): the backend's model as an
OpenAI-compatible server, ``POST /v1/chat/completions`` (requests gathered into batches;
``stream: true`` token by token) and ``POST /tokenize`` (vLLM's and llama.cpp's shapes). The
``openai`` backend is tested against it."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from orchestra.backends.base import GenerationRequest, GenerationResult
from orchestra.server.http import ERRORS, Completion, Context, as_service_error, \
    guarded_stream, json_body, read_json, sse
from orchestra.server.schemas import ChatBody, ChatCompletion, TokenizeBody, Usage, parse, \
    parse_messages
from orchestra.server.service import ModelService
from orchestra.streaming import iterate_in_thread


def model_routes(ctx: Context, service: ModelService) -> APIRouter:
    router = APIRouter(responses=ERRORS)
    window = service.backend.context_window

    @router.post("/v1/chat/completions", response_model=ChatCompletion,
                 openapi_extra=json_body(ChatBody), summary="A chat completion")
    @router.post("/chat/completions", include_in_schema=False)
    async def chat(request: Request):
        ctx.authorize(request)
        body = parse(ChatBody, await read_json(request, ctx.settings), window=window)
        ctx.check_model(body.model)
        req = body.generation_request(window)
        done = Completion(ctx.name)
        ctx.gate.enter()
        try:
            await anyio.to_thread.run_sync(service.check_size, req)
            if body.stream:
                events = _chat_events(service, req, done, body.include_usage)
                return StreamingResponse(
                    guarded_stream(events, ctx.gate, ctx.metrics, "/v1/chat/completions"),
                    media_type="text/event-stream")  # guarded_stream leaves the gate
            res = await asyncio.wrap_future(service.submit(req))
        except BaseException:
            ctx.gate.leave()
            raise
        ctx.gate.leave()
        service.count(res)
        return done.whole(res.text, _usage(res), res.finish_reason)

    @router.post("/tokenize", openapi_extra=json_body(TokenizeBody),
                 summary="Token count (and ids and offsets) of a text or messages")
    @router.post("/v1/tokenize", include_in_schema=False)
    async def tokenize(request: Request):
        ctx.authorize(request)
        raw = await read_json(request, ctx.settings)
        body = parse(TokenizeBody, {k: v for k, v in raw.items() if k != "messages"})
        ctx.check_model(body.model)
        messages = parse_messages(raw["messages"]) if "messages" in raw else None
        text = body.prompt if body.prompt is not None else body.content
        return await ctx.gate.run(service.tokenize, text, messages, body.return_offsets)

    return router


async def _chat_events(service: ModelService, req: GenerationRequest, done: Completion,
                       include_usage: bool) -> AsyncIterator[bytes]:
    first = True
    try:
        async for item in iterate_in_thread(lambda: service.stream(req)):
            if isinstance(item, GenerationResult):
                if first:
                    yield done.chunk({"role": "assistant", "content": ""})
                yield done.chunk({}, item.finish_reason)
                service.count(item)
                if include_usage:
                    yield done.usage_chunk(_usage(item))
            elif item:
                delta = {"content": item}
                if first:
                    delta["role"], first = "assistant", False
                yield done.chunk(delta)
    except Exception as e:  # noqa: BLE001  (the client gets an error event)
        yield sse(as_service_error(e).body())
    yield sse("[DONE]")


def _usage(res: GenerationResult) -> Usage:
    return Usage.of(res.prompt_tokens, res.generated_tokens)
