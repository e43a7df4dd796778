"""Validated request bodies: OpenAI chat completions, /v1/answer and /v1/corpora.

Every field is checked before any work (max_tokens within the window, temperature finite,
seed in range); fields this server cannot honour (``tools``, ``response_format``, ...) are
refused with 400 naming them, never ignored.
"""

from __future__ import annotations

import math
from typing import Any

from orchestra.backends.base import GenerationRequest, Message


class ApiError(Exception):
    """An error reply: ``{"error": {"message", "type", "code"}}`` with this status."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.type = type_
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.type, "code": self.status}}


DEFAULT_MAX_TOKENS = 256
SEED_MAX = 2**63 - 1  # torch.manual_seed's range; larger seeds made the old server answer 500
# Fields a chat-completions client may send that change nothing here when at these values.
NEUTRAL = {"top_p": 1, "frequency_penalty": 0, "presence_penalty": 0, "logprobs": False,
           "parallel_tool_calls": None, "store": False, "service_tier": None}
HANDLED = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "seed",
           "stop", "stream", "stream_options", "n", "user", "metadata"}


def check_fields(body: dict) -> None:
    for key, value in body.items():
        if key in HANDLED:
            continue
        if key in NEUTRAL and (value is None or value == NEUTRAL[key]):
            continue
        raise ApiError(400, f"field {key!r} is not supported by this server (it serves "
                            "plain chat completions: no tools, response formats, logprobs or "
                            "sampling penalties); remove it")


def _int(body: dict, key: str, lo: int, hi: int) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ApiError(400, f"{key!r} must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise ApiError(400, f"{key!r} must be between {lo} and {hi}, got {v}")
    return v


def sampling(body: dict, window: int) -> dict[str, Any]:
    """max_tokens, temperature, seed and stop, checked (None where not given)."""
    max_tokens = _int(body, "max_completion_tokens", 1, window)
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", 1, window)
    t = body.get("temperature")
    if t is not None:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) \
                or not 0 <= t <= 2:
            raise ApiError(400, f"'temperature' must be a finite number in [0, 2], got {t!r}")
        t = float(t)
    seed = _int(body, "seed", 0, SEED_MAX)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or len(stop) > 4
                             or not all(isinstance(s, str) and s for s in stop)):
        raise ApiError(400, "'stop' must be a string or a list of up to 4 non-empty strings")
    n = body.get("n", 1)
    if n not in (None, 1):
        raise ApiError(400, f"only n=1 is supported, got n={n!r}")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise ApiError(400, "'stream_options' must be an object")
    return {"max_tokens": max_tokens, "temperature": t, "seed": seed, "stop": stop or None}


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str):
                parts.append(p["text"])
            else:
                raise ApiError(400, f"{where}: only text content parts are supported")
        return "".join(parts)
    if content is None:
        return ""
    raise ApiError(400, f"{where}: content must be a string or a list of text parts")


def parse_messages(raw: Any) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise ApiError(400, f"messages[{i}] must be an object")
        role = m.get("role")
        role = "system" if role == "developer" else role
        if role not in ("system", "user", "assistant"):
            raise ApiError(400, f"messages[{i}].role must be system, user or assistant, "
                                f"not {role!r}")
        out.append(Message(role=role, content=_text(m.get("content"), f"messages[{i}]")))
    return out


def generation_request(body: dict, window: int) -> GenerationRequest:
    """A model-level chat body as a GenerationRequest (OpenAI's defaults)."""
    check_fields(body)
    if body.get("metadata"):
        raise ApiError(400, "'metadata' (documents) needs a pipeline server; this one serves "
                            "the model only (orchestra serve --model-only)")
    s = sampling(body, window)
    return GenerationRequest(
        messages=parse_messages(body.get("messages")),
        max_tokens=s["max_tokens"] or min(DEFAULT_MAX_TOKENS, window),
        temperature=1.0 if s["temperature"] is None else s["temperature"],
        stop=s["stop"] or [], seed=s["seed"])


def question_of(messages: list[Message]) -> str:
    """The pipeline answers one question: the last user message, with nothing after it."""
    if messages[-1].role != "user":
        raise ApiError(400, "the last message must be the user's question")
    others = [m.role for m in messages[:-1]]
    if others:
        raise ApiError(400, f"the pipeline answers one question over documents: send one "
                            f"user message (got {len(others)} more before it: "
                            f"{', '.join(others)}); earlier turns would be ignored")
    if not messages[-1].content.strip():
        raise ApiError(400, "the question (the user message) is empty")
    return messages[-1].content


def documents_field(value: Any, where: str, max_documents: int) -> list[tuple[str, str]]:
    """(name, text) pairs from a list of strings or {"name", "text"} objects."""
    if not isinstance(value, list) or not value:
        raise ApiError(400, f"{where} must be a non-empty list of texts (or of "
                            "{\"name\", \"text\"} objects)")
    if len(value) > max_documents:
        raise ApiError(413, f"{where} has {len(value)} documents; this server takes at most "
                            f"{max_documents} per request (--max-documents)")
    out = []
    for i, d in enumerate(value):
        if isinstance(d, str):
            name, text = f"doc{i}", d
        elif isinstance(d, dict) and isinstance(d.get("text"), str):
            name = d.get("name") or f"doc{i}"
            if not isinstance(name, str):
                raise ApiError(400, f"{where}[{i}].name must be a string")
            text = d["text"]
        else:
            raise ApiError(400, f"{where}[{i}] must be a text or a {{\"name\", \"text\"}} "
                                "object")
        if not text.strip():
            raise ApiError(400, f"{where}[{i}] ({name}) is empty")
        out.append((name, text))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ApiError(400, f"{where}: duplicate document names "
                            f"{sorted({n for n in names if names.count(n) > 1})}")
    return out
