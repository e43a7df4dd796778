"""Evaluation datasets: each loader yields Samples (corpus documents, question, gold answers,
task kind, target length).

Names (``--dataset NAME[:subset]``):
- ``niah`` / ``niah:single`` / ``niah:multi``: needles "The special magic number for <city> is
  <6 digits>." in Paul Graham essays at chosen depths and token lengths; ``multi`` hides
  several needles (other cities) and asks about one of them.
- ``ruler_qa``: an answerable SQuAD question with its gold paragraph hidden among distractor
  paragraphs from other articles, up to a target token length (RULER's QA task).
- ``leval`` / ``leval:FILE``: L-Eval jsonl files (only documents whose ``evaluation`` is exam,
  f1 or rouge; the LLM/human ones repeat others).
- ``jsonl:PATH`` (or a path ending in .jsonl): one object per line,
  ``{"documents": [...] or "context": "...", "question": ..., "answers": [...]}``.

Splits (``NAME[:subset]:dev`` / ``:test``, or ``split=``): every built-in dataset has a fixed
dev/test split, half and half, by what a question is built from, so nothing crosses it:
``ruler_qa`` by SQuAD article (gold and distractor paragraphs come from the split's articles),
``niah`` by essay and by city (the needles' cities), ``leval`` by document. A user's JSONL is
split by document (rows sharing their documents stay together), by ``seed`` and
``dev_fraction``. No split: everything, as before. Tuning reads dev; reported tables read test.

Lengths are measured with the backend's own tokenizer. Randomness comes from one seed, so the
same arguments give the same samples (and the same sample ids) on every run.
"""

from __future__ import annotations

import json
import os
import random
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from orchestra.backends.base import Tokenizer
from orchestra.cache import stable_hash
from orchestra.corpus import Document
from orchestra.errors import InputError

DEFAULT_DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
MULTI_NEEDLES = 3
SEPARATOR = "\n\n"  # how full-context reading joins documents

from orchestra.eval.needles import (  # noqa: E402  (the one needle builder)
    CITIES,
    cut_to_tokens,
    insert_needles,
    magic_number,
    magic_question,
)


SPLITS = ("dev", "test")


def parse_split(spec: str) -> tuple[str, str | None]:
    """``"ruler_qa:dev"`` -> ``("ruler_qa", "dev")``; no split suffix -> ``(spec, None)``."""
    base, sep, last = spec.rpartition(":")
    if sep and last in SPLITS and base:
        return base, last
    return spec, None


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise InputError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")


def _fixed_half(keys: Sequence[str], split: str | None) -> set[str]:
    """The keys in ``split``: keys ranked by a stable hash, the first half dev, the rest test.
    It depends on the keys only (not on the seed), so a split never moves between runs."""
    ranked = sorted(set(keys), key=lambda k: stable_hash("split", k))
    half = (len(ranked) + 1) // 2
    if split is None:
        return set(ranked)
    return set(ranked[:half] if split == "dev" else ranked[half:])


def _seeded_dev(key: str, seed: int, fraction: float) -> bool:
    """Whether ``key`` falls in the dev part (a ``fraction`` of keys) for this seed."""
    return int(stable_hash("split", seed, key), 16) / 16 ** 16 < fraction


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


def default_data_root() -> Path:
    env = os.environ.get("ORCHESTRA_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(f"{what} not found at {path} (set ORCHESTRA_DATA or --data-root to the "
                         "folder holding leval/, needle_haystack/ and ruler/)")
    return path


# -- needle in a haystack ---------------------------------------------------------------------
def _essays(root: Path) -> list[str]:
    folder = _need(root / "needle_haystack" / "PaulGrahamEssays", "the needle-in-a-haystack essays")
    texts = [p.read_text(encoding="utf-8").strip() for p in sorted(folder.glob("*.txt"))]
    texts = [t for t in texts if t]
    if not texts:
        raise InputError(f"{folder}: no essay .txt files")
    return texts


def niah(tokenizer: Tokenizer, lengths: Sequence[int], limit: int, seed: int = 0,
         root: Path | None = None, multi: bool = False,
         depths: Sequence[float] = DEFAULT_DEPTHS, split: str | None = None) -> Dataset:
    """``limit`` samples per length; depths cycle over the samples. ``split``: dev or test
    essays and cities (disjoint halves)."""
    _check_split(split)
    root = root or default_data_root()
    essays = _essays(root)
    keep = _fixed_half(essays, split)
    essays = [e for e in essays if e in keep]
    city_keep = _fixed_half(CITIES, split)
    cities_pool = [c for c in CITIES if c in city_keep]
    name = ("niah:multi" if multi else "niah:single") + (f":{split}" if split else "")
    k = MULTI_NEEDLES if multi else 1
    for d in depths:
        if not 0.0 <= d <= 1.0:
            raise InputError(f"needle depth {d} is outside [0, 1]")
    probe = "The special magic number for Mexico City is 123456. "
    question_tokens = tokenizer.count("What is the special magic number for Mexico City?")
    needed = k * tokenizer.count(probe) + question_tokens + 16
    samples = []
    for length in lengths:
        if length < needed:
            raise InputError(f"length {length} is below the size of the needle task: {name} "
                             f"needs at least {needed} tokens (needles and question)")
        for i in range(limit):
            rng = random.Random(f"{seed}:{name}:{length}:{i}")
            cities = rng.sample(cities_pool, k)
            numbers = [str(rng.randint(100000, 999999)) for _ in cities]
            needles = [magic_number(c, n) for c, n in zip(cities, numbers)]
            target = rng.randrange(k)
            depth = depths[i % len(depths)]
            # The asked needle sits at `depth`; the others are spread evenly around the haystack.
            others = [j for j in range(k) if j != target]
            placed = [(depth, target)] + [((depth + (j + 1) / k) % 1.0, o)
                                          for j, o in enumerate(others)]
            start = rng.randrange(len(essays))
            hay = "\n\n".join(essays[start:] + essays[:start])
            while tokenizer.count(hay[: 8 * length]) < length:  # enough essay text
                hay = hay + "\n\n" + hay
            hay = hay[: 8 * length]
            hay = cut_to_tokens(tokenizer, hay, length - sum(tokenizer.count(" " + n + " ")
                                                             for n in needles))
            text, _ = insert_needles(hay, [(nd, needles[idx]) for nd, idx in placed])
            city = cities[target]
            samples.append(Sample(
                sample_id=f"{name}:{length}:{i}", dataset=name,
                question=magic_question(city),
                documents=[Document(id="haystack", text=text)], answers=[numbers[target]],
                task="niah", length=length,
                meta={"depth": depth, "needles": len(needles), "tokens": tokenizer.count(text)},
            ))
    return Dataset(name, samples)


# -- RULER-style QA ---------------------------------------------------------------------------
def ruler_qa(tokenizer: Tokenizer, lengths: Sequence[int], limit: int, seed: int = 0,
             root: Path | None = None, split: str | None = None) -> Dataset:
    """``limit`` questions per length; each paragraph is one document of the corpus.
    ``split``: questions and distractors from the dev or test half of the SQuAD articles."""
    _check_split(split)
    root = root or default_data_root()
    path = _need(root / "ruler" / "squad.json", "RULER's squad.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not SQuAD 2.0 JSON ({e})") from None
    titles = [str(article.get("title", a)) for a, article in enumerate(data)]
    keep = _fixed_half(titles, split)
    paragraphs: list[tuple[int, str]] = []  # (article index, text)
    questions = []  # (paragraph index, qa)
    for a, article in enumerate(data):
        if titles[a] not in keep:
            continue
        for p in article.get("paragraphs", []):
            paragraphs.append((a, p["context"].strip()))
            for qa in p.get("qas", []):
                if not qa.get("is_impossible") and qa.get("answers"):
                    questions.append((len(paragraphs) - 1, qa))
    rng = random.Random(f"{seed}:ruler_qa")
    rng.shuffle(questions)
    counts: dict[int, int] = {}

    def tokens(p: int) -> int:
        if p not in counts:
            counts[p] = tokenizer.count(paragraphs[p][1])
        return counts[p]

    sep = tokenizer.count(SEPARATOR) or 1
    samples = []
    for length in lengths:
        for i, (gold, qa) in enumerate(questions[:limit]):
            question = qa["question"].strip()
            needed = tokens(gold) + tokenizer.count(question)
            if length < needed:
                raise InputError(f"length {length} is below the size of question {qa['id']}: its "
                                 f"gold paragraph and question need {needed} tokens")
            srng = random.Random(f"{seed}:ruler_qa:{length}:{qa['id']}")
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
            answers = list(dict.fromkeys(a["text"].strip() for a in qa["answers"]))
            samples.append(Sample(
                sample_id=f"ruler_qa:{length}:{qa['id']}",
                dataset="ruler_qa" + (f":{split}" if split else ""),
                question=question, answers=answers, task="qa", length=length,
                documents=[Document(id=f"p{n}", text=paragraphs[j][1])
                           for n, j in enumerate(chosen)],
                meta={"gold_doc": f"p{chosen.index(gold)}", "tokens": total,
                      "documents": len(chosen), "article": titles[paragraphs[gold][0]]},
            ))
    return Dataset("ruler_qa" + (f":{split}" if split else ""), samples)


# -- L-Eval -----------------------------------------------------------------------------------
CLOSED_TASKS = {"coursera": "options", "tpo": "options", "quality": "options",
                "sci_fi": "true_false", "gsm100": "exact", "topic_retrieval_longchat": "exact"}
OPEN_EVALUATIONS = {"f1": "f1", "rouge": "rouge"}


def _leval_files(root: Path) -> dict[str, Path]:
    folder = _need(root / "leval", "the L-Eval data")
    return {p.stem: p for p in sorted(folder.glob("*/*.jsonl"))}


def _read_jsonl(path: Path, problems: list[str]) -> Iterator[tuple[int, dict]]:
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
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                problems.append(f"{path}:{n}: not UTF-8 text (invalid byte at column "
                                f"{e.start + 1}); skipped")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno}); skipped")
                continue
            except (ValueError, RecursionError) as e:  # a 5000-digit number, deep nesting
                problems.append(f"{path}:{n}: unreadable JSON ({type(e).__name__}: "
                                f"{str(e)[:80]}); skipped")
                continue
            if not isinstance(obj, dict):
                problems.append(f"{path}:{n}: expected a JSON object, got "
                                f"{type(obj).__name__}; skipped")
                continue
            yield n, obj


def _bucket(tokens: int, lengths: Sequence[int]) -> int | None:
    """The smallest requested length that holds ``tokens`` (0 when none was requested)."""
    if not lengths:
        return 0
    fits = [L for L in sorted(lengths) if tokens <= L]
    return fits[0] if fits else None


def leval(tokenizer: Tokenizer, lengths: Sequence[int], limit: int, seed: int = 0,
          root: Path | None = None, subset: str | None = None,
          split: str | None = None) -> Dataset:
    """Questions of the chosen file(s), round-robin over files so a limit spans the tasks.
    With ``lengths``, documents longer than the largest are skipped; each sample's length is
    the smallest requested length that holds its document. ``split``: the dev or test half of
    each file's documents (by a hash of the document text, so a document is in one only)."""
    _check_split(split)
    root = root or default_data_root()
    files = _leval_files(root)
    if subset:
        if subset not in files:
            raise InputError(f"unknown L-Eval file {subset!r}; known: {', '.join(files)}")
        files = {subset: files[subset]}
    problems: list[str] = []
    too_long = [0]

    def file_samples(stem: str, path: Path) -> Iterator[Sample]:
        for n, obj in _read_jsonl(path, problems):
            evaluation = obj.get("evaluation")
            if evaluation == "exam":
                task = CLOSED_TASKS.get(stem, "exact")
            elif evaluation in OPEN_EVALUATIONS:
                task = OPEN_EVALUATIONS[evaluation]
            else:
                continue  # LLM / human judged documents repeat f1/rouge ones
            text, qs, outs = obj.get("input"), obj.get("instructions"), obj.get("outputs")
            if split is not None and isinstance(text, str) and \
                    _seeded_dev(text, 0, 0.5) != (split == "dev"):
                continue
            if not isinstance(text, str) or not text.strip() or not isinstance(qs, list) \
                    or not isinstance(outs, list) or len(qs) != len(outs):
                problems.append(f"{path}:{n}: needs a non-empty 'input' and aligned "
                                "'instructions'/'outputs' lists; skipped")
                continue
            n_tokens = tokenizer.count(text)
            length = _bucket(n_tokens, lengths)
            if length is None:
                too_long[0] += len(qs)
                continue
            doc = Document(id=f"{stem}-{n}", text=text)
            for k, (q, a) in enumerate(zip(qs, outs)):
                if not isinstance(q, str) or not q.strip() or not isinstance(a, str):
                    problems.append(f"{path}:{n}: question {k} is empty or its answer is not "
                                    "text; skipped")
                    continue
                yield Sample(
                    sample_id=f"leval:{stem}:{n}:{k}", dataset=f"leval:{stem}", question=q.strip(),
                    documents=[doc], answers=[a], task=task, length=length,
                    meta={"tokens": n_tokens, "file": stem})

    # Round-robin over files, lazily: a small limit reads (and tokenizes) only what it uses.
    streams = [file_samples(stem, path) for stem, path in files.items()]
    samples: list[Sample] = []
    while streams and len(samples) < limit:
        for it in list(streams):
            nxt = next(it, None)
            if nxt is None:
                streams.remove(it)
            elif len(samples) < limit:
                samples.append(nxt)
    if too_long[0]:
        problems.append(f"L-Eval: {too_long[0]} questions skipped: their documents exceed the "
                        f"largest length asked for ({max(lengths)} tokens)")
    name = f"leval:{subset}" if subset else "leval"
    return Dataset(name + (f":{split}" if split else ""), samples, problems)


# -- a user's JSONL ---------------------------------------------------------------------------
def user_jsonl(path: Path, tokenizer: Tokenizer, lengths: Sequence[int], limit: int,
               seed: int = 0, split: str | None = None, dev_fraction: float = 0.5) -> Dataset:
    """``split``: rows whose documents hash (with ``seed``) into the dev ``dev_fraction`` or the
    rest (test); rows sharing their documents stay on one side."""
    _check_split(split)
    if not 0 < dev_fraction < 1:
        raise InputError(f"the dev fraction must be between 0 and 1 (exclusive), got "
                         f"{dev_fraction}")
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such dataset file")
    problems: list[str] = []
    samples: list[Sample] = []
    task_names = ("qa", "niah", "options", "true_false", "f1", "rouge", "exact")
    for n, obj in _read_jsonl(path, problems):
        where = f"{path}:{n}"
        docs = obj.get("documents", obj.get("context"))
        if isinstance(docs, str):
            docs = [docs]
        question, answers = obj.get("question"), obj.get("answers", obj.get("answer"))
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(docs, list) or not docs or not all(
                isinstance(d, str) and d.strip() for d in docs):
            problems.append(f"{where}: 'documents' (a list of texts) or 'context' (a text) is "
                            "missing or empty; skipped")
            continue
        if not isinstance(question, str) or not question.strip():
            problems.append(f"{where}: 'question' is missing or empty; skipped")
            continue
        if not isinstance(answers, list) or not answers or not all(
                isinstance(a, str) for a in answers):
            problems.append(f"{where}: 'answers' must be a non-empty list of texts; skipped")
            continue
        task = obj.get("task", "qa")
        if task not in task_names:
            problems.append(f"{where}: unknown task {task!r} (known: {', '.join(task_names)}); "
                            "skipped")
            continue
        if split is not None and _seeded_dev(stable_hash(docs), seed, dev_fraction) != (
                split == "dev"):
            continue
        n_tokens = sum(tokenizer.count(d) for d in docs)
        length = _bucket(n_tokens, lengths)
        if length is None:
            problems.append(f"{where}: its documents have {n_tokens} tokens, more than the largest "
                            f"length asked for ({max(lengths)}); skipped")
            continue
        sid = str(obj.get("id", n))
        samples.append(Sample(
            sample_id=f"jsonl:{sid}", dataset=path.stem, question=question.strip(),
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
    return Dataset(path.stem + (f":{split}" if split else ""), samples[:limit], problems)


# -- by name ----------------------------------------------------------------------------------
NAMES = ("niah", "niah:single", "niah:multi", "ruler_qa", "leval", "leval:FILE", "jsonl:PATH",
         "(any of these):dev|test")


def check_spec(spec: str) -> None:
    """Refuse an unknown dataset name early (before a model is loaded)."""
    spec, _ = parse_split(spec)
    name, _, subset = spec.partition(":")
    if name in ("niah", "ruler_qa", "leval", "jsonl") or spec.endswith(".jsonl"):
        if name == "niah":
            _niah_mode(subset)
        if name == "jsonl" or (spec.endswith(".jsonl") and name not in ("leval",)):
            path = Path(subset if name == "jsonl" else spec)
            if path.exists() and not path.is_file():  # a folder, a FIFO (reading would block)
                raise InputError(f"{path}: not a regular file; give a .jsonl file")
        return
    raise InputError(f"unknown dataset {spec!r}; known: {', '.join(NAMES)}")


def load_dataset(spec: str, tokenizer: Tokenizer, lengths: Sequence[int] = (), limit: int = 10,
                 seed: int = 0, root: Path | None = None,
                 depths: Sequence[float] = DEFAULT_DEPTHS, split: str | None = None,
                 dev_fraction: float = 0.5) -> Dataset:
    """A dataset by ``NAME[:subset][:dev|:test]`` (see the module docstring); ``split`` says
    the same as the suffix (giving both, they must agree)."""
    spec, named = parse_split(spec)
    _check_split(split)
    if named and split and named != split:
        raise InputError(f"dataset {spec}:{named} and split {split!r} disagree; give one split")
    split = named or split
    if limit < 1:
        raise InputError(f"limit must be at least 1, got {limit}")
    for L in lengths:
        if L < 1:
            raise InputError(f"lengths must be positive token counts, got {L}")
    check_spec(spec)
    name, _, subset = spec.partition(":")
    synthetic: dict[str, Callable[[], Dataset]] = {
        "niah": lambda: niah(tokenizer, lengths, limit, seed, root,
                             multi=_niah_mode(subset), depths=depths, split=split),
        "ruler_qa": lambda: ruler_qa(tokenizer, lengths, limit, seed, root, split=split),
    }
    if name in synthetic:
        if not lengths:
            raise InputError(f"dataset {name!r} is built to a target length: give --lengths "
                             "(e.g. 4000,16000)")
        if name == "ruler_qa" and subset:
            raise InputError(f"dataset 'ruler_qa' has no subsets (got {subset!r})")
        return synthetic[name]()
    if name == "leval":
        return leval(tokenizer, lengths, limit, seed, root, subset or None, split=split)
    if name == "jsonl" or spec.endswith(".jsonl"):
        return user_jsonl(Path(subset if name == "jsonl" else spec), tokenizer, lengths,
                          limit, seed, split=split, dev_fraction=dev_fraction)
    raise InputError(f"unknown dataset {spec!r}; known: {', '.join(NAMES)}")


def _niah_mode(subset: str) -> bool:
    if subset in ("", "single"):
        return False
    if subset == "multi":
        return True
    raise InputError(f"unknown niah subset {subset!r}; known: single, multi")


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
