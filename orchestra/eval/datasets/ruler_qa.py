"""``ruler_qa``: an answerable SQuAD question with its gold paragraph hidden among distractor
paragraphs from other articles, up to a target token length (RULER's QA task). Split by SQuAD
article: gold and distractor paragraphs come from the split's articles."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from orchestra.backends.base import Tokenizer
from orchestra.corpus import Document
from orchestra.errors import InputError
from orchestra.eval.datasets.base import SEPARATOR, Dataset, Sample, check_split, split_suffix
from orchestra.eval.datasets.registry import Family, Request, register
from orchestra.eval.datasets.squad import (answerable, gold_answers, hide_among_distractors,
                                           walk_squad)


def ruler_qa(tokenizer: Tokenizer, lengths: Sequence[int], limit: int, seed: int = 0,
             root: Path | None = None, split: str | None = None) -> Dataset:
    """``limit`` questions per length; each paragraph is one document of the corpus.
    ``split``: questions and distractors from the dev or test half of the SQuAD articles."""
    check_split(split)
    squad = walk_squad(root, split, answerable)
    titles, paragraphs, questions = squad.titles, squad.paragraphs, squad.questions
    random.Random(f"{seed}:ruler_qa").shuffle(questions)
    tokens = squad.counter(tokenizer)
    sep = tokenizer.count(SEPARATOR) or 1
    name = "ruler_qa" + split_suffix(split)
    samples = []
    for length in lengths:
        for gold, qa in questions[:limit]:
            question = qa["question"].strip()
            needed = tokens(gold) + tokenizer.count(question)
            if length < needed:
                raise InputError(f"length {length} is below the size of question {qa['id']}: its "
                                 f"gold paragraph and question need {needed} tokens")
            srng = random.Random(f"{seed}:ruler_qa:{length}:{qa['id']}")
            chosen, total = hide_among_distractors(srng, paragraphs, gold, tokens, sep, length)
            samples.append(Sample(
                sample_id=f"ruler_qa:{length}:{qa['id']}", dataset=name,
                question=question, answers=gold_answers(qa), task="qa", length=length,
                documents=[Document(id=f"p{n}", text=paragraphs[j][1])
                           for n, j in enumerate(chosen)],
                meta={"gold_doc": f"p{chosen.index(gold)}", "tokens": total,
                      "documents": len(chosen), "article": titles[paragraphs[gold][0]]},
            ))
    return Dataset(name, samples)


def _check(subset: str) -> None:
    if subset:
        raise InputError(f"dataset 'ruler_qa' has no subsets (got {subset!r})")


def load(r: Request) -> Dataset:
    return ruler_qa(r.tokenizer, r.lengths, r.limit, r.seed, r.root, split=r.split)


FAMILY = register(Family("ruler_qa", load, names=("ruler_qa",), check=_check, needs_lengths=True))
