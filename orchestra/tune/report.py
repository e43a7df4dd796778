"""What a tune writes: best.yaml, report.md (every trial, the Pareto front) and trials.png."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import yaml

from orchestra.tune.study import TrialResult, TuneResult


def pareto(trials: Sequence[TrialResult]) -> list[TrialResult]:
    """Complete trials no other beats on both quality (higher) and prompt tokens (fewer),
    cheapest first."""
    done = sorted((t for t in trials if t.state == "COMPLETE"),
                  key=lambda t: (t.prompt_tokens or 0, -(t.quality or 0), t.number))
    front, best_q = [], -1.0
    for t in done:
        if (t.quality or 0) > best_q:
            front.append(t)
            best_q = t.quality or 0
    return front


def _settings(params: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "(the pipeline as given)"


def changed(params: dict[str, str]) -> dict[str, str]:
    """The settings a trial drew other than the pipeline's own ("keep")."""
    from orchestra.tune.space import DEFAULT

    return {k: v for k, v in sorted(params.items()) if v != DEFAULT}


def evidence(result: TuneResult) -> list[str]:
    """Comment lines for the chosen configuration: its paired test against the pipeline as
    given, beside every value it changes (the test is of the configuration as a whole: the
    values were drawn together, not tested one by one)."""
    t = result.chosen
    if t is None or t.paired is None:
        return []
    lines = [f"chosen against the pipeline as given on {result.n_questions} dev questions: "
             f"trial {t.number}, {t.paired.text()} (exact sign test)"]
    lines += [f"  {k} = {v}: trial {t.number}, {t.paired.text()}"
              for k, v in changed(t.params).items()]
    return lines


def write_best(result: TuneResult, path: Path, header: Sequence[str]) -> Path:
    """The best configuration as a pipeline file, headed by what it was tuned on and whether
    it was chosen (a dev leader that was not is marked so: it is no replacement)."""
    lines = list(header[:1])
    if result.chosen is None:
        lines.append("NOT CHOSEN: the dev leader below is no replacement for the default "
                     "(why: the 'not chosen' line)")
    lines += list(header[1:]) + evidence(result)
    text = "".join(f"# {line}\n" for line in lines)
    text += yaml.safe_dump(result.best_data, sort_keys=False, allow_unicode=True, width=100)
    path.write_text(text, encoding="utf-8")
    return path


def write_profile(result: TuneResult, path: Path, family: str, header: Sequence[str],
                  sections: dict) -> Path:
    """The chosen values as a profile file (orchestra.profiles): name it as ``profile:`` or
    copy it over a built-in profile. Written only for a chosen configuration; its comment and
    ``tuned`` record the paired test for every value it changes."""
    from orchestra.errors import ConfigError
    from orchestra.profiles import load_profile

    try:  # keep a built-in family's model-name patterns, so the file can replace it
        match = load_profile(family).match
    except ConfigError:
        match = []
    proof = evidence(result)
    data = {"family": family, "match": match,
            "description": "values chosen by orchestra tune on dev",
            "tuned": " / ".join([*header, *(x.strip() for x in proof)]), **sections}
    text = "".join(f"# {line}\n" for line in [*header, *proof])
    text += yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    path.write_text(text, encoding="utf-8")
    return path


def _cells(t: TrialResult) -> str:
    """quality | wins | losses | p | prompt tokens | seconds"""
    q = "" if t.quality is None else f"{t.quality:.3f}"
    w, lo, p = ("", "", "") if t.paired is None else (t.paired.wins, t.paired.losses,
                                                        f"{t.paired.p:.3g}")
    tok = "" if t.prompt_tokens is None else f"{t.prompt_tokens:.0f}"
    sec = "" if t.seconds is None else f"{t.seconds:.2f}"
    return f"{q} | {w} | {lo} | {p} | {tok} | {sec}"


def _trial_lines(result: TuneResult) -> list[str]:
    lines = ["| trial | state | quality | wins | losses | p | prompt tokens | seconds | "
             "settings |", "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    if result.baseline is not None and result.baseline.quality is not None:
        lines.append(f"| baseline | reference | {_cells(result.baseline)} | "
                     "(the pipeline as given) |")
    for t in result.trials:
        extra = f" ({t.error})" if t.error else ""
        if t.state == "PRUNED" and not t.error:
            extra = f" (pruned after {t.n} of {result.n_questions} questions)"
        lines.append(f"| {t.number} | {t.state.lower()} | {_cells(t)} | "
                     f"{_settings(t.params)}{extra} |")
    return lines


def write_report(result: TuneResult, path: Path, title: str, header: Sequence[str]) -> Path:
    lines = [f"# {title}", ""]
    lines += [f"- {h}" for h in header]
    lines += [f"- {x}" for x in evidence(result)]
    if result.notes:
        lines += ["", "Settings not searched:", ""] + [f"- {n}" for n in result.notes]
    lines += ["", "## Pareto front: quality against prompt tokens", "",
              "| trial | quality | wins | losses | p | prompt tokens | seconds | settings |",
              "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for t in pareto(result.trials):
        lines.append(f"| {t.number} | {_cells(t)} | {_settings(t.params)} |")
    lines += ["", "## Every trial", "",
              "Wins: questions the trial answers better than the pipeline as given (the "
              "baseline); losses: the reverse; p: the exact two-sided sign test on them.", ""]
    lines += _trial_lines(result)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_plot(result: TuneResult, path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    fig = trials_figure(result, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def trials_figure(result: TuneResult, title: str):
    """Quality against prompt tokens (with the Pareto front) and quality per trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in result.trials if t.state == "COMPLETE"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    if done:
        ax1.scatter([t.prompt_tokens for t in done], [t.quality for t in done], s=18,
                    alpha=0.6, label="trial")
        front = pareto(done)
        ax1.step([t.prompt_tokens for t in front], [t.quality for t in front], where="post",
                 color="C1", label="Pareto front")
        if result.best is not None:
            ax1.scatter([result.best.prompt_tokens], [result.best.quality], marker="*", s=160,
                        color="C3", label=f"best (trial {result.best.number})", zorder=3)
        ax2.plot([t.number for t in done], [t.quality for t in done], "o", ms=4, alpha=0.6)
        running, best = [], -1.0
        for t in done:
            best = max(best, t.quality)
            running.append(best)
        ax2.step([t.number for t in done], running, where="post", color="C3",
                 label="best so far")
        ax1.legend(fontsize=8)
        ax2.legend(fontsize=8)
    ax1.set_xlabel("mean prompt tokens")
    ax1.set_ylabel("quality (dev)")
    ax2.set_xlabel("trial")
    ax2.set_ylabel("quality (dev)")
    from matplotlib.ticker import MaxNLocator

    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are numbered, not measured
    top = min(1.05, max(0.1, 1.1 * max((t.quality for t in done), default=0.0)))
    for ax in (ax1, ax2):  # quality lives in [0, 1]; an all-0 study must not show negatives
        ax.set_ylim(0, top)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
