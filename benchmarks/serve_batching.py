"""Does gathering concurrent requests into one backend batch pay, per backend?

Starts `orchestra serve` in-process (a thread) on the embedded model, once with max_batch=1
and once with max_batch=N, sends the same N concurrent chat requests through the openai
backend, and prints seconds for each, side by side in one run, plus the direct in-process
backend (sequential and one batch) for reference.

Caution on a CPU shared with other jobs: torch's intra-op threads then slow generation on the
main thread several-fold (10.4 s on the main thread against 1.6 s on another thread for the
same request, load ~24 on 2 cores), and the server generates on its own thread, so compare the
two served rows with each other, not with the in-process rows.

    python benchmarks/serve_batching.py --requests 4 --max-tokens 16
"""

from __future__ import annotations

import argparse
import time

from orchestra.backends import GenerationRequest, default_backend
from orchestra.backends.openai_backend import OpenAIBackend
from orchestra.server import serve_in_thread

DOC = ("The museum opened in 1887. Its first curator was Ada Lindqvist, a botanist who "
       "catalogued over four thousand plants. The east wing was added in 1923.")
QUESTIONS = ["Who was the first curator?", "When did the museum open?",
             "When was the east wing added?", "How many plants were catalogued?"]


def requests(n: int, max_tokens: int) -> list[GenerationRequest]:
    return [GenerationRequest.user(f"{DOC}\n\n{QUESTIONS[i % len(QUESTIONS)]}",
                                   system="Answer briefly.", max_tokens=max_tokens)
            for i in range(n)]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()
    backend = default_backend()
    reqs = requests(args.requests, args.max_tokens)
    backend.generate(reqs[:1])  # warm up
    rows = [
        ("in-process, one request at a time", timed(lambda: [backend.generate([r]) for r in reqs])),
        ("in-process, one batch", timed(lambda: backend.generate(reqs))),
    ]
    for max_batch in (1, args.requests):
        server = serve_in_thread(backend, max_batch=max_batch)
        client = OpenAIBackend(base_url=server.url, concurrency=args.requests, max_retries=0,
                               timeout=3600)
        rows.append((f"served, max_batch={max_batch}", timed(lambda: client.generate(reqs))))
        server.shutdown()
        server.server_close()
    base = rows[0][1]
    print(f"{args.requests} requests, max_tokens={args.max_tokens}, device {backend.device}")
    print(f"{'setting':38} {'seconds':>8} {'vs first':>9}")
    for name, secs in rows:
        print(f"{name:38} {secs:8.1f} {secs / base:9.2f}")


if __name__ == "__main__":
    main()
