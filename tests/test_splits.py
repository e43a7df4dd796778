"""Dev/test splits: every built-in dataset splits by what its questions are built from, and
nothing crosses the split (tuning reads dev, tables report test)."""

from __future__ import annotations

import json

import pytest
from conftest import data_path

from orchestra.backends.scripted import RegexTokenizer
from orchestra.errors import InputError
from orchestra.eval.datasets import CITIES, load_dataset, parse_split

TOK = RegexTokenizer()  # splits depend on the data, not on the tokenizer


def both(spec: str, lengths, limit: int, **kw):
    return (load_dataset(f"{spec}:dev", TOK, lengths, limit, **kw),
            load_dataset(f"{spec}:test", TOK, lengths, limit, **kw))


def test_parse_split():
    assert parse_split("ruler_qa:dev") == ("ruler_qa", "dev")
    assert parse_split("niah:multi:test") == ("niah:multi", "test")
    assert parse_split("leval:coursera") == ("leval:coursera", None)
    assert parse_split("data.jsonl") == ("data.jsonl", None)


def test_ruler_qa_splits_by_article_with_no_paragraph_shared():
    data_path("ruler", "squad.json")
    dev, test = both("ruler_qa", [1500], 40)
    assert dev.name == "ruler_qa:dev" and test.name == "ruler_qa:test"
    assert len(dev.samples) == len(test.samples) == 40
    squad = json.loads(data_path("ruler", "squad.json").read_text())["data"]
    article_of = {p["context"].strip(): a["title"] for a in squad for p in a["paragraphs"]}

    def articles(ds):  # of every paragraph any sample reads, gold and distractors
        return {article_of[d.text] for s in ds.samples for d in s.documents}

    assert articles(dev) and articles(test)
    assert not articles(dev) & articles(test)
    assert {s.meta["article"] for s in dev.samples} <= articles(dev)
    # The split does not move with the seed; the questions drawn do.
    again = load_dataset("ruler_qa:dev", TOK, [1500], 40, seed=5)
    assert articles(again) <= articles(dev) | articles(load_dataset("ruler_qa:dev", TOK, [4000],
                                                                   40))
    assert not articles(again) & articles(test)


def test_niah_splits_by_essay_and_city():
    folder = data_path("needle_haystack", "PaulGrahamEssays")
    essays = [p.read_text(encoding="utf-8").strip() for p in sorted(folder.glob("*.txt"))]
    openings = [e[:120] for e in essays if len(e) > 200]
    for spec in ("niah", "niah:multi"):
        dev, test = both(spec, [3000], 10)

        def cities(ds):
            return {c for s in ds.samples for c in CITIES
                    if f"magic number for {c} is" in s.documents[0].text}

        def essays_read(ds):
            return {o for s in ds.samples for o in openings if o in s.documents[0].text}

        assert cities(dev) and cities(test) and not cities(dev) & cities(test)
        assert essays_read(dev) and essays_read(test)
        assert not essays_read(dev) & essays_read(test)
        assert not {s.sample_id for s in dev.samples} & {s.sample_id for s in test.samples}


def test_leval_splits_by_document():
    data_path("leval")
    dev, test = both("leval", [], 60)
    docs = lambda ds: {s.documents[0].text for s in ds.samples}  # noqa: E731
    assert docs(dev) and docs(test) and not docs(dev) & docs(test)
    assert dev.name == "leval:dev"
    one_dev, one_test = both("leval:financial_qa", [], 200)
    whole = load_dataset("leval:financial_qa", TOK, [], 200)
    # Every question of the file is in exactly one split.
    assert sorted(s.sample_id for s in one_dev.samples + one_test.samples) == \
        sorted(s.sample_id for s in whole.samples)


def _rows(path, n=40):
    rows = []
    for i in range(n):
        doc = f"Document {i // 2} says the answer is {i // 2}."  # two questions per document
        rows.append({"id": f"r{i}", "context": doc, "question": f"Question {i}?",
                     "answers": [str(i // 2)]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_user_jsonl_splits_by_seed_and_document(tmp_path):
    path = _rows(tmp_path / "mine.jsonl")
    dev = load_dataset(str(path), TOK, [], 100, seed=3, split="dev")
    test = load_dataset(f"{path}:test", TOK, [], 100, seed=3)
    ids = lambda ds: {s.sample_id for s in ds.samples}  # noqa: E731
    assert not ids(dev) & ids(test)
    assert len(ids(dev) | ids(test)) == 40
    assert 8 <= len(ids(dev)) <= 32
    docs = lambda ds: {s.documents[0].text for s in ds.samples}  # noqa: E731
    assert not docs(dev) & docs(test)  # questions on one document stay together
    other = load_dataset(str(path), TOK, [], 100, seed=4, split="dev")
    assert ids(other) != ids(dev)
    small = load_dataset(str(path), TOK, [], 100, seed=3, split="dev", dev_fraction=0.2)
    assert len(ids(small)) < len(ids(dev))
    with pytest.raises(InputError, match="disagree"):
        load_dataset(f"{path}:test", TOK, [], 100, split="dev")
    with pytest.raises(InputError, match="dev fraction"):
        load_dataset(str(path), TOK, [], 100, split="dev", dev_fraction=1.0)


def test_eval_cli_passes_the_split_to_the_loader(tmp_path, capsys, monkeypatch):
    """`orchestra eval --split/--dev-fraction` reach the loader (stopped there)."""
    import orchestra.eval.datasets as D
    from orchestra.cli.main import main

    seen = {}

    def loader(spec, tokenizer, *args, **kw):
        seen.update(spec=spec, **kw)
        raise InputError("stop here")

    monkeypatch.setattr(D, "load_dataset", loader)
    monkeypatch.chdir(tmp_path)  # eval checks that the dataset file exists before loading
    (tmp_path / "mine.jsonl").write_text('{"question": "q", "answers": ["a"], "documents": ["d"]}\n')
    pipe = tmp_path / "p.yaml"
    pipe.write_text("backend: {type: 'orchestra.backends.scripted:ScriptedBackend'}\n"
                    "strategies: {full: {type: full_context}}\n")
    code = main(["eval", "--pipeline", str(pipe), "--dataset", "mine.jsonl", "--split", "test",
                 "--dev-fraction", "0.3", "--out", str(tmp_path / "out"),
                 "--allow-module", "orchestra.backends.scripted"])
    assert code == 2 and "stop here" in capsys.readouterr().err
    # The split is written into the dataset's name (run.json and the report name it).
    assert seen == {"spec": "mine.jsonl:test", "split": None, "dev_fraction": 0.3}
    assert main(["eval", "--dataset", "ruler_qa:dev", "--split", "test", "--lengths", "1000",
                 "--out", str(tmp_path / "out2")]) == 2
    assert "disagree" in capsys.readouterr().err
