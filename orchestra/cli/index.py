"""`orchestra index DOCS... [--pipeline FILE.yaml] [--ray [ADDRESS]]`"""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    from orchestra.cluster.connect import add_ray_arguments

    p = sub.add_parser(
        "index", help="build the retriever indexes of many corpora ahead of time",
        description="Index each DOCS (a folder or file: one corpus, read as `run --docs` reads "
                    "it) with every retriever of the pipeline, into the index cache that run, "
                    "ask, eval and serve load from. A corpus already indexed is loaded, not "
                    "embedded again. --ray spreads the corpora over a Ray Data pipeline.")
    p.add_argument("docs", nargs="+", metavar="DOCS", help="folders or files, one corpus each")
    p.add_argument("--pipeline", help="pipeline YAML file (default: the embedded default)")
    p.add_argument("--allow-module", action="append", default=[], metavar="MODULE",
                   help="allow component types given as import paths from this module")
    add_ray_arguments(p, what="indexing actors")
    p.set_defaults(func=run)


def run(args) -> int:
    from orchestra.cluster.connect import check_ray_arguments
    from orchestra.cluster.index import check_paths, index_local, index_on_ray
    from orchestra.config import load_config
    from orchestra.errors import InputError

    check_ray_arguments(args)
    paths = check_paths(args.docs)
    if args.pipeline:
        if not Path(args.pipeline).is_file():
            raise InputError(f"{args.pipeline}: no such pipeline file")
        load_config(args.pipeline)  # a bad file is named before anything loads
    if args.ray is None:
        rows = index_local(paths, args.pipeline, args.allow_module)
    else:
        import math
        import os

        from orchestra.cluster.connect import cluster

        cpus = max(os.cpu_count() or 1, math.ceil(args.ray_actors * args.ray_cpus))
        with cluster(args.ray, num_cpus=cpus):
            rows = index_on_ray(paths, args.pipeline, args.allow_module, args.ray_actors,
                                args.ray_cpus, args.ray_gpus)
    for r in rows:
        print(f"{r['path']}: corpus {r['corpus']}, {r['documents']} documents, {r['tokens']} "
              f"tokens; {r['retrievers']} ({r['seconds']:.1f} s)")
    return 0
