"""OpenTelemetry spans for every pipeline step (opentelemetry-sdk's in-memory exporter), and
the observe listeners they ride on."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from orchestra import observe  # noqa: E402
from orchestra.backends.scripted import ScriptedBackend  # noqa: E402
from orchestra.telemetry import OTelSteps  # noqa: E402
from orchestra.types import Trace  # noqa: E402

SPEECH = Path(__file__).resolve().parent.parent / "examples" / "data" / "gettysburg_address.txt"


@pytest.fixture()
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with observe.listening(OTelSteps(provider)):
        yield exporter, provider


def rag_pipeline():
    from orchestra.pipeline import Pipeline
    from orchestra.retrievers.bm25 import BM25Retriever
    from orchestra.strategies.rag import RAG

    backend = ScriptedBackend(lambda r: "a portion of that field")
    return Pipeline(backend, {"rag": RAG(backend, retriever=BM25Retriever(), top_k_tokens=300)})


def test_every_step_is_a_span_under_the_callers_span(spans):
    exporter, provider = spans
    with provider.get_tracer("test").start_as_current_span("request") as outer:
        answer = rag_pipeline().run("What did they come to dedicate?", [SPEECH])
    got = {s.name: s for s in exporter.get_finished_spans()}
    assert {"orchestra.route", "orchestra.retrieve", "orchestra.read", "request"} <= set(got)
    for name in ("orchestra.route", "orchestra.retrieve", "orchestra.read"):
        assert got[name].parent.span_id == outer.get_span_context().span_id
    read = got["orchestra.read"].attributes
    assert read["orchestra.step.kind"] == "model"
    assert read["orchestra.prompt_tokens"] == answer.cost.prompt_tokens
    assert read["orchestra.generated_tokens"] == answer.cost.generated_tokens
    route = got["orchestra.route"].attributes
    assert route["orchestra.strategy"] == "rag" and route["orchestra.reason"]
    retrieve = got["orchestra.retrieve"].attributes
    assert retrieve["orchestra.step.kind"] == "retrieval"
    assert retrieve["orchestra.hits.count"] == len(answer.evidence)


def test_a_failing_step_is_an_error_span_and_nested_steps_nest(spans):
    exporter, _ = spans
    t = Trace()
    with pytest.raises(ValueError):
        with t.step("outer"):
            with t.step("inner", kind="model"):
                raise ValueError("boom")
    got = {s.name: s for s in exporter.get_finished_spans()}
    assert got["orchestra.inner"].parent.span_id == got["orchestra.outer"].context.span_id
    assert got["orchestra.inner"].status.status_code == trace.StatusCode.ERROR
    assert [e.name for e in got["orchestra.inner"].events] == ["exception"]
    # A step recorded after the fact keeps its duration.
    t.add("notes", seconds=0.25, chunks=3)
    notes = [s for s in exporter.get_finished_spans() if s.name == "orchestra.notes"][0]
    assert (notes.end_time - notes.start_time) / 1e9 == pytest.approx(0.25, abs=0.05)
    assert notes.attributes["orchestra.chunks"] == 3


def test_otel_listener_is_registered_globally_and_a_broken_listener_never_breaks_a_run():
    assert any(isinstance(g, OTelSteps) for g in observe.active())

    class Broken:
        def step_started(self, step):
            raise RuntimeError("listener bug")

        def step_ended(self, step, token, error):
            raise RuntimeError("listener bug")

    with observe.listening(Broken()):
        answer = rag_pipeline().run("What did they come to dedicate?", [SPEECH])
    assert answer.text == "a portion of that field"
