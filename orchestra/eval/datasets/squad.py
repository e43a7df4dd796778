"""SQuAD 2.0 (../shared/data/ruler/squad.json) as ``ruler_qa`` and ``unanswerable`` read it:
the split's articles walked once into paragraphs and the questions a predicate keeps, and a
question's paragraph hidden among paragraphs of other articles up to a target length."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orchestra.backends.base import Tokenizer
from orchestra.errors import InputError
from orchestra.eval.datasets.base import default_data_root, fixed_half, need


def answerable(qa: dict) -> bool:
    """A question SQuAD 2.0 answers in its paragraph."""
    return not qa.get("is_impossible") and bool(qa.get("answers"))


def gold_answers(qa: dict) -> list[str]:
    """The question's answer texts, stripped, each once, in the file's order."""
    return list(dict.fromkeys(a["text"].strip() for a in qa["answers"]))


@dataclass
class Squad:
    """The split's articles: ``titles`` (every article, indexed as in the file),
    ``paragraphs`` as (article index, text) and ``questions`` as (paragraph index, qa)."""

    titles: list[str]
    paragraphs: list[tuple[int, str]]
    questions: list[tuple[int, dict]]

    def counter(self, tokenizer: Tokenizer) -> Callable[[int], int]:
        """Tokens of paragraph ``p``, each counted once (a sample counts only those it
        considers, so counting all up front would cost more)."""
        counts: dict[int, int] = {}

        def tokens(p: int) -> int:
            if p not in counts:
                counts[p] = tokenizer.count(self.paragraphs[p][1])
            return counts[p]
        return tokens


def read_squad(root: Path | None) -> list[dict]:
    """squad.json's articles (``data``), or one clear error naming the file."""
    path = need((root or default_data_root()) / "ruler" / "squad.json", "RULER's squad.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))["data"]
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not SQuAD 2.0 JSON ({e})") from None


def walk_squad(root: Path | None, split: str | None, keep: Callable[[dict], bool]) -> Squad:
    """The split's articles (by title, ``fixed_half``), in file order: every paragraph, and
    each question ``keep(qa)`` accepts."""
    data = read_squad(root)
    titles = [str(article.get("title", a)) for a, article in enumerate(data)]
    chosen = fixed_half(titles, split)
    paragraphs: list[tuple[int, str]] = []
    questions: list[tuple[int, dict]] = []
    for a, article in enumerate(data):
        if titles[a] not in chosen:
            continue
        for p in article.get("paragraphs", []):
            paragraphs.append((a, p["context"].strip()))
            questions += [(len(paragraphs) - 1, qa) for qa in p.get("qas", []) if keep(qa)]
    return Squad(titles, paragraphs, questions)


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
