"""The user cache directory and atomic writes into it.

Everything written here (converted weights, indexes, prefilled KV handles) goes to a temporary
sibling first and is renamed into place, so a crash mid-write never leaves a partial file that a
later run would load.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class CacheWarning(UserWarning):
    """The cache folder cannot be used; orchestra runs without caching."""


_fallback: Path | None = None
_fallback_lock = threading.Lock()


def cache_root() -> Path:
    return Path(os.environ.get("ORCHESTRA_CACHE") or Path.home() / ".cache" / "orchestra")


def cache_dir(*parts: str) -> Path:
    """``<cache root>/parts...``, created. A cache root that cannot be written (a read-only
    mount, a file in the way) is not an error: this process then caches in a private temporary
    folder, removed at exit, after one warning."""
    path = cache_root().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
        return path
    except OSError as e:
        path = _fallback_dir(e).joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


def _fallback_dir(error: OSError) -> Path:
    global _fallback
    with _fallback_lock:
        if _fallback is None:
            _fallback = Path(tempfile.mkdtemp(prefix="orchestra-cache-"))
            atexit.register(shutil.rmtree, _fallback, True)
            warnings.warn(f"the cache folder {cache_root()} cannot be written "
                          f"({error.strerror or error}); running without a cache (models are "
                          "converted and indexes built again in every process; set "
                          "ORCHESTRA_CACHE to a writable folder)", CacheWarning, stacklevel=3)
    _fallback.mkdir(parents=True, exist_ok=True)
    return _fallback


def stable_hash(*parts: object, length: int = 16) -> str:
    h = hashlib.sha256()
    for p in parts:
        data = p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:length]


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[object]:
    """Open a temporary file beside ``path``; on success fsync and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory in a temporary sibling, then rename it into place.

    If another process finished the same directory first, its copy is kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
