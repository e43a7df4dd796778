"""Token streaming: Backend.stream, strategies' final read and Pipeline.stream's events.

Control flow runs on the scripted backend (a subclass that streams word by word); the slow
tests stream from the real embedded model through TextIteratorStreamer.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from orchestra.backends.base import GenerationRequest, GenerationResult
from orchestra.backends.scripted import ScriptedBackend
from orchestra.corpus import Document
from orchestra.pipeline import Pipeline
from orchestra.strategies.full_context import FullContext
from orchestra.strategies.rag import RAG
from orchestra.routers.self_route import SelfRouter

DOC = Path(__file__).resolve().parent.parent / "examples" / "data" / "gettysburg_address.txt"
GETTYSBURG = Document(id=DOC.name, text=DOC.read_text(), source=str(DOC))


class WordStreamer(ScriptedBackend):
    """Streams its scripted reply one word at a time (and counts abandoned streams)."""

    closed_early = 0
    delay = 0.0

    def stream(self, request):
        res = self.generate_one(request)
        words = res.text.split(" ")
        try:
            for i, w in enumerate(words):
                time.sleep(self.delay)
                yield w if i == 0 else " " + w
        except GeneratorExit:
            WordStreamer.closed_early += 1
            raise
        yield res


def reply(req: GenerationRequest) -> str:
    prompt = req.messages[-1].content
    if "unanswerable" in prompt.lower():  # the may-decline reader prompt
        return "unanswerable, the passages do not say so at all"
    return "Four score and seven years ago our fathers"


def test_backend_stream_default_yields_the_text_then_the_result():
    b = ScriptedBackend(["the whole reply"])
    items = list(b.stream(GenerationRequest.user("q")))
    assert items[0] == "the whole reply"
    assert isinstance(items[-1], GenerationResult) and items[-1].text == "the whole reply"


def test_pipeline_stream_events_in_order_and_tokens_make_the_answer():
    b = WordStreamer(reply, context_window=4096)
    pipe = Pipeline(b, {"full": FullContext(b)})
    events = list(pipe.stream("When?", [GETTYSBURG]))
    types = [e.type for e in events]
    assert types[:2] == ["route", "evidence"] and types[-1] == "answer"
    tokens = [e.text for e in events if e.type == "token"]
    assert len(tokens) > 3
    answer = events[-1].answer
    assert "".join(tokens) == answer.text == "Four score and seven years ago our fathers"
    assert events[0].route.strategy == "full" and answer.route.strategy == "full"
    assert events[1].evidence and events[1].evidence[0].doc_id == answer.evidence[0].doc_id
    assert events[1].evidence[0].snippet and events[1].evidence[0].line_start == 1  # cited


def test_a_declined_read_is_never_streamed_and_the_fallback_is():
    b = WordStreamer(reply, context_window=4096)
    strategies = {"rag": RAG(b, retriever="bm25"), "full": FullContext(b)}
    pipe = Pipeline(b, strategies, SelfRouter(strategies, first="rag", fallback=["full"]))
    events = list(pipe.stream("Who spoke?", [GETTYSBURG]))
    text = "".join(e.text for e in events if e.type == "token")
    answer = events[-1].answer
    assert "unanswerable" not in text
    assert text == answer.text == "Four score and seven years ago our fathers"
    assert answer.route.strategy == "full" and "declined" in answer.route.reason
    assert [e.route.strategy for e in events if e.type == "route"] == ["full"]


def test_closing_the_stream_early_abandons_the_read():
    b = WordStreamer(reply, context_window=4096)
    b.delay = 0.05  # a slow writer, so the reader leaves mid-answer
    pipe = Pipeline(b, {"full": FullContext(b)})
    before = WordStreamer.closed_early
    it = pipe.stream("When?", [GETTYSBURG])
    for e in it:
        if e.type == "token":
            break
    it.close()
    assert WordStreamer.closed_early == before + 1
    assert not [t for t in threading.enumerate() if t.name == "orchestra-stream"]


@pytest.mark.slow
def test_embedded_model_streams_several_pieces_equal_to_generate(embedded):
    req = GenerationRequest.user("Name three colours of the rainbow.", max_tokens=16)
    items = list(embedded.stream(req))
    pieces, result = items[:-1], items[-1]
    assert isinstance(result, GenerationResult) and len(pieces) > 2
    assert "".join(pieces).strip() == result.text == embedded.generate_one(req).text


@pytest.mark.slow
def test_embedded_stream_closed_early_frees_the_model(embedded):
    req = GenerationRequest.user("Count from one to fifty in words.", max_tokens=64)
    it = embedded.stream(req)
    next(it)
    it.close()  # stops generate() through the stopping criterion, then joins its thread
    assert embedded.lock.acquire(timeout=5)
    embedded.lock.release()
    assert not [t for t in threading.enumerate() if t.name == "orchestra-hf-stream"]


def test_openai_backend_streams_from_a_model_only_server():
    """The openai backend reads `stream: true` server-sent events token by token from our
    FastAPI server in model mode (the backend behind it streams word by word)."""
    from orchestra.backends.openai_backend import OpenAIBackend
    from orchestra.server import serve_in_thread

    b = WordStreamer(lambda r: "one two three four five", context_window=4096)
    server = serve_in_thread(b, model_name="words")
    try:
        client = OpenAIBackend(base_url=server.url, max_retries=0)
        req = GenerationRequest.user("count", max_tokens=20)
        items = list(client.stream(req))
        pieces, result = items[:-1], items[-1]
        assert pieces == ["one", " two", " three", " four", " five"]
        assert result.text == "one two three four five"
        assert result.prompt_tokens == b.count_prompt_tokens(req.messages)
        assert result.generated_tokens == b.tokenizer.count(result.text)
        bad = OpenAIBackend(base_url=server.url, model="other", max_retries=0)
        bad.model = "other"
        with pytest.raises(Exception, match="404"):
            list(bad.stream(req))
    finally:
        server.shutdown()
        server.server_close()


class _Recorder:
    """A stdout that keeps each write separately (to see tokens arrive one by one)."""

    def __init__(self):
        self.writes: list[str] = []

    def write(self, s: str) -> int:
        self.writes.append(s)
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@pytest.mark.slow
def test_orchestra_ask_prints_tokens_as_they_come_and_no_stream_waits(monkeypatch):
    from orchestra.cli.main import main

    argv = ["ask", "--docs", str(DOC), "-q", "Where was the great battle fought?",
            "--strategy", "full_context", "--max-tokens", "12"]
    out = _Recorder()
    monkeypatch.setattr("sys.stdout", out)
    assert main(argv) == 0
    at_route = next(i for i, w in enumerate(out.writes) if w.startswith("route: "))
    tokens = [w for w in out.writes[:at_route] if w.strip()]
    assert len(tokens) >= 2  # written piece by piece, before the route line
    streamed = "".join(tokens)
    out2 = _Recorder()
    monkeypatch.setattr("sys.stdout", out2)
    assert main(argv + ["--no-stream"]) == 0
    assert out2.writes[0] == streamed + "\n\n"  # the same answer, written at once


@pytest.mark.slow
def test_kv_pages_streams_its_decode_token_by_token(embedded):
    pipe = Pipeline.default(embedded, max_tokens=12)
    events = list(pipe.stream("Where was the great battle fought?", [GETTYSBURG],
                              strategy="kv_pages"))
    tokens = [e.text for e in events if e.type == "token"]
    answer = events[-1].answer
    assert [e.type for e in events[:2]] == ["route", "evidence"] and len(tokens) >= 2
    assert "".join(tokens).strip() == answer.text and answer.cost.decode_seconds > 0
    assert answer.evidence  # the pages read, known once decoding ends


def test_openai_stream_retries_before_the_first_token_and_names_the_cause():
    from orchestra.backends.openai_backend import OpenAIBackend
    from orchestra.errors import BackendError
    from orchestra.server import serve_in_thread

    b = WordStreamer(lambda r: "alpha beta", context_window=4096)
    server = serve_in_thread(b, model_name="words")
    try:
        client = OpenAIBackend(base_url=server.url, model="words", max_retries=2, backoff=0.01)
        calls = {"n": 0}
        real = client._client.stream

        def flaky(*a, **kw):  # the first attempt cannot connect
            calls["n"] += 1
            if calls["n"] == 1:
                import httpx

                raise httpx.ConnectError("refused")
            return real(*a, **kw)

        client._client.stream = flaky
        items = list(client.stream(GenerationRequest.user("q", max_tokens=5)))
        assert calls["n"] == 2 and items[-1].text == "alpha beta"
    finally:
        server.shutdown()
        server.server_close()
    gone = OpenAIBackend(base_url=server.url, model="words", max_retries=1, backoff=0.01)
    with pytest.raises(BackendError, match="could not connect.*after 2 attempts"):
        list(gone.stream(GenerationRequest.user("q", max_tokens=5)))


def test_the_agents_managers_answer_streams():
    from orchestra.strategies.agents import ChainOfAgents

    # Every call replies with a quote of the speech: the worker's note is kept (it is in the
    # text), and the manager's answer is the final read.
    b = WordStreamer(lambda r: "Four score and seven years ago our fathers",
                     context_window=4096)
    pipe = Pipeline(b, {"chain_of_agents": ChainOfAgents(b)})
    events = list(pipe.stream("Who spoke?", [GETTYSBURG]))
    answer = events[-1].answer
    tokens = [e.text for e in events if e.type == "token"]
    assert not answer.unanswerable and "".join(tokens) == answer.text
    assert len(tokens) > 3  # word by word, not the whole answer at the end
    assert events[1].type == "evidence" and events[1].evidence  # the notes' chunks
