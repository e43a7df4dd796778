"""`orchestra tune` on the scripted backend: control flow only (the search, resuming, the files
it writes, bad input). The scripted reader answers right only under a planted configuration,
so finding it is something the search has to do."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from orchestra.backends.scripted import ScriptedBackend
from orchestra.cli.main import main
from orchestra.config import load_config
from orchestra.errors import InputError
from orchestra.eval import metrics
from orchestra.eval.datasets import load_dataset
from orchestra.pipeline import Pipeline
from orchestra.strategies.base import Strategy
from orchestra.tune import tune

PROJECTS = ["falcon", "harbor", "willow", "copper", "meadow", "granite", "lantern", "orchid",
            "summit", "canyon"]
WORDS = ["ZEBRA", "MANGO", "QUARTZ", "TULIP", "COBALT", "PEPPER", "RAVEN", "SAFFRON",
         "TUNDRA", "VIOLET"]
RULER_START = "Answer the question based on the given documents."
PARAMS = ["reorder", "reader_template", "max_tokens"]

PIPELINE = {
    # The generic profile: the SmolLM2 profile already holds RULER's template, which would
    # leave nothing for the planted search to find.
    "profile": "generic",
    "backend": {"type": "transformers", "model": "embedded"},
    "retrievers": {"lex": {"type": "bm25"}},
    "strategies": {"rag": {"type": "rag", "retriever": "lex", "top_k_tokens": 768}},
    "router": {"type": "fixed", "strategy": "rag"},
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path / "cache"))


def write_dataset(path: Path, n: int = 6) -> Path:
    """Each row: one document per project (a fact each), asking about one project."""
    rows = []
    for i in range(n):
        docs = [f"Record {j}. The code word for the {p} project is {WORDS[(j + i) % 10]}."
                for j, p in enumerate(PROJECTS)]
        k = (3 * i + 1) % len(PROJECTS)
        rows.append({"id": f"q{i}", "documents": docs,
                     "question": f"What is the code word for the {PROJECTS[k]} project?",
                     "answers": [WORDS[(k + i) % 10]]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def planted_reader(needs: dict[str, int]):
    """A reply function: right when enough of three planted conditions hold (RULER's template,
    max_tokens 32, the asked project's passage last before the question). ``needs`` maps a
    project to how many conditions its question needs, so quality rises with each one met."""
    def reply(req) -> str:
        user = req.messages[-1].content
        project = re.search(r"code word for the (\w+) project\?", user).group(1)
        passages = [p for p in user.split("\n\n") if "The code word for the" in p]
        answer = re.search(rf"The code word for the {project} project is (\w+)", user).group(1)
        met = sum([user.startswith(RULER_START), req.max_tokens == 32,
                   bool(passages) and f"the {project} project" in passages[-1]])
        return answer if met >= needs[project] else "I do not know."
    return reply


def needs_for(dataset: Path) -> dict[str, int]:
    out = {}
    for i, line in enumerate(dataset.read_text().splitlines()):
        project = re.search(r"the (\w+) project\?", json.loads(line)["question"]).group(1)
        out[project] = 1 + i % 3
    return out


def pipeline_file(tmp_path: Path, data: dict = PIPELINE, name: str = "pipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def dev_quality(best: Path, backend, dataset: Path) -> float:
    cfg, _ = load_config(best)
    pipe = Pipeline.from_config(cfg, backend=backend)
    ds = load_dataset(str(dataset), backend.tokenizer, [], 100, 0, split="dev")
    scores = [metrics.score(s.task, pipe.run(s.question, s.documents).text, s.answers)["contains"]
              for s in ds.samples]
    return sum(scores) / len(scores)


@pytest.mark.slow  # ~10 s: a full search / two processes
def test_tune_finds_the_planted_configuration_and_best_yaml_reproduces(tmp_path, capsys):
    data = write_dataset(tmp_path / "data.jsonl", n=12)
    reader = planted_reader(needs_for(data))
    backend = ScriptedBackend(reader, context_window=4096)
    out = tmp_path / "tune"
    result = tune(pipeline_file(tmp_path), str(data), out, trials=30, params=PARAMS,
                  target="rag", backend=backend, progress=False)
    best = result.best
    assert best.quality == 1.0
    assert best.params["rag.reader_template"] == "ruler"
    assert best.params["rag.max_tokens"] == "32"
    assert best.params["rag.reorder"] in ("score_last", "edges_last")
    # Nothing else reached 1.0 without all three conditions.
    for t in result.trials:
        if t.quality == 1.0:
            assert t.params["rag.reader_template"] == "ruler"
    # best.yaml is a pipeline file `orchestra validate` accepts, headed by what it was tuned on.
    text = (out / "best.yaml").read_text()
    assert re.search(r"^# orchestra tune of .* on .*data\.jsonl:dev", text, re.M)
    m = re.search(r"dev quality (\d\.\d+)", text)
    assert m and float(m.group(1)) == 1.0
    assert main(["validate", str(out / "best.yaml")]) == 0
    assert "ok" in capsys.readouterr().out
    # ... and rebuilt on the same backend it scores what the comment says on the dev split.
    assert dev_quality(out / "best.yaml", backend, data) == pytest.approx(float(m.group(1)))
    # profile.yaml holds the same values by strategy type: a pipeline naming it scores the same.
    with_profile = dict(PIPELINE, profile=str(out / "profile.yaml"))
    prof_pipe = pipeline_file(tmp_path, with_profile, "with_profile.yaml")
    assert dev_quality(prof_pipe, backend, data) == 1.0
    assert dev_quality(pipeline_file(tmp_path, PIPELINE, "plain.yaml"), backend, data) < 1.0
    report = (out / "report.md").read_text()
    assert "Pareto front" in report
    assert report.count("\n| ") >= 30 + 2  # every trial plus the front
    assert (out / "trials.png").stat().st_size > 1000


def test_a_killed_tune_resumes_without_repeating_finished_work(tmp_path):
    data = write_dataset(tmp_path / "data.jsonl", n=6)
    reader = planted_reader(needs_for(data))
    calls = {"n": 0}

    def dies_on_the_14th_call(req):
        calls["n"] += 1
        if calls["n"] == 14:
            raise KeyboardInterrupt
        return reader(req)

    out = tmp_path / "tune"
    pipe = pipeline_file(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        tune(pipe, str(data), out, trials=8, params=PARAMS, target="rag",
             backend=ScriptedBackend(dies_on_the_14th_call, context_window=4096),
             progress=False)
    cached = [json.loads(x)["key"] for x in (out / "answers.jsonl").read_text().splitlines()]
    assert len(cached) == 13  # every answer given before the kill was kept

    import optuna

    study = optuna.load_study(study_name="orchestra-tune",
                              storage=f"sqlite:///{out / 'study.db'}")
    before = {t.number: (t.params, t.value) for t in study.get_trials()
              if t.state.name == "COMPLETE"}
    assert len(before) >= 1
    again = ScriptedBackend(reader, context_window=4096)
    result = tune(pipe, str(data), out, trials=8, params=PARAMS, target="rag", backend=again,
                  progress=False)
    keys = [json.loads(x)["key"] for x in (out / "answers.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys))  # no (configuration, sample) answered twice
    assert len(again.requests) == result.answered == len(keys) - 13
    complete = {t.number: (t.params, t.quality) for t in result.trials if t.state == "COMPLETE"}
    assert len(complete) == 8
    for number, (params, value) in before.items():  # finished trials kept, not rerun
        assert complete[number] == (params, value)
    with pytest.raises(InputError, match="holds a tune of another setting"):
        tune(pipe, str(data), out, trials=8, params=["reorder"], target="rag", backend=again,
             progress=False)
    failed = [t for t in result.trials if t.state == "FAIL"]
    assert len(failed) == 1 and "interrupted" in failed[0].error
    # The interrupted configuration was asked again (first) and finished from the cache.
    assert any(p == failed[0].params for p, _ in complete.values())


class Constant(Strategy):
    """A strategy with no options at all (nothing to tune)."""

    name = "constant"

    def __init__(self, backend):
        super().__init__(backend)

    def _answer(self, question, corpus):  # pragma: no cover - never run
        raise AssertionError


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    lines = [x for x in cap.err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("orchestra: error: "), cap.err
    return lines[0]


def test_tune_refuses_bad_input_with_one_message(tmp_path, capsys):
    data = write_dataset(tmp_path / "data.jsonl")
    pipe = pipeline_file(tmp_path)
    out = str(tmp_path / "out")
    base = ["tune", str(pipe), "--dataset", str(data), "--out", out]
    msg = _cli_error(capsys, ["tune", str(pipe), "--dataset", "squad", "--trials", "3",
                              "--out", out])
    assert "unknown dataset 'squad'" in msg
    assert "--trials must be at least 1, got 0" in _cli_error(capsys, base + ["--trials", "0"])
    assert "budget" in _cli_error(capsys, base)
    assert "dev split only" in _cli_error(capsys, ["tune", str(pipe), "--dataset",
                                                   "ruler_qa:test", "--trials", "3",
                                                   "--out", out])
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    msg = _cli_error(capsys, ["tune", str(pipe), "--dataset", str(data), "--trials", "3",
                              "--out", str(blocker / "out")])
    assert str(blocker / "out") in msg and "cannot write" in msg
    lone = pipeline_file(tmp_path, {"strategies": {"c": {"type": "test_tune:Constant"}}},
                         "lone.yaml")
    msg = _cli_error(capsys, ["tune", str(lone), "--dataset", str(data), "--trials", "3",
                              "--out", out, "--allow-module", "test_tune"])
    assert "no tunable strategy" in msg and "c (test_tune:Constant)" in msg
    msg = _cli_error(capsys, base + ["--trials", "3", "--params", "reorder,bogus"])
    assert "unknown setting(s) bogus" in msg
    msg = _cli_error(capsys, base + ["--trials", "3", "--target", "nope"])
    assert "no strategy 'nope'" in msg
    assert "--dev-fraction" in _cli_error(capsys, base + ["--trials", "3", "--dev-fraction", "1"])
    assert "--minutes must be positive" in _cli_error(capsys, base + ["--minutes", "-1"])
    assert not Path(out).exists() or not any(Path(out).iterdir())


def test_the_space_skips_what_a_strategy_does_not_accept():
    from orchestra.tune.space import plan

    data = {"strategies": {"rag": {"type": "rag"}, "full": {"type": "full_context"},
                           "agents": {"type": "chain_of_agents"}},
            "router": {"type": "self_route", "first": "rag", "fallback": ["full"]}}
    p = plan(data)
    by = {c.name: [e.name for e in c.entries] for c in p.components}
    assert {"reorder", "retriever", "chunk_tokens", "reader_template"} <= set(by["rag"])
    assert "reorder" not in by["full"] and "reader_template" in by["full"]
    assert {"note_tokens", "worker_prompt", "agent_chunk_tokens"} <= set(by["agents"])
    assert "note_tokens" not in by["rag"]
    # Self-Route's decline template is searched for the strategy it asks first only.
    assert "decline_template" in by["rag"] and "decline_template" not in by["full"]
    # Retrieval settings of strategies that do not retrieve are not reported as skipped.
    assert not any(n.startswith("full: reorder") for n in p.notes)
    # An option no constructor takes is skipped with a note naming it.
    assert any("decline_detector skipped" in n for n in p.notes) or "router" in by


def test_every_drawn_configuration_is_a_valid_pipeline():
    """Random draws over the whole space of a many-strategy pipeline all validate (the space
    only writes options the constructors take, with values they accept)."""
    import optuna

    from orchestra.config import check, parse
    from orchestra.tune.space import apply, plan, suggest
    from orchestra.yaml_lines import Located

    data = {"retrievers": {"dense": {"type": "dense"}},
            "strategies": {"rag": {"type": "rag", "retriever": "dense"},
                           "full": {"type": "full_context"},
                           "agents": {"type": "chain_of_agents"},
                           "mapreduce": {"type": "map_reduce"}},
            "router": {"type": "self_route", "first": "rag", "fallback": ["full", "agents"]}}
    p = plan(data)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        labels = suggest(trial, p)
        out = apply(data, p, labels)
        located = Located(out, {}, "<draw>")
        check(parse(located), located)
        seen.add(labels["rag.retriever"])
        study.tell(trial, 0.0)
    assert seen == {"dense", "bm25", "hybrid"}


def test_trials_index_each_sample_once_per_chunking(tmp_path, monkeypatch):
    """Trials that share a chunking reuse each sample's index (built once, then loaded)."""
    from orchestra.retrievers.bm25 import BM25Retriever

    built = []
    original = BM25Retriever._build

    def counting(self, chunks, corpus):
        built.append((corpus.hash, self.chunk_tokens, self.overlap, self.chunking))
        return original(self, chunks, corpus)

    monkeypatch.setattr(BM25Retriever, "_build", counting)
    data = write_dataset(tmp_path / "data.jsonl", n=4)
    backend = ScriptedBackend(planted_reader(needs_for(data)), context_window=4096)
    result = tune(pipeline_file(tmp_path), str(data), tmp_path / "tune", trials=12,
                  params=["reorder", "max_tokens"], target="rag", backend=backend,
                  progress=False)
    assert sum(t.state == "COMPLETE" for t in result.trials) == 12
    samples = {json.loads(x)["sample_id"] for x in
               (tmp_path / "tune" / "answers.jsonl").read_text().splitlines()}
    assert len(built) == len(set(built)) == len(samples)  # one build per sample, not per trial


@pytest.mark.slow
def test_tune_on_the_embedded_model(embedded, tmp_path, capsys):
    """Two trials on ruler_qa's dev split with the real reader and a real BM25 index."""
    from conftest import data_path

    data_path("ruler", "squad.json")
    out = tmp_path / "tune"
    result = tune(pipeline_file(tmp_path), "ruler_qa", out, lengths=[600], limit=2, trials=2,
                  params=["reorder", "max_tokens"], target="rag", backend=embedded,
                  progress=False)
    done = [t for t in result.trials if t.state == "COMPLETE"]
    assert len(done) == 2 and all(t.prompt_tokens > 50 and t.seconds > 0 for t in done)
    rows = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    assert rows and all(r["sample_id"].startswith("ruler_qa:600:") for r in rows)
    dev = {s.sample_id for s in load_dataset("ruler_qa:dev", embedded.tokenizer, [600], 2).samples}
    assert {r["sample_id"] for r in rows} == dev  # dev questions only
    assert main(["validate", str(out / "best.yaml")]) == 0
    assert "ruler_qa:dev" in (out / "best.yaml").read_text().splitlines()[0]


def test_a_time_budget_stops_starting_trials(tmp_path):
    data = write_dataset(tmp_path / "data.jsonl", n=3)
    backend = ScriptedBackend(planted_reader(needs_for(data)), context_window=4096)
    result = tune(pipeline_file(tmp_path), str(data), tmp_path / "tune", minutes=1e-6,
                  params=PARAMS, target="rag", backend=backend, progress=False)
    assert [t.state for t in result.trials] == ["COMPLETE"]  # one trial, then the time is up


def test_a_configuration_that_fails_is_pruned_with_its_reason(tmp_path, capsys):
    data = write_dataset(tmp_path / "data.jsonl", n=3)
    reader = planted_reader(needs_for(data))

    def fails_at_16(req):
        if req.max_tokens == 16:
            raise ValueError("cannot read with 16 tokens")
        return reader(req)

    out = tmp_path / "tune"
    result = tune(pipeline_file(tmp_path), str(data), out, trials=10, params=["max_tokens"],
                  target="rag", backend=ScriptedBackend(fails_at_16, context_window=4096),
                  progress=False)
    pruned = [t for t in result.trials if t.state == "PRUNED"]
    assert pruned and all(t.params["rag.max_tokens"] == "16" for t in pruned)
    assert all(t.error == "ValueError: cannot read with 16 tokens" for t in pruned)
    assert result.best.params["rag.max_tokens"] != "16"
    assert "cannot read with 16 tokens" in (out / "report.md").read_text()
    assert "trial" in capsys.readouterr().err


class SlowPlantedBackend(ScriptedBackend):
    """The planted reader behind a pipeline file (for a tune run as a separate process), a
    little slow so the process can be killed mid-study."""

    def __init__(self, **kw):
        import time

        def reply(req):
            time.sleep(0.02)
            project = re.search(r"code word for the (\w+) project\?",
                                req.messages[-1].content).group(1)
            return planted_reader({project: 1 + len(project) % 3})(req)

        super().__init__(reply, context_window=4096)


@pytest.mark.slow  # ~10 s: a full search / two processes
def test_a_tune_killed_with_sigkill_resumes(tmp_path):
    """The real thing: `orchestra tune` in its own process, killed (SIGKILL) mid-study, then
    run again: it finishes the budget and no (configuration, sample) is answered twice."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = write_dataset(tmp_path / "data.jsonl", n=6)
    pipe = pipeline_file(tmp_path, {**PIPELINE,
                                    "backend": {"type": "test_tune:SlowPlantedBackend"}})
    out = tmp_path / "tune"
    cmd = [sys.executable, "-m", "orchestra.cli.main", "tune", str(pipe), "--dataset",
           str(data), "--trials", "12", "--params", ",".join(PARAMS), "--target", "rag",
           "--out", str(out), "--allow-module", "test_tune", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent),
           "ORCHESTRA_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    answers = out / "answers.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if answers.exists() and len(answers.read_text().splitlines()) >= 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = [json.loads(x)["key"] for x in answers.read_text().splitlines() if x.endswith("}")]
    assert 20 <= len(first) < 12 * 6
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    keys = [json.loads(x)["key"] for x in answers.read_text().splitlines()]
    assert len(keys) == len(set(keys)) and set(first) <= set(keys)
    report = (out / "report.md").read_text()
    assert report.count("| complete |") == 12
    assert main(["validate", str(out / "best.yaml"), "--allow-module", "test_tune"]) == 0
