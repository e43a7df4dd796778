"""Index many corpora ahead of time: ``orchestra index DOCS... [--ray]``.

Each DOCS argument (a folder or a file) is one corpus, read and chunked as ``orchestra run
--docs DOCS`` reads it, and indexed by every retriever of the pipeline (dense embeddings, BM25)
into the index cache that ``run``, ``ask``, ``eval`` and ``serve`` load from: files keyed by the
corpus's content and the retriever's settings, written atomically. A corpus already there is
loaded, not embedded again.

With ``--ray`` the corpora flow through a Ray Data pipeline: ``map_batches`` over a pool of
actors, each holding the pipeline's tokenizer and embedder once (Ray Data's actor-pool
concurrency), one corpus per batch, so a slow folder never holds up the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from orchestra.errors import InputError


class Indexer:
    """The pipeline's retrievers, and what indexing one corpus with them did."""

    def __init__(self, pipeline_file: str | None, allow_modules: Sequence[str] = ()):
        from orchestra.pipeline import Pipeline

        self.pipeline = (Pipeline.from_yaml(pipeline_file, allow_modules=allow_modules)
                         if pipeline_file else Pipeline.default())
        from orchestra.server.corpora import retrievers_of

        self.retrievers = [r for r in retrievers_of(self.pipeline)
                           if not getattr(r, "retrievers", None)]  # a hybrid fuses its members'
        if not self.retrievers:
            raise InputError("the pipeline has no retriever: there is nothing to index")

    def index(self, path: str) -> dict[str, Any]:
        import time

        t0 = time.perf_counter()
        corpus = self.pipeline.corpus(path)
        done = []
        for r in self.retrievers:
            r.index(corpus)
            done.append(f"{r.name} {'loaded' if r.loaded_from_cache else 'built'}")
        return {"path": path, "corpus": corpus.hash[:16], "documents": len(corpus.documents),
                "tokens": corpus.n_tokens, "retrievers": ", ".join(done),
                "seconds": round(time.perf_counter() - t0, 2)}

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        """Ray Data's batch form: columns in, columns out."""
        rows = [self.index(str(p)) for p in batch["path"]]
        return {k: [r[k] for r in rows] for k in rows[0]} if rows else {}


def check_paths(paths: Iterable[str]) -> list[str]:
    out = []
    for p in paths:
        if not Path(p).exists():
            raise InputError(f"{p}: no such file or folder")
        out.append(str(Path(p).resolve()))
    if len(set(out)) != len(out):
        raise InputError("a folder is given twice; give each corpus once")
    return out


def index_local(paths: Sequence[str], pipeline_file: str | None,
                allow_modules: Sequence[str] = ()) -> list[dict]:
    indexer = Indexer(pipeline_file, allow_modules)
    return [indexer.index(p) for p in paths]


def index_on_ray(paths: Sequence[str], pipeline_file: str | None,
                 allow_modules: Sequence[str] = (), actors: int = 2, cpus: float = 1.0,
                 gpus: float = 0.0) -> list[dict]:
    """Ray already initialised. One corpus per batch over ``actors`` Indexer actors."""
    import ray

    from orchestra.cluster.connect import worker_env

    pipeline_file = str(Path(pipeline_file).resolve()) if pipeline_file else None
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=len(paths))
    out = ds.map_batches(Indexer, fn_constructor_args=(pipeline_file, list(allow_modules)),
                         batch_size=1, concurrency=max(1, min(actors, len(paths))),
                         num_cpus=cpus, num_gpus=gpus, batch_format="numpy",
                         runtime_env={"env_vars": worker_env(cpus)})
    rows = out.take_all()
    order = {p: i for i, p in enumerate(paths)}
    return sorted(({k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                   for r in rows), key=lambda r: order[r["path"]])
