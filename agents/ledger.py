"""Every backend call an agent strategy makes goes through one Ledger, so Cost is exact.

It also records dropped notes (chunk, reason, the reply) for the Trace: a worker that found
nothing, or replied with something empty or garbled, is a recorded skip, not an error.
"""

from __future__ import annotations

from typing import Sequence

from orchestra.backends.base import Backend, GenerationRequest, GenerationResult
from orchestra.types import Cost, Trace


class Ledger:
    def __init__(self, backend: Backend):
        self.backend = backend
        self.cost = Cost()
        self.trace = Trace()
        self.dropped: list[dict] = []

    def generate(self, requests: Sequence[GenerationRequest], step: str,
                 stream_as: tuple | None = None, **detail) -> list[GenerationResult]:
        """One backend call for the whole list (backends batch it natively). ``stream_as``
        ((strategy, evidence), one request): the final read, streamed inside Pipeline.stream."""
        with self.trace.step(step, requests=len(requests), **detail) as st:
            if stream_as is not None and len(requests) == 1:
                from orchestra.streaming import stream_read

                results = [stream_read(stream_as[0], requests[0], stream_as[1])]
            else:
                results = self.backend.generate(list(requests))
            st.detail.update(prompt_tokens=sum(r.prompt_tokens for r in results),
                             generated_tokens=sum(r.generated_tokens for r in results))
        for r in results:
            self.cost.add_generation(r)
        return results

    def drop(self, where: str, reason: str, reply: str) -> None:
        self.dropped.append({"where": where, "reason": reason, "reply": reply[:200]})

    def drop_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.dropped:
            counts[d["reason"]] = counts.get(d["reason"], 0) + 1
        return counts
