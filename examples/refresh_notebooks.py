"""Run the example notebooks and store them with their outputs, so they show results when
opened without running (on GitHub, in a viewer). The one command to refresh them:

    python examples/refresh_notebooks.py            # all of examples/*.ipynb
    python examples/refresh_notebooks.py 02_strategies.ipynb

Each notebook runs top to bottom in a fresh kernel from examples/ (nbclient, the library
`jupyter nbconvert --execute` uses); a failing cell stops with the cell named and the file is
left as it was. Progress bars are turned off so the stored outputs hold results, not bars.
tests/test_notebooks.py checks the stored notebooks carry outputs and (slow) that they run.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent

# What the kernel sees: no progress bars or colour codes in stored outputs, a non-interactive
# plot backend whose figures nbclient stores as PNG.
KERNEL_ENV = {"ORCHESTRA_QUIET": "1", "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error",
              "MPLBACKEND": "module://matplotlib_inline.backend_inline",
              "TOKENIZERS_PARALLELISM": "false"}


def execute(path: Path, timeout: int = 900):
    """The notebook at ``path``, run top to bottom (raises CellExecutionError on a failure)."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    old = {k: os.environ.get(k) for k in KERNEL_ENV}
    os.environ.update(KERNEL_ENV)  # the kernel inherits this process's environment
    try:
        nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def main(argv: list[str]) -> int:
    import nbformat

    import importlib.util

    if importlib.util.find_spec("ipywidgets") is None:
        # transformers imports tqdm.auto, which prints "TqdmWarning: IProgress not found" in a
        # kernel without ipywidgets; the notebooks would store that warning.
        print('refresh_notebooks: ipywidgets is not installed (the notebooks would store '
              'tqdm\'s "IProgress not found" warning); pip install -e ".[dev]"', file=sys.stderr)
        return 2
    paths = [EXAMPLES / a for a in argv] or sorted(EXAMPLES.glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"refresh_notebooks: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    for path in paths:
        t0 = time.perf_counter()
        nb = execute(path)
        nbformat.write(nb, path)
        print(f"{path.name}: ran in {time.perf_counter() - t0:.0f} s, outputs stored")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
