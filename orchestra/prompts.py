"""Reader prompts, in one place so users can override them (from Python or YAML).

Small readers do best with the document first and the question last; putting the question
last also lets prefix caches (vLLM) reuse a document across questions.
"""

from __future__ import annotations

import re
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

# Small readers often decline in their own words instead of the exact "unanswerable".
DECLINE_WORDS = re.compile(
    r"^\W*(unanswerable|not answerable|"
    r"(the |this )?(given )?(text|passage|document|context)s? (does|do) not (contain|mention|"
    r"say|provide|include|specify|state)|"
    r"there is no (information|mention)|no (information|answer) (is )?(given|provided|found)|"
    r"(it|this) is not (mentioned|stated|provided)|(i )?cannot (answer|be determined))",
    re.I)

DEFAULTS = {
    "reader_system": READER_SYSTEM,
    "reader": READER,
    "reader_may_decline": READER_MAY_DECLINE,
}

# -- the reader library: strategies choose by name (``reader_template=``, ``reader_system=``) --
# RULER's QA template (Hsieh et al., 2024, scripts/data/synthetic/constants.py): the
# instruction before and after the documents, and its answer prefix.
_RULER_INSTRUCTION = ("Answer the question based on the given documents. Only give me the "
                      "answer and do not output any other words.")
RULER_QA = (
    f"{_RULER_INSTRUCTION}\n\nThe following are given documents.\n\n{{context}}\n\n"
    f"{_RULER_INSTRUCTION}\n\nQuestion: {{question}} Answer:"
)
# LangChain's RAG tutorial prompt (instruction first, question last).
LANGCHAIN_QA = ("Answer the question based only on the following context:\n\n{context}\n\n"
                "Question: {question}")
# The question before the documents too, so the reader knows what to look for while reading.
QUESTION_FIRST = (
    "Question: {question}\n\nThe following are given documents.\n\n{context}\n\n"
    "Answer the question based on the given documents. Only give me the answer and do not "
    "output any other words.\n\nQuestion: {question} Answer:"
)
READER_TEMPLATES = {
    "orchestra": READER,
    "ruler": RULER_QA,
    "langchain": LANGCHAIN_QA,
    "question_first": QUESTION_FIRST,
}
# Self-Route's first attempt under each template: the same framing plus the way to decline.
_DECLINE = (f"If the documents do not contain the answer, reply exactly \"{UNANSWERABLE}\".")
DECLINE_TEMPLATES = {
    "orchestra": READER_MAY_DECLINE,
    "ruler": RULER_QA.replace("\n\nQuestion: {question} Answer:",
                              f" {_DECLINE}\n\nQuestion: {{question}} Answer:"),
    "langchain": LANGCHAIN_QA.replace("\n\nQuestion:", f"\n\n{_DECLINE}\nQuestion:"),
    "question_first": QUESTION_FIRST.replace("\n\nQuestion: {question} Answer:",
                                             f" {_DECLINE}\n\nQuestion: {{question}} Answer:"),
}
# How a strategy that may decline is asked to (Strategy's ``decline``): "explicit" reads with
# the DECLINE_TEMPLATES prompt, "implicit" with the ordinary reader prompt.
DECLINE_MODES = ("explicit", "implicit")
# "default": no system message, so the model's chat template supplies its own (SmolLM2: "You
# are a helpful AI assistant named SmolLM, ..."), as a plain LangChain or RULER run does.
SYSTEM_PROMPTS = {
    "orchestra": READER_SYSTEM,
    "default": "",
    "extractive": ("You answer questions by copying the shortest span of the given documents "
                   "that answers them."),
}
# How retrieved passages are written into {context}.
PASSAGE_FORMATS = ("plain", "numbered", "titled")


def check_choice(value, choices, what: str) -> str:
    """``value`` when it names one of ``choices``; otherwise one message listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(choices)}, not {value!r}")
    return value


def check_template(template: str, required: set[str], name: str = "template") -> str:
    fields = {f for _, f, _, _ in Formatter().parse(template) if f}
    missing = required - fields
    unknown = fields - required
    if missing:
        raise ConfigError(f"{name} lacks the field(s) {', '.join('{'+m+'}' for m in sorted(missing))}")
    if unknown:
        raise ConfigError(f"{name} has unknown field(s) {', '.join('{'+u+'}' for u in sorted(unknown))}")
    return template


def format_passages(chunks, style: str = "plain") -> str:
    """Passages joined for a reader prompt.

    ``style``: ``plain`` (blank lines between passages), ``numbered`` ("Document 1:" ..., as
    RULER writes its QA documents) or ``titled`` (each passage under its document's id).
    """
    parts = []
    for n, c in enumerate(chunks, 1):
        text = c.text.strip()
        if style == "numbered":
            text = f"Document {n}:\n{text}"
        elif style == "titled":
            text = f"Title: {c.doc_id}\n{text}"
        parts.append(text)
    return "\n\n".join(parts)
