"""Scale on Ray: eval throughput with 1 and 2 actors, serve throughput with 1 and 2 replicas.

One local Ray cluster (127.0.0.1, no dashboard) for the whole run; every actor and replica
holds its own embedded SmolLM2 model with OMP_NUM_THREADS=1.

- eval: ``--questions`` short questions (one model call each: full_context, ``--max-tokens``
  tokens) answered by ``orchestra.cluster.eval.RayRunner`` with 1 actor, then 2; actors are
  started and their pipelines built before the clock starts, so the rate is answering alone.
  Questions per minute.
- serve: ``orchestra serve --replicas 1``, then 2 (Ray Serve), the Gettysburg Address sent
  inline to ``POST /v1/answer`` (full_context, ``--max-tokens``) from 1, 4 and 16 client
  threads, ``--requests`` requests per level after one warm-up request per replica. Requests per
  second, errors, p50 latency.

Prints one table per part and the two ratios the issue asks for (2 actors / 1 actor on eval,
2 replicas / 1 replica at 16 clients).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/scale.py --questions 16 --requests 32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "examples" / "data" / "gettysburg_address.txt"
NAMES = ["Mira", "Tomas", "Anka", "Beno", "Cleo", "Dario", "Elin", "Fabio", "Greta", "Hugo",
         "Ines", "Jonas", "Kira", "Lars", "Mona", "Nils", "Olga", "Pavel", "Rosa", "Sven"]
CITIES = ["Lisbon", "Oslo", "Quito", "Hanoi", "Dakar", "Perth", "Lima", "Cairo", "Accra",
          "Seoul", "Turin", "Bergen", "Porto", "Delft", "Malmo", "Cork", "Riga", "Split",
          "Graz", "Basel"]
QUESTIONS = ["Where was the great battle fought?", "Who brought forth a new nation?",
             "What shall not perish from the earth?", "To what proposition was the nation "
             "dedicated?"]


def pipeline_text(max_tokens: int) -> str:
    return ("backend: {type: transformers, model: embedded, device: cpu}\n"
            "strategies:\n"
            f"  full: {{type: full_context, truncation: middle-out, max_tokens: {max_tokens}}}\n"
            "router: {type: fixed, strategy: full}\n")


def write_questions(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            name, city = NAMES[i % len(NAMES)], CITIES[i % len(CITIES)]
            text = (f"{name} keeps a small garden. Every spring {name} travels to {city} to see "
                    f"old friends. The weather there is mild. {name} returns in May.")
            f.write(json.dumps({"id": i, "context": text, "answers": [city],
                                "question": f"Which city does {name} visit?"}) + "\n")


def eval_rate(pipe_file: Path, data: Path, actors: int, work: Path) -> dict:
    from orchestra.cluster.eval import RayRunner
    from orchestra.eval.datasets import load_dataset
    from orchestra.pipeline import Pipeline

    pipe = Pipeline.from_yaml(pipe_file)
    dataset = load_dataset(str(data), pipe.backend.tokenizer, [1000], 10_000, 0)
    runner = RayRunner(pipe, work / f"eval-{actors}", ["full"], pipeline_file=str(pipe_file),
                       actors=actors, progress=False)
    runner.warm()
    t0 = time.perf_counter()
    rows = runner.run(dataset)
    took = time.perf_counter() - t0
    return {"actors": actors, "questions": len(rows), "seconds": took,
            "per_minute": 60 * len(rows) / took,
            "quality": statistics.fmean(r["quality"] for r in rows)}


def ask(url: str, i: int, max_tokens: int) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    try:
        r = httpx.post(url + "/v1/answer", timeout=600, json={
            "question": QUESTIONS[i % len(QUESTIONS)], "strategy": "full",
            "max_tokens": max_tokens,
            "documents": [{"name": DOC.name, "text": DOC.read_text()}]})
        return r.status_code, time.perf_counter() - t0, r.headers.get("x-orchestra-replica", "")
    except httpx.HTTPError as e:
        return -1, time.perf_counter() - t0, type(e).__name__


def serve_rates(pipe_file: Path, replicas: int, levels: list[int], requests: int,
                max_tokens: int) -> list[dict]:
    from orchestra.cluster import serve as ray_serve
    from orchestra.server.app import ServeSettings

    url = ray_serve.start(str(pipe_file), name="scale", settings=ServeSettings(max_queue=64),
                          replicas=replicas, host="127.0.0.1", port=0)
    out = []
    try:
        with ThreadPoolExecutor(replicas * 2) as pool:  # warm every replica once
            list(pool.map(lambda i: ask(url, i, max_tokens), range(replicas * 2)))
        for clients in levels:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                res = list(pool.map(lambda i: ask(url, i, max_tokens), range(requests)))
            took = time.perf_counter() - t0
            ok = [s for code, s, _ in res if code == 200]
            out.append({"replicas": replicas, "clients": clients, "requests": requests,
                        "errors": requests - len(ok), "per_second": len(ok) / took,
                        "p50": statistics.median(ok) if ok else float("nan"),
                        "answered_by": len({who for code, _, who in res if code == 200})})
            print(f"serve: {out[-1]}", file=sys.stderr, flush=True)
    finally:
        ray_serve.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=16, help="eval questions per actor count")
    ap.add_argument("--requests", type=int, default=32, help="serve requests per level")
    ap.add_argument("--levels", default="1,4,16", help="concurrent clients, comma-separated")
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    levels = [int(x) for x in args.levels.split(",")]

    import ray

    from orchestra.cluster.connect import start_local

    work = Path(tempfile.mkdtemp(prefix="orchestra-scale-"))
    pipe_file = work / "pipe.yaml"
    pipe_file.write_text(pipeline_text(args.max_tokens))
    data = work / "questions.jsonl"
    write_questions(data, args.questions)
    start_local(num_cpus=2)
    try:
        evals = [eval_rate(pipe_file, data, n, work) for n in (1, 2)]
        for e in evals:
            print(f"eval: {e}", file=sys.stderr, flush=True)
        serves = [r for n in (1, 2) for r in serve_rates(pipe_file, n, levels, args.requests,
                                                         args.max_tokens)]
    finally:
        ray.shutdown()
    load = os.getloadavg()[0]
    print(f"\nOMP_NUM_THREADS=1 per actor and replica; {os.cpu_count()} cores; load average "
          f"{load:.1f} at the end\n")
    print("| eval actors | questions | seconds | questions/min | quality |")
    print("|---:|---:|---:|---:|---:|")
    for e in evals:
        print(f"| {e['actors']} | {e['questions']} | {e['seconds']:.1f} | "
              f"{e['per_minute']:.1f} | {e['quality']:.2f} |")
    print("\n| replicas | clients | requests | errors | requests/s | p50 s | replicas answering |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in serves:
        print(f"| {r['replicas']} | {r['clients']} | {r['requests']} | {r['errors']} | "
              f"{r['per_second']:.3f} | {r['p50']:.2f} | {r['answered_by']} |")
    eval_ratio = evals[1]["per_minute"] / evals[0]["per_minute"]
    top = max(levels)
    one = next(r for r in serves if r["replicas"] == 1 and r["clients"] == top)
    two = next(r for r in serves if r["replicas"] == 2 and r["clients"] == top)
    serve_ratio = two["per_second"] / one["per_second"] if one["per_second"] else float("nan")
    print(f"\neval: 2 actors / 1 actor = {eval_ratio:.2f}x; serve at {top} clients: "
          f"2 replicas / 1 replica = {serve_ratio:.2f}x (target 1.6x each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
