"""Did the reader decline? The one rule, used by Self-Route, the strategies' ``unanswerable``
flag, streaming and the agents' notes (issue 21: it was written four times, with three windows).

A reply is a decline when it

- says so: "unanswerable" near its start (also wrapped: 'The answer is: "unanswerable"'), or
  a decline in the reader's own words at its start ("The text does not mention ...",
  ``DECLINE_WORDS``); or
- offers nothing beyond the question and the documents' titles (issue 19): every content word
  of it is already in the question or a title, as in "The address given is in the Gettysburg
  Address." for "Where was the address given?" over gettysburg_address.txt. A small reader
  told to reply with the answer only restates the question when its passages lack the answer.
  A reply that picks one of a multiple-choice question's lettered options is an answer, though
  its words are the option's (issue 20: every L-Eval option reply escalated as a decline).

Only the second needs the question; called without it, only worded declines count. Why not a
library: this is a decision about one reply's words against its question, a few set
operations; no text library decides it.
"""

from __future__ import annotations

import re
from typing import Iterable

from orchestra.prompts import DECLINE_WORDS, UNANSWERABLE

# Where "unanswerable" counts: near the reply's start (a small reader may open with a few
# words, 'Answer: "unanswerable"'), not anywhere in a long reply that merely quotes it.
MARKER_WINDOW = len(UNANSWERABLE) + 20
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Words that name nothing: function words, and the words a reader wraps a non-answer in.
_EMPTY = frozenset("""
a an the of in on at to for from by with about as into onto over under than then and or but nor
is are was were be been being am do does did done has have had having will would shall should
can could may might must it its it's this that these those there here who whom whose which what
when where why how i you he she we they me him her us them my your his our their mine yours
not no yes so such very also just only both each all any some one s t
answer answers answered question questions given text document documents passage passages
context based following mentioned mention mentions according stated states state said says
information provided provide described""".split())


def content_words(text: str) -> set[str]:
    """Lower-cased words of ``text`` that could name something (function words dropped), each
    in its singular, so "addresses" meets "address"."""
    return {_singular(w) for w in _WORD.findall(text.lower()) if w not in _EMPTY}


def _singular(w: str) -> str:
    if len(w) <= 3:
        return w
    if w.endswith("sses"):
        return w[:-2]
    if w.endswith("ies"):
        return w[:-3] + "y"
    return w[:-1] if w.endswith("s") and not w.endswith("ss") else w


def says_declined(text: str) -> bool:
    """A decline in words: "unanswerable" near the start, or DECLINE_WORDS opening the reply
    or its short answer (preamble and quotes removed)."""
    from orchestra.short_answer import short_answer

    text = (text or "").strip()
    short = short_answer(text).strip()
    return (UNANSWERABLE in text.lower()[:MARKER_WINDOW]
            or UNANSWERABLE in short.lower()[:len(UNANSWERABLE) + 4]
            or bool(DECLINE_WORDS.match(text)) or bool(DECLINE_WORDS.match(short)))


def offers_nothing(text: str, question: str, titles: Iterable[str] = ()) -> bool:
    """Whether every content word of the reply is already in the question or a title (an
    empty reply offers nothing too)."""
    known = content_words(question)
    for t in titles:
        known |= content_words(t)
    return not (content_words(text or "") - known)


def declined(text: str, question: str | None = None, titles: Iterable[str] = ()) -> bool:
    """THE rule: a worded decline, or (given the question) a reply offering nothing beyond
    the question and the documents' titles."""
    if says_declined(text):
        return True
    return (question is not None and offers_nothing(text, question, titles)
            and not chooses_one_option(text, question))


# Options as L-Eval and most multiple-choice prompts write them: "(A) ...", "B) ...", "C. ...".
_OPTION = re.compile(r"(?:^|\s|\()\(?([A-H])[).]\s", re.M)


def chooses_one_option(text: str, question: str) -> bool:
    """Whether the reply picks exactly one of the question's lettered options ("(B) Humans
    ..."). Its words are the option's, so they are all in the question; picking one is still
    an answer, while a reply that lists several options has not chosen. What it chose is read
    as option accuracy reads it (orchestra.short_answer.extract_options)."""
    from orchestra.short_answer import extract_options

    offered = set(_OPTION.findall(question))
    if len(offered) < 2:
        return False
    chosen = extract_options(text)
    listed = set(_OPTION.findall(f" {text} "))
    return len(chosen) == 1 and chosen in offered and listed <= {chosen}


def answer_declined(answer, corpus=None) -> bool:
    """Whether an Answer's read declined: the rule above over its text, question and the
    corpus's titles, or the strategy's own ``unanswerable`` (Self-Route escalates on it)."""
    titles = corpus_titles(corpus) if corpus is not None else ()
    return answer.unanswerable or declined(answer.text, answer.question or None, titles)


def corpus_titles(corpus) -> list[str]:
    """What names each document: its id (a file's stem, "gettysburg_address"), its metadata
    title, and its first line when that line is short enough to be a title."""
    out = []
    for d in getattr(corpus, "documents", ()):
        out.append(str(d.id).replace("_", " "))
        meta = getattr(d, "metadata", None) or {}
        if meta.get("title"):
            out.append(str(meta["title"]))
        first = d.text.lstrip().split("\n", 1)[0].strip()
        if first and len(first) <= 80 and len(first.split()) <= 10:
            out.append(first)
    return out
