"""orchestra: answer questions over long documents by deciding, per query, how to read them."""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so `import orchestra` stays cheap (torch loads only when a model is used).
    if name == "ask":
        from orchestra.api import ask

        return ask
    if name in ("Corpus", "Document", "Chunk"):
        from orchestra import corpus

        return getattr(corpus, name)
    if name in ("Answer", "Cost", "Trace", "Route", "Evidence"):
        from orchestra import types

        return getattr(types, name)
    if name in ("load_backend", "default_backend"):
        from orchestra import backends

        return getattr(backends, name)
    if name == "Pipeline":
        from orchestra.pipeline import Pipeline

        return Pipeline
    raise AttributeError(name)


def _offline_by_default() -> None:
    # Nothing may download weights at run time; a user can still opt in with HF_HUB_OFFLINE=0.
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", os.environ["HF_HUB_OFFLINE"])


_offline_by_default()
