"""Unanswerable questions: SQuAD 2.0's questions written against a paragraph that does not
answer them, hidden as ``ruler_qa`` hides an answerable one.

Each question's own paragraph (on its topic, holding a plausible but wrong answer, which is
what makes SQuAD 2.0's negatives hard) goes among distractor paragraphs of other articles up to
the target length. The right reply is a decline; the score is ``declined`` (1 when the reply
says the text does not hold the answer, by orchestra's one decline rule), so a strategy that
invents an answer scores 0.

SOURCE: ../shared/data/ruler/squad.json, SQuAD 2.0 dev (see its SOURCE.md), the questions with
``is_impossible`` true (5,945 of 11,873); split dev/test by article with the same halves as
``ruler_qa``, so no paragraph crosses the split.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from orchestra.backends.base import Tokenizer
from orchestra.corpus import Document
from orchestra.errors import InputError
from orchestra.eval.datasets.base import SEPARATOR, Dataset, Sample, check_split, split_suffix
from orchestra.eval.datasets.registry import Family, Request, register
from orchestra.eval.datasets.squad import hide_among_distractors, walk_squad

GOLD_LABEL = "unanswerable"  # what the sample's answers hold; the metric reads the decline


def unanswerable(tokenizer: Tokenizer, lengths: Sequence[int], limit: int, seed: int = 0,
                 root: Path | None = None, split: str | None = None) -> Dataset:
    check_split(split)
    squad = walk_squad(root, split, lambda qa: bool(qa.get("is_impossible")))
    titles, paragraphs, questions = squad.titles, squad.paragraphs, squad.questions
    random.Random(f"{seed}:unanswerable").shuffle(questions)
    name = "unanswerable" + split_suffix(split)
    sep = tokenizer.count(SEPARATOR) or 1
    tokens = squad.counter(tokenizer)

    samples = []
    for length in lengths:
        for own, qa in questions[:limit]:
            if length < tokens(own):
                raise InputError(f"length {length} is below the size of question {qa['id']}'s "
                                 f"paragraph ({tokens(own)} tokens)")
            srng = random.Random(f"{seed}:{name}:{length}:{qa['id']}")
            chosen, total = hide_among_distractors(srng, paragraphs, own, tokens, sep, length)
            samples.append(Sample(
                sample_id=f"{name}:{length}:{qa['id']}", dataset=name,
                question=qa["question"].strip(), answers=[GOLD_LABEL], task="unanswerable",
                length=length,
                documents=[Document(id=f"p{n}", text=paragraphs[j][1])
                           for n, j in enumerate(chosen)],
                meta={"own_doc": f"p{chosen.index(own)}", "tokens": total,
                      "plausible": [a["text"] for a in qa.get("plausible_answers", [])][:3],
                      "article": titles[paragraphs[own][0]]}))
    return Dataset(name, samples)


def load(r: Request) -> Dataset:
    return unanswerable(r.tokenizer, r.lengths, r.limit, r.seed, r.root, split=r.split)


FAMILY = register(Family("unanswerable", load, names=("unanswerable",), needs_lengths=True))
