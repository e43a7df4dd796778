"""A strategy is one way of reading: ``answer(question, corpus) -> Answer``.

Strategies know nothing about routing; routers know strategies only through this interface:

- ``kind``: what the strategy does (``full_context``, ``rag``, ``kv_pages`` or ``agents``);
  routers reason about kinds, whatever a pipeline named the strategy.
- ``requires``: backend capabilities; routers pick only strategies the backend can run.
- ``can_decline``: ``answer(..., may_decline=True)`` lets the reader say "unanswerable".
- ``answer(question, corpus, *, may_decline=False, generation=None)``: the Answer, timed.
  ``generation`` (a GenerationSettings: a caller's max_tokens, temperature, seed, stop) applies
  to the final read, and the prompt is sized for its ``max_tokens``.
- ``fits(corpus, question, *, generation=None) -> Fit``: whether this strategy can read this
  corpus with that reply budget (no model call).
- ``signals(question, corpus) -> dict``: cheap measurements a router may decide from (RAG: its
  retrieval score shape); ``{}`` by default.

The question is validated once, where it enters (``Pipeline.run``, ``orchestra.ask`` or a direct
``Strategy.answer``): ``check_question`` returns a ``Question``, which later checks pass as is.
"""

from __future__ import annotations

import time
import unicodedata
from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

from orchestra.backends.base import Backend, GenerationRequest, GenerationSettings, Message
from orchestra.corpus import Corpus
from orchestra.errors import CapabilityError, ConfigError, InputError
from orchestra.prompts import (
    DEFAULTS,
    PASSAGE_FORMATS,
    DECLINE_MODES,
    DECLINE_TEMPLATES,
    SYSTEM_PROMPTS,
    READER_TEMPLATES,
    check_choice,
    check_template,
    format_passages,
)
from orchestra.spec import Component
from orchestra.types import Answer, Cost, Evidence, Trace


# Strategy kinds (what routers reason about).
FULL = "full_context"
RAG = "rag"
PAGES = "kv_pages"
AGENTS = "agents"
KINDS = (FULL, RAG, PAGES, AGENTS)


class Question(str):
    """A question that passed ``check_question`` (stripped, not empty)."""


def check_question(question: str) -> Question:
    """The question, stripped; an empty one is refused, and so is one made only of invisible
    format characters (zero-width spaces, word joiners, byte-order marks: Unicode's Cf, which
    ``str.strip`` keeps) and one holding bytes that are not UTF-8 (the command line hands them
    over as lone surrogates, which no tokenizer can encode). A ``Question`` passes as is, so
    the layers under an entry point do not check again."""
    if isinstance(question, Question):
        return question
    if not isinstance(question, str) or not _visible(question):
        raise InputError("the question is empty")
    bad = next((i for i, c in enumerate(question) if "\ud800" <= c <= "\udfff"), None)
    if bad is not None:
        code = ord(question[bad])
        what = (f"the byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF
                else f"a lone surrogate U+{code:04X}")
        raise InputError(f"the question is not valid UTF-8 text ({what} at character "
                         f"{bad + 1}); give it in UTF-8")
    return Question(question.strip())


def _visible(text: str) -> bool:
    """Whether ``text`` holds a character other than whitespace and format characters (Cf)."""
    return any(not c.isspace() and unicodedata.category(c) != "Cf" for c in text)


def given(generation: GenerationSettings | None) -> dict[str, Any]:
    """``generation=`` for a call into a strategy, when a caller gave reply settings (a
    strategy written without them is never handed any it did not ask for)."""
    if generation is None or not generation.fields():
        return {}
    return {"generation": generation}


class Fit(NamedTuple):
    """Whether a strategy can read a corpus; ``needed``/``available`` tokens when it counts."""

    ok: bool
    needed: int | None = None
    available: int | None = None


class Strategy(Component, ABC):
    name: ClassVar[str] = "strategy"  # the registered type name
    kind: ClassVar[str | None] = None  # one of KINDS; None: routers reach it only by its name
    can_decline: ClassVar[bool] = False
    requires: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, backend: Backend, max_tokens: int = 64,
                 prompts: dict[str, str] | None = None, *,
                 reader_template: str = "orchestra", reader_system: str = "orchestra",
                 passage_format: str = "plain", repetition_penalty: float = 1.0,
                 no_repeat_ngram_size: int = 0, decline: str = "explicit"):
        """``reader_template`` / ``reader_system`` name entries of orchestra.prompts'
        READER_TEMPLATES / SYSTEM_PROMPTS (``reader_system="default"``: no system message, the
        model's own); ``prompts`` overrides either with literal text. ``passage_format``:
        plain, numbered or titled passages. ``repetition_penalty`` (1.0 = off, up to 2.0) and
        ``no_repeat_ngram_size`` (0 = off) guard the reader's decoding against loops.
        ``decline`` (strategies that may decline, for Self-Route): ``explicit`` asks the reader
        to reply "unanswerable" when its passages lack the answer (the ``reader_may_decline``
        prompt); ``implicit`` reads with the ordinary ``reader`` prompt and a decline is only
        what the reader says in its own words ("The text does not mention ..."). A small
        reader told it may decline answers less often (benchmarks/README.md)."""
        missing = self.requires - backend.capabilities
        if missing:
            raise CapabilityError(
                f"strategy {self.name!r} needs backend capabilities {sorted(missing)}, "
                f"which the {backend.name} backend lacks"
            )
        self.backend = backend
        self.max_tokens = max_tokens
        self.decline = decline
        self.reader_template = reader_template
        self.reader_system = reader_system
        self.passage_format = passage_format
        self.repetition_penalty = float(repetition_penalty)
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.prompts = dict(DEFAULTS)
        self.prompts.update(reader=READER_TEMPLATES[reader_template],
                            reader_may_decline=DECLINE_TEMPLATES[reader_template],
                            reader_system=SYSTEM_PROMPTS[reader_system])
        for k, v in (prompts or {}).items():
            if k not in self.prompts:
                raise InputError(f"unknown prompt {k!r}; known: {', '.join(sorted(self.prompts))}")
            self.prompts[k] = v
        if decline == "implicit":  # check_options refused a reader_may_decline beside it
            self.prompts["reader_may_decline"] = self.prompts["reader"]

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Checks on option values that need no backend (orchestra.checks): the constructor and
        `orchestra validate` both run them. Subclasses extend this for their own options."""
        from orchestra.checks import positive_int
        from orchestra.errors import OptionError

        where = f"strategy {cls.name!r}"
        positive_int(options, "max_tokens", where)
        for name, choices in (("reader_template", tuple(READER_TEMPLATES)),
                              ("decline", DECLINE_MODES),
                              ("reader_system", tuple(SYSTEM_PROMPTS)),
                              ("passage_format", PASSAGE_FORMATS)):
            if name in options:
                try:
                    check_choice(options[name], choices, f"{where}: {name}")
                except ConfigError as e:
                    raise OptionError(name, str(e)) from None
        rp = options.get("repetition_penalty", 1.0)
        if isinstance(rp, bool) or not isinstance(rp, (int, float)) or not 1.0 <= rp <= 2.0:
            raise OptionError("repetition_penalty", f"{where}: repetition_penalty must be a "
                                                    f"number in [1.0, 2.0] (1.0 = off), not {rp!r}")
        nr = options.get("no_repeat_ngram_size", 0)
        if isinstance(nr, bool) or not isinstance(nr, int) or nr < 0:
            raise OptionError("no_repeat_ngram_size", f"{where}: no_repeat_ngram_size must be an "
                                                      f"integer >= 0 (0 = off), not {nr!r}")
        prompts = options.get("prompts")
        if options.get("decline") == "implicit" and "reader_may_decline" in (prompts or {}):
            raise OptionError("prompts", f"{where}: decline: implicit reads with the 'reader' "
                                         "prompt, so the 'reader_may_decline' prompt given would "
                                         "never be used; drop one of them")
        if prompts is None:
            return
        if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
            raise OptionError("prompts", f"{where}: prompts must map prompt names to texts")
        for k, v in prompts.items():  # other names: agents take theirs here too
            if k in ("reader", "reader_may_decline"):
                try:
                    check_template(v, {"context", "question"}, f"prompt {k!r}")
                except ConfigError as e:
                    raise OptionError("prompts", f"{where}: {e}") from None

    def reply_tokens(self, generation: GenerationSettings | None = None) -> int:
        """The answer's token budget: the caller's ``max_tokens``, else this strategy's."""
        if generation is not None and generation.max_tokens is not None:
            return generation.max_tokens
        return self.max_tokens

    def check_room(self, question: str, generation: GenerationSettings | None = None) -> None:
        """Refuse a question (or max_tokens) the window cannot hold with the reader's prompt,
        naming it and both sizes: no strategy can answer it, whatever it reads."""
        window = self.backend.context_window
        reply = self.reply_tokens(generation)
        if reply >= window:
            raise InputError(f"max_tokens {reply} leaves no room for the prompt in the "
                             f"model's window of {window} tokens; lower max_tokens")
        needed = self.backend.count_prompt_tokens(self.reader_request("", question).messages)
        if needed + reply > window:
            raise InputError(
                f"the question is too long: it has {self.backend.count_tokens(question)} tokens, "
                f"and with the prompt and a {reply}-token answer it needs "
                f"{needed + reply} tokens before any document text, but the model's "
                f"window is {window} tokens; shorten the question")

    def answer(self, question: str, corpus: Corpus, *, may_decline: bool = False,
               generation: GenerationSettings | None = None) -> Answer:
        """The Answer (its cost's wall_seconds is this call's time). ``may_decline`` (only where
        ``can_decline``) lets the reader reply "unanswerable". ``generation``: the caller's
        reply settings (max_tokens, temperature, seed, stop) for the final read; the prompt
        is sized for its max_tokens."""
        question = check_question(question)
        self.check_room(question, generation)
        t0 = time.perf_counter()
        kw: dict[str, Any] = given(generation)
        if may_decline:
            if not self.can_decline:
                raise CapabilityError(f"strategy {self.name!r} cannot decline (may_decline)")
            kw["may_decline"] = True
        ans = self._answer(question, corpus, **kw)
        ans.cost.wall_seconds = time.perf_counter() - t0
        return ans

    @abstractmethod
    def _answer(self, question: str, corpus: Corpus) -> Answer:
        """Answer a checked question (strategies that ``can_decline`` take ``may_decline``;
        ``generation`` is passed when a caller gave reply settings)."""

    def fits(self, corpus: Corpus, question: str = "", *,
             generation: GenerationSettings | None = None) -> Fit:
        """Whether this strategy can read ``corpus`` with ``question`` and the reply budget of
        ``generation`` (default: any corpus)."""
        return Fit(True)

    def signals(self, question: str, corpus: Corpus) -> dict[str, Any]:
        """Measurements a router may decide from, without a model call (default: none)."""
        return {}

    def format_context(self, chunks) -> str:
        """Retrieved or packed chunks as the reader's {context}, in ``passage_format``."""
        return format_passages(chunks, style=self.passage_format)

    # -- helpers shared by strategies -------------------------------------------------------
    def reader_request(self, context: str, question: str, may_decline: bool = False,
                       max_tokens: int | None = None,
                       generation: GenerationSettings | None = None) -> GenerationRequest:
        template = self.prompts["reader_may_decline" if may_decline else "reader"]
        system = self.prompts["reader_system"]
        # An empty system prompt sends none: the chat template then adds the model's own.
        messages = [Message(role="system", content=system)] if system else []
        messages.append(Message(role="user", content=template.format(context=context,
                                                                     question=question)))
        req = GenerationRequest(messages=messages, max_tokens=max_tokens or self.max_tokens,
                                **self.decoding())
        return generation.apply(req) if generation is not None else req

    def decoding(self) -> dict[str, Any]:
        """GenerationRequest fields for the decoding guards."""
        return {"repetition_penalty": self.repetition_penalty,
                "no_repeat_ngram_size": self.no_repeat_ngram_size}

    def read(self, context: str, question: str, chunks, trace: Trace,
             may_decline: bool = False, step: str = "read", titles=(),
             generation: GenerationSettings | None = None) -> Answer:
        """One reader call over ``context`` (with the caller's ``generation`` settings); the
        Answer cites ``chunks``. With ``may_decline``, the Answer is ``unanswerable`` when
        orchestra.declines' rule says the reply declined (``titles``: the documents' titles,
        which a non-answer may repeat)."""
        from orchestra.declines import declined
        from orchestra.streaming import stream_read

        from orchestra.backends.base import LOGPROBS
        from orchestra.signals import logprob_shape

        req = self.reader_request(context, question, may_decline, generation=generation)
        if LOGPROBS in self.backend.capabilities:  # how sure the reader was: a routing signal
            req = req.model_copy(update={"logprobs": True})
        evidence = [Evidence(chunk_id=c.id, doc_id=c.doc_id, start=c.start, end=c.end)
                    for c in chunks]
        decline = (lambda text: declined(text, question, titles)) if may_decline else None
        with trace.step(step, chunks=len(chunks)) as st:
            # Inside Pipeline.stream the tokens stream out; otherwise one generate call.
            res = stream_read(self, req, evidence, decline)
            st.detail.update(prompt_tokens=res.prompt_tokens,
                             generated_tokens=res.generated_tokens,
                             **logprob_shape(res.token_logprobs))
        cost = Cost()
        cost.add_generation(res)
        text = res.text
        return Answer(
            question=question, text=text, strategy_type=self.name, cost=cost, trace=trace,
            evidence=evidence, unanswerable=bool(decline and decline(text)),
        )
