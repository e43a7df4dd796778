"""``jsonl:PATH`` (or a path ending in .jsonl): a user's file, one object per line,
``{"documents": [...] or "context": "...", "question": ..., "answers": [...]}``. Split by
document (rows sharing their documents stay together), by ``seed`` and ``dev_fraction``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from orchestra.backends.base import Tokenizer
from orchestra.cache import stable_hash
from orchestra.corpus import Document
from orchestra.errors import InputError
from orchestra.eval.datasets.base import (
    Dataset, Sample, bucket, check_split, read_jsonl, seeded_dev, split_suffix,
)
from orchestra.eval.datasets.registry import Family, Request, register

TASK_NAMES = ("qa", "niah", "options", "true_false", "f1", "rouge", "exact")


def _row(where: str, obj: dict) -> tuple[list[str], str, list[str], str] | str:
    """(documents, question, answers, task) of a row, or the line saying why it is skipped."""
    docs = obj.get("documents", obj.get("context"))
    if isinstance(docs, str):
        docs = [docs]
    question, answers = obj.get("question"), obj.get("answers", obj.get("answer"))
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(docs, list) or not docs or not all(
            isinstance(d, str) and d.strip() for d in docs):
        return (f"{where}: 'documents' (a list of texts) or 'context' (a text) is "
                "missing or empty; skipped")
    if not isinstance(question, str) or not question.strip():
        return f"{where}: 'question' is missing or empty; skipped"
    if not isinstance(answers, list) or not answers or not all(
            isinstance(a, str) for a in answers):
        return f"{where}: 'answers' must be a non-empty list of texts; skipped"
    task = obj.get("task", "qa")
    if task not in TASK_NAMES:
        return f"{where}: unknown task {task!r} (known: {', '.join(TASK_NAMES)}); skipped"
    return docs, question, answers, task


def user_jsonl(path: Path, tokenizer: Tokenizer, lengths: Sequence[int], limit: int,
               seed: int = 0, split: str | None = None, dev_fraction: float = 0.5) -> Dataset:
    """``split``: rows whose documents hash (with ``seed``) into the dev ``dev_fraction`` or the
    rest (test); rows sharing their documents stay on one side."""
    check_split(split)
    if not 0 < dev_fraction < 1:
        raise InputError(f"the dev fraction must be between 0 and 1 (exclusive), got "
                         f"{dev_fraction}")
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such dataset file")
    problems: list[str] = []
    samples: list[Sample] = []
    for n, obj in read_jsonl(path, problems):
        where = f"{path}:{n}"
        row = _row(where, obj)
        if isinstance(row, str):
            problems.append(row)
            continue
        docs, question, answers, task = row
        if split is not None and seeded_dev(stable_hash(docs), seed, dev_fraction) != (
                split == "dev"):
            continue
        n_tokens = sum(tokenizer.count(d) for d in docs)
        length = bucket(n_tokens, lengths)
        if length is None:
            problems.append(f"{where}: its documents have {n_tokens} tokens, more than the largest "
                            f"length asked for ({max(lengths)}); skipped")
            continue
        samples.append(Sample(
            sample_id=f"jsonl:{obj.get('id', n)}", dataset=path.stem, question=question.strip(),
            documents=[Document(id=f"doc{i}", text=d) for i, d in enumerate(docs)],
            answers=answers, task=task, length=length, meta={"tokens": n_tokens, "line": n}))
    if not samples:
        where = f" in its {split} split (dev fraction {dev_fraction}, seed {seed})" if split else ""
        raise InputError(f"{path}: no usable sample{where}" +
                         (f" ({problems[0]})" if problems else ""))
    ids = [s.sample_id for s in samples]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise InputError(f"{path}: duplicate sample ids: {', '.join(dup)}")
    return Dataset(path.stem + split_suffix(split), samples[:limit], problems)


def _check(subset: str) -> None:
    path = Path(subset)
    if not path.exists():  # named before a model loads (eval and tune check first)
        raise InputError(f"{path}: no such dataset file")
    if not path.is_file():  # a folder, a FIFO (reading would block)
        raise InputError(f"{path}: not a regular file; give a .jsonl file")


def load(r: Request) -> Dataset:
    return user_jsonl(Path(r.subset), r.tokenizer, r.lengths, r.limit, r.seed, split=r.split,
                      dev_fraction=r.dev_fraction)


FAMILY = register(Family("jsonl", load, names=("jsonl:PATH",), check=_check, suffix=".jsonl"))
