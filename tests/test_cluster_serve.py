"""``orchestra serve --replicas N`` on Ray Serve, on a real local Ray cluster (one per module),
each replica holding the real embedded model: two replicas answer 16 concurrent clients with no
error, a corpus registered through the endpoint is usable on every replica, and requests that
name it in Serve's multiplexing header stay on the replica holding it. The refusals need no
cluster."""

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from orchestra.cli.main import main

# Local clusters here advertise 127.0.0.1 (read when Ray is first imported; see
# orchestra.cluster.connect.require_ray).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

DOC = Path(__file__).resolve().parent.parent / "examples" / "data" / "gettysburg_address.txt"
KEY = "replica-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PIPELINE = """\
backend: {type: transformers, model: embedded, device: cpu}
retrievers:
  bm25: {type: bm25}
strategies:
  full: {type: full_context, truncation: middle-out, max_tokens: 8}
  rag: {type: rag, retriever: bm25, top_k: 2, max_tokens: 8}
router: {type: fixed, strategy: rag}
"""
QUESTIONS = ["Where was the great battle fought?", "Who brought forth a new nation?",
             "What shall not perish from the earth?", "How long ago did the fathers act?"]


def test_replicas_must_be_positive(capsys):
    pytest.importorskip("ray")
    assert main(["serve", "--replicas", "0"]) == 2
    assert "--replicas must be at least 1" in capsys.readouterr().err


def test_replicas_with_an_unreachable_cluster_is_one_line_and_exit_2():
    pytest.importorskip("ray")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "orchestra.cli.main", "serve", "--replicas",
                           "2", "--ray", "127.0.0.1:1", "--port", "0"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Ray cluster answers there" in lines[0], proc.stderr
    from test_cluster_eval import _startup_seconds

    assert time.monotonic() - t0 - _startup_seconds() < 15  # ray.init alone waits a minute


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from orchestra.cluster import serve as ray_serve
    from orchestra.cluster.connect import start_local
    from orchestra.server.app import ServeSettings

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    pipe = tmp_path_factory.mktemp("serve") / "pipe.yaml"
    pipe.write_text(PIPELINE)
    start_local(num_cpus=2)
    try:
        url = ray_serve.start(str(pipe), name="pipe", settings=ServeSettings(api_key=KEY),
                              replicas=2, host="127.0.0.1", port=0)
        yield url
    finally:
        ray_serve.stop()
        ray.shutdown()


def _answer(url, i, **extra):
    body = {"question": QUESTIONS[i % len(QUESTIONS)], "strategy": "full", "max_tokens": 8,
            **extra}
    if "corpus_id" not in extra:
        body["documents"] = [{"name": DOC.name, "text": DOC.read_text()}]
    return httpx.post(url + "/v1/answer", json=body, headers={**AUTH, **extra.pop("h", {})},
                      timeout=300)


@pytest.mark.slow
def test_two_replicas_answer_16_concurrent_clients_with_no_error(served):
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda i: _answer(served, i), range(16)))
    assert [r.status_code for r in replies] == [200] * 16, [r.text for r in replies
                                                           if r.status_code != 200]
    assert all(r.json()["text"] for r in replies)
    assert len({r.headers["x-orchestra-replica"] for r in replies}) == 2  # both answered
    # The same API and auth as `orchestra serve`: no key, no answer.
    assert httpx.post(served + "/v1/answer", json={}, timeout=30).status_code == 401
    assert httpx.get(served + "/metrics", timeout=30).status_code == 200


@pytest.mark.slow
def test_a_registered_corpus_is_used_on_every_replica_and_keeps_to_its_replica(served):
    r = httpx.post(served + "/v1/corpora", headers=AUTH, timeout=300, json={
        "documents": [{"name": "speech.txt", "text": DOC.read_text()}]})
    assert r.status_code == 201, r.text
    cid, home = r.json()["id"], r.headers["x-orchestra-replica"]
    time.sleep(2)  # Serve learns which replica holds the corpus from the replicas' reports
    # Naming it in Serve's multiplexing header: every request goes where its index is.
    pinned = [httpx.post(served + "/v1/answer", timeout=300,
                         headers={**AUTH, "serve_multiplexed_model_id": cid},
                         json={"corpus_id": cid, "question": q, "strategy": "rag",
                               "max_tokens": 8}) for q in QUESTIONS]
    assert [p.status_code for p in pinned] == [200] * 4, [p.text for p in pinned]
    assert {p.headers["x-orchestra-replica"] for p in pinned} == {home}
    # Without it, requests spread over both replicas, and the other one reads the corpus from
    # the shared book: no 404 anywhere. Serve picks the less loaded of the two at random on a
    # tie, so one wave of 8 can land on one replica (it did once in CI): up to 4 waves.
    waves = []
    while len(waves) < 4 and len({s.headers.get("x-orchestra-replica")
                                  for wave in waves for s in wave}) < 2:
        with ThreadPoolExecutor(8) as pool:
            waves.append(list(pool.map(lambda i: httpx.post(
                served + "/v1/answer", headers=AUTH, timeout=300,
                json={"corpus_id": cid, "question": QUESTIONS[i % 4], "strategy": "rag",
                      "max_tokens": 8}), range(8))))
    spread = [s for wave in waves for s in wave]
    assert [s.status_code for s in spread] == [200] * len(spread), [s.text for s in spread]
    assert all(s.json()["corpus_id"] == cid for s in spread)
    assert len({s.headers["x-orchestra-replica"] for s in spread}) == 2, \
        [[s.headers["x-orchestra-replica"] for s in wave] for wave in waves]
