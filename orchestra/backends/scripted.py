"""A scripted backend for unit tests of control flow (like LangChain's fake LLMs).

It never proves a feature works; it lets tests check what a strategy sends and how it handles
replies. Tokens are words and punctuation marks (a regex), so counts are exact for it.
"""

from __future__ import annotations

import re
import threading
from typing import Callable, Iterable, Sequence

from orchestra.backends.base import (
    BATCHING,
    Backend,
    GenerationRequest,
    GenerationResult,
    Message,
    Tokenizer,
    apply_stop,
    check_requests,
)

_TOKEN = re.compile(r"\w+|[^\w\s]")


class RegexTokenizer(Tokenizer):
    def count(self, text: str) -> int:
        return sum(1 for _ in _TOKEN.finditer(text))

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _TOKEN.finditer(text)]


class ScriptedBackend(Backend):
    """Replies from a list (in order) or a function of the request; records every request."""

    name = "scripted"
    spec_hidden = ("replies",)  # a test's script, not a setting

    def __init__(self, replies: Iterable[str] | Callable[[GenerationRequest], str] = (),
                 context_window: int = 2048, capabilities: Iterable[str] = (BATCHING,)):
        self._fn = replies if callable(replies) else None
        self._replies = [] if callable(replies) else list(replies)
        self._window = context_window
        self._caps = frozenset(capabilities)
        self._tok = RegexTokenizer()
        self.requests: list[GenerationRequest] = []
        self.batches: list[int] = []  # size of each generate() call
        self._lock = threading.Lock()

    @property
    def context_window(self) -> int:
        return self._window

    @property
    def capabilities(self) -> frozenset[str]:
        return self._caps

    @property
    def tokenizer(self) -> RegexTokenizer:
        return self._tok

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return sum(self._tok.count(m.content) + 2 for m in messages) + 1

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        requests = check_requests(requests)
        out = []
        with self._lock:
            self.batches.append(len(requests))
            for r in requests:
                self.requests.append(r)
                if self._fn is not None:
                    text = self._fn(r)
                elif self._replies:
                    text = self._replies.pop(0)
                else:
                    raise AssertionError("ScriptedBackend ran out of replies")
                text, _ = apply_stop(text, r.stop)
                n = self._tok.count(text)
                out.append(GenerationResult(
                    text=text, prompt_tokens=self.count_prompt_tokens(r.messages),
                    generated_tokens=min(n, r.max_tokens), seconds=0.0,
                    finish_reason="length" if n > r.max_tokens else "stop",
                ))
        return out
