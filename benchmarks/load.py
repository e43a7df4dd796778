"""Load time of the embedded model: first load (GGUF conversion) vs cached loads.

    python benchmarks/load.py            # cached loads (converts first if needed)
    python benchmarks/load.py --fresh    # also time a conversion into a temporary cache
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

CODE = ("import time; t=time.perf_counter(); from orchestra.backends.hf import TransformersBackend;"
        "b=TransformersBackend(model='embedded', device='cpu');"
        "print(f'{time.perf_counter()-t:.2f} {b.load_seconds:.2f}')")


def timed_load(env) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[-2]), float(out[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    env = dict(os.environ, ORCHESTRA_QUIET="1")
    rows = []
    if args.fresh:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(("first load (converts GGUF)", *timed_load({**env, "ORCHESTRA_CACHE": tmp})))
    else:
        timed_load(env)  # make sure the conversion exists
    for i in range(args.repeats):
        rows.append((f"cached load #{i + 1}", *timed_load(env)))
    print(f"{'load':<28} {'process total s':>16} {'model load s':>13}")
    for name, total, model in rows:
        print(f"{name:<28} {total:>16.2f} {model:>13.2f}")
    print("(process total includes importing torch and transformers)")


if __name__ == "__main__":
    main()
