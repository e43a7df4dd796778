"""Evidence a person can follow: the file, its lines and the opening words of each span.

Strategies cite spans as (chunk id, document id, character offsets); ``cite`` adds where to look
(``file:line-line``) and a short snippet from the corpus the Answer was read from. The ids and
offsets stay, so JSON consumers keep exact spans.
"""

from __future__ import annotations

from orchestra.corpus import Corpus
from orchestra.types import Answer, Evidence

SNIPPET_CHARS = 80


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The span's opening words on one line, cut at a word boundary with an ellipsis."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat.rfind(" ", 0, limit)
    return flat[: cut if cut > limit // 2 else limit].rstrip() + "…"


def cite_one(ev: Evidence, corpus: Corpus) -> Evidence:
    try:
        doc = corpus.document(ev.doc_id)
    except KeyError:  # a span from outside the corpus (an external retriever's own source)
        return ev
    text = doc.text
    start = max(0, min(ev.start, len(text)))
    end = max(start, min(ev.end, len(text)))
    ev.source = doc.source or doc.id
    ev.line_start = text.count("\n", 0, start) + 1
    # The line of the span's last character (a span ending in a newline ends on that line).
    ev.line_end = ev.line_start + text.count("\n", start, max(start, end - 1))
    ev.snippet = snippet(text[start:end])
    return ev


def cite(answer: Answer, corpus: Corpus) -> Answer:
    """Fill each evidence span's source, lines and snippet from ``corpus`` (in place)."""
    for ev in answer.evidence:
        cite_one(ev, corpus)
    return answer
