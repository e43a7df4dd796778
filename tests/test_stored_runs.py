"""benchmarks/stored_runs.py: a run's rows kept without the dataset's text, and the run folder
rebuilt from them, so that the same command resumes instead of answering again."""

from __future__ import annotations

import json

from conftest import data_path

from orchestra.backends.scripted import RegexTokenizer
from orchestra.eval.datasets import load_dataset

import stored_runs


def test_a_stored_run_keeps_no_dataset_text_and_restores_the_same_rows(tmp_path):
    data_path("ruler", "squad.json")
    tok = RegexTokenizer()
    ds = load_dataset("ruler_qa:test", tok, [2000], limit=3)
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"key": f"k{i}{n}", "sample_id": s.sample_id, "dataset": s.dataset, "strategy": n,
             "question": s.question, "gold": s.answers, "meta": s.meta, "answer": f"reply {i}",
             "quality": 1.0}
            for i, s in enumerate(ds.samples[:2]) for n in ("rag", "router")]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "run.json").write_text(json.dumps({"dataset": "ruler_qa:test", "seed": 0}))
    store = tmp_path / "store"
    out = stored_runs.save(run, "r", {"dataset": "ruler_qa:test", "lengths": "2000",
                                      "limit": 3, "seed": 0}, store)
    text = out.read_text()
    assert all(s.question not in text for s in ds.samples) and '"gold"' not in text
    again = tmp_path / "again"
    assert stored_runs.restore("r", again, tok, store) == 4
    back = [json.loads(x) for x in (again / "results.jsonl").read_text().splitlines()]
    assert [{**b, "meta": None} for b in back] == [{**r, "meta": None} for r in rows]
    assert json.loads((again / "run.json").read_text())["dataset"] == "ruler_qa:test"


def test_restore_refuses_rows_the_dataset_no_longer_has(tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    head = {"stored_run": {"settings": {"dataset": "ruler_qa:test", "lengths": "2000",
                                        "limit": 2, "seed": 0}, "run_info": {}, "rows": 1}}
    (store / "r.jsonl").write_text(json.dumps(head) + "\n" + json.dumps(
        {"key": "k", "sample_id": "ruler_qa:2000:gone", "strategy": "rag"}) + "\n")
    data_path("ruler", "squad.json")
    import pytest
    from orchestra.errors import InputError

    with pytest.raises(InputError, match="1 stored sample.*not in ruler_qa:test at 2000"):
        stored_runs.restore("r", tmp_path / "x", RegexTokenizer(), store)
