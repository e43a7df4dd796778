"""Token streaming shared by the LangChain chat model and the LlamaIndex LLM."""

from __future__ import annotations

from typing import Iterable, Iterator

from orchestra.backends.base import Backend, GenerationRequest, GenerationResult, Message
from orchestra.errors import InputError


def stream_one(backend: Backend, messages: list[Message], max_tokens: int, temperature: float,
               stop: Iterable[str] | None) -> Iterator[str | GenerationResult]:
    """Text pieces as the backend writes them, then its GenerationResult (authoritative).
    With stop strings, the last characters that could start one are held back until the
    reply ends, so no piece shows text the final reply cuts."""
    if not messages:
        raise InputError("no messages were given")
    stop = list(stop or [])
    req = GenerationRequest(messages=messages, max_tokens=max_tokens, temperature=temperature,
                            stop=stop)
    hold = max((len(s) for s in stop), default=0)
    sent, pending = "", ""
    gen = backend.stream(req)
    try:
        for item in gen:
            if isinstance(item, GenerationResult):
                rest = item.text[len(sent):] if item.text.startswith(sent) else ""
                if rest:
                    yield rest
                yield item
                return
            pending += item
            if len(pending) > hold:
                piece, pending = (pending[:-hold], pending[-hold:]) if hold else (pending, "")
                # Leading whitespace is stripped from replies: never send it first.
                if not sent:
                    piece = piece.lstrip()
                if piece:
                    sent += piece
                    yield piece
    finally:
        gen.close()
    raise RuntimeError(f"the {backend.name} backend's stream ended without its result")
