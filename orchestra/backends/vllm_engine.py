"""The process's one vLLM engine: an ``AsyncLLM`` driven by an event loop on its own thread.

Every caller, on any thread, submits requests to the same engine, so requests that overlap in
time are scheduled together by vLLM's continuous batching (a pipeline server's concurrent
requests, a map phase's batch) and stream as they are made. The engine itself runs in vLLM's
engine-core process; this thread only feeds it and collects outputs.

One engine per process: a second backend asking for the same settings shares it; one asking
for different settings is refused (two engines would hold two copies of the weights and of the
KV cache).
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import json
import queue
import threading
from concurrent.futures import Future
from typing import Any, AsyncIterator, Iterator

from orchestra.errors import BackendError

_engine: "Engine | None" = None
_engine_lock = threading.Lock()
_ids = itertools.count()


def shared_engine(engine_args: dict[str, Any]) -> "Engine":
    """The process's engine for ``engine_args``, started on first use."""
    global _engine
    with _engine_lock:
        if _engine is not None and _engine.args != engine_args:
            raise BackendError(
                "one vLLM engine per process: this process already runs "
                f"{json.dumps(_engine.args, sort_keys=True, default=str)}, and a second with "
                f"{json.dumps(engine_args, sort_keys=True, default=str)} would hold the weights "
                "and KV cache twice; give every pipeline the same backend settings")
        if _engine is None:
            _engine = Engine(engine_args)
        return _engine


class EngineStats:
    """vLLM's own scheduler metrics, summed over the engine's life: prefix-cache token
    queries and hits, and the most requests it ran in one step. A stat-logger factory
    (vLLM's StatLoggerBase interface), so vLLM itself reports into it."""

    def __init__(self):
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.max_running = 0
        self.lock = threading.Lock()

    def factory(self):
        from vllm.v1.metrics.loggers import StatLoggerBase

        stats = self

        class Recorder(StatLoggerBase):
            def __init__(self, vllm_config, engine_index: int = 0):
                pass

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None,
                       engine_idx: int = 0):
                if scheduler_stats is None:
                    return
                pc = scheduler_stats.prefix_cache_stats
                with stats.lock:
                    stats.prefix_cache_queries += int(getattr(pc, "queries", 0) or 0)
                    stats.prefix_cache_hits += int(getattr(pc, "hits", 0) or 0)
                    stats.max_running = max(stats.max_running,
                                            int(scheduler_stats.num_running_reqs))

            def log_engine_initialized(self):
                pass

        return Recorder

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {"prefix_cache_queries": self.prefix_cache_queries,
                    "prefix_cache_hits": self.prefix_cache_hits, "max_running": self.max_running}

    def reset_peak(self) -> None:
        with self.lock:
            self.max_running = 0


class Engine:
    def __init__(self, engine_args: dict[str, Any]):
        self.args = dict(engine_args)
        self.stats = EngineStats()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="orchestra-vllm",
                                        daemon=True)
        self._thread.start()
        # AsyncLLM binds its output handler to the running loop: build it on that loop.
        self.llm = self.call(self._build()).result()
        # Left to the interpreter's exit, the engine-core process dies first and AsyncLLM's
        # output handler logs an EngineDeadError traceback onto already-closed streams.
        atexit.register(self.shutdown)

    def shutdown(self) -> None:
        """Stop the engine-core process and this engine's loop (once; at exit by default); the
        process's next vLLM backend starts a new engine."""
        global _engine
        with _engine_lock:
            if _engine is self:
                _engine = None
        if not self._thread.is_alive():
            return
        try:
            self.llm.shutdown()
            # Dropped now, not at interpreter teardown: AsyncLLM.__del__ shuts down again and
            # fails once the modules it calls are gone ("Exception ignored in ... __del__").
            self.llm = None
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)

    async def _build(self):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**self.args),
                                         stat_loggers=[self.stats.factory()])

    def call(self, coro) -> Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    # -- requests --------------------------------------------------------------------------
    def _outputs(self, prompt_ids: list[int], params: Any) -> AsyncIterator[Any]:
        return self.llm.generate({"prompt_token_ids": prompt_ids}, params,
                                 request_id=f"orchestra-{next(_ids)}")

    async def _final(self, prompt_ids: list[int], params: Any) -> Any:
        last = None
        async for out in self._outputs(prompt_ids, params):
            last = out
        return last

    def generate(self, batch: list[tuple[list[int], Any]]) -> list[Any]:
        """Final outputs of a batch; all of it reaches the engine at once (one gather on the
        engine's loop), so vLLM schedules it together with whatever else is running."""
        async def run_all():
            return await asyncio.gather(*(self._final(ids, p) for ids, p in batch))

        return self.call(run_all()).result()

    def stream(self, prompt_ids: list[int], params: Any) -> Iterator[Any]:
        """Outputs as the engine makes them (``params`` should ask for DELTA outputs).
        Closing the iterator early aborts the request in the engine."""
        items: queue.Queue = queue.Queue()
        done = object()

        async def pump():
            try:
                async for out in self._outputs(prompt_ids, params):
                    items.put(out)
            except BaseException as e:  # noqa: BLE001  (handed to the reading thread)
                items.put(e)
            finally:
                items.put(done)

        fut = self.call(pump())
        try:
            while (item := items.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not fut.done():
                fut.cancel()  # cancelling generate() aborts the request in vLLM

    def tokenizer(self) -> Any:
        return self.llm.get_tokenizer()

    @property
    def block_size(self) -> int:
        """Tokens per KV-cache block (the prefix cache's unit)."""
        return int(self.llm.vllm_config.cache_config.block_size)

    @property
    def max_model_len(self) -> int:
        return int(self.llm.model_config.max_model_len)
