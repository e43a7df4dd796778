"""`orchestra serve`: a pipeline (or, with --model-only, the model alone) over HTTP.

FastAPI + uvicorn; see orchestra/server/app.py for the endpoints and limits.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from orchestra.cli.args import port
from orchestra.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve a pipeline (or the model alone) over HTTP",
        description="Serve a pipeline (the embedded default, or PIPELINE.yaml) over HTTP: "
                    "POST/GET/DELETE /v1/corpora, POST /v1/answer, POST /v1/chat/completions "
                    "(the pipeline as the model; streaming), GET /v1/models, GET /health, "
                    "GET /metrics (no key, or --metrics-key), GET /docs and /openapi.json. "
                    "--model-only serves the backend's model alone "
                    "(OpenAI-compatible chat completions and /tokenize).")
    p.add_argument("pipeline", nargs="?", default=None, metavar="PIPELINE.yaml",
                   help="the pipeline file (default: the embedded default pipeline)")
    p.add_argument("--model-only", action="store_true",
                   help="serve the backend's model, not a pipeline (for the openai backend)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; any other "
                        "needs an API key)")
    p.add_argument("--port", type=port, default=8000, help="port (0 picks a free one)")
    p.add_argument("--api-key", default=None,
                   help="the key clients send as 'Authorization: Bearer KEY' (default: "
                        "$ORCHESTRA_API_KEY; required unless bound to localhost)")
    p.add_argument("--metrics-key", default=None,
                   help="a separate key for GET /metrics (default: $ORCHESTRA_METRICS_KEY; "
                        "unset, /metrics is open to scrapers as vLLM's is)")
    _limit_arguments(p)
    _model_only_arguments(p)
    p.add_argument("--served-model-name", default=None,
                   help="the model id clients send and /v1/models lists (default: the "
                        "pipeline file's stem, 'default', or the backend's model)")
    p.add_argument("--max-batch", type=int, default=16,
                   help="--model-only: most concurrent requests generated as one batch")
    p.add_argument("--replicas", type=int, default=None, metavar="N",
                   help="serve the pipeline as N replicas (each with its own backend) behind "
                        "one endpoint on Ray Serve; --ray ADDRESS joins a cluster (default: "
                        "a local one)")
    from orchestra.cluster.connect import add_ray_arguments

    add_ray_arguments(p, what=None)
    p.set_defaults(func=run)


def _limit_arguments(p) -> None:
    """The request limits (http.py's ServeSettings)."""
    p.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024,
                   help="largest request body; larger ones get 413 unread (default 8 MiB)")
    p.add_argument("--max-documents", type=int, default=64,
                   help="most documents per request (default 64)")
    p.add_argument("--max-request-tokens", type=int, default=1_000_000,
                   help="most document tokens per request (default 1,000,000)")
    p.add_argument("--max-queue", type=int, default=16,
                   help="requests running or waiting at once; one more gets 429 (default 16)")
    p.add_argument("--max-corpora", type=int, default=8,
                   help="registered corpora kept indexed and prefilled at once (default 8)")
    p.add_argument("--body-timeout", type=float, default=30.0,
                   help="seconds a client has to send its request body (default 30)")


def _model_only_arguments(p) -> None:
    p.add_argument("--backend", default="transformers",
                   help="--model-only: backend type (default transformers)")
    p.add_argument("--model", default=None,
                   help="--model-only: the backend's model (transformers: 'embedded' or a "
                        "local directory)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="--model-only: another backend option (YAML value), e.g. -o device=cpu")


def parse_options(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r} must look like KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value) if value else ""
    return out


def check_args(args: argparse.Namespace) -> str | None:
    """Everything that can be refused before a model loads; returns the API key."""
    from orchestra.server.runner import LOCAL_HOSTS

    for flag in ("max_body_bytes", "max_documents", "max_request_tokens", "max_queue",
                 "max_batch", "max_corpora"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1, "
                              f"got {getattr(args, flag)}")
    if not args.body_timeout > 0:
        raise ConfigError(f"--body-timeout must be positive, got {args.body_timeout}")
    if args.model_only and args.pipeline:
        raise ConfigError(f"--model-only serves the model alone; drop {args.pipeline} or "
                          "--model-only")
    if not args.model_only and (args.model or args.option or args.backend != "transformers"):
        raise ConfigError("--backend, --model and --option apply with --model-only; a "
                          "pipeline names its backend in its file")
    if args.ray is not None and args.replicas is None:
        args.replicas = 1
    if args.replicas is not None:
        from orchestra.cluster.connect import check_ray_arguments

        if args.model_only:
            raise ConfigError("--replicas serves a pipeline; --model-only serves one model "
                              "(run one `orchestra serve --model-only` per GPU instead)")
        if args.replicas < 1:
            raise ConfigError(f"--replicas must be at least 1, got {args.replicas}")
        if args.ray is None:
            args.ray = "local"
        check_ray_arguments(args)
    key = args.api_key or os.environ.get("ORCHESTRA_API_KEY") or None
    if key is None and args.host not in LOCAL_HOSTS:
        raise ConfigError(
            f"refusing to serve on {args.host} without an API key: anyone who can reach "
            "this address could use the model. Give --api-key KEY (or set "
            "ORCHESTRA_API_KEY), or bind --host 127.0.0.1")
    return key


def run(args: argparse.Namespace) -> int:
    from orchestra.extras import require

    require("server", "orchestra serve")
    from orchestra.server.runner import bind, url_of, uvicorn_server

    key = check_args(args)
    if args.replicas is not None:
        return _run_replicas(args, key)
    sock = bind(args.host, args.port)  # before loading: a port in use fails at once
    settings = _settings(args, key)
    app, what = _model_app(args, settings) if args.model_only else _pipeline_app(args, settings)
    _server_logging()
    # One parseable line once the port is open (tests and scripts wait for it).
    print(f"orchestra serve: listening on {url_of(sock)} ({what}; "
          f"API key {'required' if key else 'off (localhost only)'})", flush=True)
    try:
        uvicorn_server(app).run(sockets=[sock])
    except KeyboardInterrupt:
        print("orchestra serve: stopped", file=sys.stderr)
    finally:
        sock.close()
    return 0


def _model_app(args: argparse.Namespace, settings):
    """The --model-only app over the backend named on the command line, and its description."""
    from orchestra.backends import load_backend
    from orchestra.server.app import create_app

    options = parse_options(args.option)
    model = args.model or ("embedded" if args.backend == "transformers" else None)
    if model is not None:
        options["model"] = model
    backend = load_backend(args.backend, **options)
    name = args.served_model_name or str(backend.spec().get("model") or backend.name)
    app = create_app(backend=backend, name=name, settings=settings)
    return app, f"model {name!r}, backend {backend.name}"


def _pipeline_app(args: argparse.Namespace, settings):
    """The pipeline's app (the file's, or the embedded default), and its description."""
    from pathlib import Path

    from orchestra.pipeline import Pipeline
    from orchestra.server.app import create_app

    if args.pipeline:
        pipeline = Pipeline.from_yaml(args.pipeline)
        name = args.served_model_name or Path(args.pipeline).stem
    else:
        pipeline = Pipeline.default()
        name = args.served_model_name or "default"
    app = create_app(pipeline=pipeline, name=name, settings=settings)
    return app, f"pipeline {name!r}, strategies {', '.join(pipeline.strategies)}"


def _server_logging() -> None:
    """The server's own lines (a client leaving early) beside uvicorn's, whatever else set up
    the root logger."""
    server_log = logging.getLogger("orchestra.server")
    server_log.setLevel(logging.INFO)
    if not server_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        server_log.addHandler(handler)
        server_log.propagate = False


def _settings(args, key):
    from orchestra.server.app import ServeSettings

    return ServeSettings(api_key=key,
                         metrics_key=args.metrics_key or os.environ.get("ORCHESTRA_METRICS_KEY")
                         or None, max_body_bytes=args.max_body_bytes,
                         max_documents=args.max_documents,
                         max_request_tokens=args.max_request_tokens,
                         max_queue=args.max_queue, body_timeout=args.body_timeout,
                         max_batch=args.max_batch, max_corpora=args.max_corpora)


def _run_replicas(args: argparse.Namespace, key: str | None) -> int:
    """The pipeline as one Ray Serve deployment of --replicas replicas (orchestra/cluster)."""
    import math
    import threading
    from pathlib import Path

    from orchestra.cluster import serve as ray_serve
    from orchestra.cluster.connect import cluster
    from orchestra.config import load_config
    from orchestra.server.runner import bind

    if args.pipeline:
        load_config(args.pipeline)  # a bad file is named before any replica starts
    bind(args.host, args.port).close()  # a port in use fails at once, as without replicas
    name = args.served_model_name or (Path(args.pipeline).stem if args.pipeline else "default")
    pipeline = str(Path(args.pipeline).resolve()) if args.pipeline else None
    cpus = max(os.cpu_count() or 1, math.ceil(args.replicas * args.ray_cpus))
    with cluster(args.ray, num_cpus=cpus):
        try:
            url = ray_serve.start(pipeline, name=name, settings=_settings(args, key),
                                  replicas=args.replicas, host=args.host, port=args.port,
                                  cpus=args.ray_cpus, gpus=args.ray_gpus)
            print(f"orchestra serve: listening on {url} (pipeline {name!r}, {args.replicas} "
                  f"replica{'s' if args.replicas > 1 else ''} on Ray Serve; API key "
                  f"{'required' if key else 'off (localhost only)'})", flush=True)
            threading.Event().wait()
        except KeyboardInterrupt:
            print("orchestra serve: stopped", file=sys.stderr)
        finally:
            ray_serve.stop()
    return 0
