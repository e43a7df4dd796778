"""benchmarks/peers.py scores every system, peers included, with orchestra's own metrics on the
reply text (issue 19, item 5): the same reply scores the same whoever gave it, and
``--report-only`` rescores stored rows instead of trusting the score they were stored with."""

from __future__ import annotations

import json

import peers  # benchmarks/ is on sys.path in the tests (conftest)

from orchestra.eval import metrics

QUESTION = "Where was the address given?"
GOLD = ["Gettysburg", "the Soldiers' National Cemetery"]
# (reply, what orchestra's contains says): a restated question holds no gold answer; a reply
# naming the place does, punctuation and case aside.
REPLIES = [("The address given is in the address.", 0.0),
           ("At the Soldiers' National Cemetery, in GETTYSBURG.", 1.0),
           ("gettysburg", 1.0),
           ("Gettysburgh", 0.0)]
SYSTEMS = ["langchain_ruler", "llamaindex", "router"]


def row(sample: int, system: str, reply: str, quality: float) -> dict:
    return {"key": f"{sample}:{system}", "sample_id": f"ruler_qa:2000:{sample}",
            "dataset": "ruler_qa", "length": 2000, "task": "qa", "question": QUESTION,
            "gold": GOLD, "strategy": system, "answer": reply,
            "scores": {"contains": quality}, "quality": quality, "evidence_recall": 1.0,
            "cost": {"prompt_tokens": 800, "model_calls": 1, "wall_seconds": 1.0},
            "route": {"strategy": system, "reason": ""}}


def test_the_same_reply_scores_the_same_for_every_system():
    # Stored scores as an older, lenient rule might have left them: every reply right.
    rows = [row(i, s, reply, 1.0) for i, (reply, _) in enumerate(REPLIES) for s in SYSTEMS]
    rescored = peers.rescore(rows)
    assert len(rescored) == len(rows)
    for r in rescored:
        want = metrics.score("qa", r["answer"], GOLD, QUESTION)
        assert r["scores"] == want and r["quality"] == want["contains"]
    for reply, right in REPLIES:
        assert {r["quality"] for r in rescored if r["answer"] == reply} == {right}


def test_report_only_rescores_a_row_whose_stored_score_disagrees(tmp_path, capsys):
    rows = []
    for i, (reply, right) in enumerate(REPLIES):
        for s in SYSTEMS:
            rows.append(row(i, s, reply, right))
    # The router's row for the restated question was stored as right (a lenient contains),
    # and LlamaIndex's row naming the place as wrong: both are rescored from the reply.
    lenient = next(r for r in rows if r["strategy"] == "router" and r["sample_id"].endswith(":0"))
    lenient["quality"] = lenient["scores"]["contains"] = 1.0
    strict = next(r for r in rows
                  if r["strategy"] == "llamaindex" and r["sample_id"].endswith(":2"))
    strict["quality"] = strict["scores"]["contains"] = 0.0
    # A row with no reply text cannot be rescored: it is left out, not counted on its score.
    bare = {k: v for k, v in row(9, "router", "", 1.0).items() if k != "answer"}
    (tmp_path / "results.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows + [bare]))

    stored = peers.stored_rows(tmp_path, SYSTEMS)
    quality = {(r["sample_id"][-1], r["strategy"]): r["quality"] for r in stored}
    assert quality[("0", "router")] == 0.0 and quality[("2", "llamaindex")] == 1.0
    assert all(quality[(str(i), s)] == right for i, (_, right) in enumerate(REPLIES)
               for s in SYSTEMS)
    assert not any(r["sample_id"].endswith(":9") for r in stored)

    assert peers.main(["--report-only", "--out", str(tmp_path),
                       "--systems", ",".join(SYSTEMS)]) == 0
    out, err = capsys.readouterr()
    assert "1 row(s) without reply" in err
    # Every system has the same replies, so the same mean (2 of 4) and no discordant pair.
    for s in SYSTEMS:
        assert f"| {s} | ruler_qa | 2000 | 4 | 0.50 |" in out
    assert "langchain_ruler right where router is wrong on 0 of 4, the reverse on 0" in out
