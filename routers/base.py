"""A router decides, per query, which strategy reads the corpus.

All routers implement ``route(question, corpus, backend) -> Route``. A router is given the
pipeline's strategies (name -> Strategy) and may pick only those whose ``requires`` the backend
meets. Routers that answer while deciding (self_route) return the Answer too, via
``route_and_answer``; the Pipeline calls that.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping

from orchestra.backends.base import Backend
from orchestra.corpus import Corpus
from orchestra.errors import ConfigError
from orchestra.types import Answer, Route


class Router(ABC):
    name: ClassVar[str] = "router"

    def __init__(self, strategies: Mapping[str, Any], **options: Any):
        if not strategies:
            raise ConfigError(f"router {self.name!r} has no strategies to choose from")
        if options:
            raise ConfigError(f"router {self.name!r}: unknown option(s) {', '.join(sorted(options))}")
        self.strategies = dict(strategies)

    def available(self, backend: Backend) -> dict[str, Any]:
        """The strategies this backend can run."""
        return {n: s for n, s in self.strategies.items() if s.requires <= backend.capabilities}

    @abstractmethod
    def route(self, question: str, corpus: Corpus, backend: Backend) -> Route: ...

    def route_and_answer(self, question: str, corpus: Corpus, backend: Backend) -> Answer:
        """Decide, then answer with the chosen strategy. Routers that read while deciding
        override this; the Answer's route carries the routing cost (its wall_seconds is the time spent deciding)."""
        t0 = time.perf_counter()
        route = self.route(question, corpus, backend)
        if not route.cost.wall_seconds:
            route.cost.wall_seconds = time.perf_counter() - t0
        answer = self.strategies[route.strategy].answer(question, corpus)
        answer.route = route
        answer.cost = answer.cost + route.cost
        return answer

    def options(self) -> dict[str, Any]:
        """Settings that rebuild this router (pipeline.to_yaml writes them)."""
        return {}
