"""Joining a Ray cluster, or starting a local one for the length of a command.

``--ray`` alone starts a local cluster on 127.0.0.1 (no dashboard, a small object store) and
stops it when the command ends; ``--ray auto`` joins the cluster ``ray start --head`` started on
this machine; ``--ray HOST:PORT`` (or ``ray://HOST:PORT`` for Ray Client) joins that one. An
address where nothing answers is refused in a few seconds with one line: ``ray.init`` itself
retries a dead GCS address for about a minute before it gives up.
"""

from __future__ import annotations

import os
import socket
import sys
from contextlib import contextmanager
from typing import Iterator

from orchestra.errors import InputError

INSTALL = 'pip install "orchestra-longdoc[ray]"'
LOCAL = "local"  # what a bare --ray means
REACH_SECONDS = 3.0
# The object store holds samples and rows in flight, never models: 100 MB is plenty, and keeps a
# local cluster from reserving a third of a small machine's memory.
OBJECT_STORE_BYTES = 100 * 1024 * 1024
START_TRIES = 3


def require_ray(flag: str = "--ray", local: bool = False):
    """``ray``, or one line naming the install. ``local``: this process will start a local
    cluster, which then advertises 127.0.0.1 (Ray otherwise swaps 127.0.0.1 for the machine's
    routable address); only read when Ray is first imported."""
    if local and "ray" not in sys.modules:
        # Ray's switch for loopback-only clusters (named for the platforms it defaults on).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise InputError(f"{flag} needs Ray, which is not installed; install it with "
                         f"{INSTALL}") from None
    return ray


def add_ray_arguments(p, what: str | None = "actors") -> None:
    """``--ray [ADDRESS]``, ``--ray-actors`` (unless ``what`` is None), ``--ray-cpus``,
    ``--ray-gpus`` on a parser."""
    p.add_argument("--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
                   help="run on Ray: alone, a local cluster started for this command; 'auto', "
                        "the cluster `ray start` runs here; HOST:PORT or ray://HOST:PORT, "
                        f"that cluster (needs {INSTALL})")
    if what is not None:
        p.add_argument("--ray-actors", type=int, default=2, metavar="N",
                       help=f"--ray: {what}, each holding one backend (default 2)")
    p.add_argument("--ray-cpus", type=float, default=1.0, metavar="C",
                   help="--ray: CPUs per actor or replica (default 1; OMP_NUM_THREADS "
                        "follows it)")
    p.add_argument("--ray-gpus", type=float, default=0.0, metavar="G",
                   help="--ray: GPUs per actor or replica (default 0; 1 for a vLLM or CUDA "
                        "backend)")


def check_ray_arguments(args) -> None:
    """Refuse bad --ray-* values before anything starts."""
    if args.ray is None:
        return
    require_ray(local=args.ray == LOCAL)
    if getattr(args, "ray_actors", 1) < 1:
        raise InputError(f"--ray-actors must be at least 1, got {args.ray_actors}")
    if not args.ray_cpus > 0:
        raise InputError(f"--ray-cpus must be positive, got {args.ray_cpus}")
    if args.ray_gpus < 0:
        raise InputError(f"--ray-gpus must be 0 or more, got {args.ray_gpus}")
    check_address(args.ray)


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of an address that names one; None for 'local' and 'auto'."""
    if address in (LOCAL, "auto"):
        return None
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--ray {address}: not a cluster address; give HOST:PORT (the GCS "
                         "address `ray start --head` prints, port 6379 by default), "
                         "ray://HOST:PORT, 'auto', or --ray alone for a local cluster")
    return host.strip("[]"), int(port)


def check_address(address: str) -> None:
    """One line, in a few seconds, when no Ray cluster answers at ``address``: the port must
    take a TCP connection and then complete a gRPC (HTTP/2) handshake, as Ray's GCS and Ray
    Client servers do (a bare TCP accept is not enough: a firewall or proxy may accept any
    connection and never answer, where ``ray.init`` would wait a minute)."""
    hp = _host_port(address)
    if hp is None:
        return
    why = None
    try:
        with socket.create_connection(hp, timeout=REACH_SECONDS):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
    if why is None:
        why = _ray_silent(address, *hp)
    if why is not None:
        raise InputError(f"--ray {address}: no Ray cluster answers there ({why}); start one "
                         "with `ray start --head`, or give --ray alone for a local "
                         "cluster")


def _ray_silent(address: str, host: str, port: int) -> str | None:
    """Why ``host:port`` is not a Ray endpoint, or None when it answers as one: a GCS answers
    its GetClusterId call, a Ray Client server completes the gRPC handshake."""
    import grpc  # installed with ray

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    channel = grpc.insecure_channel(target)
    try:
        # Empty requests are zero bytes in protobuf.
        method = ("/ray.rpc.RayletDriver/ClusterInfo" if address.startswith("ray://")
                  else "/ray.rpc.NodeInfoGcsService/GetClusterId")
        channel.unary_unary(method)(b"", timeout=REACH_SECONDS)
        return None
    except grpc.RpcError as e:
        code = e.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return None  # a Ray cluster with token auth: ray.init brings the token
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"no answer within {REACH_SECONDS:.0f} s"
        return f"it does not answer as Ray does: {code.name.lower()}"
    finally:
        channel.close()


def worker_env(cpus: float) -> dict[str, str]:
    """What every actor's process sees: one thread pool sized to its CPUs, quiet progress, and
    this machine's cache root when one was set (point it at a shared folder on a cluster)."""
    env = {"OMP_NUM_THREADS": str(max(1, int(cpus))), "TOKENIZERS_PARALLELISM": "false",
           "ORCHESTRA_QUIET": "1", "TRANSFORMERS_VERBOSITY": "error"}
    for key in ("ORCHESTRA_CACHE", "ORCHESTRA_DATA", "HF_HUB_OFFLINE"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def start_local(num_cpus: int | None = None, num_gpus: int | None = None):
    """A local cluster on 127.0.0.1 (no dashboard, a small object store), joined by this
    process; ``stop_local`` ends it. The raylet gives Ray's dashboard agent a hard-coded 15 s
    to start and exits when it is slower (ray-project/ray issue 65983), which it is on a
    heavily loaded machine (seen here at load average 19); a start that fails so is tried
    again, ``START_TRIES`` times in all (the agent's imports are warm by then)."""
    ray = require_ray(local=True)
    for attempt in range(1, START_TRIES + 1):
        try:
            return ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                            object_store_memory=OBJECT_STORE_BYTES,
                            _node_ip_address="127.0.0.1", log_to_driver=False,
                            configure_logging=False)
        except Exception as e:  # Ray raises a bare Exception for the timeout
            ray.shutdown()
            if attempt == START_TRIES or "timed out during startup" not in str(e):
                raise


def stop_local() -> None:
    """Leave the cluster (and end it, when this process started it)."""
    import ray

    ray.shutdown()


@contextmanager
def cluster(address: str | None, num_cpus: int | None = None) -> Iterator[object]:
    """Ray, initialised on ``address`` for the block. A cluster this process already joined (a
    test's, a notebook's) is used as it is and left running; one started here is shut down."""
    ray = require_ray(local=address in (None, LOCAL))
    if ray.is_initialized():
        yield ray
        return
    if address in (None, LOCAL):
        start_local(num_cpus=num_cpus)
    else:
        check_address(address)
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except ConnectionError as e:
            raise InputError(f"--ray {address}: cannot join the Ray cluster there "
                             f"({str(e).splitlines()[0]})") from None
    try:
        yield ray
    finally:
        stop_local()
