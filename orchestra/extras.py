"""Optional parts and the extra that installs each (pyproject's optional-dependencies).

`pip install -e .` is enough for `orchestra ask` and the Python API; the web server, tuning,
plots and the graph retriever come with extras (all of them with ``[dev]``). Where one is
missing, ``require`` gives one line naming the `pip install` to run, before any model loads.
"""

from __future__ import annotations

import importlib.util

from orchestra.errors import ConfigError

DISTRIBUTION = "orchestra-longdoc"

# extra -> the modules it brings (import names)
EXTRAS = {
    "server": ("fastapi", "uvicorn", "prometheus_client", "multipart"),
    "tune": ("optuna", "sqlalchemy", "scipy"),
    "plot": ("matplotlib",),
    "graph": ("networkx",),
}


class MissingExtraError(ConfigError):
    """A part of orchestra whose optional dependencies are not installed."""


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that are not installed (found, not imported: a check before
    a refusal must not cost matplotlib's import time)."""
    out = []
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(module)
    return out


def require(extra: str, what: str) -> None:
    """One MissingExtraError naming the install command when ``extra`` is not installed."""
    gone = missing(extra)
    if gone:
        raise MissingExtraError(
            f"{what} needs {', '.join(gone)}, which {'is' if len(gone) == 1 else 'are'} not "
            f"installed: pip install \"{DISTRIBUTION}[{extra}]\" (or \"{DISTRIBUTION}[dev]\")")
