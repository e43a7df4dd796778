"""Pieces several subcommands share: reading questions and printing answers."""

from __future__ import annotations

import json
import sys

from orchestra.types import Answer


def print_answer(answer: Answer, as_json: bool = False, out=None) -> None:
    out = out or sys.stdout
    if as_json:
        out.write(answer.model_dump_json(indent=2) + "\n")
        return
    c = answer.cost
    route = answer.route
    out.write(f"{answer.text}\n\n")
    if route is not None:
        out.write(f"route: {route.strategy} ({route.router}): {route.reason}\n")
    else:
        out.write(f"strategy: {answer.strategy}\n")
    parts = [f"prompt tokens {c.prompt_tokens}", f"generated tokens {c.generated_tokens}",
             f"model calls {c.model_calls}"]
    if c.kv_pages_total:
        parts.append(f"KV pages read {c.kv_pages_read}/{c.kv_pages_total}")
    parts.append(f"{c.wall_seconds:.1f} s")
    out.write("cost: " + ", ".join(parts) + "\n")
    if answer.evidence:
        ids = ", ".join(e.chunk_id for e in answer.evidence[:8])
        more = f" (+{len(answer.evidence) - 8} more)" if len(answer.evidence) > 8 else ""
        out.write(f"evidence: {ids}{more}\n")


def dump_json(obj) -> str:
    return json.dumps(obj, indent=2, default=str)
