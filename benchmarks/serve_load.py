"""Load on `orchestra serve`: 1, 4 and 16 concurrent clients asking over one corpus.

Starts `orchestra serve` (the embedded default pipeline, a real uvicorn process), registers
the shipped Gettysburg Address once (chunks, indexes and KV prefill built then), and for each
level of concurrency sends ``--requests`` questions to ``POST /v1/answer`` from that many
client threads. Prints, side by side in one run: requests per second, p50/p95 latency, errors
(must be 0) and the server's peak resident memory (sampled every 0.1 s with psutil), plus how
many index builds/loads and KV prefills the corpus saw (reuse: they must not grow).

    OMP_NUM_THREADS=1 python benchmarks/serve_load.py --requests 16 --max-tokens 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "examples" / "data" / "gettysburg_address.txt"
QUESTIONS = ["Where was the great battle fought?", "Who brought forth a new nation?",
             "What shall not perish from the earth?", "When did our fathers bring forth a "
             "new nation?", "To what proposition was the nation dedicated?"]


def start_server(max_queue: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "orchestra.cli.main", "serve", "--port", "0",
                             "--max-queue", str(max_queue)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "listening on " in line:
            url = line.split("listening on ", 1)[1].split()[0]
            break
    else:
        raise SystemExit("orchestra serve did not start")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
    raise SystemExit("orchestra serve did not answer /health")


class PeakRSS:
    """The server's peak resident memory while a level runs (children included)."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        procs = [self.proc, *self.proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.1)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def level(url: str, corpus_id: str, clients: int, n: int, strategy: str, max_tokens: int,
          pid: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    bar = tqdm(total=n, desc=f"{clients} clients", leave=False)

    def one(i: int) -> None:
        t0 = time.perf_counter()
        try:
            r = httpx.post(url + "/v1/answer", timeout=600, json={
                "corpus_id": corpus_id, "question": QUESTIONS[i % len(QUESTIONS)],
                "strategy": strategy, "max_tokens": max_tokens})
            if r.status_code != 200 or not r.json().get("text"):
                errors.append(f"HTTP {r.status_code}: {r.text[:120]}")
        except httpx.HTTPError as e:
            errors.append(f"{type(e).__name__}: {e}")
        latencies.append(time.perf_counter() - t0)
        bar.update(1)

    with PeakRSS(pid) as mem:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, range(n)))
        wall = time.perf_counter() - t0
    bar.close()
    q = statistics.quantiles(latencies, n=20, method="inclusive") if len(latencies) > 1 \
        else latencies * 19
    return {"clients": clients, "requests": n, "errors": len(errors), "rps": n / wall,
            "p50": statistics.median(latencies), "p95": q[18], "peak_mib": mem.peak / 2**20,
            "first_error": errors[0] if errors else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1,4,16", help="concurrency levels (default 1,4,16)")
    ap.add_argument("--requests", type=int, default=16, help="requests per level (default 16)")
    ap.add_argument("--strategy", default="rag", help="strategy asked for (default rag; auto "
                                                      "lets the router choose)")
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    proc, url = start_server(max_queue=max(levels))
    try:
        r = httpx.post(url + "/v1/corpora", timeout=600, json={
            "documents": [{"name": DOC.name, "text": DOC.read_text()}]})
        r.raise_for_status()
        corpus = r.json()
        before = (corpus["index_builds"], corpus["index_loads"], corpus["kv_prefills"])
        # One warm-up question (first-call costs are not load).
        httpx.post(url + "/v1/answer", timeout=600, json={
            "corpus_id": corpus["id"], "question": QUESTIONS[0], "strategy": args.strategy,
            "max_tokens": args.max_tokens}).raise_for_status()
        rows = [level(url, corpus["id"], c, args.requests, args.strategy, args.max_tokens,
                      proc.pid) for c in levels]
        after = httpx.get(f"{url}/v1/corpora/{corpus['id']}", timeout=60).json()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    print(f"N={args.requests} requests per level, strategy {args.strategy}, max_tokens "
          f"{args.max_tokens}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"{os.cpu_count()} CPUs; corpus {corpus['tokens']} tokens")
    print(f"index builds {before[0]} -> {after['index_builds']}, index loads {before[1]} -> "
          f"{after['index_loads']}, KV prefills {before[2]} -> {after['kv_prefills']} over "
          f"{after['questions']} questions")
    print("| clients | requests | errors | requests/s | p50 s | p95 s | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['rps']:.2f} | "
              f"{r['p50']:.2f} | {r['p95']:.2f} | {r['peak_mib']:.0f} |")
    for r in rows:
        if r["errors"]:
            print(f"{r['clients']} clients: first error: {r['first_error']}")
    if any(r["errors"] for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
