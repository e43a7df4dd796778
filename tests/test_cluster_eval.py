"""``orchestra eval --ray`` on a real local Ray cluster (one per module: starting one costs
seconds), with the real embedded model in every actor: the rows equal a local run's, a killed
driver resumes, a killed actor loses nothing. The refusals (no Ray, a bad address) need no
cluster and no model."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from orchestra.cli.main import main

# Local clusters here advertise 127.0.0.1 (read when Ray is first imported; see
# orchestra.cluster.connect.require_ray).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

PIPELINE = """\
backend: {type: transformers, model: embedded, device: cpu}
retrievers:
  bm25: {type: bm25, chunk_tokens: 64, overlap: 8}
strategies:
  full: {type: full_context, max_tokens: 8}
  rag: {type: rag, retriever: bm25, top_k: 2, max_tokens: 8}
router: {type: fixed, strategy: rag}
"""

FACTS = [("Mira", "Lisbon"), ("Tomas", "Oslo"), ("Anka", "Quito"), ("Beno", "Hanoi"),
         ("Cleo", "Dakar"), ("Dario", "Perth")]


def _write_inputs(folder, n):
    pipe = folder / "pipe.yaml"
    pipe.write_text(PIPELINE)
    data = folder / "toy.jsonl"
    with open(data, "w") as f:
        for name, city in FACTS[:n]:
            text = (f"{name} keeps a small garden. Every spring {name} travels to {city} to see "
                    f"old friends. The weather there is mild. {name} returns in May.")
            f.write(json.dumps({"context": text, "question": f"Which city does {name} visit?",
                                "answers": [city]}) + "\n")
    return pipe, data


def _eval_args(pipe, data, out, *extra):
    return ["eval", "--pipeline", str(pipe), "--dataset", str(data), "--lengths", "1000",
            "--strategies", "all", "--out", str(out), "--no-progress", *extra]


def _rows(out):
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x]


def _comparable(row):
    """A row without its timings (``*_seconds`` differ between any two runs), its floats to 6
    significant digits: a log-probability summed in another order differs in the last bits."""
    if isinstance(row, dict):
        return {k: _comparable(v) for k, v in row.items() if not k.endswith("seconds")}
    if isinstance(row, list):
        return [_comparable(v) for v in row]
    if isinstance(row, float):
        return float(f"{row:.6g}")
    return row


def _differences(a, b, path=""):
    """Where two rows differ, as 'path: a != b' lines (pytest's dict diff pairs unlike keys)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r:.120} != {b!r:.120}"]


def _startup_seconds():
    """How long the CLI takes to start and exit here (a loaded machine takes tens of seconds):
    what a refusal's own time is measured beyond."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "orchestra.cli.main", "--version"],
                   capture_output=True, timeout=120)
    return time.monotonic() - t0


# -- refusals: no cluster, no model ---------------------------------------------------------
def test_without_ray_the_flag_names_the_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    pipe, data = _write_inputs(tmp_path, 1)
    assert main(_eval_args(pipe, data, tmp_path / "out", "--ray")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "orchestra-longdoc[ray]"' in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address, says", [
    ("127.0.0.1:1", "no Ray cluster answers there"),  # nothing listens on port 1
    ("10.255.255.1:6379", "no Ray cluster answers there"),  # unroutable: a connect timeout
    ("not-an-address", "not a cluster address"),
])
def test_a_bad_address_is_one_line_and_exit_2_quickly(tmp_path, address, says):
    pytest.importorskip("ray")
    pipe, data = _write_inputs(tmp_path, 1)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "orchestra.cli.main",
                           *_eval_args(pipe, data, tmp_path / "out", "--ray", address)],
                          capture_output=True, text=True, timeout=180)
    took = time.monotonic() - t0 - _startup_seconds()
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and address in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert took < 15, f"took {took:.1f} s past start-up"  # ray.init alone waits a minute
    assert not (tmp_path / "out").exists()  # refused before the output folder is touched


def test_bad_actor_counts_are_refused(tmp_path, capsys):
    pytest.importorskip("ray")
    pipe, data = _write_inputs(tmp_path, 1)
    assert main(_eval_args(pipe, data, tmp_path / "out", "--ray", "--ray-actors", "0")) == 2
    assert "--ray-actors must be at least 1" in capsys.readouterr().err


# -- on a real local cluster ------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from orchestra.cluster.connect import start_local

    import torch

    # The actors read with one torch thread; so does the local run here, so that both sum in
    # the same order (an earlier test module may have started torch with two).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start_local(num_cpus=2)
    yield ray
    ray.shutdown()
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_local_and_ray_runs_write_identical_rows(tmp_path, ray_cluster):
    pipe, data = _write_inputs(tmp_path, 3)
    # --second-read too: the actors read twice as the local run does (it was dropped on Ray).
    assert main(_eval_args(pipe, data, tmp_path / "local", "--second-read")) == 0
    assert main(_eval_args(pipe, data, tmp_path / "ray", "--second-read", "--ray",
                           "--ray-actors", "2")) == 0
    local, on_ray = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert len(local) == 3 * 3  # full, rag, router per question
    assert all("second_read_agreement" in r["signals"] for r in on_ray if r["strategy"] == "rag")
    local, on_ray = ({r["key"]: _comparable(r) for r in rows} for rows in (local, on_ray))
    assert set(local) == set(on_ray)
    differences = [d for k in local for d in _differences(local[k], on_ray[k], k)]
    assert not differences, "\n".join(differences[:20])
    on_ray = list(on_ray.values())
    assert any(r["quality"] > 0 for r in on_ray)  # the model really answered


@pytest.mark.slow
def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(tmp_path, ray_cluster):
    from orchestra.cluster.eval import RayRunner
    from orchestra.eval.datasets import load_dataset
    from orchestra.pipeline import Pipeline

    pipe_file, data = _write_inputs(tmp_path, 4)
    pipe = Pipeline.from_yaml(pipe_file)
    dataset = load_dataset(str(data), pipe.backend.tokenizer, [1000], 10, 0)
    runner = RayRunner(pipe, tmp_path / "out", ["full", "rag"], pipeline_file=str(pipe_file),
                       actors=2, progress=False)
    result = {}
    thread = threading.Thread(target=lambda: result.update(rows=runner.run(dataset)))
    thread.start()
    deadline = time.monotonic() + 240
    while not (tmp_path / "out" / "results.jsonl").exists() or \
            not (tmp_path / "out" / "results.jsonl").read_text().strip():
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.2)
    victim = runner.actors[0]
    ray_cluster.kill(victim)  # no_restart: Ray will not bring it back; the runner must
    thread.join(timeout=240)
    assert not thread.is_alive()
    rows = _rows(tmp_path / "out")
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == 4 * 2
    assert {(r["sample_id"], r["strategy"]) for r in rows} == \
        {(s.sample_id, n) for s in dataset.samples for n in ("full", "rag")}
    assert len(result["rows"]) == 8
    assert runner.replaced >= 1  # the dead actor was replaced, its pair asked again


@pytest.mark.slow
def test_a_killed_driver_resumes_locally_with_no_row_lost(tmp_path, ray_cluster):
    pipe, data = _write_inputs(tmp_path, 6)
    out = tmp_path / "out"
    address = ray_cluster.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-m", "orchestra.cli.main",
                             *_eval_args(pipe, data, out, "--ray", address, "--ray-actors", "2")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while len(_rows(out)) < 2 if (out / "results.jsonl").exists() else True:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = _rows(out)
    assert 2 <= len(before) < 6 * 3
    # The killed driver's actors die with its job; the rerun answers only what is missing.
    assert main(_eval_args(pipe, data, out)) == 0
    after = _rows(out)
    keys = [r["key"] for r in after]
    assert len(keys) == len(set(keys)) == 6 * 3
    assert after[:len(before)] == before  # finished rows kept as they were


@pytest.mark.parametrize("command", ["tune", "index"])
def test_tune_and_index_refuse_a_dead_address_in_one_line(tmp_path, capsys, command):
    pytest.importorskip("ray")
    pipe, data = _write_inputs(tmp_path, 1)
    args = (["tune", str(pipe), "--dataset", str(data), "--lengths", "1000", "--trials", "1",
             "--out", str(tmp_path / "out")] if command == "tune" else ["index", str(tmp_path)])
    t0 = time.monotonic()
    assert main([*args, "--ray", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Ray cluster answers there" in err[0]
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_tune_on_ray_answers_what_a_local_tune_answers(tmp_path, ray_cluster):
    from orchestra.tune import tune

    pipe, data = _write_inputs(tmp_path, 3)
    kw = dict(lengths=[1000], trials=2, limit=3, target="rag", params=["top_k"], seed=0,
              dev_fraction=0.99, progress=False)
    local = tune(str(pipe), str(data), tmp_path / "local", **kw)
    on_ray = tune(str(pipe), str(data), tmp_path / "ray", ray={"address": None, "actors": 2},
                  **kw)

    def answers(folder):
        rows = [json.loads(x) for x in (folder / "answers.jsonl").read_text().splitlines()]
        return {r["key"]: (r["answer"], r["quality"], r["prompt_tokens"]) for r in rows}

    assert answers(tmp_path / "ray") == answers(tmp_path / "local")
    assert [t.params for t in on_ray.trials] == [t.params for t in local.trials]
    assert on_ray.best.quality == local.best.quality
    # Resuming on Ray: the finished trials are kept and only the new one is answered.
    again = tune(str(pipe), str(data), tmp_path / "ray", ray={"address": None, "actors": 2},
                 **{**kw, "trials": 3})
    assert len([t for t in again.trials if t.state == "COMPLETE"]) >= 3


@pytest.mark.slow
def test_index_on_ray_data_fills_the_cache_run_reads(tmp_path, ray_cluster, capsys):
    from orchestra.cache import cache_dir

    pipe, _ = _write_inputs(tmp_path, 1)
    folders = []
    for i, (name, city) in enumerate(FACTS[:3]):
        d = tmp_path / f"docs{i}"
        d.mkdir()
        # This run's own texts (the cache is shared): nothing of them is indexed yet.
        (d / "a.txt").write_text(f"{tmp_path.name}: {name} travels to {city} in spring. " * 20)
        folders.append(str(d))
    assert main(["index", *folders, "--pipeline", str(pipe), "--ray", "--ray-actors", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all("bm25 built" in line for line in out), out
    hashes = [line.split("corpus ", 1)[1].split(",")[0] for line in out]
    for h in hashes:  # one BM25 index per corpus, written into the shared cache
        assert len(list(cache_dir("indexes", "bm25").glob(f"{h}*.npz"))) == 1
    # Indexed again, locally: every index is loaded from that cache, nothing built.
    assert main(["index", *folders, "--pipeline", str(pipe)]) == 0
    assert all("bm25 loaded" in line for line in capsys.readouterr().out.splitlines())


@pytest.mark.slow
def test_worker_calls_through_ray_data_llm_http_against_model_only_serve(ray_cluster):
    """The GPU batch path's HTTP variant: ray.data.llm's OpenAI-compatible HTTP processor
    sends the prompts to a real `orchestra serve --model-only` (uvicorn, the embedded model);
    each reply comes back in its prompt's place (it names that prompt's city)."""
    from orchestra.backends import default_backend
    from orchestra.cluster.batch import chat_batch
    from orchestra.server import serve_in_thread

    server = serve_in_thread(default_backend(), model_name="embedded")
    try:
        prompts = [f"{name} travels to {city}. Where does {name} travel? One word."
                   for name, city in FACTS[:4]]
        replies = chat_batch(prompts, server.url, "embedded", max_tokens=8, concurrency=2)
    finally:
        server.shutdown()
        server.server_close()
    assert len(replies) == 4 and all(isinstance(r, str) and r for r in replies)
    placed = sum(city in reply for (_, city), reply in zip(FACTS, replies))
    assert placed >= 3, replies
