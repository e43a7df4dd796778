"""KV-page retrieval against full context on needle-in-a-haystack, plus prefill-once-ask-many.

    python benchmarks/kv_pages.py --lengths 8000 16000 32000 --depths 0.1 0.5 0.9
    python benchmarks/kv_pages.py --lengths 16000 --depths 0.5 --reuse 10

Prints one row per (length, depth): whether the 6-digit number is in the reply, pages read per
step over pages available (summed over steps, layers and KV heads), how often the needle's page
was among those selected, prefill and decode seconds; then full context (truncated
middle-out to the window) on the same samples. ``--reuse N`` hides N needles in one document and
asks N questions: one prefill plus N decodes, against separate prefills (measured for
``--separate`` of them, the rest extrapolated from their mean). Ends with peak resident memory
and the size of the keys and values per document.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def needle_pages(handle, start: int, end: int) -> list[int]:
    """Pages holding the needle's characters (offsets are into the context text)."""
    toks = [i for i, (a, b) in enumerate(handle.char_offsets) if a >= 0 and a < end and b > start]
    return sorted({p for p in (handle.kv.page_of(t) for t in toks) if p is not None})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="*", default=[8000, 16000, 32000])
    ap.add_argument("--depths", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    ap.add_argument("--page-size", type=int, default=64)
    ap.add_argument("--top-pages", type=int, default=16)
    ap.add_argument("--local", type=int, default=512)
    ap.add_argument("--scorer", default="max")
    ap.add_argument("--prompt-step", type=int, default=8)
    ap.add_argument("--selection", default="question", choices=["question", "step"])
    ap.add_argument("--follow", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--no-full", action="store_true", help="skip the full-context baseline")
    ap.add_argument("--reuse", type=int, default=0, help="questions over one document")
    ap.add_argument("--reuse-length", type=int, default=16000)
    ap.add_argument("--separate", type=int, default=2,
                    help="separate prefills actually measured for the reuse comparison")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is fastest on a busy shared CPU)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "needle_haystack"
                                          / "PaulGrahamEssays"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from orchestra.backends import default_backend
    from orchestra.corpus import Corpus
    from orchestra.eval.needles import essays_text as haystack_text, make_needle
    from orchestra.strategies.full_context import FullContext
    from orchestra.strategies.kv_pages import KVPages

    backend = default_backend()
    hay = haystack_text(args.data)
    kw = dict(page_size=args.page_size, top_pages=args.top_pages, local=args.local,
              scorer=args.scorer, prompt_step=args.prompt_step, max_tokens=args.max_tokens,
              selection=args.selection, follow=args.follow)
    rows, full_rows, kv_bytes = [], [], {}
    for n in args.lengths:
        for depth in args.depths:
            nd = make_needle(backend.tokenizer, hay, n, depth)
            corpus = Corpus.from_texts([nd.text], backend.tokenizer)
            s = KVPages(backend, **kw)  # a fresh instance: no handle carried between samples
            handle, _ = s.prefill(corpus, progress=True)
            ans = s.ask(nd.question, corpus, handle,
                        watch_pages=needle_pages(handle, nd.needle_start, nd.needle_end))
            kv_bytes[n] = handle.nbytes
            hit = ans.trace.steps[-1].detail.get("needle_hit_rate")
            rows.append((n, depth, corpus.n_tokens, nd.answer in ans.text,
                         ans.cost.pages_read_fraction, hit, handle.prefill_seconds,
                         ans.cost.decode_seconds, ans.text))
            print(f"kv_pages {n} {depth}: {nd.answer in ans.text} {ans.text!r}", flush=True)
            if not args.no_full:
                fc = FullContext(backend, truncation="middle-out", max_tokens=args.max_tokens)
                t0 = time.perf_counter()
                fa = fc.answer(nd.question, corpus)
                full_rows.append((n, depth, nd.answer in fa.text, fa.cost.prompt_tokens,
                                  time.perf_counter() - t0, fa.text))
                print(f"full {n} {depth}: {nd.answer in fa.text} {fa.text!r}", flush=True)

    print(f"\nKV pages (page_size {args.page_size}, top_pages {args.top_pages}, sink 4, local "
          f"{args.local}, scorer {args.scorer}, prompt_step {args.prompt_step}, selection {args.selection}, "
          f"follow {args.follow}), threads {args.threads}")
    print("| tokens | depth | found | pages read % | needle page hit % | prefill s | decode s |")
    print("|---|---|---|---|---|---|---|")
    for n, d, nt, ok, frac, hit, pre, dec, _ in rows:
        print(f"| {nt} | {d:.0%} | {'yes' if ok else 'no'} | {100 * frac:.1f} | "
              f"{'-' if hit is None else f'{100 * hit:.0f}'} | {pre:.1f} | {dec:.1f} |")
    for n in sorted({r[0] for r in rows}):
        sel = [r for r in rows if r[0] == n]
        print(f"accuracy at {n}: {sum(r[3] for r in sel)}/{len(sel)}")
    if full_rows:
        print("\nFull context, truncated middle-out to the window, same samples")
        print("| tokens | depth | found | prompt tokens | seconds |")
        print("|---|---|---|---|---|")
        for n, d, ok, pt, sec, _ in full_rows:
            print(f"| {n} | {d:.0%} | {'yes' if ok else 'no'} | {pt} | {sec:.1f} |")

    if args.reuse:
        reuse(backend, hay, args, kw, kv_bytes)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory: {peak:.0f} MiB")
    conf = backend.model.config
    per_token = 2 * conf.num_hidden_layers * conf.num_key_value_heads * conf.head_dim * 4
    for n, b in sorted(kv_bytes.items()):
        print(f"keys+values+summaries of a {n}-token document: {b / 2**20:.0f} MiB")
    print(f"float32 keys+values per token: {per_token} bytes; 32768 tokens: "
          f"{per_token * 32768 / 2**20:.0f} MiB (half with kv_dtype float16)")
    return 0


def reuse(backend, hay, args, kw, kv_bytes) -> None:
    """N questions over one document with N needles: one prefill, against separate prefills."""
    from orchestra.corpus import Corpus
    from orchestra.strategies.kv_pages import KVPages

    n = args.reuse_length
    base = make_multi_needle(backend, hay, n, args.reuse)
    corpus = Corpus.from_texts([base[0]], backend.tokenizer)
    s = KVPages(backend, **kw)
    t0 = time.perf_counter()
    answers = []
    for city, number in base[1]:
        q = f"What is the special magic number for {city} mentioned in the provided text?"
        answers.append((s.answer(q, corpus), number))
    many = time.perf_counter() - t0
    first = answers[0][0]
    decodes = [a.cost.decode_seconds for a, _ in answers[1:]]
    ideal = first.cost.wall_seconds + sum(decodes)
    found = sum(num in a.text for a, num in answers)
    sep = []
    for city, number in base[1][: args.separate]:
        q = f"What is the special magic number for {city} mentioned in the provided text?"
        t1 = time.perf_counter()
        KVPages(backend, **kw).answer(q, corpus)  # a new instance prefills again
        sep.append(time.perf_counter() - t1)
    separate = sum(sep) / len(sep) * args.reuse if sep else float("nan")
    print(f"\nPrefill once, ask many: {args.reuse} questions over one {corpus.n_tokens}-token "
          f"document ({found}/{args.reuse} numbers found)")
    print("| setting | seconds | ratio |")
    print("|---|---|---|")
    print(f"| 1 question + {args.reuse - 1} decodes (sum of parts) | {ideal:.1f} | 1.00 |")
    print(f"| {args.reuse} questions, one prefill (measured) | {many:.1f} | {many / ideal:.2f} |")
    print(f"| {args.reuse} separate prefills ({len(sep)} measured, mean x {args.reuse}) | "
          f"{separate:.1f} | {separate / ideal:.2f} |")


def make_multi_needle(backend, hay: str, n: int, k: int):
    """A document of about ``n`` tokens with ``k`` needles spread evenly; (text, [(city, num)])."""
    import random

    from orchestra.eval.needles import CITIES, cut_to_tokens, insert_needles, magic_number

    rng = random.Random(f"multi-{n}-{k}")
    cities = rng.sample(CITIES, k) if k <= len(CITIES) else [
        f"{c}{i}" for i, c in enumerate(CITIES * (k // len(CITIES) + 1))][:k]
    pairs = [(c, str(rng.randint(100000, 999999))) for c in cities]
    text, _ = insert_needles(cut_to_tokens(backend.tokenizer, hay, n - 20 * k),
                             [((i + 0.5) / k, magic_number(c, num))
                              for i, (c, num) in enumerate(pairs)])
    return text, pairs


if __name__ == "__main__":
    raise SystemExit(main())
