"""Dataset loaders on the real data, measured with the embedded model's own tokenizer
(the tokenizer alone loads in about a second; no model runs here)."""

import json
import re

import pytest

from orchestra.errors import InputError
from orchestra.eval.datasets import load_dataset, parse_lengths
from conftest import SHARED_DATA, data_path


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from orchestra.backends.embedded import embedded_model_dir
    from orchestra.backends.local import HFTokenizer

    return HFTokenizer(AutoTokenizer.from_pretrained(embedded_model_dir()))


NEEDLE = re.compile(r"The special magic number for ([A-Za-z ]+) is (\d{6})\.")


def test_niah_single_lengths_depths_and_stability(tok):
    data_path("needle_haystack", "PaulGrahamEssays")
    ds = load_dataset("niah", tok, [2000, 6000], limit=3, depths=(0.2, 0.8))
    assert [s.length for s in ds.samples] == [2000] * 3 + [6000] * 3
    for s in ds.samples:
        text = s.documents[0].text
        assert abs(tok.count(text) - s.length) <= 10
        found = NEEDLE.findall(text)
        assert len(found) == 1 and found[0][1] == s.answers[0]
        assert found[0][0] in s.question
        depth = text.index("The special magic number") / len(text)
        assert abs(depth - s.meta["depth"]) < 0.05
    assert [s.meta["depth"] for s in ds.samples[:3]] == [0.2, 0.8, 0.2]
    again = load_dataset("niah", tok, [2000, 6000], limit=3, depths=(0.2, 0.8))
    assert [(s.sample_id, s.documents[0].text) for s in again.samples] == \
        [(s.sample_id, s.documents[0].text) for s in ds.samples]
    other = load_dataset("niah", tok, [2000], limit=1, seed=1, depths=(0.2, 0.8))
    assert other.samples[0].answers != ds.samples[0].answers


def test_niah_multi_asks_about_one_of_several(tok):
    data_path("needle_haystack", "PaulGrahamEssays")
    ds = load_dataset("niah:multi", tok, [3000], limit=3)
    for s in ds.samples:
        found = dict(NEEDLE.findall(s.documents[0].text))
        assert len(found) == 3
        city = s.question.removeprefix("What is the special magic number for ").rstrip("?")
        assert found[city] == s.answers[0]


def test_ruler_qa_hides_the_gold_paragraph_among_other_articles(tok):
    path = data_path("ruler", "squad.json")
    squad = json.loads(path.read_text())["data"]
    article_of = {p["context"].strip(): a["title"] for a in squad for p in a["paragraphs"]}
    ds = load_dataset("ruler_qa", tok, [1500, 4000], limit=2)
    assert len(ds.samples) == 4
    for s in ds.samples:
        texts = [d.text for d in s.documents]
        total = sum(tok.count(t) for t in texts) + tok.count("\n\n") * (len(texts) - 1)
        assert s.length - 100 < total <= s.length
        gold = next(d.text for d in s.documents if d.id == s.meta["gold_doc"])
        assert any(a in gold for a in s.answers)
        gold_title = article_of[gold]
        assert sum(article_of[t] == gold_title for t in texts) == 1


def test_leval_keeps_scored_documents_round_robin(tok):
    data_path("leval")
    ds = load_dataset("leval", tok, [], limit=18)
    files = [s.meta["file"] for s in ds.samples]
    assert len(set(files[:18])) == 18  # one question of each file first
    tasks = {s.meta["file"]: s.task for s in ds.samples}
    assert tasks["coursera"] == "options" and tasks["sci_fi"] == "true_false"
    assert tasks["multidoc_qa"] == "f1" and tasks["gov_report_summ"] == "rouge"
    one = load_dataset("leval:financial_qa", tok, [], limit=100)
    lines = (SHARED_DATA / "leval" / "Open-ended-tasks" / "financial_qa.jsonl").read_text() \
        .splitlines()
    kept = {i + 1 for i, l in enumerate(lines) if json.loads(l)["evaluation"] in ("f1", "rouge")}
    assert {int(s.sample_id.split(":")[2]) for s in one.samples} == kept
    with pytest.raises(InputError, match="unknown L-Eval file 'nope'"):
        load_dataset("leval:nope", tok, [], limit=1)


def test_user_jsonl_reports_bad_lines_and_runs_the_rest(tmp_path, tok):
    f = tmp_path / "mine.jsonl"
    f.write_text("\n".join([
        json.dumps({"context": "Paris is in France.", "question": "Where is Paris?",
                    "answers": ["France"]}),
        '{"documents": ["broken"',
        json.dumps({"documents": ["A.", "B."], "question": "", "answers": ["x"]}),
        json.dumps({"documents": ["Tokyo is in Japan.", "x"], "question": "Where is Tokyo?",
                    "answers": ["Japan"], "id": "t"}),
    ]) + "\n")
    ds = load_dataset(f"jsonl:{f}", tok, [], limit=10)
    assert [s.sample_id for s in ds.samples] == ["jsonl:1", "jsonl:t"]
    assert len(ds.samples[1].documents) == 2
    assert any(p.startswith(f"{f}:2: malformed JSON") for p in ds.problems)
    assert any(p.startswith(f"{f}:3: 'question'") for p in ds.problems)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(InputError, match="bad.jsonl: no usable sample.*bad.jsonl:1"):
        load_dataset(str(bad), tok, [], limit=10)


def test_clear_errors(tok):
    with pytest.raises(InputError, match="unknown dataset 'squad'"):
        load_dataset("squad", tok, [4000])
    with pytest.raises(InputError, match="unknown niah subset"):
        load_dataset("niah:triple", tok, [4000])
    with pytest.raises(InputError, match="give --lengths"):
        load_dataset("niah", tok, [])
    data_path("needle_haystack")
    with pytest.raises(InputError, match="length 10 is below the size of the needle task"):
        load_dataset("niah", tok, [10])
    data_path("ruler")
    with pytest.raises(InputError, match="length 50 is below the size of question"):
        load_dataset("ruler_qa", tok, [50], limit=1)
    with pytest.raises(InputError, match="not a token count"):
        parse_lengths("4000,lots")
    assert parse_lengths("4000, 16k") == [4000, 16000]
    with pytest.raises(InputError, match="no such dataset file"):
        load_dataset("jsonl:/nonexistent/x.jsonl", tok, [])


# Samples of both SQuAD datasets (seed 3, lengths 1500 and 3000, 2 questions), pinned before
# their shared reading of squad.json was factored out (orchestra/eval/datasets/squad.py): the
# id and a digest of everything a sample holds (question, answers, documents, meta).
PINNED = {
    "ruler_qa": [("ruler_qa:1500:571098f8a58dae1900cd6ab3", "5714ac562ed3fa1c"),
                 ("ruler_qa:1500:56e1bd4acd28a01900c67aff", "14f346838c0a475d"),
                 ("ruler_qa:3000:571098f8a58dae1900cd6ab3", "0245745e08bd97c8"),
                 ("ruler_qa:3000:56e1bd4acd28a01900c67aff", "05b1494eecc78583")],
    "ruler_qa:dev": [("ruler_qa:1500:5726a5525951b619008f78e1", "38c06dbf3881c748"),
                     ("ruler_qa:1500:57293c246aef051400154bba", "f9dc77143b984e1e"),
                     ("ruler_qa:3000:5726a5525951b619008f78e1", "f5c8252b96e84c8a"),
                     ("ruler_qa:3000:57293c246aef051400154bba", "271937ec77289ea7")],
    "ruler_qa:test": [("ruler_qa:1500:572824f13acd2414000df590", "fdaeb3a16d5d51de"),
                      ("ruler_qa:1500:5725ec8289a1e219009ac0b2", "26a44f4aae3929ac"),
                      ("ruler_qa:3000:572824f13acd2414000df590", "f299d5b31a1128b8"),
                      ("ruler_qa:3000:5725ec8289a1e219009ac0b2", "dc21a77ce63329b1")],
    "unanswerable": [("unanswerable:1500:5ad41b12604f3c001a4004fb", "7cec677d8c5cf773"),
                     ("unanswerable:1500:5a665b56846392001a1e1b1d", "cce7442f1e2d6848"),
                     ("unanswerable:3000:5ad41b12604f3c001a4004fb", "36937cc39422ca07"),
                     ("unanswerable:3000:5a665b56846392001a1e1b1d", "958b5d8d901ca219")],
    "unanswerable:dev": [("unanswerable:dev:1500:5ad043a977cf76001a686f38", "316bbbb582f4f96f"),
                         ("unanswerable:dev:1500:5acf82c277cf76001a685066", "afcf0e53ef7d6898"),
                         ("unanswerable:dev:3000:5ad043a977cf76001a686f38", "549679da3e307710"),
                         ("unanswerable:dev:3000:5acf82c277cf76001a685066", "1300a24d0357b068")],
    "unanswerable:test": [
        ("unanswerable:test:1500:5a7b37ce21c2de001afe9ddc", "ab77557c258ea43a"),
        ("unanswerable:test:1500:5acfed5277cf76001a686531", "ec719f5a6c6d4239"),
        ("unanswerable:test:3000:5a7b37ce21c2de001afe9ddc", "d5b83a3ff3f08b99"),
        ("unanswerable:test:3000:5acfed5277cf76001a686531", "388fc7909295e42f")],
}


def _digest(s) -> str:
    import hashlib

    blob = json.dumps([s.sample_id, s.dataset, s.question, s.answers, s.task, s.length,
                       [[d.id, d.text] for d in s.documents], s.meta], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_squad_datasets_give_the_pinned_samples(tok, name):
    data_path("ruler", "squad.json")
    ds = load_dataset(name, tok, [1500, 3000], limit=2, seed=3)
    assert ds.name == name
    assert [(s.sample_id, _digest(s)) for s in ds.samples] == PINNED[name]
