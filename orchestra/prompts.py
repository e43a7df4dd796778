"""Reader prompts, in one place so users can override them (from Python or YAML).

Small readers do best with the document first and the question last; putting the question
last also lets prefix caches (vLLM) reuse a document across questions.
"""

from __future__ import annotations

from string import Formatter

from orchestra.errors import ConfigError

UNANSWERABLE = "unanswerable"

READER_SYSTEM = "You answer questions using only the given documents. Be brief."

READER = (
    "{context}\n\n"
    "Answer the question using the text above. Reply with the answer only.\n"
    "Question: {question}"
)

# Self-Route's first attempt: the model may decline when the passages lack the answer.
READER_MAY_DECLINE = (
    "{context}\n\n"
    "Answer the question using the text above. If the text does not contain the answer, "
    f"reply exactly \"{UNANSWERABLE}\".\n"
    "Question: {question}"
)

DEFAULTS = {
    "reader_system": READER_SYSTEM,
    "reader": READER,
    "reader_may_decline": READER_MAY_DECLINE,
}


def check_template(template: str, required: set[str], name: str = "template") -> str:
    fields = {f for _, f, _, _ in Formatter().parse(template) if f}
    missing = required - fields
    unknown = fields - required
    if missing:
        raise ConfigError(f"{name} lacks the field(s) {', '.join('{'+m+'}' for m in sorted(missing))}")
    if unknown:
        raise ConfigError(f"{name} has unknown field(s) {', '.join('{'+u+'}' for u in sorted(unknown))}")
    return template


def format_passages(chunks, with_ids: bool = False) -> str:
    """Passages joined for a reader prompt; optional ids let agents cite them."""
    parts = []
    for c in chunks:
        text = c.text.strip()
        parts.append(f"[{c.id}]\n{text}" if with_ids else text)
    return "\n\n".join(parts)
