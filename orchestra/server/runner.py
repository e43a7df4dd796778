"""Running the app under uvicorn: on a socket bound here (so ``port=0`` can report the port
it got, and a port in use is a clear error), in the foreground (``orchestra serve``) or on a
thread (tests, notebooks, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from orchestra.errors import ConfigError
from orchestra.server.app import ServeSettings, create_app

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
KEEP_ALIVE_SECONDS = 5  # idle keep-alive connections are closed after this
HEADER_SECONDS = 30.0  # a connection that sends no complete request for this long is closed


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a header timeout: uvicorn closes idle keep-alive
    connections but waits forever on a client that never finishes its request headers
    (measured: 300 such connections stayed open). Every HEADER_SECONDS, a connection with no
    request in progress and no new request since the last look is closed."""

    def connection_made(self, transport) -> None:  # noqa: ANN001
        super().connection_made(transport)
        self._seen_cycle = None
        self._header_timer = self.loop.call_later(HEADER_SECONDS, self._check_headers)

    def _check_headers(self) -> None:
        if self.transport.is_closing():
            return
        cycle = self.cycle
        busy = cycle is not None and not cycle.response_complete
        if not busy and cycle is self._seen_cycle:
            self.transport.close()
            return
        self._seen_cycle = cycle
        self._header_timer = self.loop.call_later(HEADER_SECONDS, self._check_headers)

    def connection_lost(self, exc) -> None:  # noqa: ANN001
        self._header_timer.cancel()
        super().connection_lost(exc)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_server(app, access_log: bool = True, log_config: Any = None) -> uvicorn.Server:
    kw: dict[str, Any] = {}
    if log_config is not None:
        kw["log_config"] = log_config
    config = uvicorn.Config(app, access_log=access_log, timeout_keep_alive=KEEP_ALIVE_SECONDS,
                            timeout_graceful_shutdown=5, http=TimedH11Protocol, **kw)
    return uvicorn.Server(config)


class RunningServer:
    """A server on a daemon thread: ``url``, ``app``, ``batcher`` (model mode); stop it with
    ``shutdown()``."""

    def __init__(self, app, sock: socket.socket):
        self.app = app
        self.url = url_of(sock)
        self.server = uvicorn_server(app, access_log=False, log_config=None)
        self._sock = sock
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                        name="orchestra-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 30 s")
            time.sleep(0.01)

    @property
    def batcher(self):
        return self.app.state.batcher

    @property
    def model_name(self) -> str:
        return self.app.state.name

    def shutdown(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        if self.app.state.batcher is not None:
            self.app.state.batcher.close()

    def server_close(self) -> None:
        self._sock.close()


def serve_in_thread(backend=None, *, pipeline=None, model_name: str | None = None,
                    host: str = "127.0.0.1", port: int = 0, max_batch: int = 16,
                    settings: ServeSettings | None = None) -> RunningServer:
    """Serve ``pipeline`` (or, with ``backend`` alone, the model only) on a thread."""
    settings = settings or ServeSettings(max_batch=max_batch)
    if pipeline is not None:
        name = model_name or "default"
    else:
        name = model_name or str(backend.spec().get("model") or backend.name)
    app = create_app(pipeline=pipeline, backend=backend, name=name, settings=settings)
    return RunningServer(app, bind(host, port))
