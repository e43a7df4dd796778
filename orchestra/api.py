"""The shortest way in: ``orchestra.ask(question, documents)``."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Iterable

from orchestra.backends import Backend, default_backend
from orchestra.checks import run_checks
from orchestra.corpus import Corpus, Document, load_documents
from orchestra.pipeline import Pipeline, finish_answer
from orchestra.registry import resolve
from orchestra.strategies.base import check_question
from orchestra.types import Answer, Route


def build_strategy(name: str, backend: Backend, **options: Any):
    return resolve("strategy", name)(backend, **options)


# The default pipeline per backend and options, built once: its retrievers' indexes, the KV
# prefills and the corpora it keeps live on between calls (a second question over the same
# documents reads them instead of indexing and prefilling again).
_DEFAULTS: dict[tuple[int, str], tuple[Backend, Pipeline]] = {}
_DEFAULTS_LOCK = threading.Lock()


def default_pipeline(backend: Backend, **options: Any) -> Pipeline:
    """``Pipeline.default(backend, **options)``, built on first use and reused afterwards."""
    key = (id(backend), json.dumps(options, sort_keys=True, default=repr))
    with _DEFAULTS_LOCK:
        held = _DEFAULTS.get(key)
        if held is None or held[0] is not backend:  # the id of a backend since collected
            held = _DEFAULTS[key] = (backend, Pipeline.default(backend, **options))
        return held[1]


def ask(question: str, documents: Iterable[str | Path | Document] = (), strategy: str = "auto",
        backend: Backend | None = None, *, text: str | Iterable[str] | None = None,
        **options: Any) -> Answer:
    """Answer ``question`` over ``documents`` (paths or Documents) and ``text`` (one text or
    several, given inline). A string in ``documents`` is always a path: a missing file is an
    error, never read as the text.

    ``strategy="auto"`` lets the default router decide, in the default pipeline kept per
    backend (``default_pipeline``); a strategy name reads that way.
    """
    question = check_question(question)
    docs = load_documents(documents, text=text)  # bad input fails before a model loads
    if strategy != "auto":
        run_checks(resolve("strategy", strategy), options)
    backend = backend or default_backend()
    if strategy == "auto":
        return default_pipeline(backend, **options).run(question, docs)
    corpus = Corpus(docs, backend.tokenizer)
    answer = build_strategy(strategy, backend, **options).answer(question, corpus)
    answer.route = Route(strategy=strategy, reason="chosen by the caller", router="fixed")
    return finish_answer(answer, corpus)  # the route step; evidence with file:line and snippet
