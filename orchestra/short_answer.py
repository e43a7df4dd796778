"""The short answer inside a reader's reply.

Small readers wrap the answer: ``The answer to the question is: "Christian"``, ``Based on the
text, the treaty was signed in 1648.``, the question restated before the answer, a list after a
colon, a phrase repeated until the token limit. Exact match and F1 (SQuAD's metrics) compare
spans, so they read the answer with those wrappers removed; the Answer keeps the full reply too.

Hand-written rules, not a library: the wrappers are this project's readers' own habits (the
test fixtures are real replies of the embedded model), and every rule is a small regex that
only removes text, so a reply without a wrapper passes through unchanged except for quotes and
a final full stop.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an the of in on at to for by with from and or is are was were be been what which who "
    "whom whose when where why how did does do that this these those as it its into than "
    "there their they he she his her many much".split())

# Lead-ins the reader writes before the answer, removed repeatedly from the start.
_PREAMBLES = [re.compile(p, re.I) for p in (
    r"^(?:sure|okay|ok|yes)\s*[,!.:]\s*",
    r"^(?:here is|here's) (?:the |my )?answer\s*[:.]?\s*",
    r"^(?:the )?(?:short |final |correct |best )?answer(?: to (?:the|this|your|that) question)?"
    r"(?: (?:is|would be|will be)(?: that)?| ?:)\s*:?\s*",
    r"^(?:according to|based on|from|in) (?:the )?(?:given |provided |above |following )?"
    r"(?:text|passages?|documents?|context|information|notes|article)s?(?: above| provided)?"
    r"\s*[,:]\s*",
    r"^a\s*:\s*",
    r"^(?:it|this|that)(?:'s| is| was)\s+",
)]
_QUESTION_ECHO = re.compile(r"^\s*(?:question|q)\s*:.*?(?:\?|\n)\s*(?:answer|a)\s*:\s*",
                            re.I | re.S)
_QUOTES = "\"'“”‘’`*_"


def _stems(words) -> set[str]:
    from nltk.stem import PorterStemmer  # a dependency already (BM25); needs no data

    stem = PorterStemmer().stem
    return {stem(w) for w in words}


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def _first_part(text: str) -> str:
    """The first line with text; when it only introduces what follows (ends with ':'), the
    next line (list numbering removed)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    first = lines[0]
    if first.endswith(":") and len(lines) > 1:
        return re.sub(r"^(?:\d+[.)]|[-*•])\s*", "", lines[1])
    return first


def _strip_loops(text: str) -> str:
    """A phrase repeated back to back (``45, 45, 45``; ``of the invention of the invention``)
    is kept once."""
    return re.sub(r"\b(\w+(?:\W+\w+){0,5}?)(?:\W+\1\b)+", r"\1", text)


def _strip_question(text: str, question: str) -> str:
    """Remove the question where the reply restates it before the answer: the question itself
    as a prefix, else the leading words that all come from the question (stemmed; articles,
    verbs like "is" and other stop words count as the question's too) when at least two of
    them are content words: "Harvard's total financial aid reserves are $159 million" ->
    "$159 million". A reply made only of the question's words is left as it is."""
    q = question.strip().rstrip("?").strip()
    if q and text.lower().startswith(q.lower()):
        rest = text[len(q):].lstrip(" ?:-—,")
        if not rest:
            return text
        text = rest
    qstems = _stems(_content_words(question))
    if not qstems:
        return text
    echoed, cut = 0, 0
    for m in re.finditer(r"\S+", text):
        parts = _WORD.findall(m.group().lower())
        content = [w for w in parts if w not in _STOP]
        if not parts or not _stems(content) <= qstems:
            break
        echoed += len(content)
        cut = m.end()
    rest = text[cut:].strip()
    if echoed >= 2 and rest and _WORD.search(rest.lower()):
        return rest
    return text


def _first_clause(text: str) -> str:
    """Up to a relative or added clause (", when ...", ", which ..."): what follows a span
    answer is the reader's commentary on it."""
    m = re.search(r",\s+(?:when|which|where|who|whom|whose|while|because|since|as|and it|"
                  r"but)\b|\s+(?:when|while|because)\s", text)
    return text[:m.start()] if m and m.start() > 0 else text


def short_answer(reply: str, question: str | None = None) -> str:
    """The answer span of ``reply`` (see the module docstring); ``""`` for an empty reply."""
    text = _QUESTION_ECHO.sub("", reply or "", count=1)
    text = _first_part(text)
    for _ in range(3):
        before = text
        for p in _PREAMBLES:
            text = p.sub("", text, count=1)
        text = text.strip().strip(_QUOTES).strip()
        if text == before:
            break
    if question:
        text = _strip_question(text, question)
        for p in _PREAMBLES:
            text = p.sub("", text, count=1)
    text = text.strip()
    # A quoted answer: the quoted part ('"Shoushi Li" and it is not mentioned' -> Shoushi Li;
    # 'the word "Christian".' -> Christian).
    m = re.match(r"[\"“]([^\"”]{1,200})[\"”]", text) or \
        re.fullmatch(r"[^\"“]*[\"“]([^\"”]{1,200})[\"”][\s.!]*", text)
    if m:
        text = m.group(1)
    text = _first_clause(text)
    text = _strip_loops(text)
    # The first sentence: what follows a full stop is commentary.
    # (A full stop after a word of three or more letters or digits: "Mr. Smith" stays whole.)
    m = re.match(r"(.+?\b\w{3,}[.!?])\s+[A-Z(]", text)
    if m:
        text = m.group(1)
    text = text.strip().strip(_QUOTES).strip()
    return text.rstrip(".!,;:").strip().strip(_QUOTES).strip()


_LEAD = re.compile(r"^\s*(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)s?\s*(?:is|are|:)?\s*",
                   re.I)
_LETTERS = re.compile(r"^\(?([A-H](?:\)?\s*(?:,|and|&|/)?\s*\(?[A-H])*)\)?(?![A-Za-z])")


def extract_options(text: str) -> str:
    """Option letters a reply chooses, sorted: "(B) because..." -> "B", "A, C and D" -> "ACD".

    Letters count at the start of the reply (after an optional "Answer:"), else the first
    parenthesised "(X)" or "answer is X" anywhere in it."""
    head = _LEAD.sub("", text.strip(), count=1)
    m = _LETTERS.match(head)
    if m:
        return "".join(sorted(set(re.findall(r"[A-H]", m.group(1)))))
    m = re.search(r"\(([A-H])\)|answer is:?\s*\(?([A-H])\b", text)
    return (m.group(1) or m.group(2)) if m else ""
