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


def dev_quality(best: Path, backend, dataset: Path, limit: int = 100,
                dev_fraction: float = 0.5) -> float:
    cfg, _ = load_config(best)
    pipe = Pipeline.from_config(cfg, backend=backend)
    ds = load_dataset(str(dataset), backend.tokenizer, [], limit, 0, split="dev",
                      dev_fraction=dev_fraction)
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
    m = re.search(r"dev leader \(not chosen\): trial \d+, dev quality (\d\.\d+)", text)
    assert m and float(m.group(1)) == 1.0
    # 6 dev questions: the leader is marked, not chosen, and no profile is offered as a default.
    assert "# NOT CHOSEN" in text and "not chosen: N = 6 < 100" in text
    assert not (out / "profile.yaml").exists()
    assert main(["validate", str(out / "best.yaml")]) == 0
    assert "ok" in capsys.readouterr().out
    # ... and rebuilt on the same backend it scores what the comment says on the dev split.
    assert dev_quality(out / "best.yaml", backend, data) == pytest.approx(float(m.group(1)))
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
    msg = _cli_error(capsys, base + ["--trials", "3", "--pruner", "sometimes"])
    assert "--pruner must be one of losing, median, none, got 'sometimes'" in msg
    msg = _cli_error(capsys, base + ["--trials", "3", "--prune-first", "0"])
    assert "--prune-first must be a whole number of questions, at least 1, got 0" in msg
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


# -- issue 19, item 3: choices that generalise ----------------------------------------------
NEEDS = {p: 1 + len(p) % 3 for p in PROJECTS}  # 8 of the 10 projects need one condition met


def write_many(path: Path, n: int) -> Path:
    """``n`` questions, each over its own documents (so the dev split keeps them all apart)."""
    rows = []
    for i in range(n):
        docs = [f"Record {i}.{j}. The code word for the {p} project is {WORDS[(j + i) % 10]}{i}."
                for j, p in enumerate(PROJECTS)]
        k = (3 * i + 1) % len(PROJECTS)
        rows.append({"id": f"m{i}", "documents": docs,
                     "question": f"What is the code word for the {PROJECTS[k]} project?",
                     "answers": [f"{WORDS[(k + i) % 10]}{i}"]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class PlantedBackend(ScriptedBackend):
    """The planted reader behind a pipeline file (for the CLI): right on a question when enough
    of the planted conditions hold; the pipeline as given meets none, max_tokens 32 meets one."""

    def __init__(self, **kw):
        super().__init__(planted_reader(NEEDS), context_window=4096)


def test_the_paired_decision_counts_wins_and_losses_with_an_exact_sign_test():
    from orchestra.tune.paired import Paired, choose, compare, dev_shortfall
    from orchestra.tune.study import TrialResult

    base = {f"q{i}": 0.0 for i in range(60)} | {f"q{i}": 1.0 for i in range(60, 120)}
    # 10 questions won, 1 lost, the rest tied: two-sided p = 2 * 12 / 2048
    better = dict(base) | {f"q{i}": 1.0 for i in range(10)} | {"q60": 0.0}
    paired = compare(base, better)
    assert (paired.wins, paired.losses, paired.n) == (10, 1, 120)
    assert paired.p == pytest.approx(24 / 2048) and paired.beats
    # 18 against 8 is a higher mean (+10 questions, against +9) but no evidence: p = 0.0755
    close = dict(base) | {f"q{i}": 1.0 for i in range(18)} | {f"q{i}": 0.0
                                                               for i in range(60, 68)}
    assert (compare(base, close).wins, compare(base, close).losses) == (18, 8)
    assert compare(base, close).p == pytest.approx(0.0755, abs=1e-4)
    assert not compare(base, close).beats
    assert not Paired(1, 10, 120).beats  # significant, but the other way

    def trial(number, scores):
        pr = compare(base, scores)
        return TrialResult(number, "COMPLETE", {"rag.max_tokens": "32"},
                           sum(scores.values()) / len(scores), 100.0, 0.1, len(scores), None, pr)

    # Only a trial that beats the baseline may be chosen, not the higher mean.
    trials = [trial(0, close), trial(1, better)]
    assert trials[0].quality > trials[1].quality
    chosen, why = choose(trials, 120)
    assert chosen.number == 1 and "10 wins, 1 losses" in why
    chosen, why = choose([trial(0, close)], 120)
    assert chosen is None and why.startswith("not chosen: no trial beats")
    stopped = [TrialResult(n, "PRUNED", {}, None, 100.0, 0.1, 30, None, Paired(0, 30, 30))
               for n in (2, 3)]
    assert choose(stopped, 120) == (None, "not chosen: all 2 trials were pruned (none could "
                                          "still beat the pipeline as given, which stays)")
    # Fewer than 100 questions: refused, however clear the win.
    chosen, why = choose(trials, 99)
    assert chosen is None and why.startswith("not chosen: N = 99 < 100")
    assert "200 or more" in dev_shortfall(120, [2000, 16000])
    assert "1 length" in dev_shortfall(240, [4000] * 240)
    assert dev_shortfall(240, [2000] * 120 + [16000] * 120) is None


def test_a_planted_better_configuration_is_chosen_on_enough_questions(tmp_path):
    data = write_many(tmp_path / "data.jsonl", 112)
    backend = PlantedBackend()
    out = tmp_path / "tune"
    result = tune(pipeline_file(tmp_path), str(data), out, trials=5, params=["max_tokens"],
                  target="rag", backend=backend, progress=False, limit=200, dev_fraction=0.99)
    n = result.n_questions
    assert n >= 100
    chosen = result.chosen
    assert chosen is not None and chosen.params == {"rag.max_tokens": "32"}
    # 32 adds a condition to whatever the pipeline as given meets: it never loses a question.
    assert result.baseline.quality < 0.2 and chosen.quality > 0.7
    assert chosen.paired.wins > 0.6 * n and chosen.paired.losses == 0
    assert chosen.paired.p < 1e-20 and result.best is chosen
    assert "chosen: trial" in result.decision
    # Every trial's row shows its wins, losses and p against the baseline.
    report = (out / "report.md").read_text()
    rows = [x for x in report.splitlines() if re.match(r"\| \d+ \| (complete|pruned) \|", x)]
    assert len(rows) == 5
    for t, row in zip(result.trials, rows):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[3:6] == [str(t.paired.wins), str(t.paired.losses), f"{t.paired.p:.3g}"]
    assert f"| baseline | reference | {result.baseline.quality:.3f} |" in report
    assert "below a dev split for defaults" in report  # one length, under 200 questions
    # The profile is written and its comment records the test beside the value it changes.
    profile = (out / "profile.yaml").read_text()
    assert re.search(rf"^#   rag\.max_tokens = 32: trial {chosen.number}, "
                     rf"{chosen.paired.wins} wins, 0 losses, p = ", profile, re.M)
    assert f"{chosen.paired.wins} wins, 0 losses" in yaml.safe_load(profile)["tuned"]
    assert "NOT CHOSEN" not in (out / "best.yaml").read_text()
    # ... and a pipeline naming it reads as the chosen trial scored.
    with_profile = pipeline_file(tmp_path, dict(PIPELINE, profile=str(out / "profile.yaml")),
                                 "with_profile.yaml")
    assert dev_quality(with_profile, backend, data, 200, 0.99) == pytest.approx(chosen.quality)


def test_no_default_is_chosen_on_fewer_than_100_questions(tmp_path, capsys):
    data = write_many(tmp_path / "data.jsonl", 60)
    pipe = pipeline_file(tmp_path, {**PIPELINE, "backend": {"type": "test_tune:PlantedBackend"}})
    out = tmp_path / "tune"
    (out).mkdir()
    (out / "profile.yaml").write_text("family: stale\n")  # an earlier run's: not left behind
    argv = ["tune", str(pipe), "--dataset", str(data), "--trials", "5", "--params",
            "max_tokens", "--target", "rag", "--limit", "200", "--dev-fraction", "0.99",
            "--out", str(out), "--allow-module", "test_tune", "--no-progress"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    m = re.search(r"not chosen: N = (\d+) < 100 dev questions", said)
    assert m and int(m.group(1)) < 100, said
    assert "no profile.yaml" in said and not (out / "profile.yaml").exists()
    # The leader beat the baseline clearly (p far below 0.05), yet is only marked, not chosen.
    m = re.search(r"dev leader: trial \d+: .* (\d+) wins, 0 losses, p = (\S+) against", said)
    assert m and int(m.group(1)) > 30 and float(m.group(2)) < 1e-6
    best = (out / "best.yaml").read_text()
    assert "# NOT CHOSEN" in best and "not chosen: N = " in best
    assert main(["validate", str(out / "best.yaml"), "--allow-module", "test_tune"]) == 0


def _losing_setup(tmp_path, n: int = 60):
    """A baseline right everywhere (max_tokens 32) and a reader wrong under any other value:
    a trial drawing 16 or 64 loses every question it reads."""
    data = write_many(tmp_path / "data.jsonl", n)

    def reply(req):
        if req.max_tokens != 32:
            return "I do not know."
        user = req.messages[-1].content
        project = re.search(r"code word for the (\w+) project\?", user).group(1)
        return re.search(rf"The code word for the {project} project is (\w+)", user).group(1)

    backend = ScriptedBackend(reply, context_window=4096)
    pipe = {**PIPELINE, "strategies": {"rag": {**PIPELINE["strategies"]["rag"],
                                               "max_tokens": 32}}}
    return data, backend, pipeline_file(tmp_path, pipe)


@pytest.mark.parametrize("pruner", ["losing", "none"])
def test_pruning_stops_a_losing_trial_early(tmp_path, pruner):
    from orchestra.tune.paired import cannot_win

    data, backend, pipe = _losing_setup(tmp_path)
    out = tmp_path / "tune"
    result = tune(pipe, str(data), out, trials=6, params=["max_tokens"], target="rag",
                  backend=backend, progress=False, limit=200, dev_fraction=0.99,
                  pruner=pruner, prune_first=10)
    n = result.n_questions
    losers = [t for t in result.trials if t.params["rag.max_tokens"] != "32"]
    assert losers  # seed 0 draws 16 or 64
    reads = {v: sum(r.max_tokens == int(v) for r in backend.requests) for v in ("16", "64")}
    for t in losers:
        value = t.params["rag.max_tokens"]
        if pruner == "none":
            assert t.state == "COMPLETE" and t.paired.losses == n and reads[value] == n
            continue
        # Stopped at the first question after which even winning all the rest could not beat
        # the baseline: its configuration was read on that prefix only.
        assert t.state == "PRUNED" and t.n < n and t.paired.losses == t.n
        assert reads[value] == t.n
        assert cannot_win(0, t.n, n - t.n) and not cannot_win(0, t.n - 1, n - t.n + 1)
        assert f"(pruned after {t.n} of {n} questions)" in (out / "report.md").read_text()
    if pruner == "losing":
        # 32 ties the baseline everywhere: it cannot beat it, so it too stops, five questions
        # from the end (5 wins of 5 would be p = 0.0625). Nothing completes; the baseline stays.
        ties = [t for t in result.trials if t.params["rag.max_tokens"] == "32"]
        assert ties and all(t.state == "PRUNED" and t.n == n - 5 for t in ties)
        assert result.best is None and result.decision.startswith("not chosen")
        assert not (out / "best.yaml").exists() and not (out / "profile.yaml").exists()
        return
    # Read to the end, 32 ties the baseline (0 wins, 0 losses): nothing beats it.
    assert all(t.paired.wins == 0 for t in result.trials) and result.chosen is None


def test_the_median_pruner_stops_a_trial_below_the_median_after_its_warm_up(tmp_path):
    """--pruner median: Optuna's MedianPruner on wins minus losses. After 5 finished trials
    (Optuna's default), a trial losing every question is below their median at --prune-first
    and stops there; before, nothing is pruned."""
    data, backend, pipe = _losing_setup(tmp_path)
    result = tune(pipe, str(data), tmp_path / "tune", trials=10, params=["max_tokens"],
                  target="rag", backend=backend, progress=False, limit=200, dev_fraction=0.99,
                  pruner="median", prune_first=10)
    states = [(t.state, t.params["rag.max_tokens"], t.n) for t in result.trials]
    first = next(i for i, t in enumerate(result.trials) if t.state == "PRUNED")
    assert sum(s == "COMPLETE" for s, _, _ in states[:first]) >= 5
    later = states[first:]
    assert all(n == 10 for s, v, n in later if v != "32") and any(v != "32" for _, v, _ in later)
    assert all(s == "COMPLETE" for s, v, _ in later if v == "32")  # the tie is never below it


def test_a_trial_killed_while_its_results_were_written_does_not_stop_the_resume(tmp_path):
    """A kill between two of a trial's stored results (Optuna writes each user attribute on
    its own) leaves a trial with some of them: resuming fails it and goes on."""
    import optuna

    data = write_dataset(tmp_path / "data.jsonl", n=6)
    reader = planted_reader(needs_for(data))
    out, pipe = tmp_path / "tune", pipeline_file(tmp_path)
    tune(pipe, str(data), out, trials=2, params=PARAMS, target="rag",
         backend=ScriptedBackend(reader, context_window=4096), progress=False)
    study = optuna.load_study(study_name="orchestra-tune",
                              storage=f"sqlite:///{out / 'study.db'}")
    half_written = study.ask()
    half_written.set_user_attr("wins", 1)  # killed here: no "losses", no "n"
    result = tune(pipe, str(data), out, trials=3, params=PARAMS, target="rag",
                  backend=ScriptedBackend(reader, context_window=4096), progress=False)
    failed = [t for t in result.trials if t.state == "FAIL"]
    assert len(failed) == 1 and failed[0].paired is None and "interrupted" in failed[0].error
    assert len([t for t in result.trials if t.state == "COMPLETE"]) == 3
