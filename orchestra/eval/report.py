"""report.md and quality_vs_cost.png from results rows.

Per dataset x length, one line per strategy and for the router: quality (the mean of the task's
headline metric), evidence recall, mean prompt tokens, model calls and seconds, plus the
router's choices. The "oracle" picks, per question, the best fixed strategy (ties go to the one
with the fewest prompt tokens): the ceiling a perfect router could reach on these strategies.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

from orchestra.eval.runner import ROUTER

ORACLE = "oracle"


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _mean_or_none(xs: list[float]) -> float | None:
    return _mean(xs) if xs else None


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def group_rows(rows: Iterable[dict]) -> dict[tuple[str, int], list[dict]]:
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["length"])].append(r)
    return dict(sorted(groups.items()))


def oracle_rows(rows: list[dict]) -> list[dict]:
    by_sample: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["strategy"] not in (ROUTER, ORACLE):
            by_sample[r["sample_id"]].append(r)
    return [min(rs, key=lambda r: (-r["quality"], r["cost"]["prompt_tokens"]))
            for rs in by_sample.values()]


def summarize(rows: list[dict]) -> list[dict]:
    """One summary per strategy (fixed ones first, then router, then oracle)."""
    by_strategy: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_strategy[r["strategy"]].append(r)
    fixed = [s for s in by_strategy if s != ROUTER]
    if len(fixed) > 1:
        by_strategy[ORACLE] = oracle_rows(rows)
    order = fixed + [s for s in (ROUTER, ORACLE) if s in by_strategy]
    out = []
    for name in order:
        rs = by_strategy[name]
        out.append({
            "strategy": name, "n": len(rs),
            "quality": _mean([r["quality"] for r in rs]),
            "evidence_recall": _mean_or_none([r["evidence_recall"] for r in rs
                                              if r.get("evidence_recall") is not None]),
            "prompt_tokens": _mean([r["cost"]["prompt_tokens"] for r in rs]),
            "model_calls": _mean([r["cost"]["model_calls"] for r in rs]),
            "seconds": _mean([r["cost"]["wall_seconds"] for r in rs]),
            "errors": sum(1 for r in rs if r.get("error")),
            "choices": Counter(r["route"]["strategy"] for r in rs) if name in (ROUTER, ORACLE)
            else None,
        })
    return out


def _metric_name(rows: list[dict]) -> str:
    from orchestra.eval.metrics import headline

    names = sorted({headline(r["task"]) for r in rows if "task" in r})
    return "/".join(names) or "quality"


def render_markdown(rows: list[dict], title: str = "Evaluation") -> str:
    lines = [f"# {title}", ""]
    for (dataset, length), rs in group_rows(rows).items():
        n_samples = len({r["sample_id"] for r in rs})
        size = f"{length} tokens" if length else "documents as given"
        lines += [f"## {dataset}, {size} ({n_samples} questions)", "",
                  f"| strategy | n | quality ({_metric_name(rs)}) | evidence recall | "
                  "prompt tokens | calls | seconds | errors | choices |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for s in summarize(rs):
            choices = ", ".join(f"{k} {v}" for k, v in s["choices"].most_common()) \
                if s["choices"] else ""
            lines.append(
                f"| {s['strategy']} | {s['n']} | {s['quality']:.2f} | "
                f"{fmt(s['evidence_recall'])} | {s['prompt_tokens']:.0f} | "
                f"{s['model_calls']:.1f} | {s['seconds']:.1f} | {s['errors']} | {choices} |")
        errs = [r for r in rs if r.get("error")]
        if errs:
            lines += ["", "Errors (first of each strategy):"]
            seen = set()
            for r in errs:
                if r["strategy"] not in seen:
                    seen.add(r["strategy"])
                    lines.append(f"- {r['strategy']}: {r['error'][:200]}")
        lines.append("")
    lines += ["Quality is the mean of each task's headline metric (contains for NIAH and QA, "
              "option accuracy for multiple choice, F1 or ROUGE-L for open answers). Oracle: "
              "the best fixed strategy per question (fewest prompt tokens on ties).", ""]
    return "\n".join(lines)


def plot(rows: list[dict], path: str | Path) -> Path:
    """quality_vs_cost.png: one panel per dataset x length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_rows(rows)
    n = max(1, len(groups))
    cols = min(n, 2)
    fig_rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(fig_rows, cols, figsize=(6.2 * cols, 4.4 * fig_rows), squeeze=False)
    markers = {ROUTER: ("D", "tab:red"), ORACLE: ("*", "gold")}
    for ax, ((dataset, length), rs) in zip(axes.flat, groups.items()):
        summaries = summarize(rs)
        labels: dict[tuple[float, float], list[str]] = {}
        for i, s in enumerate(summaries):
            marker, color = markers.get(s["strategy"], ("o", f"C{i % 10}"))
            ax.scatter(s["prompt_tokens"], s["quality"], s=160 if marker == "*" else 70,
                       marker=marker, color=color, edgecolor="black", zorder=3,
                       label=f"{s['strategy']} (n={s['n']})")
            labels.setdefault((round(s["prompt_tokens"]), round(s["quality"], 3)),
                              []).append(s["strategy"])
        # Points that coincide (a router that always picks one strategy) share one label.
        for i, ((x, y), names) in enumerate(sorted(labels.items())):
            ax.annotate(" = ".join(names), (x, y), textcoords="offset points",
                        xytext=(6, 6 if i % 2 == 0 else -12), fontsize=8)
        size = f"{length} tokens" if length else "as given"
        ax.set_title(f"{dataset}, {size}")
        ax.set_xlabel("mean prompt tokens per question")
        ax.set_ylabel(f"quality ({_metric_name(rs)})")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlim(0, 1.25 * max([s["prompt_tokens"] for s in summaries] + [1]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.suptitle("Quality against cost (up and to the left is better)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_reports(rows: list[dict], out_dir: str | Path, title: str = "Evaluation") -> dict:
    out_dir = Path(out_dir)
    md = out_dir / "report.md"
    md.write_text(render_markdown(rows, title))
    png = plot(rows, out_dir / "quality_vs_cost.png")
    return {"report": md, "plot": png}
