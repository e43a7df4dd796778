"""Metrics against hand-checked cases."""

import pytest

from orchestra.corpus import Corpus, Document
from orchestra.backends.scripted import RegexTokenizer
from orchestra.eval import metrics as m
from orchestra.types import Answer, Evidence


@pytest.mark.parametrize("text, norm", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  an   apple, a pear ", "apple pear"),
    ("Theatre", "theatre"),  # "the" only as a whole word
    ("U.S.A.", "usa"),
    ("", ""),
])
def test_squad_normalisation(text, norm):
    assert m.normalize_answer(text) == norm


def test_exact_match_best_over_golds():
    assert m.exact_match("the France.", ["Paris", "France"]) == 1.0
    assert m.exact_match("France, Europe", ["France"]) == 0.0
    assert m.exact_match("anything", []) == 0.0


def test_token_f1_hand_checked():
    # pred tokens: [eiffel, tower, paris] gold: [tower, in, paris]; 2 common.
    # precision 2/3, recall 2/3 -> F1 2/3.
    assert m.token_f1("The Eiffel Tower, Paris", ["tower in Paris"]) == pytest.approx(2 / 3)
    # Repeated tokens count once per occurrence (Counter intersection): 1 common of 3 and 1.
    assert m.token_f1("paris paris paris", ["Paris"]) == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))
    assert m.token_f1("London", ["Paris"]) == 0.0
    # Only articles and punctuation: both normalise to empty, which SQuAD counts as agreement.
    assert m.token_f1("The.", ["a"]) == 1.0
    assert m.token_f1("", ["Paris"]) == 0.0


def test_contains_whole_words_only():
    assert m.contains("The special magic number is 123456.", ["123456"]) == 1.0
    assert m.contains("It is 1234567", ["123456"]) == 0.0
    assert m.contains("In the year Nineteen Eighty-Four", ["nineteen eightyfour"]) == 1.0
    assert m.contains("anything", [""]) == 0.0


def test_rouge_l_hand_checked():
    # pred: the cat sat on the mat (6); gold: the cat lay on the mat (6); LCS = 5.
    assert m.rouge_l("The cat sat on the mat.", ["the cat lay on the mat"]) == pytest.approx(5 / 6)
    # LCS of "a b c d" and "b d" = 2: P = 2/4, R = 2/2 -> F = 2/3.
    assert m.rouge_l("a b c d", ["b d"]) == pytest.approx(2 / 3)
    assert m.rouge_l("x y", ["z"]) == 0.0
    assert m.rouge_l("", ["z"]) == 0.0


@pytest.mark.parametrize("reply, gold, expected", [
    ("B", ["B"], 1.0),
    ("(B) Their subconscious knew", ["(B) Their subconscious knew that Korvin"], 1.0),
    ("Answer: C", ["C"], 1.0),
    ("A, C and D", ["ACD"], 1.0),
    ("DCA", ["ACD"], 1.0),
    ("A and C", ["ACD"], 0.0),  # a partial set is wrong
    ("The answer is (D) because", ["D"], 1.0),
    ("Analyze the data", ["A"], 0.0),  # a word starting with A is no option
    ("", ["A"], 0.0),
])
def test_option_accuracy(reply, gold, expected):
    assert m.option_accuracy(reply, gold) == expected


def test_true_false():
    assert m.true_false_accuracy("True, humans travel", ["True [fact: False]"]) == 1.0
    assert m.true_false_accuracy("false", ["True [fact: False]"]) == 0.0
    assert m.true_false_accuracy("maybe", ["True"]) == 0.0


def test_evidence_recall_from_answer_spans():
    tok = RegexTokenizer()
    text = "Alpha beta gamma. The code is 778899 and more text follows here."
    corpus = Corpus([Document(id="d", text=text)], tok)
    i = text.index("778899")
    # The answer straddles two evidence spans: merged, it is found.
    split = Answer(question="q", text="", strategy="s", evidence=[
        Evidence(chunk_id="a", doc_id="d", start=0, end=i + 3),
        Evidence(chunk_id="b", doc_id="d", start=i + 3, end=len(text))])
    assert m.evidence_recall(["778899"], m.evidence_texts(split, corpus)) == 1.0
    before = Answer(question="q", text="", strategy="s",
                    evidence=[Evidence(chunk_id="a", doc_id="d", start=0, end=i)])
    assert m.evidence_recall(["778899"], m.evidence_texts(before, corpus)) == 0.0
    unknown = Answer(question="q", text="", strategy="s",
                     evidence=[Evidence(chunk_id="x", doc_id="other", start=0, end=99)])
    assert m.evidence_recall(["778899"], m.evidence_texts(unknown, corpus)) == 0.0


def test_score_uses_task_metrics():
    # EM and F1 read the short answer ("It is" and the full stop dropped); contains the reply.
    s = m.score("qa", "It is Paris.", ["Paris"])
    assert s == {"contains": 1.0, "exact_match": 1.0, "f1": 1.0}
    s = m.score("qa", "Paris, I think, or Lyon", ["Paris"])
    assert s["contains"] == 1.0 and s["exact_match"] == 0.0 and 0 < s["f1"] < 1
    # Long-answer tasks are scored on the whole reply.
    assert m.score("f1", "It is Paris.", ["Paris"])["f1"] < 1
    assert m.headline("options") == "option_accuracy"
    assert set(m.score("rouge", "a b", ["a b"])) == {"rouge_l", "f1"}
