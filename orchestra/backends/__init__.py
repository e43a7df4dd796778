"""Backends, and the process-wide cache that keeps one model loaded per process."""

from __future__ import annotations

import json
import threading
from typing import Any

from orchestra.backends.base import (  # noqa: F401  (the public protocol)
    BATCHING,
    KV_PAGES,
    LOGPROBS,
    PREFIX_CACHE,
    Backend,
    GenerationRequest,
    GenerationResult,
    Message,
    Tokenizer,
)

_instances: dict[str, Backend] = {}
_lock = threading.Lock()


def load_backend(type: str = "transformers", *, allow_modules=(), **options: Any) -> Backend:
    """The shared backend for these settings: built on first use, reused afterwards."""
    from orchestra.errors import ConfigError
    from orchestra.registry import resolve

    key = json.dumps({"type": type, **options}, sort_keys=True, default=str)
    with _lock:
        if key not in _instances:
            cls = resolve("backend", type, allow_modules)
            try:
                _instances[key] = cls(**options)
            except TypeError as e:
                raise ConfigError(f"backend {type!r}: {e}") from None
        return _instances[key]


def default_backend() -> Backend:
    """The embedded CPU default (SmolLM2-135M-Instruct on transformers)."""
    return load_backend("transformers", model="embedded", device="auto")
