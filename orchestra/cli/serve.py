"""`orchestra serve`: an OpenAI-compatible chat-completions server over any backend."""

from __future__ import annotations

import argparse
import sys

from orchestra.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve a backend over an OpenAI-compatible HTTP API",
        description="Serve a backend (the embedded model by default) as an OpenAI-compatible "
                    "server: POST /v1/chat/completions, GET /v1/models, POST /tokenize.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    p.add_argument("--backend", default="transformers", help="backend type (default transformers)")
    p.add_argument("--model", default=None,
                   help="the backend's model (transformers: 'embedded' or a local directory)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="another backend option (YAML value), e.g. -o device=cpu; repeatable")
    p.add_argument("--served-model-name", default=None,
                   help="the model id clients send and /v1/models lists")
    p.add_argument("--max-batch", type=int, default=16,
                   help="most concurrent requests generated as one batch (1: no gathering)")
    p.set_defaults(func=run)


def parse_options(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r} must look like KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value) if value else ""
    return out


def run(args: argparse.Namespace) -> int:
    from orchestra.backends import load_backend
    from orchestra.server import make_server

    options = parse_options(args.option)
    model = args.model or ("embedded" if args.backend == "transformers" else None)
    if model is not None:
        options["model"] = model
    backend = load_backend(args.backend, **options)
    try:
        server = make_server(backend, args.host, args.port,
                             model_name=args.served_model_name, max_batch=args.max_batch)
    except OSError as e:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
    # One parseable line once the port is open (tests and scripts wait for it).
    print(f"orchestra serve: listening on {server.url} (model {server.model_name!r}, "
          f"backend {backend.name})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("orchestra serve: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
