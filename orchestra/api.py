"""The shortest way in: ``orchestra.ask(question, documents)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from orchestra.backends import Backend, default_backend
from orchestra.corpus import Corpus, Document, load_documents
from orchestra.registry import resolve
from orchestra.strategies.base import check_question
from orchestra.types import Answer, Route


def build_strategy(name: str, backend: Backend, **options: Any):
    return resolve("strategy", name)(backend, **options)


def ask(question: str, documents: Iterable[str | Path | Document] = (), strategy: str = "auto",
        backend: Backend | None = None, *, text: str | Iterable[str] | None = None,
        **options: Any) -> Answer:
    """Answer ``question`` over ``documents`` (paths or Documents) and ``text`` (one text or
    several, given inline). A string in ``documents`` is always a path: a missing file is an
    error, never read as the text.

    ``strategy="auto"`` lets the default router decide; a strategy name reads that way.
    """
    question = check_question(question)
    docs = load_documents(documents, text=text)  # bad input fails before a model loads
    if strategy != "auto":
        from orchestra.checks import run_checks

        run_checks(resolve("strategy", strategy), options)
    backend = backend or default_backend()
    corpus = Corpus(docs, backend.tokenizer)
    if strategy == "auto":
        try:
            from orchestra.pipeline import Pipeline
        except ImportError:
            strategy = "full_context"
        else:
            return Pipeline.default(backend, **options).run(question, corpus)
    answer = build_strategy(strategy, backend, **options).answer(question, corpus)
    answer.route = Route(strategy=strategy, reason="chosen by the caller", router="fixed")
    from orchestra.pipeline import finish_answer

    return finish_answer(answer, corpus)  # the route step; evidence with file:line and snippet
