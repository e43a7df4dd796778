"""A strategy is one way of reading: ``answer(question, corpus) -> Answer``.

Strategies know nothing about routing; routers know strategies only through this interface:

- ``kind``: what the strategy does (``full_context``, ``rag``, ``kv_pages`` or ``agents``);
  routers reason about kinds, whatever a pipeline named the strategy.
- ``requires``: backend capabilities; routers pick only strategies the backend can run.
- ``can_decline``: ``answer(..., may_decline=True)`` lets the reader say "unanswerable".
- ``answer(question, corpus, *, may_decline=False)``: the Answer, timed.
- ``fits(corpus, question) -> Fit``: whether this strategy can read this corpus (no model call).
- ``signals(question, corpus) -> dict``: cheap measurements a router may decide from (RAG: its
  retrieval score profile); ``{}`` by default.

The question is validated once, where it enters (``Pipeline.run``, ``orchestra.ask`` or a direct
``Strategy.answer``): ``check_question`` returns a ``Question``, which later checks pass as is.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

from orchestra.backends.base import Backend, GenerationRequest, Message
from orchestra.corpus import Corpus
from orchestra.errors import CapabilityError, InputError
from orchestra.prompts import DEFAULTS, check_template
from orchestra.types import Answer, Cost, Evidence, Trace


# Strategy kinds (what routers reason about).
FULL = "full_context"
RAG = "rag"
PAGES = "kv_pages"
AGENTS = "agents"
KINDS = (FULL, RAG, PAGES, AGENTS)


class Question(str):
    """A question that passed ``check_question`` (stripped, not empty)."""


def check_question(question: str) -> Question:
    """The question, stripped; an empty one is refused. A ``Question`` passes as is, so the
    layers under an entry point do not check again."""
    if isinstance(question, Question):
        return question
    if not isinstance(question, str) or not question.strip():
        raise InputError("the question is empty")
    return Question(question.strip())


class Fit(NamedTuple):
    """Whether a strategy can read a corpus; ``needed``/``available`` tokens when it counts."""

    ok: bool
    needed: int | None = None
    available: int | None = None


class Strategy(ABC):
    name: ClassVar[str] = "strategy"  # the registered type name
    kind: ClassVar[str | None] = None  # one of KINDS; None: routers reach it only by its name
    can_decline: ClassVar[bool] = False
    requires: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, backend: Backend, max_tokens: int = 64,
                 prompts: dict[str, str] | None = None):
        missing = self.requires - backend.capabilities
        if missing:
            raise CapabilityError(
                f"strategy {self.name!r} needs backend capabilities {sorted(missing)}, "
                f"which the {backend.name} backend lacks"
            )
        self.backend = backend
        self.max_tokens = max_tokens
        self.prompts = dict(DEFAULTS)
        for k, v in (prompts or {}).items():
            if k not in self.prompts:
                raise InputError(f"unknown prompt {k!r}; known: {', '.join(sorted(self.prompts))}")
            self.prompts[k] = v
        check_template(self.prompts["reader"], {"context", "question"}, "prompt 'reader'")
        check_template(self.prompts["reader_may_decline"], {"context", "question"},
                       "prompt 'reader_may_decline'")

    def answer(self, question: str, corpus: Corpus, *, may_decline: bool = False) -> Answer:
        """The Answer (its cost's wall_seconds is this call's time). ``may_decline`` (only where
        ``can_decline``) lets the reader reply "unanswerable"."""
        question = check_question(question)
        t0 = time.perf_counter()
        if may_decline:
            if not self.can_decline:
                raise CapabilityError(f"strategy {self.name!r} cannot decline (may_decline)")
            ans = self._answer(question, corpus, may_decline=True)
        else:
            ans = self._answer(question, corpus)
        ans.cost.wall_seconds = time.perf_counter() - t0
        return ans

    @abstractmethod
    def _answer(self, question: str, corpus: Corpus) -> Answer:
        """Answer a checked question (strategies that ``can_decline`` take ``may_decline``)."""

    def fits(self, corpus: Corpus, question: str = "") -> Fit:
        """Whether this strategy can read ``corpus`` with ``question`` (default: any corpus)."""
        return Fit(True)

    def signals(self, question: str, corpus: Corpus) -> dict[str, Any]:
        """Measurements a router may decide from, without a model call (default: none)."""
        return {}

    def options(self) -> dict[str, Any]:
        """Settings that rebuild this strategy (pipeline.to_yaml writes them)."""
        return {"max_tokens": self.max_tokens}

    # -- helpers shared by strategies -------------------------------------------------------
    def reader_request(self, context: str, question: str, may_decline: bool = False,
                       max_tokens: int | None = None) -> GenerationRequest:
        template = self.prompts["reader_may_decline" if may_decline else "reader"]
        return GenerationRequest(
            messages=[Message(role="system", content=self.prompts["reader_system"]),
                      Message(role="user", content=template.format(context=context,
                                                                    question=question))],
            max_tokens=max_tokens or self.max_tokens,
        )

    def read(self, context: str, question: str, chunks, trace: Trace,
             may_decline: bool = False, step: str = "read") -> Answer:
        """One reader call over ``context``; the Answer cites ``chunks``."""
        from orchestra.prompts import UNANSWERABLE

        from orchestra.streaming import stream_read

        req = self.reader_request(context, question, may_decline)
        evidence = [Evidence(chunk_id=c.id, doc_id=c.doc_id, start=c.start, end=c.end)
                    for c in chunks]
        with trace.step(step, chunks=len(chunks)) as st:
            # Inside Pipeline.stream the tokens stream out; otherwise one generate call.
            res = stream_read(self, req, evidence, UNANSWERABLE if may_decline else None)
            st.detail.update(prompt_tokens=res.prompt_tokens,
                             generated_tokens=res.generated_tokens)
        cost = Cost()
        cost.add_generation(res)
        text = res.text
        declined = may_decline and UNANSWERABLE in text.lower()[: len(UNANSWERABLE) + 20]
        return Answer(
            question=question, text=text, strategy=self.name, cost=cost, trace=trace,
            evidence=evidence, unanswerable=declined,
        )
