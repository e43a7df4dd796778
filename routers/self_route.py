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

Escalation on signals (``escalate_on``, orchestra/signals.py; default ``[decline]``, the
paper's rule): ``decline`` (the reader declined), ``low_confidence`` (the reply's mean token
log-probability under ``min_logprob``), ``unsupported`` (under ``min_support`` of the short
answer's words occur in the passages read), ``disagree`` (a second cheap read, the best
passage alone, agrees with the reply under ``min_agreement`` token F1; one more small model
call), ``kind`` (a question of a kind in ``kinds``, aggregation by default, skips the first
read: no single passage holds its answer). ``budget`` (prompt tokens per question; None: no
limit) passes over a fallback whose estimated prompt tokens (orchestra/explain.py), with what
the first read spent, exceed it, trading quality for tokens. Every Route carries the signals
measured and the reason in words.

``route()`` alone cannot know whether RAG will decline; it names the first strategy. The
Pipeline calls ``route_and_answer``, which reads while deciding.
"""

from __future__ import annotations

import math
import time
from typing import Any

from orchestra.errors import ConfigError, ContextOverflowError
from orchestra.declines import answer_declined
from orchestra.types import Answer, Cost, Route
from orchestra.strategies.base import given

from orchestra.routers import features as F
from orchestra.routers import kinds as K
from orchestra.routers.base import Pick, Router, first_feasible, since

DEFAULT_FALLBACK = [K.FULL, K.PAGES, K.AGENTS]
ESCALATIONS = ("decline", "low_confidence", "unsupported", "disagree", "kind")
DEFAULT_ESCALATE_ON = ("decline",)
DEFAULT_MIN_LOGPROB = -1.0
DEFAULT_MIN_SUPPORT = 0.5
DEFAULT_MIN_AGREEMENT = 0.5
DEFAULT_KINDS = ("aggregation",)


# Whether the first read declined (orchestra.declines; named here as Self-Route reads it).
declined = answer_declined


class SelfRouter(Router):
    name = "self_route"

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Value checks shared with `orchestra validate` (orchestra.checks)."""
        from orchestra.errors import OptionError

        on = options.get("escalate_on", DEFAULT_ESCALATE_ON)
        if not isinstance(on, (list, tuple)) or not all(isinstance(x, str) for x in on):
            raise OptionError("escalate_on", f"router 'self_route': escalate_on must be a list "
                                             f"of {', '.join(ESCALATIONS)}, not {on!r}")
        unknown = [x for x in on if x not in ESCALATIONS]
        if unknown:
            raise OptionError("escalate_on", f"router 'self_route': unknown escalation "
                                             f"{', '.join(unknown)}; known: "
                                             f"{', '.join(ESCALATIONS)}")
        for name, lo, hi in (("min_logprob", -math.inf, 0.0), ("min_support", 0.0, 1.0),
                             ("min_agreement", 0.0, 1.0)):
            v = options.get(name, 0.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise OptionError(name, f"router 'self_route': {name} must be a number in "
                                        f"[{lo}, {hi}], not {v!r}")
        b = options.get("budget")
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise OptionError("budget", f"router 'self_route': budget must be a positive number "
                                        f"of prompt tokens (or null), not {b!r}")
        k = options.get("kinds", DEFAULT_KINDS)
        if not isinstance(k, (list, tuple)) or not set(k) <= set(F.QUESTION_KINDS):
            raise OptionError("kinds", f"router 'self_route': kinds must list question kinds "
                                       f"({', '.join(F.QUESTION_KINDS)}), not {k!r}")

    def __init__(self, strategies, first: str | None = None,
                 fallback: list[str] | None = None,
                 escalate_on: list[str] = DEFAULT_ESCALATE_ON,
                 min_logprob: float = DEFAULT_MIN_LOGPROB,
                 min_support: float = DEFAULT_MIN_SUPPORT,
                 min_agreement: float = DEFAULT_MIN_AGREEMENT,
                 kinds: list[str] = DEFAULT_KINDS, budget: int | None = None):
        super().__init__(strategies)
        if first is not None and K.resolve_name(self.strategies, first) is None:
            raise ConfigError(f"router 'self_route': first strategy {first!r} is not defined; "
                              f"defined: {', '.join(self.strategies)}")
        for f in fallback or ():
            if K.resolve_name(self.strategies, f) is None:
                raise ConfigError(f"router 'self_route': fallback {f!r} is not defined; "
                                  f"defined: {', '.join(self.strategies)}")
        self.first = first
        self.fallback = list(fallback) if fallback is not None else None
        self.escalate_on = tuple(escalate_on)
        self.min_logprob, self.min_support = float(min_logprob), float(min_support)
        self.min_agreement = float(min_agreement)
        self.kinds, self.budget = tuple(kinds), budget

    # -- decisions ------------------------------------------------------------------------
    def _first(self, strategies) -> str | None:
        name = K.resolve_name(strategies, self.first or K.RAG)
        if name is not None and strategies[name].can_decline:
            return name
        return None

    def _escalation(self, question, corpus, backend, strategies, skip=(), spent: int = 0,
                    generation=None) -> Pick:
        over = self._over_budget(question, corpus, strategies, skip, spent)
        pick = first_feasible(self.fallback or DEFAULT_FALLBACK, strategies, corpus, question,
                              backend, skip=[*skip, *over], generation=generation)
        return Pick(pick.name, pick.wanted, [*over.values(), *pick.notes])

    def _over_budget(self, question, corpus, strategies, skip, spent) -> dict[str, str]:
        """Strategies whose estimated prompt tokens, with ``spent``, exceed the budget."""
        if self.budget is None:
            return {}
        from orchestra.explain import estimate

        out = {}
        for name, s in strategies.items():
            if name in skip:
                continue
            est = estimate(name, s, corpus, question).prompt_tokens
            if est is not None and spent + est > self.budget:
                out[name] = (f"{name} would read ~{est} prompt tokens, over the budget of "
                             f"{self.budget} ({spent} spent)")
        return out

    @staticmethod
    def _size(question, corpus, backend, strategies) -> dict[str, Any]:
        kind, rule = F.question_kind(question)
        return {"corpus_tokens": corpus.n_tokens,
                "window_ratio": corpus.n_tokens / backend.context_window,
                "fits_window": F.fits_window(corpus, question, backend, strategies),
                "question_kind": kind, "question_kind_rule": rule}

    def _route(self, question, corpus, backend, generation=None) -> Route:
        strategies = self.available(backend)
        first = self._first(strategies)
        if first is not None:
            on = ("if it declines" if self.escalate_on == DEFAULT_ESCALATE_ON
                  else f"on {', '.join(self.escalate_on)}")
            return Route(strategy=first, signals={"stage": "first"},
                         reason=f"Self-Route: {first} first; escalate {on}")
        name, _, notes = self._escalation(question, corpus, backend, strategies,
                                          generation=generation)
        if name is None:
            raise ConfigError("router 'self_route': no strategy can read this corpus "
                              f"({'; '.join(notes) or 'none available'})")
        feats = self._size(question, corpus, backend, strategies)
        return Route(strategy=name, signals={"stage": "no_first", **feats},
                     reason=f"Self-Route: no strategy that may decline is defined (RAG); "
                            f"{name} reads directly")

    def _fired(self, sig: dict[str, Any]) -> list[str]:
        """The escalations the first read's signals set off, in words."""
        out = []
        on = self.escalate_on
        if "decline" in on and sig.get("declined"):
            out.append(f"it declined (\"{sig.get('first_text', '')[:40]}\")")
        if "low_confidence" in on and sig.get("logprob_mean", 0.0) < self.min_logprob:
            out.append(f"low confidence (mean token log-probability "
                       f"{sig['logprob_mean']:.2f} < {self.min_logprob:g})")
        if "unsupported" in on and sig.get("answer_support", 1.0) < self.min_support:
            out.append(f"its short answer is not in its passages (support "
                       f"{sig['answer_support']:.2f} < {self.min_support:g})")
        if "disagree" in on and sig.get("second_read_agreement", 1.0) < self.min_agreement:
            out.append(f"a second read of its best passage disagrees (agreement "
                       f"{sig['second_read_agreement']:.2f} < {self.min_agreement:g})")
        return out

    def _first_read(self, first, question, corpus, extra=None
                    ) -> tuple[Answer, dict[str, Any]]:
        """The first strategy's answer and its read signals (a second read where asked)."""
        from orchestra import signals as S

        strategy = self.strategies[first]
        attempt = strategy.answer(question, corpus, may_decline=True, **(extra or {}))
        sig = {**S.read_signals(attempt, corpus), "first_text": attempt.text[:200]}
        if "disagree" in self.escalate_on and not sig["declined"] and hasattr(
                strategy, "second_read"):
            second = strategy.second_read(question, corpus)
            sig["second_read_agreement"] = S.agreement(attempt.text, second.text)
            sig["second_read_text"] = second.text[:200]
            attempt.cost = attempt.cost + second.cost
            attempt.trace.extend(second.trace)
        retrieval = next((s.detail for s in attempt.trace.steps if s.name == "retrieve"), {})
        sig.update({k: v for k, v in retrieval.items() if k.startswith("retrieval_")})
        return attempt, sig

    def route_and_answer(self, question, corpus, backend, *, generation=None) -> Answer:
        strategies = self.available(backend)
        first = self._first(strategies)
        if first is None:
            return super().route_and_answer(question, corpus, backend, generation=generation)
        t0 = time.perf_counter()
        feats = self._size(question, corpus, backend, strategies)
        attempt = None
        if "kind" in self.escalate_on and feats["question_kind"] in self.kinds:
            sig = {"first": None, **feats}
            why = [f"{feats['question_kind'].replace('_', '-')} question "
                   f"({feats['question_kind_rule']}): no "
                   f"single passage holds its answer, so {first} was not asked"]
        else:
            attempt, sig = self._first_read(first, question, corpus, given(generation))
            sig = {"first": first, **feats, **sig}
            why = self._fired(sig)
            if not why:
                attempt.route = Route(
                    strategy=first, router=self.name, signals=sig,
                    reason=f"Self-Route: {first} answered from its passages ("
                           + ("did not decline)" if self.escalate_on == DEFAULT_ESCALATE_ON
                              else f"no escalation signal: {', '.join(self.escalate_on)})"),
                    cost=Cost(wall_seconds=max(0.0, since(t0) - attempt.cost.wall_seconds)))
                return attempt
        return self._escalate(question, corpus, backend, strategies, first, attempt, sig, why,
                              t0, generation)

    def _escalate(self, question, corpus, backend, strategies, first, attempt, sig, why, t0,
                  generation=None) -> Answer:
        extra = given(generation)
        spent = attempt.cost.prompt_tokens if attempt is not None else 0
        tried = [first] if attempt is not None else []
        name, _, notes = self._escalation(question, corpus, backend, strategies, tried, spent,
                                          generation)
        final = None
        while name is not None:
            try:
                final = strategies[name].answer(question, corpus, **extra)
                break
            except ContextOverflowError as e:
                # A strategy's own size check is the authority; move on to the next.
                notes.append(f"{name}: {e}")
                tried.append(name)
                name, _, more = self._escalation(question, corpus, backend, strategies, tried,
                                                 spent, generation)
                notes += [m for m in more if m not in notes]
        passed = f" (passed over: {'; '.join(notes)})" if notes else ""
        if final is None:
            if attempt is None:  # nothing else can read it within the budget: read first
                attempt, more = self._first_read(first, question, corpus, extra)
                sig.update(more, first=first)
            attempt.route = Route(
                strategy=first, router=self.name, signals=sig,
                reason=f"Self-Route: {'; '.join(why)}; no fallback can read this corpus"
                       f"{passed or ' (none defined)'}; keeping {first}'s reply",
                cost=Cost(wall_seconds=max(0.0, since(t0) - attempt.cost.wall_seconds)))
            return attempt
        # The first attempt is what routing cost.
        routing = attempt.cost.model_copy() if attempt is not None else Cost()
        routing.wall_seconds = max(0.0, since(t0) - final.cost.wall_seconds)
        size = "fits the window" if sig["fits_window"] else "exceeds the window"
        final.route = Route(
            strategy=name, router=self.name, signals=sig,
            reason=f"Self-Route: {(first + ': ') if attempt is not None else ''}"
                   f"{'; '.join(why)}; corpus of {sig['corpus_tokens']} tokens {size} -> "
                   f"{name}{passed}",
            cost=routing)
        final.cost = final.cost + routing
        if attempt is not None:
            final.trace.extend(attempt.trace, prefix=f"self_route.{first}.")
        return final
