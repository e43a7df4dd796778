"""Signals of a read: what a router can measure during the first (RAG) read to decide whether
to trust it, kept in the trace and in every Route that used them.

- ``logprob_shape(token_logprobs)``: the reply's token log-probabilities (the transformers
  backend returns them; ``logprob_mean``, ``logprob_min``, ``logprob_head``: the mean over
  the first ``HEAD`` tokens, where a small reader commits to an answer or not).
- ``read_signals(answer, corpus)``: those (from the read step of ``answer.trace``), whether the
  reply's short answer appears in the passages it read (``answer_in_passages``; and
  ``answer_support``, the share of its content words found there), whether it declined
  (``declined``, the one decline rule), and the reply's length.
- ``agreement(a, b)``: token F1 of two replies' short answers (a second cheap read that says
  the same thing is evidence the first one is right).

Every key is a number (booleans as 0/1) so the learned router can train on it; a signal the
backend cannot give is absent, never guessed.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

HEAD = 4


def logprob_shape(token_logprobs: Sequence[float] | None) -> dict[str, float]:
    lp = [x for x in (token_logprobs or ()) if math.isfinite(x)]
    if not lp:
        return {}
    return {"logprob_mean": sum(lp) / len(lp), "logprob_min": min(lp),
            "logprob_head": sum(lp[:HEAD]) / len(lp[:HEAD])}


def _read_step(answer) -> dict[str, Any]:
    """The detail of the answer's last model read that measured log-probabilities (or the
    last read)."""
    steps = [s for s in answer.trace.steps if "generated_tokens" in s.detail]
    with_lp = [s for s in steps if "logprob_mean" in s.detail]
    chosen = (with_lp or steps or [None])[-1]
    return chosen.detail if chosen is not None else {}


def answer_support(short: str, passages: Sequence[str]) -> tuple[int, float]:
    """(the normalised short answer occurs in the passages, share of its words that do)."""
    from orchestra.eval.metrics import normalize_answer

    words = normalize_answer(short).split()
    seen = f" {' '.join(normalize_answer(p) for p in passages)} "
    if not words or not seen.strip():
        return 0, 0.0
    vocab = set(seen.split())
    return int(f" {' '.join(words)} " in seen), sum(w in vocab for w in words) / len(words)


def read_signals(answer, corpus) -> dict[str, float]:
    """The signals of one read (``answer`` from a strategy over ``corpus``)."""
    from orchestra.eval.metrics import evidence_texts
    from orchestra.declines import answer_declined as declined

    detail = _read_step(answer)
    out: dict[str, float] = {k: float(detail[k]) for k in ("logprob_mean", "logprob_min",
                                                            "logprob_head") if k in detail}
    inside, share = answer_support(answer.short, evidence_texts(answer, corpus))
    out.update(answer_in_passages=inside, answer_support=share,
               declined=int(declined(answer, corpus)),
               reply_tokens=float(detail.get("generated_tokens", answer.cost.generated_tokens)))
    return out


def agreement(a: str, b: str) -> float:
    """Token F1 between two replies' short answers (SQuAD normalisation)."""
    from orchestra.eval.metrics import token_f1
    from orchestra.short_answer import short_answer

    return token_f1(short_answer(a), [short_answer(b)])
