"""``orchestra eval --ray``: the (question, strategy) pairs answered by Ray actors.

Each actor builds the pipeline from the same file and holds its one backend; it answers a pair
with the very ``Runner.evaluate`` a local run uses, so its row (and its content key) is the row
a local run writes. The driver keeps everything else of a local run: the output-folder lock,
run.json, the resume by key, one writer of results.jsonl (rows appended and fsynced as they
come back, in the order they finish), and one progress bar over all actors.

Pairs go to actors a sample at a time: an actor answers every pending strategy of its sample
before taking the next one, so a sample's retriever indexes are built once, by that actor, and
land in the index cache (keyed by corpus content) that every other reader loads from.

An actor that dies (``ray.kill``, a crash, its node gone) is replaced by a new one; the pairs it
held are asked again, up to ``RETRIES`` times each. A row is written only when its pair's
answer comes back and never twice, so nothing is lost or duplicated; the driver killed instead
leaves every finished row on disk, and a rerun (local or on Ray) answers only the rest.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import Any, Iterator, Sequence

from orchestra.errors import OrchestraError
from orchestra.eval.datasets import Sample
from orchestra.eval.runner import Runner

log = logging.getLogger(__name__)

RETRIES = 3  # asks of one pair whose actor died, before the run stops (rows so far are kept)


class EvalWorker:
    """One backend and the pipeline around it, inside a Ray actor."""

    def __init__(self, pipeline: str | None, allow_modules: Sequence[str],
                 strategies: Sequence[str], seed: int, second_read: bool = False):
        from orchestra.eval.runner import fix_seeds
        from orchestra.pipeline import Pipeline

        pipe = (Pipeline.from_yaml(pipeline, allow_modules=allow_modules) if pipeline
                else Pipeline.default())
        self.runner = Runner(pipe, "", strategies, seed=seed, progress=False,
                             second_read=second_read)
        fix_seeds(seed)

    def evaluate(self, sample: Sample, name: str) -> dict:
        return self.runner.evaluate(sample, name)

    def pid(self) -> int:
        import os

        return os.getpid()


class RayRunner(Runner):
    """A Runner whose answers come from ``actors`` Ray actors (Ray already initialised)."""

    def __init__(self, pipeline: Any, out_dir: str | Path, strategies: Sequence[str] = ("router",),
                 *, pipeline_file: str | None, allow_modules: Sequence[str] = (),
                 actors: int = 2, cpus: float = 1.0, gpus: float = 0.0, **kw: Any):
        super().__init__(pipeline, out_dir, strategies, **kw)
        self.pipeline_file = str(Path(pipeline_file).resolve()) if pipeline_file else None
        self.allow_modules = list(allow_modules)
        self.n_actors = actors
        self.cpus, self.gpus = cpus, gpus
        self.actors: list[Any] = []  # live handles (a test kills one mid-run)
        self.replaced = 0

    def _new_actor(self):
        import ray

        from orchestra.cluster.connect import worker_env

        cls = ray.remote(EvalWorker).options(
            num_cpus=self.cpus, num_gpus=self.gpus,
            runtime_env={"env_vars": worker_env(self.cpus)})
        return cls.remote(self.pipeline_file, self.allow_modules,
                          [s for s in self.strategies], self.seed, self.second_read)

    def answers(self, todo: Sequence[tuple[Sample, str]], bar) -> Iterator[dict]:
        import ray
        from ray.exceptions import RayActorError

        groups = _by_sample(todo)
        n = min(self.n_actors, len(groups))
        if len(self.actors) < n:
            self.actors += [self._new_actor() for _ in range(n - len(self.actors))]
        held: list[deque] = [deque() for _ in range(n)]
        inflight: dict[Any, tuple[int, Sample, str]] = {}
        tries: dict[str, int] = {}
        written: set[str] = set()

        def feed(i: int) -> None:
            if not held[i] and groups:
                held[i] = groups.popleft()
            if held[i]:
                sample, name = held[i].popleft()
                inflight[self.actors[i].evaluate.remote(sample, name)] = (i, sample, name)

        try:
            for i in range(n):
                feed(i)
            while inflight:
                (ref,), _ = ray.wait(list(inflight), num_returns=1)
                i, sample, name = inflight.pop(ref)
                try:
                    row = ray.get(ref)
                except RayActorError as e:
                    self._replace(i, sample, name, tries, e)
                    held[i].appendleft((sample, name))
                    feed(i)
                    continue
                self._check_key(row, sample, name)
                if row["key"] not in written:
                    written.add(row["key"])
                    bar.set_postfix_str(f"{sample.sample_id} {name}"[-60:])
                    yield row
                feed(i)
        finally:  # their CPUs go back to the cluster, whatever stopped the run
            for a in self.actors:
                ray.kill(a)
            self.actors = []

    def _check_key(self, row: dict, sample: Sample, name: str) -> None:
        if row.get("key") != self.row_key(sample, name):
            raise OrchestraError(
                f"an actor's row for {sample.sample_id}/{name} has another key than "
                "this driver computes: the cluster runs other orchestra code or another "
                "pipeline file than this machine")

    def warm(self) -> None:
        """Start every actor and wait until each has built its pipeline (benchmarks time the
        answering alone)."""
        import ray

        self.actors += [self._new_actor() for _ in range(self.n_actors - len(self.actors))]
        ray.get([a.pid.remote() for a in self.actors])

    def _replace(self, i: int, sample: Sample, name: str, tries: dict, error: Exception) -> None:
        key = self.row_key(sample, name)
        tries[key] = tries.get(key, 0) + 1
        if tries[key] > RETRIES:
            raise OrchestraError(f"{sample.sample_id}/{name}: its actor died {RETRIES + 1} "
                                 f"times ({str(error).splitlines()[0]}); the rows so far are "
                                 "kept, rerun to resume") from None
        log.warning("actor %d died (%s); replacing it and asking %s/%s again", i,
                    str(error).splitlines()[0], sample.sample_id, name)
        self.replaced += 1
        self.actors[i] = self._new_actor()


def _by_sample(todo: Sequence[tuple[Sample, str]]) -> deque[deque[tuple[Sample, str]]]:
    """The (sample, strategy) pairs grouped by sample (todo lists a sample's strategies
    together): an actor answers one sample's strategies in a row, over one corpus."""
    groups: deque[deque[tuple[Sample, str]]] = deque()
    for sample, name in todo:
        if groups and groups[-1][0][0] is sample:
            groups[-1].append((sample, name))
        else:
            groups.append(deque([(sample, name)]))
    return groups
