"""``leval`` / ``leval:FILE``: L-Eval jsonl files (only documents whose ``evaluation`` is exam,
f1 or rouge; the LLM/human ones repeat others). Split by document."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from orchestra.backends.base import Tokenizer
from orchestra.corpus import Document
from orchestra.errors import InputError
from orchestra.eval.datasets.base import (
    Dataset, Sample, bucket, check_split, default_data_root, need, read_jsonl, seeded_dev,
    split_suffix,
)
from orchestra.eval.datasets.registry import Family, Request, register

CLOSED_TASKS = {"coursera": "options", "tpo": "options", "quality": "options",
                "sci_fi": "true_false", "gsm100": "exact", "topic_retrieval_longchat": "exact"}
OPEN_EVALUATIONS = {"f1": "f1", "rouge": "rouge"}


def leval_files(root: Path) -> dict[str, Path]:
    folder = need(root / "leval", "the L-Eval data")
    return {p.stem: p for p in sorted(folder.glob("*/*.jsonl"))}


class _FileReader:
    """One L-Eval file's samples, lazily; problems and too-long questions are counted on the
    loader's shared lists."""

    def __init__(self, tokenizer: Tokenizer, lengths: Sequence[int], split: str | None,
                 problems: list[str]):
        self.tokenizer, self.lengths, self.split = tokenizer, lengths, split
        self.problems = problems
        self.too_long = 0

    def samples(self, stem: str, path: Path) -> Iterator[Sample]:
        for n, obj in read_jsonl(path, self.problems):
            evaluation = obj.get("evaluation")
            if evaluation == "exam":
                task = CLOSED_TASKS.get(stem, "exact")
            elif evaluation in OPEN_EVALUATIONS:
                task = OPEN_EVALUATIONS[evaluation]
            else:
                continue  # LLM / human judged documents repeat f1/rouge ones
            yield from self._document(stem, path, n, obj, task)

    def _document(self, stem: str, path: Path, n: int, obj: dict, task: str) -> Iterator[Sample]:
        text, qs, outs = obj.get("input"), obj.get("instructions"), obj.get("outputs")
        if self.split is not None and isinstance(text, str) and \
                seeded_dev(text, 0, 0.5) != (self.split == "dev"):
            return
        if not isinstance(text, str) or not text.strip() or not isinstance(qs, list) \
                or not isinstance(outs, list) or len(qs) != len(outs):
            self.problems.append(f"{path}:{n}: needs a non-empty 'input' and aligned "
                                 "'instructions'/'outputs' lists; skipped")
            return
        n_tokens = self.tokenizer.count(text)
        length = bucket(n_tokens, self.lengths)
        if length is None:
            self.too_long += len(qs)
            return
        doc = Document(id=f"{stem}-{n}", text=text)
        for k, (q, a) in enumerate(zip(qs, outs)):
            if not isinstance(q, str) or not q.strip() or not isinstance(a, str):
                self.problems.append(f"{path}:{n}: question {k} is empty or its answer is not "
                                     "text; skipped")
                continue
            yield Sample(
                sample_id=f"leval:{stem}:{n}:{k}", dataset=f"leval:{stem}", question=q.strip(),
                documents=[doc], answers=[a], task=task, length=length,
                meta={"tokens": n_tokens, "file": stem})


def leval(tokenizer: Tokenizer, lengths: Sequence[int], limit: int, seed: int = 0,
          root: Path | None = None, subset: str | None = None,
          split: str | None = None) -> Dataset:
    """Questions of the chosen file(s), round-robin over files so a limit spans the tasks.
    With ``lengths``, documents longer than the largest are skipped; each sample's length is
    the smallest requested length that holds its document. ``split``: the dev or test half of
    each file's documents (by a hash of the document text, so a document is in one only)."""
    check_split(split)
    files = leval_files(root or default_data_root())
    if subset:
        if subset not in files:
            raise InputError(f"unknown L-Eval file {subset!r}; known: {', '.join(files)}")
        files = {subset: files[subset]}
    problems: list[str] = []
    reader = _FileReader(tokenizer, lengths, split, problems)
    # Round-robin over files, lazily: a small limit reads (and tokenizes) only what it uses.
    streams = [reader.samples(stem, path) for stem, path in files.items()]
    samples: list[Sample] = []
    while streams and len(samples) < limit:
        for it in list(streams):
            nxt = next(it, None)
            if nxt is None:
                streams.remove(it)
            elif len(samples) < limit:
                samples.append(nxt)
    if reader.too_long:
        problems.append(f"L-Eval: {reader.too_long} questions skipped: their documents exceed "
                        f"the largest length asked for ({max(lengths)} tokens)")
    name = f"leval:{subset}" if subset else "leval"
    return Dataset(name + split_suffix(split), samples, problems)


def load(r: Request) -> Dataset:
    return leval(r.tokenizer, r.lengths, r.limit, r.seed, r.root, r.subset or None,
                 split=r.split)


FAMILY = register(Family("leval", load, names=("leval", "leval:FILE")))
