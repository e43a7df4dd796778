"""Agent prompts, in one place so users can override them (Python: ``prompts={...}``; YAML:
``prompts:`` under the strategy).

The defaults are written for a small reader (SmolLM2-135M): workers are asked to *copy*
sentences rather than summarise, because a 135M model paraphrases badly and invents facts when a
chunk lacks them; copied sentences can then be checked against the chunk (agents/notes.py).
Everything a template may use is listed in ``FIELDS``; a template with a missing or unknown
field is refused when the strategy is built.
"""

from __future__ import annotations

from orchestra.errors import ConfigError
from orchestra.prompts import check_template

# The fixed reply of a worker that finds nothing; notes in this form are dropped.
NO_INFO = "NO RELEVANT INFORMATION"

WORKER_SYSTEM = "You copy facts from a text. Be brief."

# {notes} is the rendered notes block of earlier workers (empty in map-reduce and for the first
# chain worker), so a custom template decides where earlier notes go.
WORKER = (
    "{notes}Text:\n{chunk}\n\n"
    "Question: {question}\n"
    "Copy the sentences from the text that answer the question. "
    f"If the text does not answer it, reply exactly: {NO_INFO}"
)

# How earlier notes are introduced to a chain worker (not a template: plain prefix text).
NOTES_HEADER = "Notes from earlier parts of the document:\n"

MANAGER_SYSTEM = "You answer questions using only the given notes. Be brief."

MANAGER = (
    "Notes taken from a long document:\n{notes}\n\n"
    "Answer the question using the notes above. Give every fact and number from the notes "
    "that the question asks for.\n"
    "Question: {question}"
)

# Combines a group of notes into one (map-reduce tree levels, chain-of-agents compression).
REDUCE = (
    "Notes taken from parts of a long document:\n{notes}\n\n"
    "Question: {question}\n"
    "Copy the notes that help answer the question, keeping every number and name. "
    f"If none helps, reply exactly: {NO_INFO}"
)

DEFAULTS: dict[str, str] = {
    "worker_system": WORKER_SYSTEM,
    "worker": WORKER,
    "manager_system": MANAGER_SYSTEM,
    "manager": MANAGER,
    "reduce": REDUCE,
}

FIELDS: dict[str, set[str]] = {
    "worker_system": set(),
    "worker": {"notes", "chunk", "question"},
    "manager_system": set(),
    "manager": {"notes", "question"},
    "reduce": {"notes", "question"},
}


def agent_prompts(overrides: dict[str, str] | None) -> dict[str, str]:
    """The defaults with ``overrides`` applied, each checked for its fields."""
    prompts = dict(DEFAULTS)
    for key, value in (overrides or {}).items():
        if key not in DEFAULTS:
            raise ConfigError(f"unknown agent prompt {key!r}; known: {', '.join(sorted(DEFAULTS))}")
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"agent prompt {key!r} must be a non-empty string")
        prompts[key] = value
    for key, fields in FIELDS.items():
        check_template(prompts[key], fields, f"agent prompt {key!r}")
    return prompts


def split_prompts(prompts: dict[str, str] | None) -> tuple[dict[str, str], dict[str, str]]:
    """(agent prompt overrides, reader prompt overrides); the base Strategy checks the latter."""
    from orchestra.prompts import DEFAULTS as READER_DEFAULTS

    if prompts is not None and not isinstance(prompts, dict):
        raise ConfigError(f"prompts must be a mapping of prompt name to template, "
                          f"not {type(prompts).__name__}")
    agent, reader = {}, {}
    for key, value in (prompts or {}).items():
        if key in DEFAULTS:
            agent[key] = value
        elif key in READER_DEFAULTS:
            reader[key] = value
        else:
            known = sorted({*DEFAULTS, *READER_DEFAULTS})
            raise ConfigError(f"unknown prompt {key!r}; known: {', '.join(known)}")
    return agent, reader
