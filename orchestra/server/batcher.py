"""Gathers requests that arrive together into one backend batch.

HTTP handlers run on their own threads; sending each request to the backend alone would waste
its native batching (the transformers backend generates a batch in about the time of one
request). A single worker takes whatever is queued, up to ``max_batch``, and generates it as
one batch.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

from orchestra.backends.base import Backend, GenerationRequest, GenerationResult


class Batcher:
    def __init__(self, backend: Backend, max_batch: int = 16, gather_seconds: float = 0.01):
        self.backend = backend
        self.max_batch = max(1, int(max_batch))
        self.gather_seconds = gather_seconds
        self._queue: queue.Queue = queue.Queue()
        self._stopped = threading.Event()
        self._worker = threading.Thread(target=self._loop, name="orchestra-batcher", daemon=True)
        self._worker.start()
        self.batch_sizes: list[int] = []  # for the server's /health and tests

    def submit(self, request: GenerationRequest) -> "Future[GenerationResult]":
        fut: Future = Future()
        self._queue.put((request, fut))
        return fut

    def close(self) -> None:
        self._stopped.set()
        self._queue.put(None)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            # A short wait lets requests sent at the same moment join this batch.
            try:
                while len(batch) < self.max_batch:
                    item = self._queue.get(timeout=self.gather_seconds)
                    if item is None:
                        self._stopped.set()
                        break
                    batch.append(item)
            except queue.Empty:
                pass
            self._run(batch)

    def _run(self, batch) -> None:
        self.batch_sizes.append(len(batch))
        try:
            results = self.backend.generate([r for r, _ in batch])
        except Exception as e:  # noqa: BLE001  (reported to each waiting request)
            if len(batch) == 1:
                batch[0][1].set_exception(e)
                return
            # One bad request (say, too long) must not fail the others: retry them one by one.
            for item in batch:
                self._run([item])
            return
        for (_, fut), res in zip(batch, results):
            fut.set_result(res)
