"""Short answers on real replies: tests/fixtures/replies_ruler_qa_dev.jsonl holds replies of the
embedded SmolLM2-135M reader to RULER-QA dev questions (tests/fixtures/collect_replies.py made
it; each line says how), and the issue's own examples (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestra.eval import metrics
from orchestra.short_answer import short_answer
from orchestra.types import Answer

FIXTURE = Path(__file__).parent / "fixtures" / "replies_ruler_qa_dev.jsonl"
REPLIES = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


def reply(question_start: str, template: str) -> dict:
    [row] = [r for r in REPLIES
             if r["question"].startswith(question_start) and r["template"] == template]
    return row


def test_fixture_is_real_and_says_where_it_came_from():
    assert len(REPLIES) == 20
    for r in REPLIES:
        assert r["reply"].strip() and r["gold"]
        assert {"model", "command", "commit", "date"} <= set(r["provenance"])


@pytest.mark.parametrize("question,template,expected", [
    # preamble: "The answer to the question is:" and a restated question
    ("What is Harvard's total financial aid reserves", "orchestra", "$159 million"),
    ("What is Harvard's total financial aid reserves", "ruler", "$159 million"),
    # a phrase repeated until the token limit
    ("How many people died in the outbreak of 1471", "orchestra", "45"),
    # the answer on the first line, the rest repeats it
    ("How many people died in the outbreak of 1471", "ruler", "1471"),
    # restated question, then the answer
    ("What was the Chinese name of Gou's calendar", "orchestra", "Shoushi Li"),
    # ... with the answer quoted and commentary after it
    ("What was the Chinese name of Gou's calendar", "ruler", "Shoushi Li"),
    # ... and a relative clause after the span
    ("How long was Warsaw the capital", "orchestra", "until 1796"),
    ("What does the Presiding Officer try", "orchestra",
     "different viewpoints and political parties"),
    # a quoted answer after the preamble
    ("What type of protest falls under", "ruler", "civil disobedience"),
    ("How long was Warsaw the capital", "ruler", "1816"),
])
def test_short_answers_of_real_replies(question, template, expected):
    r = reply(question, template)
    assert short_answer(r["reply"], r["question"]) == expected


def test_short_answers_raise_em_and_f1_and_never_score_below_the_reply():
    gained = 0
    for r in REPLIES:
        full = metrics.score("qa", "", r["gold"])
        raw_em = metrics.exact_match(r["reply"], r["gold"])
        raw_f1 = metrics.token_f1(r["reply"], r["gold"])
        s = metrics.score("qa", r["reply"], r["gold"], r["question"])
        assert set(s) == set(full)
        assert s["contains"] == metrics.contains(r["reply"], r["gold"])  # on the whole reply
        short = short_answer(r["reply"], r["question"])
        assert short  # a non-empty reply never becomes empty
        # EM and F1 read the better of the short answer and the reply: never below the reply.
        assert s["f1"] >= raw_f1 and s["exact_match"] >= raw_em
        assert s["f1"] == max(raw_f1, metrics.token_f1(short, r["gold"]))
        gained += s["exact_match"] > raw_em
    assert gained >= 5  # replies that only exact-match once the wrapper is gone


@pytest.mark.parametrize("text,question,expected", [
    ('The answer to the question is: "Christian"', "What religion ...?", "Christian"),
    ("The invention of the invention of the invention of the", None, "The invention of the"),
    ("What year was the treaty signed? The treaty was signed in 1648.",
     "What year was the treaty signed?", "1648"),
    ("Based on the text, the treaty was signed in 1648.", "When was the treaty signed?", "1648"),
    ("Answer: Paris.", None, "Paris"),
    ("Paris", "What is the capital of France?", "Paris"),
    ("Venus is larger.", "Which is larger, Mars or Venus?", "Venus is larger"),
    ("Mr. Smith went to Washington. Then he left.", None, "Mr. Smith went to Washington"),
    ("", "q?", ""),
])
def test_short_answer_rules(text, question, expected):
    assert short_answer(text, question) == expected


def test_answer_keeps_the_reply_and_carries_the_short_answer():
    r = reply("What is Harvard's total financial aid reserves", "orchestra")
    ans = Answer(question=r["question"], text=r["reply"], strategy="rag")
    assert ans.text == r["reply"] and ans.short == "$159 million"
    dumped = json.loads(ans.model_dump_json())
    assert dumped["short"] == "$159 million" and dumped["text"] == r["reply"]
    assert Answer.model_validate(dumped).short == "$159 million"  # round-trips
