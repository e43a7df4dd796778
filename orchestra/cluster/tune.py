"""``orchestra tune --ray``: each trial's questions answered in parallel by Ray actors.

The study itself does not change: one driver asks Optuna for a configuration, tells it the
score, and keeps ``study.db`` (SQLite) and ``answers.jsonl`` in the output folder, so a killed
tune resumes exactly as a local one does, on either. Only the answering moves: the questions a
configuration has not answered yet go to actors (each holding one backend built from the
pipeline file's ``backend`` section), a question at a time, and their rows come back to the
driver, which caches them as before. An actor that dies is replaced and its question asked
again (up to ``RETRIES`` times).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

from orchestra.errors import OrchestraError
from orchestra.eval.datasets import Sample
from orchestra.tune.study import Tuner

log = logging.getLogger(__name__)

RETRIES = 3


class TuneWorker(Tuner):
    """One backend inside a Ray actor; builds each configuration's pipeline on it (the last
    one is kept: a trial's questions arrive one after another) and answers a sample as the
    Tuner does."""

    def __init__(self, backend: dict, target: str, allow_modules: Sequence[str]):
        # Tuner's study and cache live with the driver; a worker needs only what build(),
        # corpus() and answer() read.
        from orchestra.backends import load_backend

        options = {k: v for k, v in backend.items() if k != "type"}
        self.backend = load_backend(backend.get("type", "transformers"),
                                    allow_modules=tuple(allow_modules), **options)
        self.target = target
        self.allow = tuple(allow_modules)
        self._corpora = {}
        self._pipe: tuple[str, Any] | None = None

    def answer_one(self, data: dict, sample: Sample) -> dict:
        from orchestra.cache import stable_hash

        key = stable_hash(data)
        if self._pipe is None or self._pipe[0] != key:
            self._pipe = (key, self.build(data))
        return self.answer(self._pipe[1], sample)

    def ready(self) -> bool:
        return True


class RayTuner(Tuner):
    """A Tuner whose questions are answered by ``actors`` Ray actors (Ray initialised)."""

    def __init__(self, *args: Any, actors: int = 2, cpus: float = 1.0, gpus: float = 0.0,
                 **kw: Any):
        super().__init__(*args, **kw)
        self.n_actors, self.cpus, self.gpus = actors, cpus, gpus
        self.actors: list[Any] = []
        self.replaced = 0

    def _new_actor(self):
        import ray

        from orchestra.cluster.connect import worker_env

        section = self.data.get("backend") if isinstance(self.data.get("backend"), dict) else {}
        cls = ray.remote(TuneWorker).options(num_cpus=self.cpus, num_gpus=self.gpus,
                                             runtime_env={"env_vars": worker_env(self.cpus)})
        return cls.remote(dict(section or {"type": "transformers", "model": "embedded"}),
                          self.target, list(self.allow))

    def answer_samples(self, data: dict, samples: Sequence[Sample]) -> Iterator[tuple]:
        import ray
        from ray.exceptions import RayActorError

        if not samples:
            return
        self.build(data)  # a configuration that cannot be built fails here, as locally
        while len(self.actors) < min(self.n_actors, len(samples)):
            self.actors.append(self._new_actor())
        todo = list(samples)
        inflight: dict[Any, tuple[int, Sample]] = {}
        tries: dict[str, int] = {}

        def feed(i: int) -> None:
            if todo:
                sample = todo.pop(0)
                inflight[self.actors[i].answer_one.remote(data, sample)] = (i, sample)

        for i in range(len(self.actors)):
            feed(i)
        while inflight:
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            i, sample = inflight.pop(ref)
            try:
                row = ray.get(ref)
            except RayActorError as e:
                tries[sample.sample_id] = tries.get(sample.sample_id, 0) + 1
                if tries[sample.sample_id] > RETRIES:
                    raise OrchestraError(f"{sample.sample_id}: its actor died {RETRIES + 1} "
                                         "times; the study and answers so far are kept, rerun "
                                         "to resume") from None
                log.warning("tune actor %d died (%s); replacing it", i,
                            str(e).splitlines()[0])
                self.replaced += 1
                self.actors[i] = self._new_actor()
                todo.insert(0, sample)
                feed(i)
                continue
            yield sample, row
            feed(i)

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []


def run_on_ray(ray_options: dict, data: dict, backend: Any, samples: Sequence[Sample],
               out_dir: Any, the_plan: Any, trials: int | None, minutes: float | None,
               **kw: Any):
    """``Tuner.run`` with the questions answered on Ray (joined or started for the call)."""
    import math
    import os

    from orchestra.cluster.connect import cluster

    actors, cpus = ray_options.get("actors", 2), ray_options.get("cpus", 1.0)
    local_cpus = max(os.cpu_count() or 1, math.ceil(actors * cpus))
    with cluster(ray_options.get("address"), num_cpus=local_cpus):
        tuner = RayTuner(data, backend, samples, out_dir, the_plan, actors=actors, cpus=cpus,
                         gpus=ray_options.get("gpus", 0.0), **kw)
        try:
            return tuner.run(trials, minutes)
        finally:
            tuner.close()
