"""orchestra.declines: the one "did the reader decline" rule (issues 19 and 21), and the
callers that use it (Self-Route, the strategies' unanswerable flag, streaming)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra.backends.base import GenerationRequest
from orchestra.backends.scripted import ScriptedBackend
from orchestra.corpus import Corpus, Document
from orchestra.declines import corpus_titles, declined, offers_nothing
from orchestra.pipeline import Pipeline
from orchestra.routers.self_route import SelfRouter
from orchestra.strategies.full_context import FullContext
from orchestra.strategies.rag import RAG

DOC = Path(__file__).resolve().parent.parent / "examples" / "data" / "gettysburg_address.txt"
GETTYSBURG = Document(id=DOC.stem, text=DOC.read_text(), source=str(DOC))
QUESTION = "Where was the address given?"
# What the embedded reader replied to README command 1 before issue 19 (Self-Route kept it).
RESTATED = "The address given is in the Gettysburg Address."


@pytest.mark.parametrize("text,expected", [
    (RESTATED, True),
    ("The address was given in the Gettysburg Address", True),
    ("Gettysburg Address.", True),
    ("", True),
    ("At the dedication of the Soldiers' National Cemetery in Gettysburg.", False),
    ("Gettysburg, Pennsylvania", False),
    ("November 19, 1863", False),
    ("unanswerable", True),
    ("The text does not mention where it was given.", True),
])
def test_a_reply_offering_nothing_beyond_question_and_title_is_a_decline(text, expected):
    titles = corpus_titles(Corpus([GETTYSBURG], ScriptedBackend([]).tokenizer))
    assert declined(text, QUESTION, titles) is expected


def test_titles_are_the_file_stem_and_a_short_first_line():
    titles = corpus_titles(Corpus([GETTYSBURG], ScriptedBackend([]).tokenizer))
    assert "gettysburg address" in titles and "The Gettysburg Address" in titles


def test_without_the_question_only_worded_declines_count():
    assert declined("The text does not mention Atlantis.") is True
    assert declined(RESTATED) is False


def test_plural_and_case_do_not_make_a_word_new():
    assert offers_nothing("The Addresses were GIVEN.", QUESTION)
    assert not offers_nothing("In 1863.", QUESTION)


def _backend(first: str):
    """RAG's first read (RULER-style prompt in the rag strategy) replies ``first``; full
    context names the place."""
    def reply(req: GenerationRequest) -> str:
        prompt = req.messages[-1].content
        return first if prompt.startswith("Answer the question based") else (
            "At the dedication of the Soldiers' National Cemetery in Gettysburg.")
    return ScriptedBackend(reply, context_window=4096)


@pytest.mark.parametrize("first,escalates", [(RESTATED, True), ("Gettysburg, Pennsylvania",
                                                                  False)])
def test_self_route_escalates_a_restated_question_and_keeps_an_answer(first, escalates):
    b = _backend(first)
    strategies = {"rag": RAG(b, retriever="bm25", reader_template="ruler", decline="implicit"),
                  "full": FullContext(b)}
    pipe = Pipeline(b, strategies, SelfRouter(strategies, first="rag", fallback=["full"]))
    answer = pipe.run(QUESTION, [GETTYSBURG])
    assert (answer.route.strategy == "full") is escalates
    assert ("Cemetery" in answer.text) is escalates
    if escalates:
        assert answer.route.signals["declined"] and "declined" in answer.route.reason


def test_a_restated_question_is_not_streamed_before_the_fallback():
    b = _backend(RESTATED)
    strategies = {"rag": RAG(b, retriever="bm25", reader_template="ruler", decline="implicit"),
                  "full": FullContext(b)}
    pipe = Pipeline(b, strategies, SelfRouter(strategies, first="rag", fallback=["full"]))
    events = list(pipe.stream(QUESTION, [GETTYSBURG]))
    text = "".join(e.text for e in events if e.type == "token")
    assert "Gettysburg Address" not in text and "Cemetery" in text
    assert events[-1].answer.route.strategy == "full"


MC = ("What does the author describe as confusing?  (A) Traits did not persist  (B) Humans "
      "didn't understand genetics  (C) Humans treat anyone as kin  (D) Kin-selection fails")


@pytest.mark.parametrize("text,expected", [
    ("(B) Humans didn't understand genetics", False),  # picks one option: an answer
    ("The answer is (C) Humans treat anyone as kin.", False),
    ("Answer: D", False),
    ("C. Humans treat anyone as kin", False),
    ("(A) Traits did not persist (B) Humans didn't understand genetics", True),  # no choice
    ("Humans didn't understand genetics", True),  # restates an option without choosing
    ("The text does not say. (B)", True),  # a worded decline stays one
])
def test_picking_one_lettered_option_is_an_answer(text, expected):
    assert declined(text, MC) is expected


def test_options_need_a_multiple_choice_question():
    from orchestra.declines import chooses_one_option

    assert chooses_one_option("(B) Gettysburg Address", MC)
    assert not chooses_one_option("(B) Gettysburg Address", QUESTION)
