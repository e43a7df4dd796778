"""How well does the reader read, whatever is retrieved? Reading variants on the same questions.

Issue 12 asks rag to reach 0.46 "contains" on RULER-QA. This script separates what retrieval
and placement can still change from what the reader itself can do: every variant reads the
same ruler_qa questions (a split, so dev can choose and test can report) with the pipeline's
rag strategy and its reader template, and differs in one thing only.

- ``rag``: the strategy as configured (the SmolLM2 profile by default).
- ``gold_only``: the reader is given only the gold SQuAD paragraph (no retrieval, no
  distractors): a ceiling for anything retrieval, chunking or ordering can do.
- ``top1``: the retriever's first chunk alone.
- ``answer_prefix``: the assistant's turn opens with "Answer:" (RULER's answer prefix).
- ``explicit_decline``: the reader is told it may reply "unanswerable" (Self-Route's
  explicit first read).

    OMP_NUM_THREADS=1 python benchmarks/reader_ceiling.py --dataset ruler_qa:dev --lengths 4000 \\
        --limit 40 --max-tokens 32

Prints one table: variant -> contains, prompt tokens, seconds per question; and per variant
how many questions it gets right that ``rag`` gets wrong and the reverse.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = ("rag", "gold_only", "top1", "answer_prefix", "explicit_decline")


def read(rag, variant: str, sample, corpus) -> tuple[str, int]:
    """The reply and its prompt tokens for one variant."""
    from orchestra.prompts import DECLINE_TEMPLATES

    backend = rag.backend
    if variant == "rag":
        ans = rag.answer(sample.question, corpus)
        return ans.text, ans.cost.prompt_tokens
    if variant == "gold_only":
        gold = corpus.document(sample.meta["gold_doc"])
        req = rag.reader_request(gold.text.strip(), sample.question)
    elif variant == "top1":
        [best] = rag.retriever.retrieve(sample.question, 1)
        req = rag.reader_request(best.chunk.text.strip(), sample.question)
    else:
        chunks = [c.chunk for c in rag.retrieve(sample.question, corpus)]
        context = rag.format_context(chunks)
        if variant == "explicit_decline":
            template = DECLINE_TEMPLATES[rag.reader_template]
            req = rag.reader_request(context, sample.question)
            req.messages[-1].content = template.format(context=context,
                                                       question=sample.question)
        else:  # answer_prefix: the chat template's open assistant turn, then "Answer:"
            req = rag.reader_request(context, sample.question)
            return _prefixed(backend, req, "Answer:")
    [res] = backend.generate([req])
    return res.text, res.prompt_tokens


def _prefixed(backend, req, prefix: str) -> tuple[str, int]:
    """Generate after ``prefix`` written into the assistant's turn (transformers backend)."""
    import torch

    tok = backend.hf_tokenizer
    text = backend.chat_text(req.messages) + prefix
    enc = tok(text, return_tensors="pt", add_special_tokens=False).to(backend.device)
    with torch.inference_mode():
        out = backend.model.generate(**enc, max_new_tokens=req.max_tokens, do_sample=False,
                                     temperature=None, top_p=None, top_k=None,
                                     pad_token_id=tok.pad_token_id)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    return tok.decode(new, skip_special_tokens=True).strip(), int(enc["input_ids"].shape[1])


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipeline", default=str(Path(__file__).resolve().parent.parent /
                                              "examples" / "pipelines" / "embedded.yaml"))
    ap.add_argument("--dataset", default="ruler_qa:dev")
    ap.add_argument("--lengths", default="4000")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=32,
                    help="reply budget (benchmarks/peers.py gives every peer 32)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from orchestra.corpus import Corpus
    from orchestra.errors import OrchestraError
    from orchestra.eval.datasets import load_dataset, parse_lengths
    from orchestra.eval.metrics import contains
    from orchestra.pipeline import Pipeline

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not args.dataset.startswith("ruler_qa"):
        print(f"reader_ceiling: error: variants must be among {', '.join(VARIANTS)} (got "
              f"{', '.join(unknown)}) and the dataset a ruler_qa split (gold paragraphs)"
              if unknown else "reader_ceiling: error: --dataset must be ruler_qa, ruler_qa:dev "
              "or ruler_qa:test (only they name the gold paragraph)", file=sys.stderr)
        return 2
    try:
        pipe = Pipeline.from_yaml(args.pipeline)
        rag = pipe.strategies["rag"]
        rag.max_tokens = args.max_tokens
        ds = load_dataset(args.dataset, pipe.backend.tokenizer, parse_lengths(args.lengths),
                          args.limit, args.seed)
    except (OrchestraError, KeyError) as e:
        print(f"reader_ceiling: error: {e}", file=sys.stderr)
        return 2
    right: dict[str, list[bool]] = {v: [] for v in variants}
    tokens: dict[str, list[int]] = {v: [] for v in variants}
    secs: dict[str, list[float]] = {v: [] for v in variants}
    for sample in tqdm(ds.samples, desc="questions", unit="q"):
        for v in variants:
            corpus = Corpus(sample.documents, pipe.backend.tokenizer)
            t0 = time.perf_counter()
            text, n = read(rag, v, sample, corpus)
            secs[v].append(time.perf_counter() - t0)
            right[v].append(bool(contains(text, sample.answers)))
            tokens[v].append(n)
    n = len(ds.samples)
    print(f"\n{args.dataset}, lengths {args.lengths}, N={n}, {args.max_tokens}-token replies, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print("| variant | contains | prompt tokens | seconds | right where rag is wrong | "
          "wrong where rag is right |")
    print("|---|---|---|---|---|---|")
    base = right.get("rag")
    for v in variants:
        gain = loss = "-"
        if base is not None and v != "rag":
            gain = sum(a and not b for a, b in zip(right[v], base))
            loss = sum(b and not a for a, b in zip(right[v], base))
        print(f"| {v} | {sum(right[v]) / n:.2f} | {sum(tokens[v]) / n:.0f} | "
              f"{sum(secs[v]) / n:.1f} | {gain} | {loss} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
