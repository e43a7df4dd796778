"""`orchestra ask --explain`, evidence as file:line-line with a snippet, one set of strategy
names, argument checks before the model loads, and the progress line.

Fast tests use the scripted backend for control flow on the shipped document
(examples/data/gettysburg_address.txt); the slow ones run the real embedded model.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from orchestra.backends.scripted import ScriptedBackend
from orchestra.cli.main import main
from orchestra.corpus import Corpus, Document

REPO = Path(__file__).resolve().parent.parent
SPEECH = REPO / "examples" / "data" / "gettysburg_address.txt"
QUESTION = "What did they come to dedicate?"
LOCATION = re.compile(r"^  (\S+):(\d+)-(\d+)  (.+)$")


def scripted_pipeline(reply="a portion of that field", router=None):
    from orchestra.pipeline import Pipeline
    from orchestra.retrievers.bm25 import BM25Retriever
    from orchestra.routers.rules import RulesRouter
    from orchestra.strategies.full_context import FullContext
    from orchestra.strategies.rag import RAG

    backend = ScriptedBackend(lambda r: reply)
    strategies = {"rag": RAG(backend, retriever=BM25Retriever(), top_k_tokens=300),
                  "full_context": FullContext(backend)}
    return Pipeline(backend, strategies, router or RulesRouter(strategies))


def test_strategy_typo_is_refused_with_the_choices_before_any_model_loads(monkeypatch, capsys):
    import orchestra.backends

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(orchestra.backends, "default_backend", no_model)
    with pytest.raises(SystemExit) as exit_:
        main(["ask", "--docs", str(SPEECH), "-q", QUESTION, "--strategy", "kv_page"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'kv_page'" in err
    for name in ("auto", "full_context", "rag", "kv_pages", "chain_of_agents", "map_reduce"):
        assert name in err


def test_evidence_names_file_lines_and_snippet_and_json_keeps_ids(capsys):
    from orchestra.cli.common import print_answer

    text = SPEECH.read_text()
    answer = scripted_pipeline().run(QUESTION, [SPEECH])
    assert answer.evidence
    print_answer(answer)
    out = capsys.readouterr().out
    shown = [LOCATION.match(line) for line in out.splitlines() if line.startswith("  ")]
    assert shown and all(shown), out
    for m, ev in zip(shown, answer.evidence):
        path, first, last, snip = m.groups()
        assert path == str(SPEECH) and path.endswith("gettysburg_address.txt")
        # The lines really hold the span: its first and last characters are on them.
        assert int(first) == text[:ev.start].count("\n") + 1
        assert int(last) == text[:ev.end - 1].count("\n") + 1
        assert snip.rstrip("…").split()[0] in text[ev.start:ev.end]
        assert len(snip) <= 81
    print_answer(answer, as_json=True)
    data = json.loads(capsys.readouterr().out)
    ev = data["evidence"][0]
    assert {"chunk_id", "doc_id", "start", "end", "source", "line_start", "line_end",
            "snippet"} <= set(ev)
    assert text[ev["start"]:ev["end"]].startswith(ev["snippet"].rstrip("…").split()[0])


def test_route_step_opens_the_trace_and_the_route_shows_types():
    from orchestra.cli.common import print_answer

    pipe = scripted_pipeline()
    answer = pipe.run(QUESTION, [SPEECH])
    first = answer.trace.steps[0]
    assert first.kind == "route" and first.detail["strategy"] == answer.route.strategy
    assert first.detail["reason"] == answer.route.reason
    assert {"retrieval", "model"} <= {s.kind for s in answer.trace.steps} or \
        answer.route.strategy == "full_context"
    out = io.StringIO()
    print_answer(answer, out=out)
    assert f"route: {answer.route.strategy} (router rules)" in out.getvalue()


def test_a_router_that_decides_first_shows_its_route_before_the_reading_steps():
    from orchestra import observe

    seen = []

    class Order:
        def step_started(self, step):
            seen.append(step.name)

        def step_ended(self, step, token, error):
            pass

    with observe.listening(Order()):
        answer = scripted_pipeline().run(QUESTION, [SPEECH])
    assert seen[0] == "route" and seen.count("route") == 1
    assert [s.name for s in answer.trace.steps] == seen


def test_explain_decides_and_estimates_without_a_model_call():
    from orchestra.explain import explain, format_explanation

    pipe = scripted_pipeline()
    ex = explain(pipe, QUESTION, [SPEECH])
    assert pipe.backend.requests == []  # no model call: routing and estimates only
    assert ex.route.strategy in pipe.strategies and ex.route.reason
    assert ex.corpus_tokens == pipe.corpus([SPEECH]).n_tokens
    by = {e.name: e for e in ex.estimates}
    assert set(by) == {"rag", "full_context"}
    assert by["full_context"].model_calls == 1
    assert by["full_context"].prompt_tokens > ex.corpus_tokens
    assert by["rag"].signals and "retrieval_top" in by["rag"].signals
    text = format_explanation(ex)
    assert f"route: {ex.route.strategy} (router rules)" in text
    assert "reason: " in text and "signals: " in text
    assert re.search(r"full_context +~\d+ prompt tokens, 1 model call", text)
    # A caller-chosen strategy is explained as chosen.
    chosen = explain(pipe, QUESTION, [SPEECH], strategy="full_context")
    assert chosen.route.strategy == "full_context" and chosen.route.reason == "chosen by the caller"


def test_explain_shows_a_window_overflow_as_cannot_read():
    from orchestra.explain import explain

    pipe = scripted_pipeline()
    big = Document(id="big", text="word " * (pipe.backend.context_window * 2))
    ex = explain(pipe, QUESTION, [big])
    full = next(e for e in ex.estimates if e.name == "full_context")
    assert not full.can_read and "room for" in full.why_not


def test_progress_line_counts_the_steps_as_they_run():
    from orchestra.cli.common import progress

    buf = io.StringIO()
    pipe = scripted_pipeline()
    with progress(stream=buf, enabled=True) as bar:
        answer = pipe.run(QUESTION, [SPEECH])
        assert bar.n == len(answer.trace.steps)
    assert "reading: " in buf.getvalue()


def test_citations_count_lines_of_a_span_that_ends_at_a_newline():
    from orchestra.citations import cite_one
    from orchestra.types import Evidence

    corpus = Corpus([Document(id="d", text="one\ntwo\nthree\n", source="f.txt")],
                    ScriptedBackend().tokenizer)
    ev = cite_one(Evidence(chunk_id="c", doc_id="d", start=4, end=8), corpus)
    assert (ev.location, ev.snippet) == ("f.txt:2-2", "two")
    ev = cite_one(Evidence(chunk_id="c", doc_id="d", start=0, end=13), corpus)
    assert ev.location == "f.txt:1-3" and ev.snippet == "one two three"


# -- the real model (slow) ------------------------------------------------------------------
@pytest.mark.slow
def test_ask_explain_on_the_shipped_document(embedded, monkeypatch, capsys):
    def no_generation(*a, **k):
        raise AssertionError("--explain generated")

    monkeypatch.setattr(embedded, "generate", no_generation)
    monkeypatch.setattr(embedded, "stream", no_generation, raising=False)
    assert main(["ask", "--docs", str(SPEECH), "-q", QUESTION, "--explain"]) == 0
    out = capsys.readouterr().out
    assert "route: rag (router self_route)" in out
    assert "reason: Self-Route: rag first" in out
    assert "signals: " in out and "retrieval_top=" in out
    for name in ("rag", "full_context", "kv_pages", "chain_of_agents", "map_reduce"):
        assert re.search(rf"^ [* ] {name} +~\d+ prompt tokens, \d+ model call", out, re.M), out
    assert main(["ask", "--docs", str(SPEECH), "-q", QUESTION, "--explain", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["route"]["strategy"] == "rag" and len(data["estimates"]) == 5


@pytest.mark.slow
def test_ask_prints_evidence_as_file_lines_on_the_shipped_document(embedded, capsys):
    assert main(["ask", "--docs", str(SPEECH), "-q", QUESTION, "--max-tokens", "24",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # The evidence format is under test here, not the 135M reader's wording.
    assert data["route"]["strategy"] == "rag" and data["text"].strip()
    text = SPEECH.read_text()
    assert any("a portion of that field" in text[ev["start"]:ev["end"]]
               for ev in data["evidence"])
    for ev in data["evidence"]:
        assert ev["chunk_id"] and ev["source"] == str(SPEECH)
        assert ev["line_start"] == text[:ev["start"]].count("\n") + 1
    assert main(["ask", "--docs", str(SPEECH), "-q", QUESTION, "--max-tokens", "24"]) == 0
    out = capsys.readouterr().out
    lines = [LOCATION.match(line) for line in out.split("evidence:\n", 1)[1].splitlines()]
    assert lines and all(lines), out
    # Each printed line is one evidence span: its lines, then the start of its text.
    assert [(int(m.group(2)), int(m.group(3))) for m in lines] == [
        (ev["line_start"], ev["line_end"]) for ev in data["evidence"]]
    for m, ev in zip(lines, data["evidence"]):
        start = " ".join(text[ev["start"]:ev["end"]].split())
        assert start.startswith(m.group(4).rstrip("…").strip())
