"""A router decides, per query, which strategy reads the corpus.

All routers implement ``_route(question, corpus, backend) -> Route``; ``route`` times it (the
one timing wrapper: a Route's ``cost.wall_seconds`` is the time spent deciding). A caller's
reply settings (``generation``, a GenerationSettings) reach ``_route`` as ``generation=`` when
given: feasibility (``fits``) depends on the reply budget, and the strategy answers with them. A router is
given the pipeline's strategies (name -> Strategy) and knows them only through the Strategy
interface (orchestra/strategies/base.py: ``kind``, ``requires``, ``can_decline``, ``fits``,
``signals``, ``answer``). ``first_feasible`` is the one "walk an order, take the first strategy
that can read this corpus, note those passed over" loop. Routers that answer while deciding
(self_route) override ``route_and_answer``; the Pipeline calls that.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterable, Mapping, NamedTuple

from orchestra import observe
from orchestra.backends.base import Backend
from orchestra.corpus import Corpus
from orchestra.errors import ConfigError
from orchestra.spec import Component
from orchestra.backends.base import GenerationSettings
from orchestra.strategies.base import Strategy, given
from orchestra.types import Answer, Route

from orchestra.routers import kinds


def feasible(name: str, strategy: Strategy, corpus: Corpus, question: str,
             backend: Backend, generation: GenerationSettings | None = None
             ) -> tuple[bool, str]:
    """(whether ``strategy`` can read this corpus on this backend beside the reply budget of
    ``generation``, why not)."""
    missing = sorted(strategy.requires - backend.capabilities)
    if missing:
        return False, f"{name} needs {', '.join(missing)}"
    fit = strategy.fits(corpus, question, **given(generation))
    if not fit.ok:
        size = fit.needed if fit.needed is not None else corpus.n_tokens
        room = f" (room for {fit.available})" if fit.available is not None else ""
        return False, f"{name} cannot take {size} tokens{room}"
    return True, ""


class Pick(NamedTuple):
    name: str | None  # the pipeline name chosen, None when nothing in the order can read
    wanted: str | None  # the entry of the order that named it
    notes: list[str]  # why the ones before it were passed over


def first_feasible(order: Iterable[str], strategies: Mapping[str, Strategy], corpus: Corpus,
                   question: str, backend: Backend, skip: Iterable[str] = (),
                   note_missing: bool = False,
                   generation: GenerationSettings | None = None) -> Pick:
    """The first strategy of ``order`` (pipeline names, kinds or types) that can read."""
    notes: list[str] = []
    skip = set(skip)
    for wanted in order:
        names = kinds.candidates(strategies, wanted)
        if not names and note_missing:
            notes.append(f"{wanted} is not in this pipeline")
        for name in names:
            if name in skip:
                continue
            ok, why = feasible(name, strategies[name], corpus, question, backend, generation)
            if ok:
                return Pick(name, wanted, notes)
            notes.append(why)
    return Pick(None, None, notes)


def since(t0: float) -> float:
    """Seconds since ``t0`` (time.perf_counter)."""
    return time.perf_counter() - t0


class Router(Component, ABC):
    name: ClassVar[str] = "router"

    def __init__(self, strategies: Mapping[str, Strategy]):
        if not strategies:
            raise ConfigError(f"router {self.name!r} has no strategies to choose from")
        self.strategies = dict(strategies)

    def available(self, backend: Backend) -> dict[str, Strategy]:
        """The strategies this backend can run."""
        return {n: s for n, s in self.strategies.items() if s.requires <= backend.capabilities}

    def route(self, question: str, corpus: Corpus, backend: Backend, *,
              generation: GenerationSettings | None = None) -> Route:
        """The decision; its cost's wall_seconds is the time spent deciding."""
        t0 = time.perf_counter()
        route = self._route(question, corpus, backend, **given(generation))
        route.router = self.name
        route.cost.wall_seconds = since(t0)
        return route

    @abstractmethod
    def _route(self, question: str, corpus: Corpus, backend: Backend) -> Route: ...

    def route_and_answer(self, question: str, corpus: Corpus, backend: Backend, *,
                         generation: GenerationSettings | None = None) -> Answer:
        """Decide, then answer with the chosen strategy (with the caller's ``generation``
        settings). Routers that read while deciding override this; the Answer's route carries
        the routing cost."""
        route = self.route(question, corpus, backend, generation=generation)
        step = route.as_step()
        observe.emit(step)  # observers see the decision before the strategy's own steps
        answer = self.strategies[route.strategy].answer(question, corpus,
                                                        **given(generation))
        answer.trace.steps.insert(0, step)
        answer.route = route
        answer.cost = answer.cost + route.cost
        return answer
