"""Reading results files: the one reader behind `orchestra eval` (resuming, --report-only) and
the learned router's training (`orchestra train-router`).

A results file is JSON lines, one row an object (what `orchestra eval` writes), or one JSON
document holding a list of rows or ``{"results": [...]}``. A last line cut short by a crash is
dropped (with ``repair``, also cut from the file, so appending continues on a clean line;
readers that only look, perhaps while a run is writing, leave it). A malformed line elsewhere,
or a row without a field the caller needs, is an error naming the file and line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from orchestra.errors import InputError

log = logging.getLogger(__name__)


def read_results(path: str | Path, repair: bool = False, required: Sequence[str] = ("strategy",),
                 missing_ok: bool = True, hint: str = "fix or remove it") -> list[dict]:
    """The rows of ``path``; ``required``: text fields every row must have; ``missing_ok``: a
    missing file has no rows (else it is an error); ``hint`` ends each error message."""
    path = Path(path)
    if not path.is_file():
        if missing_ok and not path.exists():
            return []
        raise InputError(f"{path}: no such results file" if not path.exists() else
                         f"{path}: not a regular file; give a results .jsonl file")
    data = path.read_bytes()
    rows = _whole_document(data, path, hint)
    if rows is None:
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("%s: dropping an unfinished last line (%d bytes)", path, len(data) - keep)
            if repair:
                with open(path, "r+b") as f:
                    f.truncate(keep)
            data = data[:keep]
        rows = []
        for n, raw in enumerate(data.split(b"\n"), 1):
            if not raw.strip():
                continue
            try:
                rows.append((n, json.loads(raw.decode("utf-8"))))
            except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
                raise InputError(f"{path}:{n}: malformed results line ({e}); {hint}") from None
    for n, row in rows:
        bad = ("not a JSON object" if not isinstance(row, dict) else
               next((f"no {f!r}" for f in required if not isinstance(row.get(f), str)), None))
        if bad:
            raise InputError(f"{path}:{n}: a results row with {bad}; {hint}")
    return [row for _, row in rows]


def _whole_document(data: bytes, path: Path, hint: str) -> list[tuple[int, object]] | None:
    """(row number, row) of a file that is one JSON list or ``{"results": [...]}``; None for
    JSON lines."""
    head = data.lstrip()[:1]
    if head not in (b"[", b"{"):
        return None
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None  # not one document: JSON lines (whose errors name their line)
    if isinstance(doc, dict):
        if "results" not in doc:
            return [(1, doc)]  # a file of one JSON line
        doc = doc["results"]
        if not isinstance(doc, list):
            raise InputError(f'{path}: "results" must be a list of result rows; {hint}')
    if not isinstance(doc, list):
        return None
    return list(enumerate(doc, 1))
