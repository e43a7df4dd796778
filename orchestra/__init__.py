"""orchestra: answer questions over long documents by deciding, per query, how to read them.

Importing orchestra changes nothing in the process (no environment variables, no downloads):
every model orchestra loads itself is read with ``local_files_only=True``.
"""

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "Chunk",
    "Corpus",
    "Cost",
    "Document",
    "Evidence",
    "Pipeline",
    "Route",
    "Trace",
    "ask",
    "default_backend",
    "load_backend",
]

_LAZY = {
    "ask": "orchestra.api",
    "Corpus": "orchestra.corpus",
    "Document": "orchestra.corpus",
    "Chunk": "orchestra.corpus",
    "Answer": "orchestra.types",
    "Cost": "orchestra.types",
    "Trace": "orchestra.types",
    "Route": "orchestra.types",
    "Evidence": "orchestra.types",
    "load_backend": "orchestra.backends",
    "default_backend": "orchestra.backends",
    "Pipeline": "orchestra.pipeline",
}


def __getattr__(name):
    # Lazy so `import orchestra` stays cheap (torch loads only when a model is used).
    if name not in _LAZY:
        raise AttributeError(f"module 'orchestra' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__():
    return sorted({*globals(), *__all__})
