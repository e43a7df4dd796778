"""The values every strategy returns: Answer, its Cost, its evidence and its Trace.

All are pydantic models so they round-trip through JSON (evaluation results, the learned
router's training data and the CLI's --json output all rely on that).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

from pydantic import AliasChoices, BaseModel, Field, computed_field


def _plus(a, b):
    """A sum where None is "not measured": None only when neither side measured."""
    if a is None or b is None:
        return b if a is None else a
    return a + b


class Cost(BaseModel):
    """Measured, never estimated: token counts come from the backend's tokenizer."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    model_calls: int = 0
    kv_pages_read: int = 0  # summed over decoding steps (and layers/heads where relevant)
    kv_pages_total: int = 0  # the matching denominator: pages available at those steps
    # Measured only where a strategy prefills and decodes apart (kv_pages); null elsewhere, so
    # "not measured" never reads as "took no time".
    prefill_seconds: float | None = None
    decode_seconds: float | None = None
    wall_seconds: float = 0.0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(**{k: _plus(getattr(self, k), getattr(other, k)) for k in Cost.model_fields})

    def add_generation(self, result: "Any") -> None:
        """Count one backend result (a GenerationResult)."""
        self.prompt_tokens += result.prompt_tokens
        self.generated_tokens += result.generated_tokens
        self.model_calls += 1

    @property
    def pages_read_fraction(self) -> float | None:
        return self.kv_pages_read / self.kv_pages_total if self.kv_pages_total else None


class TraceStep(BaseModel):
    name: str
    seconds: float = 0.0
    detail: dict[str, Any] = Field(default_factory=dict)
    # route, retrieval, model, prefill or step (orchestra.observe.STEP_KINDS): how observers type it.
    kind: str = "step"


class Trace(BaseModel):
    """The steps of a run. Each step is also shown live to the listeners of
    ``orchestra.observe`` (LangChain callbacks, LlamaIndex events, OpenTelemetry spans)."""

    steps: list[TraceStep] = Field(default_factory=list)

    def add(self, name: str, seconds: float = 0.0, kind: str | None = None,
            **detail: Any) -> TraceStep:
        """Record a step already done (``seconds`` long)."""
        from orchestra import observe

        step = TraceStep(name=name, seconds=seconds, detail=detail,
                         kind=kind or observe.kind_of(name))
        observe.ended(observe.started(step), step)
        self.steps.append(step)
        return step

    @contextmanager
    def step(self, name: str, kind: str | None = None, **detail: Any) -> Iterator[TraceStep]:
        """Time a block; the block may add to ``step.detail``."""
        from orchestra import observe

        step = TraceStep(name=name, detail=detail, kind=kind or observe.kind_of(name))
        handles = observe.started(step)
        start = time.perf_counter()
        error = None
        try:
            yield step
        except BaseException as e:
            error = e
            raise
        finally:
            step.seconds = time.perf_counter() - start
            self.steps.append(step)
            observe.ended(handles, step, error)

    def extend(self, other: "Trace", prefix: str = "") -> None:
        for s in other.steps:
            self.steps.append(s.model_copy(update={"name": prefix + s.name}))


class Evidence(BaseModel):
    """A span of the corpus the reader was given."""

    chunk_id: str
    doc_id: str
    start: int  # character offsets into the document's text
    end: int
    score: float | None = None
    # Where a person finds the span (filled from the corpus by orchestra.citations.cite):
    # the document's file (or id), its 1-based first and last lines, and its opening words.
    source: str | None = None
    line_start: int | None = None
    line_end: int | None = None
    snippet: str | None = None

    @property
    def location(self) -> str:
        """``file:line-line`` (or the document id and character span before citing)."""
        if self.line_start is None:
            return f"{self.doc_id}@{self.start}-{self.end}"
        return f"{self.source or self.doc_id}:{self.line_start}-{self.line_end}"


class Route(BaseModel):
    strategy: str
    reason: str
    signals: dict[str, Any] = Field(default_factory=dict)
    router: str = "fixed"
    cost: Cost = Field(default_factory=Cost)  # the cost of deciding (model calls of the router)

    def as_step(self) -> TraceStep:
        """The decision as a Trace step (the first step of a routed Answer's trace)."""
        return TraceStep(name="route", kind="route", seconds=self.cost.wall_seconds,
                         detail={"strategy": self.strategy, "router": self.router,
                                 "reason": self.reason, "signals": self.signals})


class Answer(BaseModel):
    question: str
    text: str
    # The registered type of the strategy that read (rag, full_context, ...); the name a
    # pipeline gave it is ``route.strategy``. Read from "strategy" too (answers written before
    # the rename, and callers that still pass strategy=).
    strategy_type: str = Field(validation_alias=AliasChoices("strategy_type", "strategy"))
    evidence: list[Evidence] = Field(default_factory=list)
    route: Route | None = None
    cost: Cost = Field(default_factory=Cost)
    trace: Trace = Field(default_factory=Trace)
    # Whether the strategy reports that the evidence it read did not contain the answer.
    unanswerable: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def short(self) -> str:
        """The answer span of ``text``: preambles ("The answer to the question is:"), quotes, a
        restated question and repeated phrases removed (orchestra.short_answer). ``text`` keeps
        the full reply; exact match and F1 read this."""
        from orchestra.short_answer import short_answer

        return short_answer(self.text, self.question)

    def __str__(self) -> str:  # the CLI's and notebooks' plain view
        return self.text
