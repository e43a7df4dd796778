"""Which strategy would read, and why, without answering (``orchestra ask --explain``).

``explain(pipeline, question, documents)`` asks the pipeline's router for its decision through
its public ``route()`` (Self-Route names the strategy it tries first; an LLM router makes its
one routing call, nothing more) and estimates, for every strategy of the pipeline, what reading
this corpus would cost. The estimates count tokens with the backend's tokenizer but run no
model; they are labelled estimates, unlike an Answer's Cost, which is measured.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field

from orchestra.corpus import Corpus
from orchestra.strategies.base import check_question
from orchestra.types import Route


class Estimate(BaseModel):
    """What one strategy would spend on this question (tokens from the tokenizer, no model)."""

    name: str  # the strategy's name in the pipeline
    type: str  # its registered type (full_context, rag, kv_pages, ...)
    can_read: bool
    why_not: str = ""
    prompt_tokens: int | None = None  # prompt tokens the reader would be given, in all calls
    model_calls: int | None = None
    kv_pages_read: int | None = None  # KV pages attended per decoding step (kv_pages)
    kv_pages_total: int | None = None
    note: str = ""
    # The strategy's own cheap measurements (RAG: its retrieval score shape), which
    # routers such as `rules` decide from.
    signals: dict[str, Any] = Field(default_factory=dict)


class Explanation(BaseModel):
    question: str
    documents: int
    corpus_tokens: int
    context_window: int
    route: Route
    estimates: list[Estimate] = Field(default_factory=list)


def explain(pipeline: Any, question: str, documents: Any,
            strategy: str | None = None) -> Explanation:
    """The router's decision (or the caller's ``strategy``) and every strategy's estimate."""
    question = check_question(question)
    corpus = pipeline.corpus(documents)
    backend = pipeline.backend
    if strategy is not None:
        route = pipeline.chosen_route(strategy)
    else:
        route = pipeline.router.route(question, corpus, backend)
    return Explanation(
        question=question, documents=len(corpus.documents), corpus_tokens=corpus.n_tokens,
        context_window=backend.context_window, route=route,
        estimates=[estimate(name, s, corpus, question)
                   for name, s in pipeline.strategies.items()])


def estimate(name: str, strategy: Any, corpus: Corpus, question: str) -> Estimate:
    backend = strategy.backend
    kind = getattr(strategy, "kind", None) or strategy.name
    out = Estimate(name=name, type=strategy.name, can_read=True)
    missing = sorted(strategy.requires - backend.capabilities)
    if missing:
        out.can_read, out.why_not = False, f"the backend lacks {', '.join(missing)}"
        return out
    fit = strategy.fits(corpus, question)
    if not fit.ok:
        out.can_read = False
        out.why_not = (f"needs {fit.needed} tokens, room for {fit.available}"
                       if fit.needed is not None else "cannot read this corpus")
    out.signals = dict(strategy.signals(question, corpus))
    overhead = backend.count_prompt_tokens(strategy.reader_request("", question).messages)
    tokens = corpus.n_tokens
    if kind == "full_context":
        out.prompt_tokens, out.model_calls = (fit.needed or tokens) + overhead, 1
    elif kind == "rag":
        top = getattr(strategy, "top_k_tokens", tokens)
        out.prompt_tokens, out.model_calls = min(top, tokens) + overhead, 1
        out.note = f"reads at most {top} tokens of retrieved passages"
    elif kind == "kv_pages":
        size = getattr(strategy, "page_size", None) or getattr(
            getattr(strategy, "config", None), "page_size", 64)
        top = getattr(strategy, "top_pages", None) or getattr(
            getattr(strategy, "config", None), "top_pages", None)
        pages = math.ceil(tokens / size)
        out.prompt_tokens, out.model_calls = tokens + overhead, 1
        out.kv_pages_total = pages
        out.kv_pages_read = min(pages, top) if top else None
        out.note = "the corpus is prefilled once and reused by later questions"
    elif kind == "agents":
        chunk = getattr(strategy, "chunk_tokens", None) or 1000
        workers = math.ceil(tokens / chunk)
        calls = workers + 1  # one worker per piece, one manager (more if notes need reducing)
        out.prompt_tokens, out.model_calls = tokens + calls * overhead, calls
        out.note = f"{workers} worker call(s) of up to {chunk} tokens, then a manager"
    else:
        out.note = "no estimate for this strategy type"
    return out


def format_explanation(ex: Explanation) -> str:
    r = ex.route
    lines = [f"question: {ex.question}",
             f"corpus: {ex.documents} document(s), {ex.corpus_tokens} tokens; "
             f"the model's window: {ex.context_window} tokens",
             f"route: {r.strategy} (router {r.router})",
             f"  reason: {r.reason}"]
    if r.signals:
        lines.append("  signals: " + ", ".join(f"{k}={_short(v)}" for k, v in r.signals.items()))
    lines.append("cost estimate per strategy (tokens counted with the model's tokenizer; "
                 "no answer was generated):")
    width = max(len(e.name) for e in ex.estimates) if ex.estimates else 8
    for e in ex.estimates:
        label = e.name if e.name == e.type else f"{e.name} [{e.type}]"
        mark = "*" if e.name == r.strategy else " "
        if e.prompt_tokens is None:
            body = e.why_not or e.note
        else:
            body = f"~{e.prompt_tokens} prompt tokens, {e.model_calls} model call(s)"
            if e.kv_pages_total:
                body += f", KV pages {e.kv_pages_read or '?'}/{e.kv_pages_total} per step"
            body += "; " + ("can read" if e.can_read else f"cannot read: {e.why_not}")
            if e.note:
                body += f" ({e.note})"
        lines.append(f" {mark} {label:<{width + 2}} {body}")
        if e.signals:
            lines.append(f"   {'':<{width + 2}} signals: "
                         + ", ".join(f"{k}={_short(v)}" for k, v in e.signals.items()))
    return "\n".join(lines) + "\n"


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."
