"""RULER-style QA cases for the retrieval tests and benchmarks: a SQuAD question whose gold
paragraph is hidden among paragraphs of other articles, up to a target length in tokens.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orchestra.eval.datasets.squad import answerable


@dataclass
class HaystackCase:
    question: str
    answers: list[str]
    text: str  # the haystack: paragraphs joined by blank lines
    gold_start: int  # character span of the gold paragraph in ``text``
    gold_end: int
    gold_paragraph: str


def load_squad(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text())["data"]


def squad_cases(path: Path, n: int, target_tokens: int, count: Callable[[str], int],
                seed: int = 0, per_haystack: int = 1) -> list[HaystackCase]:
    """``n`` answerable questions hidden in haystacks of about ``target_tokens`` tokens.

    With ``per_haystack`` > 1, that many questions (from different articles) share one haystack:
    each gold paragraph is still surrounded only by paragraphs of other articles, and the
    haystacks cost ``per_haystack`` times less to index.
    """
    articles = load_squad(path)
    rng = random.Random(seed)
    by_article: dict[int, list] = {}
    for ai, art in enumerate(articles):
        for p in art["paragraphs"]:
            for q in p["qas"]:
                if answerable(q):
                    by_article.setdefault(ai, []).append((p, q))
    # Per-paragraph token counts make haystack sizes exact without re-tokenising them whole.
    sizes: dict[str, int] = {}
    cases: list[HaystackCase] = []
    while len(cases) < n:
        k = min(per_haystack, n - len(cases))
        chosen = rng.sample(sorted(by_article), k)
        golds = [(rng.choice(by_article[ai])) for ai in chosen]
        others = [p["context"] for aj, art in enumerate(articles) if aj not in chosen
                  for p in art["paragraphs"]]
        rng.shuffle(others)
        total = sum(sizes.setdefault(p["context"], count(p["context"])) for p, _ in golds)
        paras = []
        for p in others:
            if total >= target_tokens:
                break
            total += sizes.setdefault(p, count(p)) + 1
            paras.append(p)
        positions = sorted(rng.sample(range(len(paras) + k), k))
        for pos, (p, _) in zip(positions, golds):
            paras.insert(pos, p["context"])
        text = "\n\n".join(paras)
        starts = [0]
        for p in paras:
            starts.append(starts[-1] + len(p) + 2)
        for pos, (p, qa) in zip(positions, golds):
            gold = p["context"]
            assert text[starts[pos]:starts[pos] + len(gold)] == gold
            cases.append(HaystackCase(qa["question"], sorted({a["text"] for a in qa["answers"]}),
                                      text, starts[pos], starts[pos] + len(gold), gold))
    return cases


def hit(case: HaystackCase, start: int, end: int, chunk_text: str) -> bool:
    """Whether a chunk covers the gold paragraph and holds an answer (not a lookalike elsewhere)."""
    return (start < case.gold_end and end > case.gold_start
            and any(a.lower() in chunk_text.lower() for a in case.answers))


def needle_cases(essays_dir: Path, n: int, target_tokens: int, count: Callable[[str], int],
                 seed: int = 0) -> list[HaystackCase]:
    """Needle-in-a-haystack: a 6-digit number for a city, hidden in Paul Graham's essays."""
    from orchestra.eval.needles import CITIES, insert_needles, magic_number, magic_question

    rng = random.Random(seed)
    texts = [p.read_text() for p in sorted(Path(essays_dir).glob("*.txt"))]
    cases = []
    for i in range(n):
        rng.shuffle(texts)
        paras, total = [], 0
        for t in texts:
            for p in t.split("\n\n"):
                if total >= target_tokens:
                    break
                if p.strip():
                    paras.append(p.strip())
                    total += count(p) + 1
        city, number = CITIES[i % len(CITIES)], str(rng.randrange(100_000, 1_000_000))
        needle = magic_number(city, number)
        # depths spread over the haystacks
        text, [start] = insert_needles("\n\n".join(paras), [((i + 0.5) / n, needle)])
        cases.append(HaystackCase(magic_question(city), [number], text, start,
                                  start + len(needle), needle))
    return cases
