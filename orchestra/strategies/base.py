"""A strategy is one way of reading: ``answer(question, corpus) -> Answer``.

Strategies know nothing about routing. Each declares the backend capabilities it ``requires``;
routers pick only strategies the backend can run.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from orchestra.backends.base import Backend, GenerationRequest, Message
from orchestra.corpus import Corpus
from orchestra.errors import CapabilityError, InputError
from orchestra.prompts import DEFAULTS, check_template
from orchestra.types import Answer, Cost, Evidence, Trace


def check_question(question: str) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InputError("the question is empty")
    return question.strip()


class Strategy(ABC):
    name: ClassVar[str] = "strategy"
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

    def answer(self, question: str, corpus: Corpus) -> Answer:
        question = check_question(question)
        t0 = time.perf_counter()
        ans = self._answer(question, corpus)
        ans.cost.wall_seconds = time.perf_counter() - t0
        return ans

    @abstractmethod
    def _answer(self, question: str, corpus: Corpus) -> Answer: ...

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

        req = self.reader_request(context, question, may_decline)
        with trace.step(step, chunks=len(chunks)) as st:
            res = self.backend.generate_one(req)
            st.detail.update(prompt_tokens=res.prompt_tokens,
                             generated_tokens=res.generated_tokens)
        cost = Cost()
        cost.add_generation(res)
        text = res.text
        declined = may_decline and UNANSWERABLE in text.lower()[: len(UNANSWERABLE) + 20]
        return Answer(
            question=question, text=text, strategy=self.name, cost=cost, trace=trace,
            evidence=[Evidence(chunk_id=c.id, doc_id=c.doc_id, start=c.start, end=c.end)
                      for c in chunks],
            unanswerable=declined,
        )
