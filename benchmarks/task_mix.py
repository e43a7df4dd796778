"""The task mix (issue 20): which fixed strategy wins per task, the oracle's headroom, how well
each routing signal predicts "rag was wrong but another strategy was right", and what routers
built on those signals score, from `orchestra eval` results of the mix.

    export OMP_NUM_THREADS=1
    orchestra eval --dataset mix:dev --lengths 4000,16000 --limit 3 \\
        --strategies rag,full_context,chain_of_agents --second-read --out runs/mix-dev
    python benchmarks/task_mix.py runs/mix-dev/results.jsonl
    python benchmarks/task_mix.py runs/mix-test/results.jsonl --train runs/mix-dev/results.jsonl

Tables:
1. per task and length: each fixed strategy's quality (the task's headline metric) and mean
   prompt tokens, the best fixed strategy, the per-question oracle and its headroom;
2. per signal: its AUC for the target above on the rag rows (ROC AUC, scikit-learn; 0.5 is no
   power, below 0.5 means low values predict it), with the positives counted;
3. Self-Route policies (escalate_on and budget, routers/self_route.py) replayed on the same
   rows: the router's first read is the rag row's read (same prompt, greedy decoding) and its
   escalation reads as the fixed row of that strategy does, so the replay is what the router
   would answer; rows of the pipeline's own router (``router``), where present, are shown as
   measured; with ``--train DEV``, the learned router (routers/tree.py's train on the dev rows,
   rag's read signals among its features) replayed the same way: a tree that splits on a read
   signal reads rag first and pays for it. Wins/losses against rag are paired per question
   (exact sign test); with ``--cv K``, the learned router out of sample (K folds of the rows
   given, each answered by a tree trained on the other folds);
4. with ``--choose-on DEV``, Self-Route's setting chosen on the dev rows: each signal at each
   threshold of ``GRID`` beside the decline (and the kind rules of ``BASES``), paired question
   by question against the default router's setting (decline only); the best that wins at p < 0.05 over
   the number of settings tried (Bonferroni) on 100 or more questions is chosen (else the
   default stays) and replayed on the rows given, with its budget curve (``--plot``: quality
   against prompt tokens beside each fixed strategy and the oracle).
A question is right when its quality is at least ``--threshold`` (0.5, as train-router).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable


from orchestra.errors import OrchestraError
from orchestra.eval.results import read_results
from orchestra.eval.datasets.mix import task_of

SIGNALS = ("window_ratio", "fits_window", "kind_aggregation", "kind_multi_hop", "kind_multi_value",
           "retrieval_top", "retrieval_rel_margin", "retrieval_lead", "logprob_mean",
           "logprob_min", "logprob_head", "answer_in_passages", "answer_support", "declined",
           "reply_tokens", "second_read_agreement")
FALLBACK = ("full_context", "kv_pages", "chain_of_agents", "map_reduce")
ROUTER = "router"


def read_rows(paths: list[str]) -> list[dict]:
    """The results rows of ``paths``, their question kinds by today's rules (rows keep the
    kinds of the code that wrote them)."""
    from orchestra.routers.features import with_todays_kind

    rows = [r for p in paths for r in read_results(p, missing_ok=False)]
    for r in rows:
        if "question" in r and isinstance(r.get("features"), dict):
            r["features"] = with_todays_kind(r["features"], r["question"])
    return rows


def questions(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """sample_id -> strategy -> row."""
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        out[r["sample_id"]][r["strategy"]] = r
    return out


def rag_signals(q: dict[str, dict]) -> dict[str, float]:
    rag = q["rag"]
    sig = {**{k: v for k, v in rag.get("features", {}).items()
              if isinstance(v, (int, float))}, **rag.get("signals", {})}
    if sig.get("declined") and "question" in rag:
        # Rows written before the decline rule knew multiple-choice replies (a picked option
        # is an answer, orchestra/declines.py) are read with today's rule.
        from orchestra.declines import chooses_one_option, says_declined

        text = rag.get("answer", "")
        sig["declined"] = int(says_declined(text)
                              or not chooses_one_option(text, rag["question"]))
    return sig


def target(q: dict[str, dict], threshold: float) -> int:
    others = [r["quality"] for s, r in q.items() if s not in ("rag", ROUTER)]
    return int(q["rag"]["quality"] < threshold and any(x >= threshold for x in others))


def fallback_row(q: dict[str, dict], skip: set[str], budget: float, spent: float):
    """The first fallback strategy that read this sample (no error) within the budget."""
    for s in FALLBACK:
        r = q.get(s)
        if r is None or r.get("error") or s in skip:
            continue
        if spent + r["cost"]["prompt_tokens"] > budget:
            continue
        return r
    return None


def self_route(on: tuple[str, ...], min_logprob=-1.0, min_support=0.5, min_agreement=0.5,
               kinds=("aggregation",), budget=float("inf")) -> Callable:
    def policy(q: dict[str, dict]) -> tuple[float, float, str]:
        rag = q["rag"]
        sig = rag_signals(q)
        if "kind" in on and rag["features"].get("question_kind") in kinds:
            r = fallback_row(q, set(), budget, 0)
            if r is not None:
                return r["quality"], r["cost"]["prompt_tokens"], r["strategy"]
        fired = (("decline" in on and sig.get("declined"))
                 or ("low_confidence" in on and sig.get("logprob_mean", 0) < min_logprob)
                 or ("unsupported" in on and sig.get("answer_support", 1) < min_support)
                 or ("disagree" in on and sig.get("second_read_agreement", 1) < min_agreement))
        spent = rag["cost"]["prompt_tokens"]
        if "disagree" in on and not sig.get("declined"):  # the live router reads twice then
            spent += second_read_tokens(rag)
        r = fallback_row(q, set(), budget, spent) if fired else None
        if r is None:
            return rag["quality"], spent, "rag"
        return r["quality"], spent + r["cost"]["prompt_tokens"], r["strategy"]
    return policy


def second_read_tokens(rag: dict) -> float:
    """The second read's prompt tokens: measured in rows from this code on; rows written
    before it kept only the agreement, so there it is estimated as one of rag's top-6
    passages with the prompt around it (a sixth of rag's prompt, plus its template's ~60)."""
    sig = rag.get("signals", {})
    if "second_read_prompt_tokens" in sig:
        return sig["second_read_prompt_tokens"]
    return rag["cost"]["prompt_tokens"] / 6 + 60 if "second_read_agreement" in sig else 0


def fixed(name: str) -> Callable:
    def policy(q):
        r = q.get(name)
        if r is None:
            return None
        return r["quality"], r["cost"]["prompt_tokens"], name
    return policy


def oracle(q):
    rs = [r for s, r in q.items() if s != ROUTER]
    best = min(rs, key=lambda r: (-r["quality"], r["cost"]["prompt_tokens"]))
    return best["quality"], best["cost"]["prompt_tokens"], best["strategy"]


def learned(model) -> Callable:
    from orchestra.routers.features import READ_FEATURES

    reads = any(model.uses(f) for f in READ_FEATURES)

    def policy(q):
        rag = q["rag"]
        feats = {**rag.get("features", {}), **{k: v for k, v in rag.get("signals", {}).items()
                                               if k in READ_FEATURES}}
        for name, count in model.predict_dist(feats)[0]:
            r = q.get(name)
            if count and r is not None and not r.get("error"):
                spent = rag["cost"]["prompt_tokens"] if reads and name != "rag" else 0
                return r["quality"], spent + r["cost"]["prompt_tokens"], name
        return rag["quality"], rag["cost"]["prompt_tokens"], "rag"
    return policy


def cross_validated(rows: list[dict], k: int, min_leaf: int) -> Callable:
    """The learned router out of sample: questions in ``k`` folds (a seeded shuffle), each
    fold answered by a tree trained on the other folds' rows only."""
    import random

    from orchestra.routers.tree import train

    ids = sorted({r["sample_id"] for r in rows})
    random.Random(0).shuffle(ids)
    fold = {sid: i % k for i, sid in enumerate(ids)}
    models = [learned(train([r for r in rows if fold[r["sample_id"]] != f], min_leaf=min_leaf))
              for f in range(k)]
    return lambda q: models[fold[q["rag"]["sample_id"]]](q)


def measured_router(q):
    r = q.get(ROUTER)
    return None if r is None else (r["quality"], r["cost"]["prompt_tokens"],
                                   r["route"]["strategy"])


def sign_test(wins: int, losses: int) -> float:
    from scipy.stats import binomtest

    n = wins + losses
    return 1.0 if n == 0 else binomtest(wins, n, 0.5).pvalue


def table_tasks(qs: dict, strategies: list[str]) -> str:
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for q in qs.values():
        r = next(iter(q.values()))
        groups[(task_of(r["dataset"]), r["length"])].append(q)
    head = " | ".join(strategies)
    lines = [f"| task | length | n | {head} | best fixed | oracle | headroom |",
             "|" + "---|" * (6 + len(strategies))]
    for (task, length), group in sorted(groups.items()):
        cells, means = [], {}
        for s in strategies:
            rs = [q[s] for q in group if s in q]
            if not rs:
                cells.append("")
                continue
            means[s] = sum(r["quality"] for r in rs) / len(rs)
            tok = sum(r["cost"]["prompt_tokens"] for r in rs) / len(rs)
            err = sum(1 for r in rs if r.get("error"))
            cells.append(f"{means[s]:.2f} / {tok:.0f}" + (f" ({err} err)" if err else ""))
        best = max(means, key=lambda s: means[s]) if means else "-"
        orc = sum(oracle(q)[0] for q in group) / len(group)
        lines.append(f"| {task} | {length} | {len(group)} | {' | '.join(cells)} | {best} | "
                     f"{orc:.2f} | {orc - means.get(best, 0):+.2f} |")
    return "\n".join(lines)


def table_auc(qs: dict, threshold: float) -> str:
    from sklearn.metrics import roc_auc_score

    data = [(rag_signals(q), target(q, threshold)) for q in qs.values() if "rag" in q]
    pos = sum(t for _, t in data)
    lines = [f"target: rag wrong and another strategy right: {pos} of {len(data)} questions",
             "", "| signal | n | AUC | direction |", "|---|---|---|---|"]
    for name in SIGNALS:
        pairs = [(s[name], t) for s, t in data if isinstance(s.get(name), (int, float))]
        ys = [t for _, t in pairs]
        if not pairs:
            lines.append(f"| {name} | 0 | n/a | (not in these rows) |")
            continue
        if len(set(ys)) < 2:
            lines.append(f"| {name} | {len(pairs)} | n/a | (one class only) |")
            continue
        auc = roc_auc_score(ys, [float(x) for x, _ in pairs])
        lines.append(f"| {name} | {len(pairs)} | {auc:.2f} | "
                     f"{'high predicts it' if auc >= 0.5 else 'low predicts it'} |")
    return "\n".join(lines)


def table_policies(qs: dict, policies: dict[str, Callable]) -> str:
    base = {sid: fixed("rag")(q) for sid, q in qs.items() if "rag" in q}
    lines = ["| policy | n | quality | prompt tokens | not rag | wins/losses vs rag | p |",
             "|---|---|---|---|---|---|---|"]
    for name, pol in policies.items():
        got = {sid: pol(q) for sid, q in qs.items() if "rag" in q}
        got = {k: v for k, v in got.items() if v is not None}
        if not got:
            continue
        n = len(got)
        qual = sum(v[0] for v in got.values()) / n
        tok = sum(v[1] for v in got.values()) / n
        other = sum(v[2] != "rag" for v in got.values()) / n
        wins, losses, p = paired(got, base)
        lines.append(f"| {name} | {n} | {qual:.3f} | {tok:.0f} | {other:.0%} | {wins}/{losses}"
                     f" | {p:.3f} |")
    return "\n".join(lines)


def default_policies(budgets: list[int], chosen: tuple[str, dict] | None = None
                     ) -> dict[str, Callable]:
    pol: dict[str, Any] = {"rag": fixed("rag"), "full_context": fixed("full_context"),
                           "chain_of_agents": fixed("chain_of_agents")}
    variants = {
        "self_route[decline]": ("decline",),
        "self_route[decline,kind]": ("decline", "kind"),
        "self_route[decline,kind] kinds=multi_hop+multi_value": (("decline", "kind"),
                                                                 ("multi_hop", "multi_value")),
        "self_route[decline,low_confidence]": ("decline", "low_confidence"),
        "self_route[decline,unsupported]": ("decline", "unsupported"),
        "self_route[decline,disagree]": ("decline", "disagree"),
        "self_route[decline,kind,unsupported]": ("decline", "kind", "unsupported"),
        "self_route[all]": ("decline", "kind", "low_confidence", "unsupported", "disagree"),
    }
    for name, on in variants.items():
        pol[name] = self_route(on[0], kinds=on[1]) if isinstance(on[0], tuple) else \
            self_route(on)
    # The budget curve is drawn for the policy chosen on dev (else the one with every signal).
    label, opts = chosen or ("self_route[decline,kind,unsupported]",
                             {"escalate_on": ["decline", "kind", "unsupported"]})
    if chosen:
        pol[f"chosen on dev: {label}"] = policy_of(opts)
    for b in budgets:
        pol[f"{label} budget={b}"] = policy_of({**opts, "budget": b})
    pol["router (measured)"] = measured_router
    pol["oracle"] = oracle
    return pol


# Thresholds `--choose-on` searches, one signal at a time beside the decline (and the kind
# rule): few enough that a dev set of a few hundred questions can tell them apart.
GRID = {"low_confidence": ("min_logprob", (-0.25, -0.5, -0.75, -1.0, -1.5, -2.0)),
        "unsupported": ("min_support", (0.25, 0.5, 0.75, 1.0)),
        "disagree": ("min_agreement", (0.25, 0.5, 0.75))}
BASELINE = "self_route[decline]"  # the default router's setting (examples/pipelines/embedded.yaml)
MIN_DEV = 100  # no default is chosen on fewer questions (the developers' guide)


def policy_of(opts: dict) -> Callable:
    """The replay of Self-Route with these router options (as YAML would give them)."""
    kw = {k: v for k, v in opts.items() if k != "escalate_on"}
    return self_route(tuple(opts["escalate_on"]), **kw)


# The bases the grid extends: Self-Route's escalations and, with "kind", the question kinds
# that skip the first read (routers/features.py): aggregation (the router's default kinds),
# or the kinds whose answer lies in several places (multi-hop chains, every value of a key).
BASES = ((("decline",), None), (("decline", "kind"), None),
         (("decline", "kind"), ("multi_hop", "multi_value")))


def candidates() -> dict[str, dict]:
    """Self-Route settings to choose among on dev, by label: router options."""
    out: dict[str, dict] = {}
    for base, kinds in BASES:
        name = f"self_route[{','.join(base)}]"
        extra = {"kinds": list(kinds)} if kinds else {}
        tail = f" kinds={'+'.join(kinds)}" if kinds else ""
        out[name + tail] = {"escalate_on": list(base), **extra}
        for sig, (opt, values) in GRID.items():
            for v in values:
                on = [*base, sig]
                out[f"self_route[{','.join(on)}]{tail} {opt}={v:g}"] = {
                    "escalate_on": on, opt: v, **extra}
    return out


def paired(got: dict, base: dict) -> tuple[int, int, float]:
    wins = sum(v[0] > base[k][0] for k, v in got.items())
    losses = sum(v[0] < base[k][0] for k, v in got.items())
    return wins, losses, sign_test(wins, losses)


def choose(qs: dict) -> tuple[str, tuple[str, dict] | None]:
    """(the selection table, (label, options) of the setting chosen, or None): the setting
    with the best dev quality among those that beat the default router's setting paired per
    question (more wins than losses, exact sign test p < 0.05 / settings); None keeps the
    default."""
    cands = candidates()
    ids = [sid for sid, q in qs.items() if "rag" in q]
    base = {sid: policy_of(cands[BASELINE])(qs[sid]) for sid in ids}
    rows = []
    for label, opts in cands.items():
        got = {sid: policy_of(opts)(qs[sid]) for sid in ids}
        wins, losses, p = paired(got, base)
        qual = sum(v[0] for v in got.values()) / max(1, len(got))
        tok = sum(v[1] for v in got.values()) / max(1, len(got))
        other = sum(v[2] != "rag" for v in got.values()) / max(1, len(got))
        rows.append((qual, -tok, label, opts, wins, losses, p, tok, other))
    rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
    # Bonferroni over the grid: with ~30 settings tried, one of them reaches p < 0.05 by
    # chance alone more often than not.
    alpha = 0.05 / (len(cands) - 1)
    ok = [r for r in rows if r[4] > r[5] and r[6] < alpha and r[2] != BASELINE]
    pick = ok[0] if ok and len(ids) >= MIN_DEV else None
    lines = [f"choosing on {len(ids)} dev questions against {BASELINE} (the default): "
             + (f"CHOSEN {pick[2]}" if pick else
                "NOT CHOSEN, the default stays" + (f" (fewer than {MIN_DEV} questions)"
                                                   if len(ids) < MIN_DEV else
                                                   f" (nothing beats it at p < 0.05 / "
                                                   f"{len(cands) - 1} settings = {alpha:.4f})"
                                                   )),
             "", "| setting | quality | prompt tokens | not rag | wins/losses vs default | p |",
             "|---|---|---|---|---|---|"]
    for qual, _, label, _, wins, losses, p, tok, other in rows[:15]:
        lines.append(f"| {label} | {qual:.3f} | {tok:.0f} | {other:.0%} | {wins}/{losses} | "
                     f"{p:.3f} |")
    return "\n".join(lines), ((pick[2], pick[3]) if pick else None)


def per_task_best(dev: dict) -> Callable:
    """The fixed strategy that scored best on each (task, length) of the dev rows, applied by
    the sample's task: what a router that knew every question's task (no router does) could
    reach by choosing one strategy per task; an upper bound for routing on the question's kind."""
    groups: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for q in dev.values():
        for s, r in q.items():
            if s != ROUTER and not r.get("error"):
                groups[(task_of(r["dataset"]), r["length"])][s].append(r["quality"])
    best = {k: max(v, key=lambda s: (sum(v[s]) / len(v[s]), s == "rag")) for k, v in groups.items()}

    def policy(q):
        r = next(iter(q.values()))
        name = best.get((task_of(r["dataset"]), r["length"]), "rag")
        return fixed(name)(q) if name in q else fixed("rag")(q)
    return policy


# The routers whose choices table_choices counts (beside the default's setting, BASELINE).
ROUTING_COLUMNS = ("chosen on dev", "learned", "router (measured)", "best fixed per task")


def table_choices(qs: dict, policies: dict[str, Callable]) -> str:
    """Per task and length, how many questions each routing policy sent to each strategy."""
    cols = [n for n in policies if (n == BASELINE or n.startswith(ROUTING_COLUMNS))
            and any(policies[n](q) is not None for q in qs.values() if "rag" in q)]
    lines = ["| task | length | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for q in qs.values():
        if "rag" in q:
            groups[(task_of(q["rag"]["dataset"]), q["rag"]["length"])].append(q)
    for (task, length), group in sorted(groups.items()):
        cells = []
        for n in cols:
            got = [v for v in (policies[n](q) for q in group) if v is not None]
            counts = defaultdict(int)
            for v in got:
                counts[v[2]] += 1
            cells.append(", ".join(f"{s} {c}" for s, c in sorted(counts.items())) or "-")
        lines.append(f"| {task} | {length} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def acceptance(qs: dict, name: str, policy: Callable) -> str:
    """Issue 20's acceptance figures for one router on these rows: its quality against the best
    fixed strategy + 0.03, the share of the oracle's headroom it captures, its prompt tokens
    against full context's where full context fits, and its share of questions not read by
    rag alone."""
    ids = [sid for sid, q in qs.items() if "rag" in q]
    if not ids:
        return ""
    fixed_names = [s for s in ("rag", *FALLBACK) if all(s in qs[i] for i in ids)]
    mean = lambda pol, sel: sum(pol(qs[i])[0] for i in sel) / len(sel)  # noqa: E731
    best = max(fixed_names, key=lambda s: mean(fixed(s), ids))
    got, top, orc = mean(policy, ids), mean(fixed(best), ids), mean(oracle, ids)
    share = (got - top) / (orc - top) if orc > top else float("nan")
    fits = [i for i in ids if "full_context" in qs[i]
            and qs[i]["rag"].get("features", {}).get("fits_window")]
    tok = (sum(policy(qs[i])[1] for i in fits) / max(1, sum(
        qs[i]["full_context"]["cost"]["prompt_tokens"] for i in fits))) if fits else None
    other = sum(policy(qs[i])[2] != "rag" for i in ids) / len(ids)
    mark = lambda ok: "holds" if ok else "NOT MET"  # noqa: E731
    lines = [f"issue 20's acceptance for {name} on {len(ids)} questions:",
             f"- quality {got:.3f} against the best fixed strategy ({best}) {top:.3f} + 0.03: "
             f"{mark(got >= top + 0.03)}",
             f"- oracle {orc:.3f}: captures {share:.0%} of its headroom over {best} (half "
             f"needed): {mark(share >= 0.5)}",
             f"- not rag: {other:.0%} (10% needed): {mark(other >= 0.10)}"]
    if tok is not None:
        lines.append(f"- where full context fits ({len(fits)} questions): {tok:.0%} of full "
                     f"context's prompt tokens (at most 40%): {mark(tok <= 0.40)}")
        cap = 0.40 * sum(qs[i]["full_context"]["cost"]["prompt_tokens"] for i in fits)
        lines.append(f"- reachable at all within that: the oracle held to 40% of full context's "
                     f"tokens there scores {capped_oracle([qs[i] for i in fits], cap):.3f} on "
                     f"those {len(fits)} (rag {mean(fixed('rag'), fits):.3f}, full context "
                     f"{mean(fixed('full_context'), fits):.3f})")
    return "\n".join(lines)


def capped_oracle(group: list[dict], cap: float) -> float:
    """The per-question oracle spending at most ``cap`` prompt tokens over ``group``: rag
    everywhere, then the escalations that gain most quality per extra token while they fit
    (greedy, the fractional knapsack's order: close to the best a router could do on these
    rows with that many tokens)."""
    spent = sum(q["rag"]["cost"]["prompt_tokens"] for q in group)
    total = sum(q["rag"]["quality"] for q in group)
    ups = []
    for q in group:
        for s, r in q.items():
            gain = r["quality"] - q["rag"]["quality"]
            extra = r["cost"]["prompt_tokens"] - q["rag"]["cost"]["prompt_tokens"]
            if s not in ("rag", ROUTER) and gain > 0 and not r.get("error"):
                ups.append((gain / max(extra, 1), gain, extra, id(q)))
    done = set()
    for _, gain, extra, qid in sorted(ups, reverse=True):
        if qid not in done and spent + extra <= cap:
            spent, total = spent + extra, total + gain
            done.add(qid)
    return total / len(group)


def plot(qs: dict, policies: dict[str, Callable], path: str) -> None:
    """Quality against mean prompt tokens: each fixed strategy, the oracle, and the router's
    budget curve (the policies named ``... budget=B``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def point(pol):
        got = [v for v in (pol(q) for q in qs.values() if "rag" in q) if v is not None]
        n = max(1, len(got))
        return (sum(v[1] for v in got) / n, sum(v[0] for v in got) / n, len(got)) if got else None

    # A strategy that exists at one length only (full context inside the window, kv_pages
    # past it) is averaged over those questions: the label says over how many.
    fig, ax = plt.subplots(figsize=(7, 5.5))
    curve = [(n, point(p)) for n, p in policies.items() if " budget=" in n]
    curve = [(n, xy) for n, xy in curve if xy]
    if curve:
        router = curve[0][0].split(" budget=")[0].replace(" kinds=", "\nkinds=")
        ax.plot([xy[0] for _, xy in curve], [xy[1] for _, xy in curve], "o-",
                label=f"{router} at budgets (n={curve[0][1][2]})")
        for n, xy in curve:
            ax.annotate(n.split(" budget=")[1], xy[:2], textcoords="offset points", xytext=(4, 4))
    for name in ("rag", "full_context", "chain_of_agents", "kv_pages", "oracle"):
        xy = point(policies.get(name) or fixed(name))
        if xy:
            ax.plot(*xy[:2], "*" if name == "oracle" else "s", label=f"{name} (n={xy[2]})")
    ax.set_xlabel("mean prompt tokens per question")
    ax.set_ylabel("quality (share right)")
    ax.set_title(f"task mix, {sum('rag' in q for q in qs.values())} questions")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _nodes(node: dict):
    if "feature" in node:
        yield node
        yield from _nodes(node["left"])
        yield from _nodes(node["right"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="results.jsonl files of orchestra eval runs")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--budgets", default="1500,5000,20000",
                    help="prompt-token budgets for the budget curve")
    ap.add_argument("--train", nargs="*", default=[],
                    help="dev results to train the learned router on (it is then replayed on "
                         "the results given)")
    ap.add_argument("--choose-on", nargs="*", default=[],
                    help="dev results to choose Self-Route's setting on (paired against the "
                         "default router's); the choice is then replayed on the results given")
    ap.add_argument("--plot", help="draw quality against prompt tokens into this PNG")
    ap.add_argument("--cv", type=int, default=0, metavar="K",
                    help="also replay the learned router cross-validated in K folds of the "
                         "results given (out of sample, unlike --train on the same rows)")
    args = ap.parse_args(argv)
    try:
        return report(args)
    except OrchestraError as e:
        hint = ""
        from stored_runs import is_stored

        if any(is_stored(p) for p in [*args.results, *args.train, *args.choose_on]):
            hint = (" (a stored run: rebuild its run folder with `python benchmarks/stored_runs.py"
                    " restore NAME RUN_DIR` and give RUN_DIR/results.jsonl)")
        print(f"task_mix.py: error: {e}{hint}", file=sys.stderr)
        return 2


def report(args) -> int:
    rows = read_rows(args.results)
    qs = questions(rows)
    strategies = [s for s in dict.fromkeys(r["strategy"] for r in rows) if s != ROUTER]
    print(f"{len(qs)} questions, {len(rows)} rows from {', '.join(args.results)}\n")
    print("quality / mean prompt tokens per fixed strategy\n")
    print(table_tasks(qs, strategies), "\n")
    print(table_auc(qs, args.threshold), "\n")
    chosen = None
    if args.choose_on:
        dev = questions(read_rows(args.choose_on))
        table, chosen = choose(dev)
        print(table, "\n")
    budgets = [int(b) for b in args.budgets.split(",") if b]
    policies = default_policies(budgets, chosen)
    if args.train:
        from orchestra.routers.tree import train

        model = train(read_rows(args.train),
                      min_leaf=1)
        print(f"learned tree on {model.meta['questions']} dev questions "
              f"(labels {model.meta['label_counts']}); features used: "
              f"{sorted({model.features[n['feature']] for n in _nodes(model.tree)})}\n")
        policies = {**policies, "learned": learned(model)}
    if args.cv:
        for leaf in (2, 10):
            policies[f"learned, {args.cv}-fold CV, min_leaf={leaf}"] = \
                cross_validated(rows, args.cv, leaf)
    if args.choose_on:
        policies["best fixed per task on dev (knows the task)"] = per_task_best(dev)
    print(table_policies(qs, policies), "\n")
    print("routes per task\n")
    print(table_choices(qs, policies), "\n")
    label, opts = chosen or (BASELINE, candidates()[BASELINE])
    print(acceptance(qs, f"the default router ({label})", policy_of(opts)))
    if args.plot:
        plot(qs, policies, args.plot)
        print(f"\nwrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
