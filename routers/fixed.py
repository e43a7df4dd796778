"""The baseline router: always one strategy."""

from __future__ import annotations

from orchestra.errors import ConfigError
from orchestra.types import Route
from orchestra.routers.base import Router


class FixedRouter(Router):
    name = "fixed"

    def __init__(self, strategies, strategy: str | None = None):
        super().__init__(strategies)
        if strategy is None:
            if len(self.strategies) != 1:
                raise ConfigError("router 'fixed' needs `strategy:` when there are several "
                                  f"strategies ({', '.join(self.strategies)})")
            strategy = next(iter(self.strategies))
        if strategy not in self.strategies:
            raise ConfigError(f"router 'fixed': unknown strategy {strategy!r}; "
                              f"defined: {', '.join(self.strategies)}")
        self.strategy = strategy

    def _route(self, question, corpus, backend, generation=None):
        if self.strategy not in self.available(backend):
            raise ConfigError(f"strategy {self.strategy!r} needs capabilities the "
                              f"{backend.name} backend lacks")
        return Route(strategy=self.strategy, reason=f"fixed router: always {self.strategy}")
