"""The evaluation runner: rows, resume after a crash, reports. Control flow only (scripted
backend); the real model runs in benchmarks/README.md and the slow CLI test."""

import json
import re

import pytest

from orchestra.backends.scripted import ScriptedBackend
from orchestra.corpus import Document
from orchestra.errors import InputError
from orchestra.eval import report
from orchestra.eval.datasets import Sample
from orchestra.eval.runner import Runner, read_results
from orchestra.pipeline import Pipeline
from orchestra.strategies.full_context import FullContext
from orchestra.routers.fixed import FixedRouter


def _reply(req):
    # Answers with the 6-digit number in the prompt, if any: right when the context has it.
    m = re.search(r"\b\d{6}\b", req.messages[-1].content)
    return f"The number is {m.group(0)}." if m else "I do not know."


class Blind(FullContext):
    """A strategy that reads nothing (no evidence): always wrong on these samples."""
    name = "blind"

    def _answer(self, question, corpus):
        from orchestra.types import Trace
        return self.read("(nothing)", question, [], Trace())


def _pipeline(backend):
    strategies = {"full": FullContext(backend), "blind": Blind(backend)}
    return Pipeline(backend, strategies, FixedRouter(strategies, strategy="full"))


def _samples(n=4):
    return [Sample(sample_id=f"s{i}", dataset="toy", question="What is the number?",
                   documents=[Document(id="d", text=f"Some filler. The number is {100000 + i}. "
                                                    "More filler.")],
                   answers=[str(100000 + i)], task="niah", length=100) for i in range(n)]


def test_rows_have_the_contract_fields(tmp_path):
    backend = ScriptedBackend(_reply)
    rows = Runner(_pipeline(backend), tmp_path, ["all"], progress=False).run(_samples(2))
    assert len(rows) == 2 * 3  # full, blind, router per sample
    keys = {"sample_id", "dataset", "length", "question", "gold", "strategy", "answer", "scores",
            "cost", "route", "evidence_recall", "features"}
    for r in rows:
        assert keys <= set(r)
        assert isinstance(r["features"], dict)
    by = {(r["sample_id"], r["strategy"]): r for r in rows}
    assert by[("s0", "full")]["scores"]["contains"] == 1.0
    assert by[("s0", "full")]["evidence_recall"] == 1.0
    assert by[("s0", "blind")]["scores"]["contains"] == 0.0
    assert by[("s0", "blind")]["evidence_recall"] == 0.0
    assert by[("s0", "router")]["route"]["router"] == "fixed"
    assert by[("s0", "router")]["route"]["strategy"] == "full"
    assert by[("s0", "full")]["cost"]["prompt_tokens"] > 0
    # The file holds the same rows, one JSON object per line.
    assert [json.loads(x)["sample_id"] for x in (tmp_path / "results.jsonl").read_text()
            .splitlines()] == [r["sample_id"] for r in rows]


class Crash(Exception):
    pass


def test_resume_after_a_crash_redoes_nothing(tmp_path):
    calls = {"n": 0}

    def crashing(req):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # as Ctrl-C midway through the run
        return _reply(req)

    samples = _samples(4)
    with pytest.raises(KeyboardInterrupt):
        Runner(_pipeline(ScriptedBackend(crashing)), tmp_path, ["full", "blind"],
               progress=False).run(samples)
    done = read_results(tmp_path / "results.jsonl")
    assert len(done) == 4  # the four answers finished before the interrupt
    # A crash can also cut the last line short: the rerun must drop it, not choke on it.
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"sample_id": "s2", "strat')
    second = ScriptedBackend(_reply)
    rows = Runner(_pipeline(second), tmp_path, ["full", "blind"], progress=False).run(samples)
    assert len(second.requests) == 8 - 4  # only the unfinished answers ran
    pairs = [(r["sample_id"], r["strategy"]) for r in read_results(tmp_path / "results.jsonl")]
    assert len(pairs) == len(set(pairs)) == 8
    assert len(rows) == 8
    # A third run has nothing left to do.
    third = ScriptedBackend(_reply)
    Runner(_pipeline(third), tmp_path, ["full", "blind"], progress=False).run(samples)
    assert third.requests == []


def test_a_failing_strategy_is_recorded_and_the_run_goes_on(tmp_path):
    backend = ScriptedBackend(_reply, context_window=160)  # too small for the corpus
    long = [Sample(sample_id="big", dataset="toy", question="What is the number?",
                   documents=[Document(id="d", text="filler " * 200 + "The number is 123456.")],
                   answers=["123456"], task="niah", length=200)] + _samples(1)
    rows = Runner(_pipeline(backend), tmp_path, ["full"], progress=False).run(long)
    assert rows[0]["error"].startswith("ContextOverflowError")
    assert rows[0]["scores"]["contains"] == 0.0
    assert "error" not in rows[1] and rows[1]["scores"]["contains"] == 1.0


def test_unknown_strategy_and_other_run_in_the_same_dir(tmp_path):
    pipe = _pipeline(ScriptedBackend(_reply))
    with pytest.raises(InputError, match="unknown strategy 'nope'"):
        Runner(pipe, tmp_path, ["nope"])
    Runner(pipe, tmp_path, ["full"], progress=False, run_info={"dataset": "a"}).run(_samples(1))
    with pytest.raises(InputError, match="another run"):
        Runner(pipe, tmp_path, ["full"], progress=False, run_info={"dataset": "b"}).run(
            _samples(1))


def test_reports_with_oracle(tmp_path):
    rows = Runner(_pipeline(ScriptedBackend(_reply)), tmp_path, ["all"],
                  progress=False).run(_samples(3))
    summary = {s["strategy"]: s for s in report.summarize(rows)}
    assert summary["full"]["quality"] == 1.0 and summary["blind"]["quality"] == 0.0
    assert summary["oracle"]["quality"] == 1.0
    assert summary["router"]["choices"] == {"full": 3}
    # Ties go to the cheaper strategy: with both wrong, the oracle takes the blind one's cost.
    for r in rows:
        if r["strategy"] == "full":
            r["quality"] = 0.0
    assert report.summarize(rows)[-1]["prompt_tokens"] == summary["blind"]["prompt_tokens"]
    out = report.write_reports(rows, tmp_path)
    md = out["report"].read_text()
    assert "| oracle |" in md and "| router |" in md and "toy, 100 tokens" in md
    assert out["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_input_is_a_clear_error(capsys, tmp_path):
    from orchestra.cli.main import main

    assert main(["eval", "--dataset", "squad", "--lengths", "4000", "--out",
                 str(tmp_path)]) == 2
    assert "unknown dataset 'squad'" in capsys.readouterr().err
    assert main(["eval", "--dataset", "niah", "--lengths", "4k,x", "--out", str(tmp_path)]) == 2
    assert "not a token count" in capsys.readouterr().err
    assert main(["eval", "--pipeline", str(tmp_path / "none.yaml"), "--dataset", "niah",
                 "--lengths", "4000", "--out", str(tmp_path)]) == 2
    assert "no such pipeline file" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_on_the_embedded_model_writes_three_outputs_and_resumes(tmp_path, capsys):
    """The real model on two datasets (short corpora, so it stays quick)."""
    from orchestra.cli.main import main
    from conftest import data_path

    data_path("needle_haystack")
    out = tmp_path / "niah"
    args = ["eval", "--dataset", "niah", "--lengths", "1500", "--limit", "1", "--depths", "0.5",
            "--strategies", "full_context,router", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    rows = {r["strategy"]: r for r in read_results(out / "results.jsonl")}
    assert set(rows) == {"full_context", "router"}
    full = rows["full_context"]
    assert full["cost"]["prompt_tokens"] > 1400 and full["cost"]["model_calls"] == 1
    assert full["evidence_recall"] == 1.0  # full context saw the needle
    # The default pipeline's Self-Route reads rag first, then keeps its reply or names the
    # strategy it escalated to (the route can only name one of the pipeline's own strategies,
    # so asserting that alone could not fail).
    route = rows["router"]["route"]
    assert route["router"] == "self_route" and route["reason"].startswith("Self-Route: rag")
    if route["strategy"] == "rag":
        assert "answered from its passages" in route["reason"]
    else:
        assert f"-> {route['strategy']}" in route["reason"]
    assert rows["router"]["cost"]["model_calls"] >= 1
    assert (out / "report.md").read_text().count("| full_context |") == 1
    assert (out / "quality_vs_cost.png").stat().st_size > 10_000
    # run.json records every component's full spec (orchestra/spec.py), defaults included
    spec = json.loads((out / "run.json").read_text())["pipeline_spec"]
    [pages] = [s for s in spec["strategies"].values() if s["type"] == "kv_pages"]
    assert pages["top_pages"] == 16 and pages["max_tokens"] == 64  # defaults included
    assert spec["retrievers"]["dense"]["show_progress"] is True
    mtime = (out / "results.jsonl").stat().st_mtime_ns
    assert main(args) == 0  # rerun: nothing left to answer, the file is untouched
    assert (out / "results.jsonl").stat().st_mtime_ns == mtime

    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"context": "The meeting moved to Thursday at 3 pm in room 12. "
                             "Lunch is at noon.", "question": "Which room is the meeting in?",
                             "answers": ["12", "room 12"]}) + "\n{oops\n")
    assert main(["eval", "--dataset", f"jsonl:{f}", "--out", str(tmp_path / "j"),
                 "--no-progress"]) == 0
    assert "mine.jsonl:2: malformed JSON" in capsys.readouterr().err
    rows = read_results(tmp_path / "j" / "results.jsonl")
    assert len(rows) == 1 and rows[0]["strategy"] == "router"


def test_evidence_recall_is_not_claimed_for_option_tasks(tmp_path):
    s = _samples(1)[0]
    s.task, s.answers = "options", ["A"]
    rows = Runner(_pipeline(ScriptedBackend(_reply)), tmp_path, ["full"],
                  progress=False).run([s])
    assert rows[0]["evidence_recall"] is None
    assert report.summarize(rows)[0]["evidence_recall"] is None
    assert "| n/a |" in report.render_markdown(rows)


def test_a_changed_profile_answers_again_with_the_same_pipeline_file(tmp_path):
    """Rows are keyed by every option the strategy was built with, the profile's included: a
    pipeline file that stays the same while its profile changes must not reuse old answers."""
    import yaml

    from orchestra.registry import register

    register("backend", "scripted", "orchestra.backends.scripted:ScriptedBackend")
    profile = tmp_path / "mine.yaml"
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text("profile: mine.yaml\nbackend: {type: scripted, replies: []}\n"
                    "strategies: {full: {type: full_context}}\n"
                    "router: {type: fixed, strategy: full}\n")

    def run(max_tokens):
        profile.write_text(yaml.safe_dump({"family": "mine", "strategies": {
            "full_context": {"max_tokens": max_tokens}}}))
        pipeline = Pipeline.from_yaml(pipe)
        pipeline.backend._fn = _reply  # a function cannot be written in YAML
        assert pipeline.strategies["full"].max_tokens == max_tokens
        before = len(pipeline.backend.requests)  # pipelines may share one backend
        Runner(pipeline, tmp_path / "out", ["full"], progress=False).run(_samples(2))
        return pipeline.backend.requests[before:]

    assert len(run(24)) == 2
    assert run(24) == []  # same settings: the rows are reused
    again = run(40)  # only the profile changed
    assert len(again) == 2 and {r.max_tokens for r in again} == {40}
