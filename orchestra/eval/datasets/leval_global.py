"""Global questions: L-Eval tasks whose answer depends on the whole document, not one passage.

Summaries (news, government reports, patents, TV episodes, meetings, reviews; scored by
ROUGE-L), LongChat's topic retrieval ("What is the first topic we discussed?"; exact match) and
the exam files with options (QuALITY stories, TOEFL lectures, Coursera courses; option
accuracy). A requested length L takes the documents of more than L/2 and at most L tokens
(so 4000 reads documents well inside the 8k window and 16000 documents of 1-2 windows),
``limit`` questions per length, round-robin over the files so a small limit spans the tasks.

SOURCE: ../shared/data/leval (L-Eval, OpenLMLab/LEval at cd34b05; see its SOURCE.md), only the
documents marked exam, f1 or rouge; split dev/test by document, as ``leval`` is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from orchestra.backends.base import Tokenizer
from orchestra.eval.datasets.base import Dataset, default_data_root, split_suffix
from orchestra.eval.datasets.leval import leval_files, leval
from orchestra.eval.datasets.registry import Family, Request, register

# Interleaved by kind, so a small limit holds options, summaries and topics alike.
GLOBAL_FILES = ("quality", "news_summ", "topic_retrieval_longchat", "tpo", "gov_report_summ",
                "coursera", "meeting_summ", "patent_summ", "tv_show_summ", "review_summ")


def global_questions(tokenizer: Tokenizer, lengths: Sequence[int], limit: int, seed: int = 0,
                     root: Path | None = None, split: str | None = None) -> Dataset:
    name = "leval_global" + split_suffix(split)
    files = leval_files(root or default_data_root())
    per_file = [leval(tokenizer, lengths, 10 ** 6, seed, root, subset=f, split=split)
                for f in GLOBAL_FILES if f in files]
    samples, problems = [], []
    for length in sorted(set(lengths)) or [0]:
        queues = [[s for s in ds.samples if s.length == length
                   and s.meta["tokens"] > length // 2] for ds in per_file]
        taken = 0
        while taken < limit and any(queues):
            for q in queues:
                if q and taken < limit:
                    s = q.pop(0)
                    s.dataset = name
                    samples.append(s)
                    taken += 1
        if taken < limit:
            problems.append(f"leval_global: {taken} questions at length {length} (asked "
                            f"{limit}): no more documents of that size in the {split or 'whole'} "
                            "split")
    return Dataset(name, samples, problems)


def load(r: Request) -> Dataset:
    return global_questions(r.tokenizer, r.lengths, r.limit, r.seed, r.root, split=r.split)


FAMILY = register(Family("leval_global", load, names=("leval_global",), needs_lengths=True))
