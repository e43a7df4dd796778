"""``ruler_qa``: an answerable SQuAD question with its gold paragraph hidden among distractor
paragraphs from other articles, up to a target token length (RULER's QA task). Split by SQuAD
article: gold and distractor paragraphs come from the split's articles."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable, Sequence

from orchestra.backends.base import Tokenizer
from orchestra.corpus import Document
from orchestra.errors import InputError
from orchestra.eval.datasets.base import (
    SEPARATOR, Dataset, Sample, check_split, default_data_root, fixed_half, need, split_suffix,
)
from orchestra.eval.datasets.registry import Family, Request, register


def _squad(root: Path, split: str | None):
    """(titles, paragraphs as (article index, text), questions as (paragraph index, qa)) of
    the split's articles, the questions shuffled later by the caller."""
    path = need(root / "ruler" / "squad.json", "RULER's squad.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not SQuAD 2.0 JSON ({e})") from None
    titles = [str(article.get("title", a)) for a, article in enumerate(data)]
    keep = fixed_half(titles, split)
    paragraphs: list[tuple[int, str]] = []
    questions = []
    for a, article in enumerate(data):
        if titles[a] not in keep:
            continue
        for p in article.get("paragraphs", []):
            paragraphs.append((a, p["context"].strip()))
            for qa in p.get("qas", []):
                if not qa.get("is_impossible") and qa.get("answers"):
                    questions.append((len(paragraphs) - 1, qa))
    return titles, paragraphs, questions


def ruler_qa(tokenizer: Tokenizer, lengths: Sequence[int], limit: int, seed: int = 0,
             root: Path | None = None, split: str | None = None) -> Dataset:
    """``limit`` questions per length; each paragraph is one document of the corpus.
    ``split``: questions and distractors from the dev or test half of the SQuAD articles."""
    check_split(split)
    titles, paragraphs, questions = _squad(root or default_data_root(), split)
    rng = random.Random(f"{seed}:ruler_qa")
    rng.shuffle(questions)
    counts: dict[int, int] = {}

    def tokens(p: int) -> int:
        if p not in counts:
            counts[p] = tokenizer.count(paragraphs[p][1])
        return counts[p]

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
            answers = list(dict.fromkeys(a["text"].strip() for a in qa["answers"]))
            samples.append(Sample(
                sample_id=f"ruler_qa:{length}:{qa['id']}", dataset=name,
                question=question, answers=answers, task="qa", length=length,
                documents=[Document(id=f"p{n}", text=paragraphs[j][1])
                           for n, j in enumerate(chosen)],
                meta={"gold_doc": f"p{chosen.index(gold)}", "tokens": total,
                      "documents": len(chosen), "article": titles[paragraphs[gold][0]]},
            ))
    return Dataset(name, samples)


def hide_among_distractors(srng: random.Random, paragraphs: list[tuple[int, str]], gold: int,
                           tokens: Callable[[int], int], sep: int, length: int
                           ) -> tuple[list[int], int]:
    """Paragraphs of other articles around the gold one, up to ``length`` tokens; the gold
    paragraph at a random place. Returns the paragraph indices and their token total."""
    pool = [j for j, (a, _) in enumerate(paragraphs) if a != paragraphs[gold][0]]
    srng.shuffle(pool)
    chosen, total = [], tokens(gold)
    for j in pool:
        if total + sep + tokens(j) > length:
            continue
        chosen.append(j)
        total += sep + tokens(j)
        if length - total < 20:
            break
    chosen.insert(srng.randint(0, len(chosen)), gold)
    return chosen, total


def _check(subset: str) -> None:
    if subset:
        raise InputError(f"dataset 'ruler_qa' has no subsets (got {subset!r})")


def load(r: Request) -> Dataset:
    return ruler_qa(r.tokenizer, r.lengths, r.limit, r.seed, r.root, split=r.split)


FAMILY = register(Family("ruler_qa", load, names=("ruler_qa",), check=_check, needs_lengths=True))
