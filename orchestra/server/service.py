"""The service objects: what the server does, with no HTTP in it.

``PipelineService(pipeline)`` answers questions (whole or streamed), registers corpora and
keeps their reuse counts; ``ModelService(backend)`` generates chat replies in gathered
batches and tokenizes. Their methods block (call them from a worker thread, never an event
loop), take the checked request models of orchestra/server/schemas.py and raise
``ServiceError`` for what they refuse. The HTTP routes (orchestra/server/routes_*.py) are thin
wrappers over them; any other front end (a Ray Serve deployment, a notebook) can drive them
the same way.
"""

from __future__ import annotations

from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from orchestra.backends.base import Backend, GenerationRequest, GenerationResult, \
    GenerationSettings, Message
from orchestra.server.batcher import Batcher
from orchestra.server.corpora import Corpora, CorpusEntry
from orchestra.server.errors import ServiceError
from orchestra.server.metrics import Metrics
from orchestra.server.schemas import Source


@dataclass
class Limits:
    """What one request may ask of the service."""

    max_documents: int = 64
    max_request_tokens: int = 1_000_000
    max_corpora: int = 8  # registered corpora kept (indexed and prefilled) at once


class PipelineService:
    def __init__(self, pipeline, limits: Limits | None = None, metrics: Metrics | None = None):
        self.pipeline = pipeline
        self.limits = limits or Limits()
        self.metrics = metrics or Metrics()
        self.corpora = Corpora(pipeline, self.metrics, self.limits.max_request_tokens,
                               self.limits.max_corpora)

    @property
    def backend(self) -> Backend:
        return self.pipeline.backend

    # -- corpora ------------------------------------------------------------------------------
    def register(self, docs: list[tuple[str, str]], warm: bool = True
                 ) -> tuple[CorpusEntry, bool]:
        """Register (chunk, index, prefill) documents; (entry, new)."""
        return self.corpora.build(docs, warm)

    def check(self, source: Source) -> CorpusEntry | None:
        """Refuse what can be refused at once (an unknown corpus or strategy); the corpus's
        entry when the source names one."""
        self.check_strategy(source.strategy)
        return self.corpora.get(source.corpus_id) if source.corpus_id is not None else None

    def check_strategy(self, strategy: str | None) -> None:
        if strategy is not None and strategy not in self.pipeline.strategies:
            raise ServiceError(f"strategy {strategy!r} is not in this pipeline; its "
                               f"strategies: {', '.join(self.pipeline.strategies)} (or auto)")

    # -- answers ------------------------------------------------------------------------------
    def answer(self, question: str, source: Source,
               generation: GenerationSettings | None = None):
        """(the Answer, the corpus entry it read or None)."""
        entry = self.check(source)
        with self._reading(entry, source) as corpus:
            answer = self.pipeline.run(question, corpus, strategy=source.strategy,
                                       generation=generation)
        self._answered(entry, answer)
        return answer, entry

    def stream(self, question: str, source: Source,
               generation: GenerationSettings | None = None) -> Iterator[Any]:
        """Pipeline.stream's events (route, evidence, tokens, answer); closing the iterator
        stops the generation at its next token."""
        entry = self.check(source)
        with self._reading(entry, source) as corpus:
            for ev in self.pipeline.stream(question, corpus, strategy=source.strategy,
                                           generation=generation):
                if ev.type == "answer":
                    self._answered(entry, ev.answer)
                yield ev

    @contextmanager
    def _reading(self, entry: CorpusEntry | None, source: Source) -> Iterator[Any]:
        """The corpus to read (tokenized here, on the calling thread), with its index and
        prefill work counted; documents sent inline are forgotten afterwards."""
        with self.corpora.counting(entry):
            if entry is not None:
                yield entry.corpus
                return
            corpus = self.corpora.corpus_of(source.documents or [])
            try:
                yield corpus
            finally:
                self.corpora.release(corpus)

    def _answered(self, entry: CorpusEntry | None, answer) -> None:
        if entry is not None:
            entry.questions += 1
        self.metrics.count_answer(answer)

    # -- description --------------------------------------------------------------------------
    def model_card(self, name: str, created: int) -> dict[str, Any]:
        card = _card(self.backend, name, created)
        card["strategies"] = list(self.pipeline.strategies)
        card["router"] = getattr(self.pipeline.router, "name",
                                 type(self.pipeline.router).__name__)
        return card


def _card(backend: Backend, name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "orchestra",
            "max_model_len": backend.context_window,
            "capabilities": sorted(backend.capabilities)}


class ModelService:
    """The backend's model alone: chat replies (requests gathered into batches), streams and
    token counts."""

    def __init__(self, backend: Backend, max_batch: int = 16, metrics: Metrics | None = None):
        self.backend = backend
        self.metrics = metrics or Metrics()
        self.batcher = Batcher(backend, max_batch=max_batch)

    def check_size(self, req: GenerationRequest) -> int:
        """The prompt's tokens; refused when it and max_tokens overflow the window (counted
        on the calling thread: an oversized prompt never reaches the batch worker)."""
        window = self.backend.context_window
        n = self.backend.count_prompt_tokens(req.messages)
        if n + req.max_tokens > window:
            raise ServiceError(f"the prompt ({n} tokens) plus max_tokens ({req.max_tokens}) "
                               f"exceeds the model's window of {window} tokens")
        return n

    def submit(self, req: GenerationRequest) -> "Future[GenerationResult]":
        """The reply, generated in a batch with whatever else is waiting."""
        return self.batcher.submit(req)

    def stream(self, req: GenerationRequest) -> Iterator[str | GenerationResult]:
        """Text pieces, then the GenerationResult."""
        return self.backend.stream(req)

    def count(self, res: GenerationResult) -> None:
        self.metrics.tokens.labels("prompt").inc(res.prompt_tokens)
        self.metrics.tokens.labels("generated").inc(res.generated_tokens)

    def tokenize(self, text: str | None, messages: list[Message] | None,
                 offsets: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"max_model_len": self.backend.context_window}
        if messages is not None:
            out["count"] = self.backend.count_prompt_tokens(messages)
            out["tokens"] = []
            return out
        if not isinstance(text, str):
            raise ServiceError("give 'prompt' (or 'content') as a string, or 'messages'")
        tok = self.backend.tokenizer
        spans = tok.offsets(text)
        out["count"] = len(spans)
        encode = getattr(tok, "encode", None)
        out["tokens"] = encode(text) if encode else []
        if offsets:
            out["offsets"] = [list(o) for o in spans]
        return out

    def model_card(self, name: str, created: int) -> dict[str, Any]:
        return _card(self.backend, name, created)

    def close(self) -> None:
        self.batcher.close()
