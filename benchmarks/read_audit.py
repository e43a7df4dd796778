"""Read audit (issue 19): does orchestra's read lose answers a plain transformers read keeps?

The plain path is what a user writes in thirty lines: ``AutoTokenizer``/``AutoModelForCausalLM``
on the same weights (the embedded model's converted folder), the prompt as the one user turn
through the model's own chat template (``apply_chat_template(add_generation_prompt=True)``),
greedy ``generate`` with 32 new tokens, the new tokens decoded with special tokens skipped.
The orchestra path is benchmarks/reader_ceiling.py's ``gold_only`` (the pipeline's rag strategy
builds the request; orchestra's transformers backend reads it).

On the same ruler_qa questions, with only the gold paragraph as the context, it reads

- ``orchestra``: reader_ceiling's gold_only (the rag strategy's template, system prompt and
  passage format: orchestra's layout);
- ``plain``: the very prompt text of ``orchestra``, read the plain way; every reply and every
  input token id must be the same (the audit: a difference is a defect);
- ``plain_documents``: RULER's layout, the paragraph as a ``Document 1:`` block, read the
  plain way;

and prints contains (orchestra/eval/metrics.py) per layout, and how many replies and input ids
differ between the two paths.

    OMP_NUM_THREADS=1 python benchmarks/read_audit.py --dataset ruler_qa:dev --limit 40

``--questions`` reads other SQuAD 2.0 dev questions (squad.json, all 35 articles) the same
three ways, to tell how much the choice of questions moves the ceiling: ``squad-openings`` is
issue 19's script's choice (one answerable question per paragraph, the first of each, taking
paragraph 0 of every article, then paragraph 1, ...), ``squad-first`` the first answerable
question of paragraphs drawn at random, ``squad-random`` answerable questions drawn at random.

    OMP_NUM_THREADS=1 python benchmarks/read_audit.py --questions squad-openings --limit 60
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class PlainReader:
    """The plain transformers read: one user turn, the model's chat template, greedy."""

    def __init__(self, model_dir: str, max_tokens: int = 32):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
        self.model.eval()
        self.max_tokens = max_tokens

    def input_ids(self, prompt: str) -> list[int]:
        out = self.tok.apply_chat_template([{"role": "user", "content": prompt}],
                                           add_generation_prompt=True, tokenize=True)
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    def read(self, prompt: str) -> tuple[str, list[int]]:
        import torch

        ids = self.input_ids(prompt)
        with torch.inference_mode():
            out = self.model.generate(torch.tensor([ids]), max_new_tokens=self.max_tokens,
                                      do_sample=False)
        return self.tok.decode(out[0, len(ids):], skip_special_tokens=True).strip(), ids


def orchestra_ids(backend, messages) -> list[int]:
    """The token ids orchestra's transformers backend gives the model for ``messages``."""
    return backend.hf_tokenizer(backend.chat_text(messages), add_special_tokens=False)[
        "input_ids"]


def documents_prompt(template: str, gold: str, question: str) -> str:
    return template.format(context=f"Document 1:\n{gold}", question=question)


QUESTION_SETS = ("dataset", "squad-openings", "squad-first", "squad-random")


def _answerable(paragraph: dict) -> list[dict]:
    from orchestra.eval.datasets.squad import answerable

    return [q for q in paragraph.get("qas", []) if answerable(q)]


def squad_picks(how: str, n: int, seed: int) -> list[tuple[str, dict]]:
    """(gold paragraph, question) pairs of SQuAD 2.0 dev chosen the ``how`` way."""
    import random

    from orchestra.eval.datasets.squad import read_squad

    articles = [a.get("paragraphs", []) for a in read_squad(None)]
    if how == "squad-openings":
        picks, k = [], 0
        while len(picks) < n and any(k < len(ps) for ps in articles):
            picks += [(ps[k]["context"], _answerable(ps[k])[0]) for ps in articles
                      if k < len(ps) and _answerable(ps[k])]
            k += 1
        return picks[:n]
    per = [(p["context"], q) for ps in articles for p in ps
           for q in (_answerable(p)[:1] if how == "squad-first" else _answerable(p))]
    random.Random(f"{seed}:{how}").shuffle(per)
    return per[:n]


def squad_samples(how: str, n: int, seed: int) -> list:
    from orchestra.corpus import Document
    from orchestra.eval.datasets.base import Sample
    from orchestra.eval.datasets.squad import gold_answers

    return [Sample(sample_id=q["id"], dataset=how, question=q["question"].strip(),
                   documents=[Document(id="p0", text=ctx.strip())],
                   answers=gold_answers(q),
                   task="qa", length=0, meta={"gold_doc": "p0"})
            for ctx, q in squad_picks(how, n, seed)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipeline", default=str(Path(__file__).resolve().parent.parent /
                                              "examples" / "pipelines" / "embedded.yaml"))
    ap.add_argument("--dataset", default="ruler_qa:dev")
    ap.add_argument("--length", type=int, default=2000)
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--questions", choices=QUESTION_SETS, default="dataset",
                    help="the --dataset's questions, or SQuAD dev questions chosen another way")
    args = ap.parse_args(argv)

    from orchestra.errors import OrchestraError
    from orchestra.eval.datasets import load_dataset
    from orchestra.pipeline import Pipeline

    if not args.dataset.startswith("ruler_qa"):
        print("read_audit: error: --dataset must be ruler_qa, ruler_qa:dev or ruler_qa:test "
              "(only they name the gold paragraph)", file=sys.stderr)
        return 2
    try:
        pipe = Pipeline.from_yaml(args.pipeline)
        rag = pipe.strategies["rag"]
        samples = (load_dataset(args.dataset, pipe.backend.tokenizer, [args.length], args.limit,
                                args.seed).samples if args.questions == "dataset"
                   else squad_samples(args.questions, args.limit, args.seed))
    except (OrchestraError, KeyError) as e:
        print(f"read_audit: error: {e}", file=sys.stderr)
        return 2
    rag.max_tokens = args.max_tokens
    print(report(audit(rag, samples, args.max_tokens), args, rag))
    return 0


def audit(rag, samples, max_tokens: int) -> list[dict]:
    """Each sample's gold paragraph read orchestra's way and the two plain ways."""
    from tqdm import tqdm

    from reader_ceiling import read as ceiling_read
    from orchestra.corpus import Corpus

    backend = rag.backend
    plain = PlainReader(str(backend.model_path), max_tokens)
    rows = []
    for s in tqdm(samples, desc="questions", unit="q"):
        corpus = Corpus(s.documents, backend.tokenizer)
        gold = corpus.document(s.meta["gold_doc"]).text.strip()
        req = rag.reader_request(gold, s.question)
        prompt = req.messages[-1].content
        t0 = time.perf_counter()
        ours, _ = ceiling_read(rag, "gold_only", s, corpus)
        t1 = time.perf_counter()
        theirs, their_ids = plain.read(prompt) if len(req.messages) == 1 else (None, None)
        t2 = time.perf_counter()
        docs, _ = plain.read(documents_prompt(rag.prompts["reader"], gold, s.question))
        rows.append({"ours": ours, "plain": theirs, "docs": docs, "answers": s.answers,
                     "same_ids": their_ids == orchestra_ids(backend, req.messages),
                     "secs": (t1 - t0, t2 - t1)})
    return rows


def report(rows: list[dict], args, rag) -> str:
    from orchestra.eval.metrics import contains

    n = len(rows)
    score = {k: sum(contains(r[k], r["answers"]) > 0 for r in rows if r[k] is not None)
             for k in ("ours", "plain", "docs")}
    differ = sum(r["plain"] != r["ours"] for r in rows)
    ids_differ = sum(not r["same_ids"] for r in rows)
    what = args.dataset if args.questions == "dataset" else f"SQuAD 2.0 dev, {args.questions}"
    lines = [f"\n{what}, gold paragraph only, N={n}, {args.max_tokens}-token replies, "
             f"reader_template={rag.reader_template}, reader_system={rag.reader_system!r}, "
             f"passage_format={rag.passage_format}, "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
             "| path | layout | contains | right |", "|---|---|---|---|",
             f"| orchestra (reader_ceiling gold_only) | orchestra | {score['ours'] / n:.2f} | "
             f"{score['ours']}/{n} |",
             f"| plain transformers | orchestra | {score['plain'] / n:.2f} | "
             f"{score['plain']}/{n} |",
             f"| plain transformers | Document i: | {score['docs'] / n:.2f} | "
             f"{score['docs']}/{n} |",
             f"\nreplies differing between the two paths (same prompt text): {differ} of {n}; "
             f"input token ids differing: {ids_differ} of {n}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
