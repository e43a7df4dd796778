"""The paired decision of `orchestra tune`: a trial may replace the default only by beating it
question by question.

The baseline is the pipeline as given (the current default). For a trial, a *win* is a dev
question the trial answers better than the baseline (for ``contains``: trial right, baseline
wrong), a *loss* the reverse; ties say nothing about which is better. ``p`` is the exact
two-sided sign test (McNemar's exact test) on those discordant pairs: scipy's
``binomtest(wins, wins + losses)``. A trial is *chosen* when it has more wins than losses and
p < 0.05, and only on ``MIN_QUESTIONS`` or more questions: on fewer, one or two answers decide
the mean, and a default fitted to dev's noise reads worse on questions nobody tuned on (issue
19: the SmolLM2 profile chosen on 12 dev questions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

ALPHA = 0.05
MIN_QUESTIONS = 100  # no default is chosen on fewer
DEV_QUESTIONS = 200  # what a dev split for defaults means: this many questions ...
DEV_LENGTHS = 2  # ... over at least this many lengths


@dataclass(frozen=True)
class Paired:
    """A trial against the baseline on the same questions."""

    wins: int
    losses: int
    n: int  # questions compared (ties included)

    @property
    def p(self) -> float:
        return sign_p(self.wins, self.losses)

    @property
    def beats(self) -> bool:
        return self.wins > self.losses and self.p < ALPHA

    def text(self) -> str:
        return f"{self.wins} wins, {self.losses} losses, p = {self.p:.3g}"


def sign_p(wins: int, losses: int) -> float:
    """The exact two-sided sign test's p on the discordant pairs (1.0 when there are none)."""
    if wins + losses == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(wins, wins + losses).pvalue)


def compare(baseline: Mapping[str, float], trial: Mapping[str, float]) -> Paired:
    """Wins and losses of ``trial`` against ``baseline`` (sample id -> quality) on the
    questions both answered."""
    both = [sid for sid in trial if sid in baseline]
    wins = sum(trial[sid] > baseline[sid] for sid in both)
    losses = sum(trial[sid] < baseline[sid] for sid in both)
    return Paired(wins, losses, len(both))


def cannot_win(wins: int, losses: int, remaining: int) -> bool:
    """Whether even winning every one of the ``remaining`` questions leaves the trial short of
    beating the baseline (more wins than losses, p < ALPHA). A trial stopped by this rule could
    never have been chosen, so pruning with it does not change the decision."""
    best = Paired(wins + remaining, losses, 0)
    return not best.beats


def refusal(n_questions: int) -> str | None:
    """Why no default may be chosen on this many questions (None: it may)."""
    if n_questions < MIN_QUESTIONS:
        return (f"not chosen: N = {n_questions} < {MIN_QUESTIONS} dev questions (no default is "
                "chosen on fewer)")
    return None


def dev_shortfall(n_questions: int, lengths: Iterable[int | None]) -> str | None:
    """What a run lacks of a dev split for defaults (200+ questions over 2+ lengths)."""
    kinds = sorted({x for x in lengths if x})  # a .jsonl's samples have no length (0)
    lacks = []
    if n_questions < DEV_QUESTIONS:
        lacks.append(f"{n_questions} questions (dev for a default means {DEV_QUESTIONS} or more)")
    if len(kinds) < DEV_LENGTHS:
        lacks.append(f"{len(kinds)} length{'s' if len(kinds) != 1 else ''} "
                     f"({', '.join(map(str, kinds)) or 'none given'}; dev for a default means "
                     f"{DEV_LENGTHS} or more)")
    if not lacks:
        return None
    return "below a dev split for defaults: " + "; ".join(lacks)


def choose(trials: Sequence, n_questions: int):
    """(the chosen trial or None, why). Among complete trials that beat the baseline, the
    highest quality; among equals, the fewest prompt tokens, then the earliest."""
    refused = refusal(n_questions)
    if refused:
        return None, refused
    winners = [t for t in trials if t.state == "COMPLETE" and t.paired is not None
               and t.paired.beats]
    if not winners and not any(t.state == "COMPLETE" for t in trials):
        pruned = sum(t.state == "PRUNED" and not t.error for t in trials)
        return None, (f"not chosen: all {pruned} trials were pruned (none could still beat the "
                      "pipeline as given, which stays)" if pruned else "not chosen: no trial "
                      "finished")
    if not winners:
        return None, (f"not chosen: no trial beats the pipeline as given (more wins than losses "
                      f"at p < {ALPHA}) on {n_questions} dev questions")
    best = min(winners, key=lambda t: (-t.quality, t.prompt_tokens or 0, t.number))
    return best, f"chosen: trial {best.number} beats the pipeline as given ({best.paired.text()})"
