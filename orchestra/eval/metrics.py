"""Answer quality metrics.

Exact match and token F1 use the SQuAD normalisation (lower case, punctuation and the articles
a/an/the removed, whitespace collapsed), taking the best score over the gold answers. "contains"
is RULER's string match (a gold answer occurs in the reply), the fair headline metric for a small
model that answers in sentences. ROUGE-L is computed here (longest common subsequence over
tokens) so results do not depend on which rouge package is installed. Evidence recall asks
whether a gold answer occurs in the text the reader actually saw (the Answer's evidence spans).

``score`` gives exact match and F1 of short-answer tasks (qa, niah, exact) on the reply's short
answer (orchestra.short_answer: "The answer to the question is: \"Paris\"" reads as "Paris"),
or on the whole reply where that scores higher, and "contains" on the whole reply, as RULER
does.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable, Sequence

from orchestra.short_answer import extract_options

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD's normalisation (the official evaluate-v2.0 script)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _tokens(s: str) -> list[str]:
    return normalize_answer(s).split()


def _best(fn, prediction: str, golds: Sequence[str]) -> float:
    golds = [g for g in golds if isinstance(g, str)]
    if not golds:
        return 0.0
    return max(fn(prediction, g) for g in golds)


def _em(pred: str, gold: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(gold))


def _f1(pred: str, gold: str) -> float:
    p, g = _tokens(pred), _tokens(gold)
    if not p or not g:
        # SQuAD: two empty answers agree; one empty answer scores 0.
        return float(p == g)
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _contains(pred: str, gold: str) -> float:
    g = normalize_answer(gold)
    return float(bool(g) and f" {g} " in f" {normalize_answer(pred)} ")


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def _rouge_l(pred: str, gold: str) -> float:
    # Lower-cased word tokens, punctuation dropped (as rouge-score's default tokenizer does).
    p = re.findall(r"[a-z0-9]+", pred.lower())
    g = re.findall(r"[a-z0-9]+", gold.lower())
    lcs = _lcs(p, g)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(g)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    return _best(_em, prediction, golds)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    return _best(_f1, prediction, golds)


def contains(prediction: str, golds: Sequence[str]) -> float:
    return _best(_contains, prediction, golds)


def rouge_l(prediction: str, golds: Sequence[str]) -> float:
    return _best(_rouge_l, prediction, golds)


def option_accuracy(prediction: str, golds: Sequence[str]) -> float:
    """1 when the options chosen equal a gold's options (order ignored; "ACD" is three)."""
    chosen = extract_options(prediction or "")
    return float(bool(chosen) and any(extract_options(g) == chosen for g in golds))


def true_false_accuracy(prediction: str, golds: Sequence[str]) -> float:
    """L-Eval sci_fi: gold "True [fact: False]"; the first True/False word of the reply counts."""
    m = re.search(r"\b(true|false)\b", prediction, re.I)
    if not m:
        return 0.0
    said = m.group(1).lower()
    return float(any(g.strip().lower().startswith(said) for g in golds))


def contains_all(prediction: str, golds: Sequence[str]) -> float:
    """The share of the gold answers the reply holds (RULER's string_match_all), for tasks
    whose answer is several values (multi-value needles, the most common words)."""
    golds = [g for g in golds if isinstance(g, str) and normalize_answer(g)]
    if not golds:
        return 0.0
    return sum(_contains(prediction, g) for g in golds) / len(golds)


def declined(prediction: str, golds: Sequence[str]) -> float:
    """1 when the reply declines (the text does not hold the answer): the score of an
    unanswerable question, by the one decline rule Self-Route escalates on."""
    from orchestra.declines import declined as is_decline

    return float(is_decline(prediction or ""))


def evidence_recall(golds: Sequence[str], seen_texts: Iterable[str]) -> float:
    """1 when some gold answer occurs (normalised) in the text the reader saw."""
    seen = " ".join(normalize_answer(t) for t in seen_texts)
    if not seen:
        return 0.0
    seen = f" {seen} "
    return float(any(normalize_answer(g) and f" {normalize_answer(g)} " in seen
                     for g in golds if isinstance(g, str)))


def evidence_texts(answer, corpus) -> list[str]:
    """The corpus text behind an Answer's evidence spans, overlapping spans merged per document
    (so an answer that straddles two chunks still counts)."""
    docs = {d.id: d for d in corpus.documents}
    spans: dict[str, list[list[int]]] = {}
    for ev in answer.evidence:
        if ev.doc_id in docs:
            spans.setdefault(ev.doc_id, []).append([ev.start, ev.end])
    texts = []
    for doc_id, ss in spans.items():
        merged: list[list[int]] = []
        for a, b in sorted(ss):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        texts.extend(docs[doc_id].text[a:b] for a, b in merged)
    return texts


METRICS = {
    "exact_match": exact_match,
    "f1": token_f1,
    "contains": contains,
    "rouge_l": rouge_l,
    "option_accuracy": option_accuracy,
    "true_false": true_false_accuracy,
    "contains_all": contains_all,
    "declined": declined,
}

# Which metrics a task kind is scored with; the first is its headline metric.
TASK_METRICS = {
    "qa": ("contains", "exact_match", "f1"),
    "niah": ("contains", "exact_match", "f1"),
    "options": ("option_accuracy",),
    "true_false": ("true_false",),
    "f1": ("f1", "contains", "rouge_l"),
    "rouge": ("rouge_l", "f1"),
    "exact": ("exact_match", "contains", "f1"),
    "multi_value": ("contains_all", "contains"),
    "unanswerable": ("declined",),
}


# Tasks whose gold answers are spans of the documents, so evidence recall means something.
EXTRACTIVE_TASKS = frozenset({"qa", "niah", "exact", "f1", "multi_value"})


def headline(task: str) -> str:
    return TASK_METRICS[task][0]


# Tasks whose gold answers are short spans: EM and F1 read the reply's short answer.
SHORT_ANSWER_TASKS = frozenset({"qa", "niah", "exact"})
SPAN_METRICS = frozenset({"exact_match", "f1"})


def score(task: str, prediction: str, golds: Sequence[str],
          question: str | None = None) -> dict[str, float]:
    """The task's metrics; ``question`` lets the short answer drop a restated question."""
    prediction = prediction or ""
    short = prediction
    if task in SHORT_ANSWER_TASKS:
        from orchestra.short_answer import short_answer

        short = short_answer(prediction, question)
    # EM and F1 take the better of the short answer and the whole reply: a wrapper the rules
    # miss, or an answer they cut off (it sat in a second sentence), never costs a reply.
    return {m: max(METRICS[m](short, golds), METRICS[m](prediction, golds))
            if m in SPAN_METRICS else METRICS[m](prediction, golds) for m in TASK_METRICS[task]}
