"""HTTP for the openai backend, in one place: the chat-completions request body, the reading of
a server's error, and the retry policy that ``generate`` and ``stream`` share.

Retries run on tenacity (stop after ``max_retries + 1`` attempts, exponential backoff capped at
``max_backoff``, a server's ``Retry-After`` honoured). The ``openai`` SDK's own retries do not
fit: the backend also calls endpoints outside OpenAI's API (vLLM's and llama.cpp's
``/tokenize``), sends fields the SDK does not know (``repetition_penalty``), and bounds the
whole reply by a deadline (a server trickling a byte a second would hold an SDK call forever).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import tenacity

from orchestra.backends.base import GenerationRequest, sampling_extras

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
T = TypeVar("T")


class Retryable(Exception):
    """A failed attempt worth another: ``cause`` in words, the server's ``retry_after``."""

    def __init__(self, cause: str, retry_after: float | None = None):
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after


def chat_body(model: str | None, req: GenerationRequest) -> dict[str, Any]:
    """The chat-completions body for ``req`` (``generate`` and ``stream`` send the same).
    ``repetition_penalty`` is not in OpenAI's API; vLLM, llama.cpp and TGI servers accept it
    as an extra field."""
    body: dict[str, Any] = {"model": model, "messages": [m.model_dump() for m in req.messages],
                            "max_tokens": req.max_tokens, "temperature": req.temperature}
    body.update(sampling_extras(req, "openai", "send",
                                "chat-completion servers have no such field"))
    return body


def error_message(r) -> str:
    """A refused request's reason: the server's ``error.message``, else its text."""
    try:
        data = r.json()
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message", err) if isinstance(err, dict) else err
        return str(msg)[:300]
    except ValueError:
        return (r.text or r.reason_phrase or "")[:300]


def retry_after(r) -> float | None:
    value = r.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def with_retries(attempt: Callable[[], T], max_retries: int, backoff: float,
                 max_backoff: float) -> T:
    """``attempt()``, again while it raises Retryable, ``max_retries`` times at most; the
    last Retryable propagates (the caller words the final error). Any other error ends it."""

    def wait(state: tenacity.RetryCallState) -> float:
        exp = min(max_backoff, backoff * 2 ** (state.attempt_number - 1))
        error = state.outcome.exception() if state.outcome else None
        after = getattr(error, "retry_after", None)
        return min(max_backoff, after) if after else exp

    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(max_retries + 1), wait=wait,
                                 retry=tenacity.retry_if_exception_type(Retryable), reraise=True)
    return retrying(attempt)
