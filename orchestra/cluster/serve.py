"""``orchestra serve PIPELINE.yaml --replicas N``: the pipeline service as one Ray Serve
deployment with N replicas behind Serve's HTTP proxy.

Each replica builds the pipeline from the file (its own backend: one model per replica), wraps
it in orchestra's service object (orchestra.server.service.PipelineService) and serves that
with the very app ``orchestra serve`` runs (``create_app(service=...)``): the same
OpenAI-compatible and ``/v1/answer`` API, API key, body/queue/document limits and /metrics
(per replica). Nothing of the server is copied here; the service's corpus registry is shared,
and a thin ASGI layer in front of the app does what Serve's routing needs:

- **A corpus registered on one replica is usable on every replica.** A registration's
  documents are recorded in one small actor (the corpus book, keyed by the corpus id, which is
  the documents' content hash). A replica asked about an id it does not hold reads the
  documents from the book and registers them itself: same id, and its retriever indexes load
  from the index cache the first replica wrote (nothing is embedded twice on one machine, or
  with ORCHESTRA_CACHE on a shared folder).
- **Corpus affinity.** Requests naming a corpus (``corpus_id`` or ``metadata.corpus_id`` in the
  body, or the ``serve_multiplexed_model_id`` header) load it through Serve's model
  multiplexing (``@serve.multiplexed``), so Serve knows which replicas hold which corpora. A
  client that sends the corpus id in the ``serve_multiplexed_model_id`` header is routed by
  Serve to a replica that already holds its index and KV prefill.

Every response names the replica that answered in ``x-orchestra-replica``.
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import asdict
from typing import Any

from orchestra.errors import ConfigError

log = logging.getLogger("orchestra.server")

BOOK = "orchestra-corpus-book"
NAMESPACE = "orchestra"  # the book's: the driver's own namespace is anonymous
APP = "orchestra"
AFFINITY_HEADER = "serve_multiplexed_model_id"  # Serve's own header for multiplexed routing


class CorpusBook:
    """Registered corpora's documents by id, for every replica (a Ray actor)."""

    def __init__(self):
        self.docs: dict[str, list[tuple[str, str]]] = {}

    def put(self, corpus_id: str, docs: list[tuple[str, str]]) -> None:
        self.docs[corpus_id] = docs

    def get(self, corpus_id: str) -> list[tuple[str, str]] | None:
        return self.docs.get(corpus_id)

    def drop(self, corpus_id: str) -> None:
        self.docs.pop(corpus_id, None)


def _corpus_id_in(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    cid = data.get("corpus_id")
    meta = data.get("metadata")
    if cid is None and isinstance(meta, dict):
        cid = meta.get("corpus_id")
    return cid if isinstance(cid, str) and cid else None


def _shared_service(pipeline, settings, book):
    """orchestra's PipelineService for one replica, its Corpora shared through ``book``."""
    from orchestra.cluster.corpora import SharedCorpora
    from orchestra.server.service import Limits, PipelineService

    limits = Limits(settings.max_documents, settings.max_request_tokens, settings.max_corpora)
    service = PipelineService(pipeline, limits)
    service.corpora = SharedCorpora(book, pipeline, service.metrics, limits.max_request_tokens,
                                    limits.max_corpora)
    return service


class Affinity:
    """ASGI layer in front of one replica's app: loads the corpus a request names through
    Serve's multiplexing (so Serve routes that corpus's header-carrying requests here), and
    tells Serve about corpora registered here."""

    def __init__(self, app: Any, shared: Any, max_corpora: int, max_body: int, replica: str):
        from ray import serve

        self.app, self.shared, self.max_body, self.replica = app, shared, max_body, replica

        async def load(corpus_id: str) -> bool:
            import anyio

            return await anyio.to_thread.run_sync(shared.fetch, corpus_id)

        self.load = serve.multiplexed(max_num_models_per_replica=max_corpora)(load)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from ray import serve

        receive, cid = await self._peek(scope, receive)
        path = scope.get("path", "")
        if cid is None and path.startswith("/v1/corpora/") and scope.get("method") == "GET":
            cid = path.rsplit("/", 1)[-1] or None
        cid = serve.get_multiplexed_model_id() or cid
        if cid:
            try:
                await self.load(cid)
            except Exception as e:  # the app answers for it (404, or the error it meets)
                log.warning("corpus %s could not be loaded here: %s", cid, e)

        async def send_named(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-orchestra-replica",
                                                   self.replica.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_named)
        finally:
            for new in self.shared.drain():
                try:
                    await self.load(new)
                except Exception as e:  # routing stays by load alone for it
                    log.warning("corpus %s: %s", new, e)

    async def _peek(self, scope, receive):
        """The corpus id of a JSON body (read once and replayed to the app), or None."""
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        kind = headers.get(b"content-type", b"")
        if scope.get("method") != "POST" or b"json" not in kind or length is None or \
                not length.isdigit() or int(length) > self.max_body:
            return receive, None  # the app refuses or reads what it must
        chunks, more = [], True
        messages = []
        while more:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)

        async def replay():
            return messages.pop(0) if messages else await receive()

        return replay, _corpus_id_in(b"".join(chunks))


class PipelineReplica:
    """One replica: the pipeline, its backend, and orchestra's app (built in the replica)."""

    def __init__(self, pipeline_file: str | None, allow_modules: list[str], name: str,
                 settings: dict):
        import os

        import ray

        from orchestra.pipeline import Pipeline
        from orchestra.server.app import ServeSettings, create_app

        pipeline = (Pipeline.from_yaml(pipeline_file, allow_modules=allow_modules)
                    if pipeline_file else Pipeline.default())
        self.settings = ServeSettings(**settings)
        service = _shared_service(pipeline, self.settings,
                                  ray.get_actor(BOOK, namespace=NAMESPACE))
        self.shared = service.corpora
        # not `app`: serve.ingress gives the wrapped class a read-only `app` property
        self.asgi = create_app(name=name, settings=self.settings, service=service)
        self.replica = f"{socket.gethostname()}:{os.getpid()}"

    def __serve_build_asgi_app__(self):
        return Affinity(self.asgi, self.shared, self.settings.max_corpora,
                        self.settings.max_body_bytes, self.replica)


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start(pipeline_file: str | None, *, name: str, settings: Any, replicas: int, host: str,
          port: int, cpus: float = 1.0, gpus: float = 0.0,
          allow_modules: list[str] | None = None) -> str:
    """Deploy on the Ray cluster this process joined; returns the URL once every replica is
    up. ``port`` 0 picks a free one."""
    import ray
    from ray import serve

    from orchestra.cluster.connect import worker_env

    if replicas < 1:
        raise ConfigError(f"--replicas must be at least 1, got {replicas}")
    # Detached: nothing in the driver keeps the handle, and a named actor whose last handle goes
    # is collected before the replicas look it up; stop() kills it.
    ray.remote(CorpusBook).options(name=BOOK, namespace=NAMESPACE, get_if_exists=True,
                                   lifetime="detached", num_cpus=0).remote()
    port = port or free_port(host)
    serve.start(http_options={"host": host, "port": port})
    env = worker_env(cpus)
    deployment = serve.deployment(
        serve.ingress()(PipelineReplica), name="pipeline", num_replicas=replicas,
        # The replica's own queue gate answers 429 past --max-queue, as `orchestra serve` does.
        max_ongoing_requests=settings.max_queue + 1,
        ray_actor_options={"num_cpus": cpus, "num_gpus": gpus,
                           "runtime_env": {"env_vars": env}})
    serve.run(deployment.bind(pipeline_file, list(allow_modules or []), name, asdict(settings)),
              name=APP, route_prefix="/")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def stop() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    try:
        ray.kill(ray.get_actor(BOOK, namespace=NAMESPACE))
    except ValueError:
        pass
