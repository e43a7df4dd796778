"""Streaming for the openai backend: ``stream: true`` chat completions read as server-sent
events (httpx's streaming response; each ``data:`` line is one chunk).

Token counts come from the final usage chunk (``stream_options.include_usage``, which vLLM,
llama.cpp and ``orchestra serve`` send); a server without it is counted with the backend's
tokenizer. Failures before the first token are retried as ``generate`` retries them; a stream
is not retried once it has started (its tokens are already out).
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

from orchestra.backends.base import GenerationRequest, GenerationResult, check_requests
from orchestra.errors import BackendError, ConfigError


def chat_body(backend: Any, req: GenerationRequest) -> dict[str, Any]:
    """The chat-completions body for ``req`` (the fields the backend's generate sends)."""
    body: dict[str, Any] = {"model": backend._model_name(),
                            "messages": [m.model_dump() for m in req.messages],
                            "max_tokens": req.max_tokens, "temperature": req.temperature}
    if req.stop:
        body["stop"] = list(req.stop)
    if req.seed is not None:
        body["seed"] = req.seed
    if getattr(req, "repetition_penalty", 1.0) != 1.0:
        body["repetition_penalty"] = req.repetition_penalty
    if getattr(req, "no_repeat_ngram_size", 0):
        raise ConfigError("the openai backend cannot send no_repeat_ngram_size "
                          f"({req.no_repeat_ngram_size}); set it to 0 or use "
                          "repetition_penalty")
    return body


def stream_chat(backend: Any, request: GenerationRequest) -> Iterator[str | GenerationResult]:
    """Connection errors, timeouts, 429 and 5xx before the first token are retried like
    ``generate`` (``max_retries``, backoff, Retry-After); once tokens flow, a failure is a
    BackendError (they cannot be taken back)."""
    import httpx

    from orchestra.backends.openai_backend import RETRY_STATUS, _error_message, _retry_after

    [request] = check_requests([request])
    body = {**chat_body(backend, request), "stream": True,
            "stream_options": {"include_usage": True}}
    url = backend.base_url + "/chat/completions"
    t0 = time.perf_counter()
    text, finish, usage = "", "stop", None
    attempts = backend.max_retries + 1
    for attempt in range(attempts):
        wait = min(backend.max_backoff, backend.backoff * (2 ** attempt))
        started = False
        try:
            with backend._client.stream("POST", url, json=body) as r:
                if r.status_code >= 400:
                    r.read()
                    message = f"HTTP {r.status_code}: {_error_message(r)}"
                    if r.status_code not in RETRY_STATUS or attempt + 1 == attempts:
                        raise BackendError(f"openai backend: POST {url} (stream) was refused "
                                           f"with {message}")
                    time.sleep(min(backend.max_backoff, _retry_after(r) or wait))
                    continue
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except json.JSONDecodeError:
                        raise BackendError(f"openai backend: the stream from {url} sent a line "
                                           f"that is not JSON: {data[:120]}") from None
                    if isinstance(chunk.get("error"), dict):
                        raise BackendError(f"openai backend: the stream from {url} failed: "
                                           f"{chunk['error'].get('message')}")
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            started = True
                            text += piece
                            yield piece
                        if choice.get("finish_reason"):
                            finish = "length" if choice["finish_reason"] == "length" else "stop"
            break
        except (httpx.TimeoutException, httpx.TransportError) as e:
            cause = (f"stalled past the {backend.timeout:g} s timeout"
                     if isinstance(e, httpx.TimeoutException)
                     else f"could not connect or was cut ({e or type(e).__name__})")
            if started or attempt + 1 == attempts:
                raise BackendError(f"openai backend: the stream from {url} {cause}"
                                   + ("" if started else f" after {attempts} attempt"
                                      f"{'s' if attempts > 1 else ''}")) from None
            time.sleep(wait)
    if usage and "prompt_tokens" in usage and "completion_tokens" in usage:
        n_prompt, n_gen = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    else:
        n_prompt = backend.count_prompt_tokens(request.messages)
        n_gen = backend.count_tokens(text) if text else 0
    yield GenerationResult(text=text.strip(), prompt_tokens=n_prompt, generated_tokens=n_gen,
                           seconds=time.perf_counter() - t0, finish_reason=finish)
