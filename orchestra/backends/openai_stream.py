"""Streaming for the openai backend: ``stream: true`` chat completions read as server-sent
events (httpx's streaming response; each ``data:`` line is one chunk).

Token counts come from the final usage chunk (``stream_options.include_usage``, which vLLM,
llama.cpp and ``orchestra serve`` send); a server without it is counted with the backend's
tokenizer. Failures before the first token are retried as ``generate`` retries them
(orchestra/backends/openai_http.py); a stream is not retried once it has started (its tokens
are already out).
"""

from __future__ import annotations

import itertools
import json
import time
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Iterator

from orchestra.backends.base import GenerationRequest, GenerationResult, check_requests
from orchestra.backends.openai_http import (
    RETRY_STATUS,
    Retryable,
    chat_body,
    error_message,
    retry_after,
    with_retries,
)
from orchestra.errors import BackendError

if TYPE_CHECKING:
    from orchestra.backends.openai_backend import OpenAIBackend


def _chunks(r, url: str) -> Iterator[dict[str, Any]]:
    """The stream's chunks, up to ``[DONE]``; a line that is not JSON or an error chunk is a
    BackendError naming the URL."""
    for line in r.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise BackendError(f"openai backend: the stream from {url} sent a line "
                               f"that is not JSON: {data[:120]}") from None
        if isinstance(chunk.get("error"), dict):
            raise BackendError(f"openai backend: the stream from {url} failed: "
                               f"{chunk['error'].get('message')}")
        yield chunk


def _has_text(chunk: dict) -> bool:
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or [])


def _cause(e: Exception, timeout: float) -> str:
    import httpx

    if isinstance(e, httpx.TimeoutException):
        return f"stalled past the {timeout:g} s timeout"
    return f"could not connect or was cut ({e or type(e).__name__})"


def _open(backend: "OpenAIBackend", url: str, body: dict, attempts: int
          ) -> tuple[ExitStack, list[dict], Iterator[dict]]:
    """One attempt: the stream opened and read up to its first piece of text. Returns what
    holds the connection open, the chunks read so far and the rest of the stream."""
    import httpx

    stack = ExitStack()
    try:
        r = stack.enter_context(backend.http.stream("POST", url, json=body))
        if r.status_code >= 400:
            r.read()
            message = f"openai backend: POST {url} (stream) was refused with HTTP " \
                      f"{r.status_code}: {error_message(r)}"
            if r.status_code not in RETRY_STATUS:
                raise BackendError(message)
            raise Retryable(message, retry_after(r))
        chunks = _chunks(r, url)
        head = []
        for chunk in chunks:
            head.append(chunk)
            if _has_text(chunk):
                break
        return stack, head, chunks
    except (httpx.TimeoutException, httpx.TransportError) as e:
        stack.close()
        raise Retryable(f"openai backend: the stream from {url} {_cause(e, backend.timeout)} "
                        f"after {attempts} attempt{'s' if attempts > 1 else ''}") from None
    except BaseException:
        stack.close()
        raise


def stream_chat(backend: "OpenAIBackend", request: GenerationRequest
                ) -> Iterator[str | GenerationResult]:
    """Connection errors, timeouts, 429 and 5xx before the first token are retried like
    ``generate`` (``max_retries``, backoff, Retry-After); once tokens flow, a failure is a
    BackendError (they cannot be taken back)."""
    import httpx

    [request] = check_requests([request])
    body = {**chat_body(backend.model_name(), request), "stream": True,
            "stream_options": {"include_usage": True}}
    url = backend.base_url + "/chat/completions"
    t0 = time.perf_counter()
    try:
        stack, head, rest = with_retries(
            lambda: _open(backend, url, body, backend.max_retries + 1),
            backend.max_retries, backend.backoff, backend.max_backoff)
    except Retryable as e:
        raise BackendError(e.cause) from None
    text, finish, usage = "", "stop", None
    with stack:
        try:
            for chunk in itertools.chain(head, rest):
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        text += piece
                        yield piece
                    if choice.get("finish_reason"):
                        finish = "length" if choice["finish_reason"] == "length" else "stop"
        except (httpx.TimeoutException, httpx.TransportError) as e:
            raise BackendError(f"openai backend: the stream from {url} "
                               f"{_cause(e, backend.timeout)}") from None
    if usage and "prompt_tokens" in usage and "completion_tokens" in usage:
        n_prompt, n_gen = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    else:
        n_prompt = backend.count_prompt_tokens(request.messages)
        n_gen = backend.count_tokens(text) if text else 0
    yield GenerationResult(text=text.strip(), prompt_tokens=n_prompt, generated_tokens=n_gen,
                           seconds=time.perf_counter() - t0, finish_reason=finish)
