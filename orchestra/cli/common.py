"""Pieces several subcommands share: reading questions and printing answers."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager

from orchestra.types import Answer


def print_answer(answer: Answer, as_json: bool = False, out=None,
                 show_text: bool = True) -> None:
    """The answer, its route, cost and evidence (``show_text=False``: the text was streamed)."""
    out = out or sys.stdout
    if as_json:
        out.write(answer.model_dump_json(indent=2) + "\n")
        return
    c = answer.cost
    route = answer.route
    if show_text:
        out.write(f"{answer.text}\n\n")
    if route is not None:
        # The pipeline's name for the strategy, with its type where the two differ.
        name = route.strategy if route.strategy == answer.strategy_type else (
            f"{route.strategy} [{answer.strategy_type}]")
        out.write(f"route: {name} (router {route.router}): {route.reason}\n")
    else:
        out.write(f"strategy: {answer.strategy_type}\n")
    parts = [f"prompt tokens {c.prompt_tokens}", f"generated tokens {c.generated_tokens}",
             f"model calls {c.model_calls}"]
    if c.kv_pages_total:
        parts.append(f"KV pages read {c.kv_pages_read}/{c.kv_pages_total}")
    parts.append(f"{c.wall_seconds:.1f} s")
    out.write("cost: " + ", ".join(parts) + "\n")
    if answer.evidence:
        # file:line-line and the span's opening words; --json keeps ids and offsets too.
        out.write("evidence:\n")
        for e in answer.evidence[:EVIDENCE_SHOWN]:
            out.write(f"  {e.location}  {e.snippet}\n" if e.snippet else f"  {e.location}\n")
        if len(answer.evidence) > EVIDENCE_SHOWN:
            out.write(f"  (+{len(answer.evidence) - EVIDENCE_SHOWN} more; --json lists all)\n")


EVIDENCE_SHOWN = 8


@contextmanager
def progress(stream=None, enabled: bool | None = None):
    """While a question is read, a status line on stderr names the step running (route,
    retrieve, prefill, each model call) and counts those done. Shown on a terminal only
    (tqdm's own choice), so logs, pipes and tests stay clean."""
    from tqdm import tqdm  # plain tqdm: tqdm.auto warns in a kernel without ipywidgets

    from orchestra import observe

    bar = tqdm(total=None, desc="reading", unit="step", leave=False, file=stream,
               disable=(None if not os.environ.get("ORCHESTRA_QUIET") else True)
               if enabled is None else not enabled)

    class Steps:
        def step_started(self, step):
            bar.set_description_str(f"reading: {step.name}")

        def step_ended(self, step, token, error):
            bar.update(1)

    try:
        with observe.listening(Steps()):
            yield bar
    finally:
        bar.close()


def dump_json(obj) -> str:
    return json.dumps(obj, indent=2, default=str)
