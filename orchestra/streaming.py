"""Token streaming through a pipeline: the events ``Pipeline.stream`` yields, and the sink a
strategy's final read streams into.

``Pipeline.stream(question, documents)`` yields, in this order:

- ``RouteEvent`` (``type == "route"``, ``.route``: a Route): which strategy is reading. With a
  router that decides before reading it carries the router's reason; with Self-Route it names
  the strategy whose read is streaming, and the full reason comes with the answer.
- ``EvidenceEvent`` (``"evidence"``, ``.evidence``: list of Evidence): the passages the reader
  was given (document id, character span, file lines and snippet), before the first token
  (empty for kv_pages, whose pages read are known when decoding ends).
- ``TokenEvent`` (``"token"``, ``.text``): pieces of the answer as the model writes them; their
  concatenation is the answer's text. Every built-in strategy streams its final read (the
  reader's call, kv_pages' decode, the agents' manager); a strategy that does not yields its
  whole text as one TokenEvent before the answer.
- ``AnswerEvent`` (``"answer"``, ``.answer``): the final Answer (text, route with reason, exact
  evidence, cost, trace). Always last; it is authoritative.

Reads that may still be thrown away are never streamed: a read that may decline (Self-Route's
first RAG attempt) is held back until it is finished and orchestra.declines says it did not
decline (a reply restating the question is a decline, which only the whole reply shows).

Strategies stream through ``stream_read`` (``Strategy.read`` calls it): outside a stream it is
``backend.generate_one``; inside one it uses ``backend.stream`` and forwards the tokens.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from typing import Any, AsyncIterator, Callable, Iterator, Literal, Union

from pydantic import BaseModel, Field

from orchestra.backends.base import Backend, GenerationRequest, GenerationResult
from orchestra.types import Answer, Evidence, Route


class RouteEvent(BaseModel):
    type: Literal["route"] = "route"
    route: Route


class EvidenceEvent(BaseModel):
    type: Literal["evidence"] = "evidence"
    evidence: list[Evidence] = Field(default_factory=list)


class TokenEvent(BaseModel):
    type: Literal["token"] = "token"
    text: str


class AnswerEvent(BaseModel):
    type: Literal["answer"] = "answer"
    answer: Answer


StreamEvent = Union[RouteEvent, EvidenceEvent, TokenEvent, AnswerEvent]


class StreamCancelled(Exception):
    """The consumer stopped reading the stream (a client disconnected); the read is abandoned."""


class Sink:
    """Where a streaming read sends its events (one per ``Pipeline.stream`` call)."""

    def __init__(self, emit: Callable[[BaseModel], None], names: dict[int, str],
                 router: str, route_sent: bool = False, corpus: Any = None):
        self.emit = emit
        self.names = names  # id(strategy) -> its name in the pipeline
        self.router = router
        self.route_sent = route_sent
        self.corpus = corpus  # to cite evidence (file, lines, snippet) as the Answer does
        self.sent = ""  # text already streamed for the answer
        self.cancelled = threading.Event()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise StreamCancelled("the stream's consumer went away")

    def start_read(self, strategy: Any, evidence: list[Evidence]) -> None:
        """The read that will be the answer starts showing: route (if not sent) and evidence."""
        if not self.route_sent:
            name = self.names.get(id(strategy), getattr(strategy, "name", "?"))
            self.emit(RouteEvent(route=Route(
                strategy=name, router=self.router,
                reason=f"{name} is reading; the router's reason comes with the answer")))
            self.route_sent = True
        if self.corpus is not None:
            from orchestra.citations import cite_one

            evidence = [cite_one(e.model_copy(), self.corpus) for e in evidence]
        self.emit(EvidenceEvent(evidence=evidence))

    def token(self, text: str) -> None:
        if text:
            from orchestra import observe

            self.sent += text
            self.emit(TokenEvent(text=text))
            observe.token(text)  # LangChain's on_llm_new_token, inside the read's model step


_SINK: contextvars.ContextVar[Sink | None] = contextvars.ContextVar("orchestra_sink",
                                                                    default=None)


def current_sink() -> Sink | None:
    return _SINK.get()


def stream_read(strategy: Any, request: GenerationRequest, evidence: list[Evidence],
                decline: Callable[[str], bool] | None = None) -> GenerationResult:
    """One reader call: streamed to the current sink when there is one.

    ``decline``: the read may decline, and this says whether a reply did (orchestra.declines'
    rule, which needs the whole reply: one restating the question is a decline too); such a
    read is held back until it is finished and sent only when it did not decline.
    """
    backend: Backend = strategy.backend
    sink = _SINK.get()
    if sink is None:
        return backend.generate_one(request)
    sink.check()
    pending = ""  # text not yet sent (leading whitespace, or held back)
    started = False
    result: GenerationResult | None = None
    gen = backend.stream(request)
    try:
        for item in gen:
            sink.check()
            if isinstance(item, GenerationResult):
                result = item
                break
            if decline is not None:
                continue  # held: the result's text is sent below unless it declined
            pending += item
            if not started:
                if not pending.strip():
                    continue
                pending = pending.lstrip()
                sink.start_read(strategy, evidence)
                started = True
            sink.token(pending)
            pending = ""
    finally:
        gen.close()  # stops the backend's generation when we leave early
    if result is None:
        raise RuntimeError(f"{backend.name} backend's stream ended without its result")
    text = result.text
    if decline is None or not decline(text):
        if not started:
            sink.start_read(strategy, evidence)
            started = True
        # The result's text is authoritative (stripped, cut at stop strings): send what is
        # missing from what streamed.
        streamed = sink.sent
        if text.startswith(streamed):
            sink.token(text[len(streamed):])
    return result


def token_callback(strategy: Any) -> Callable[[str], None] | None:
    """For a strategy that decodes token by token itself (kv_pages): a callback that takes
    the reply's text so far after each token (orchestra.kv.reader.PagedReader.generate) and
    sends what is new to the current sink (None outside a stream). The evidence event is
    empty: the pages read are known when decoding ends; the Answer carries them."""
    sink = _SINK.get()
    if sink is None:
        return None
    state = {"sent": 0, "started": False}

    def on_token(text: str) -> None:
        sink.check()
        if not text or text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait
            return
        if not state["started"]:
            sink.start_read(strategy, [])
            state["started"] = True
        sink.token(text[state["sent"]:])
        state["sent"] = len(text)

    return on_token


def run_streaming(work: Callable[[Sink], Answer], names: dict[int, str], router: str,
                  route: Route | None = None, corpus: Any = None) -> Iterator[StreamEvent]:
    """Run ``work(sink)`` on a thread with the sink installed; yield its events, then the
    Answer. Closing the iterator early cancels the work at its next token."""
    events: queue.Queue = queue.Queue()
    done = object()
    sink = Sink(events.put, names, router, route_sent=route is not None, corpus=corpus)
    ctx = contextvars.copy_context()

    def target() -> None:
        try:
            events.put(AnswerEvent(answer=ctx.run(_with_sink, sink, work)))
        except BaseException as e:  # noqa: BLE001  (re-raised in the consumer's thread)
            events.put(e)
        finally:
            events.put(done)

    thread = threading.Thread(target=target, name="orchestra-stream", daemon=True)
    if route is not None:
        yield RouteEvent(route=route)
    thread.start()
    try:
        while True:
            item = events.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, AnswerEvent):
                final = _complete(sink, item.answer)
                yield from final
                continue
            yield item
    finally:
        sink.cancelled.set()
        thread.join(timeout=60)


def _with_sink(sink: Sink, work: Callable[[Sink], Answer]) -> Answer:
    _SINK.set(sink)
    return work(sink)


def _complete(sink: Sink, answer: Answer) -> list[BaseModel]:
    """Events still owed before the Answer: a non-streaming final read sends its text here."""
    out: list[BaseModel] = []
    if not sink.route_sent and answer.route is not None:
        out.append(RouteEvent(route=answer.route))
        sink.route_sent = True
    if not sink.sent:
        out.append(EvidenceEvent(evidence=answer.evidence))
        if answer.text:
            out.append(TokenEvent(text=answer.text))
    elif answer.text.startswith(sink.sent) and len(answer.text) > len(sink.sent):
        out.append(TokenEvent(text=answer.text[len(sink.sent):]))
    out.append(AnswerEvent(answer=answer))
    return out


async def iterate_in_thread(make: Callable[[], Iterator[Any]]) -> AsyncIterator[Any]:
    """Items of a blocking iterator, produced on its own thread (with this context's
    ContextVars). Leaving early stops the producer at its next item and closes the
    iterator there, which cancels the generation behind it."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue()
    done = object()
    stop = threading.Event()

    def put(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(q.put_nowait, item)
        except RuntimeError:  # the loop is gone (shutdown)
            pass

    def produce() -> None:
        try:
            it = make()
            try:
                for item in it:
                    if stop.is_set():
                        break
                    put(item)
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
        except BaseException as e:  # noqa: BLE001  (re-raised on the loop)
            put(e)
        finally:
            put(done)

    ctx = contextvars.copy_context()
    threading.Thread(target=ctx.run, args=(produce,), name="orchestra-serve-stream",
                     daemon=True).start()
    try:
        while True:
            item = await q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
