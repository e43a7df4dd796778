"""Self-Route (Li et al., 2024): answer with RAG first, letting the model decline.

The first strategy (RAG by default) reads with ``may_decline=True``: with its ``decline:
explicit`` the reader is told it may reply "unanswerable" when the retrieved passages lack the
answer; with ``decline: implicit`` it reads with its ordinary prompt and only a decline in its
own words ("The text does not mention ...") escalates (small readers answer less often when told
they may decline; the SmolLM2 profile reads implicitly). An answer is accepted as is;
a declined one escalates to the first usable ``fallback`` strategy: full context when the corpus
fits the window, else KV pages or agents (the default order). The failed attempt's cost is the
cost of routing: it is in ``answer.route.cost`` and added to ``answer.cost``, so a Self-Route
answer always shows what it really spent.

``route()`` alone cannot know whether RAG will decline; it names the first strategy. The
Pipeline calls ``route_and_answer``, which reads while deciding.
"""

from __future__ import annotations

import time
from typing import Any

from orchestra.errors import ConfigError, ContextOverflowError
from orchestra.declines import corpus_titles, declined as rule_declined
from orchestra.types import Answer, Cost, Route
from orchestra.strategies.base import given

from orchestra.routers import features as F
from orchestra.routers import kinds
from orchestra.routers.base import Pick, Router, first_feasible, since

DEFAULT_FALLBACK = [kinds.FULL, kinds.PAGES, kinds.AGENTS]


def declined(answer: Answer, corpus=None) -> bool:
    """Whether the first read declined: orchestra.declines' rule (a worded decline, or a reply
    offering nothing beyond the question and the documents' titles), or the strategy's own
    ``unanswerable``."""
    titles = corpus_titles(corpus) if corpus is not None else ()
    return answer.unanswerable or rule_declined(answer.text, answer.question or None, titles)


class SelfRouter(Router):
    name = "self_route"

    def __init__(self, strategies, first: str | None = None,
                 fallback: list[str] | None = None):
        super().__init__(strategies)
        if first is not None and kinds.resolve_name(self.strategies, first) is None:
            raise ConfigError(f"router 'self_route': first strategy {first!r} is not defined; "
                              f"defined: {', '.join(self.strategies)}")
        for f in fallback or ():
            if kinds.resolve_name(self.strategies, f) is None:
                raise ConfigError(f"router 'self_route': fallback {f!r} is not defined; "
                                  f"defined: {', '.join(self.strategies)}")
        self.first = first
        self.fallback = list(fallback) if fallback is not None else None

    # -- decisions ------------------------------------------------------------------------
    def _first(self, strategies) -> str | None:
        name = kinds.resolve_name(strategies, self.first or kinds.RAG)
        if name is not None and strategies[name].can_decline:
            return name
        return None

    def _escalation(self, question, corpus, backend, strategies, skip=(),
                    generation=None) -> Pick:
        return first_feasible(self.fallback or DEFAULT_FALLBACK, strategies, corpus, question,
                              backend, skip=skip, generation=generation)

    @staticmethod
    def _size(question, corpus, backend, strategies) -> dict[str, Any]:
        return {"corpus_tokens": corpus.n_tokens,
                "fits_window": F.fits_window(corpus, question, backend, strategies)}

    def _route(self, question, corpus, backend, generation=None) -> Route:
        strategies = self.available(backend)
        first = self._first(strategies)
        if first is not None:
            return Route(strategy=first, signals={"stage": "first"},
                         reason=f"Self-Route: {first} first; escalate if it declines")
        name, _, notes = self._escalation(question, corpus, backend, strategies,
                                          generation=generation)
        if name is None:
            raise ConfigError("router 'self_route': no strategy can read this corpus "
                              f"({'; '.join(notes) or 'none available'})")
        feats = self._size(question, corpus, backend, strategies)
        return Route(strategy=name, signals={"stage": "no_first", **feats},
                     reason=f"Self-Route: no strategy that may decline is defined (RAG); "
                            f"{name} reads directly")

    def route_and_answer(self, question, corpus, backend, *, generation=None) -> Answer:
        strategies = self.available(backend)
        first = self._first(strategies)
        if first is None:
            return super().route_and_answer(question, corpus, backend, generation=generation)
        t0 = time.perf_counter()
        extra = given(generation)
        attempt = strategies[first].answer(question, corpus, may_decline=True, **extra)
        if not declined(attempt, corpus):
            attempt.route = Route(
                strategy=first, router=self.name,
                reason=f"Self-Route: {first} answered from its passages (did not decline)",
                signals={"first": first, "declined": False},
                cost=Cost(wall_seconds=max(0.0, since(t0) - attempt.cost.wall_seconds)))
            return attempt
        tried = [first]
        feats = self._size(question, corpus, backend, strategies)
        name, _, notes = self._escalation(question, corpus, backend, strategies, tried,
                                          generation)
        while name is not None:
            try:
                final = strategies[name].answer(question, corpus, **extra)
            except ContextOverflowError as e:
                # A strategy's own size check is the authority; move on to the next.
                notes.append(f"{name}: {e}")
                tried.append(name)
                name, _, more = self._escalation(question, corpus, backend, strategies, tried,
                                                 generation)
                notes += [m for m in more if m not in notes]
                continue
            break
        else:
            attempt.route = Route(
                strategy=first, router=self.name,
                reason=f"Self-Route: {first} declined and no fallback can read this corpus "
                       f"({'; '.join(notes) or 'none defined'}); keeping its reply",
                signals={"first": first, "declined": True, **feats},
                cost=Cost(wall_seconds=max(0.0, since(t0) - attempt.cost.wall_seconds)))
            return attempt
        # The declined attempt is what routing cost.
        routing = attempt.cost.model_copy()
        routing.wall_seconds = max(0.0, since(t0) - final.cost.wall_seconds)
        size = ("fits the window" if feats["fits_window"] else "exceeds the window")
        final.route = Route(
            strategy=name, router=self.name,
            reason=f"Self-Route: {first} declined (\"{attempt.text.strip()[:40]}\"); corpus of "
                   f"{feats['corpus_tokens']} tokens {size} -> {name}"
                   + (f" (passed over: {'; '.join(notes)})" if notes else ""),
            signals={"first": first, "declined": True, "first_text": attempt.text[:200],
                     **feats},
            cost=routing)
        final.cost = final.cost + routing
        final.trace.extend(attempt.trace, prefix=f"self_route.{first}.")
        return final
