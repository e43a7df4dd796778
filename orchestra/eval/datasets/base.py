"""What every dataset family shares: the Sample and Dataset records, the fixed dev/test
splits, the one JSONL line reader and the length buckets."""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from orchestra.cache import stable_hash
from orchestra.corpus import Document
from orchestra.errors import InputError

SPLITS = ("dev", "test")
SEPARATOR = "\n\n"  # how full-context reading joins documents


@dataclass
class Sample:
    sample_id: str
    dataset: str
    question: str
    documents: list[Document]
    answers: list[str]
    task: str  # a key of metrics.TASK_METRICS
    length: int  # target tokens (0: the documents as they are)
    meta: dict = field(default_factory=dict)


@dataclass
class Dataset:
    name: str
    samples: list[Sample]
    problems: list[str] = field(default_factory=list)  # skipped input, one line each


def parse_split(spec: str) -> tuple[str, str | None]:
    """``"ruler_qa:dev"`` -> ``("ruler_qa", "dev")``; no split suffix -> ``(spec, None)``."""
    base, sep, last = spec.rpartition(":")
    if sep and last in SPLITS and base:
        return base, last
    return spec, None


def check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise InputError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")


def split_suffix(split: str | None) -> str:
    """``":dev"`` / ``":test"`` for a dataset's name, or nothing without a split."""
    return f":{split}" if split else ""


def fixed_half(keys: Sequence[str], split: str | None) -> set[str]:
    """The keys in ``split``: keys ranked by a stable hash, the first half dev, the rest test.
    It depends on the keys only (not on the seed), so a split never moves between runs."""
    ranked = sorted(set(keys), key=lambda k: stable_hash("split", k))
    half = (len(ranked) + 1) // 2
    if split is None:
        return set(ranked)
    return set(ranked[:half] if split == "dev" else ranked[half:])


def seeded_dev(key: str, seed: int, fraction: float) -> bool:
    """Whether ``key`` falls in the dev part (a ``fraction`` of keys) for this seed."""
    return int(stable_hash("split", seed, key), 16) / 16 ** 16 < fraction


def default_data_root() -> Path:
    env = os.environ.get("ORCHESTRA_DATA")
    if env:
        return Path(env)
    # orchestra/eval/datasets/base.py -> the checkout's parent holds shared/data
    return Path(__file__).resolve().parents[4] / "shared" / "data"


def need(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(f"{what} not found at {path} (set ORCHESTRA_DATA or --data-root to the "
                         "folder holding leval/, needle_haystack/ and ruler/)")
    return path


def read_essays(root: Path) -> list[str]:
    """The Paul Graham essays the needle datasets hide needles in (niah, needle_tasks,
    aggregation)."""
    folder = need(root / "needle_haystack" / "PaulGrahamEssays", "the needle-in-a-haystack essays")
    texts = [p.read_text(encoding="utf-8").strip() for p in sorted(folder.glob("*.txt"))]
    texts = [t for t in texts if t]
    if not texts:
        raise InputError(f"{folder}: no essay .txt files")
    return texts


def read_jsonl(path: Path, problems: list[str]) -> Iterator[tuple[int, dict]]:
    """(line number, object) per good line; a malformed line (bad JSON, not UTF-8, nested too
    deeply for the parser) is reported and skipped. Only regular files are read (a FIFO would
    block)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise InputError(f"{path}: not a regular file; give a .jsonl file")
        f = path.open("rb")
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror})") from None
    with f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            obj = _parse_line(path, n, raw, problems)
            if obj is not None:
                yield n, obj


def _parse_line(path: Path, n: int, raw: bytes, problems: list[str]) -> dict | None:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(f"{path}:{n}: not UTF-8 text (invalid byte at column "
                        f"{e.start + 1}); skipped")
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        problems.append(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno}); skipped")
        return None
    except (ValueError, RecursionError) as e:  # a 5000-digit number, deep nesting
        problems.append(f"{path}:{n}: unreadable JSON ({type(e).__name__}: "
                        f"{str(e)[:80]}); skipped")
        return None
    if not isinstance(obj, dict):
        problems.append(f"{path}:{n}: expected a JSON object, got "
                        f"{type(obj).__name__}; skipped")
        return None
    return obj


def bucket(tokens: int, lengths: Sequence[int]) -> int | None:
    """The smallest requested length that holds ``tokens`` (0 when none was requested)."""
    if not lengths:
        return 0
    fits = [L for L in sorted(lengths) if tokens <= L]
    return fits[0] if fits else None


def parse_lengths(text: str | None) -> list[int]:
    """"4000,16k" -> [4000, 16000]."""
    if not text:
        return []
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        m = re.fullmatch(r"(\d+)(k?)", part)
        if not m:
            raise InputError(f"--lengths: {part!r} is not a token count (like 4000 or 16k)")
        out.append(int(m.group(1)) * (1000 if m.group(2) else 1))
    return out
