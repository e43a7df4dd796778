"""`orchestra validate PIPELINE.yaml`: check a file without loading any model."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="check a pipeline file without building it",
                       description="Validate a pipeline YAML file: fields, types, options and "
                                   "references. Loads no model.")
    p.add_argument("pipeline", nargs="+", help="pipeline YAML file(s)")
    p.add_argument("--allow-module", action="append", default=[], metavar="MODULE")
    p.set_defaults(func=run)


def run(args) -> int:
    from orchestra.config import check, load_config

    for path in args.pipeline:
        cfg, located = load_config(path)
        check(cfg, located, args.allow_module)
        print(f"{path}: ok (backend {cfg.backend.type}; strategies "
              f"{', '.join(cfg.strategies)}; router {cfg.router.type})")
    return 0
