"""Strategy 1: the whole corpus, in document order, in one prompt.

A corpus over the window is refused with both sizes named, unless the caller chose a
truncation policy: ``head`` (keep the start), ``tail`` (keep the end) or ``middle-out`` (keep
both ends, drop the middle). The Trace records what was cut.
"""

from __future__ import annotations

from orchestra.backends.base import GenerationSettings
from orchestra.corpus import Corpus
from orchestra.errors import ContextOverflowError, OptionError
from orchestra.strategies.base import FULL, Fit, Strategy
from orchestra.types import Answer, Evidence, Trace

TRUNCATION_POLICIES = ("head", "tail", "middle-out")
SEPARATOR = "\n\n"


class FullContext(Strategy):
    name = "full_context"
    kind = FULL

    def __init__(self, backend, truncation: str | None = None, *, max_tokens: int = 64, prompts: dict[str, str] | None = None,
                 reader_template: str = "orchestra", reader_system: str = "orchestra",
                 passage_format: str = "plain", repetition_penalty: float = 1.0,
                 no_repeat_ngram_size: int = 0, decline: str = "explicit"):
        super().__init__(backend, max_tokens, prompts, reader_template=reader_template,
                         reader_system=reader_system, passage_format=passage_format,
                         repetition_penalty=repetition_penalty,
                         no_repeat_ngram_size=no_repeat_ngram_size, decline=decline)
        self.truncation = None if truncation == "none" else truncation

    @classmethod
    def check_options(cls, options: dict) -> None:
        super().check_options(options)
        if options.get("truncation") not in (None, "none", *TRUNCATION_POLICIES):
            raise OptionError("truncation", f"truncation must be one of "
                              f"{', '.join(TRUNCATION_POLICIES)} (or none), "
                              f"not {options['truncation']!r}")

    def fits(self, corpus: Corpus, question: str = "", *,
             generation: GenerationSettings | None = None) -> Fit:
        """Fit(can read, tokens needed, tokens available) for this corpus and question with
        the reply budget of ``generation``; with a truncation policy any corpus can be read
        (needed may exceed available)."""
        budget = self.context_budget(question, self.reply_tokens(generation))
        needed = self.corpus_tokens(corpus)
        return Fit(needed <= budget or self.truncation is not None, needed, budget)

    def corpus_tokens(self, corpus: Corpus) -> int:
        """Tokens of every document joined by the separator, as the prompt holds them."""
        return corpus.n_tokens + self.backend.count_tokens(SEPARATOR) * (len(corpus.documents) - 1)

    def context_budget(self, question: str, reply: int | None = None) -> int:
        """Document tokens the prompt holds beside the question and a ``reply``-token answer
        (default: max_tokens)."""
        overhead = self.backend.count_prompt_tokens(
            self.reader_request("", question).messages
        )
        return self.backend.context_window - overhead - (reply or self.max_tokens)

    def _answer(self, question: str, corpus: Corpus, *,
                generation: GenerationSettings | None = None) -> Answer:
        trace = Trace()
        reply = self.reply_tokens(generation)
        budget = self.context_budget(question, reply)
        # Per document: the (start, end) character ranges kept.
        kept: list[tuple[str, int, int]] = []
        with trace.step("assemble") as st:
            sep_tokens = self.backend.count_tokens(SEPARATOR)
            total = self.corpus_tokens(corpus)
            st.detail.update(corpus_tokens=total, budget=budget)
            if total <= budget:
                kept = [(d.id, 0, len(d.text)) for d in corpus.documents]
            elif self.truncation is None:
                window = self.backend.context_window
                raise ContextOverflowError(total + window - budget, window,
                                           what=f"the corpus ({total} tokens) with the prompt "
                                                f"and a {reply}-token answer")
            else:
                kept = self._truncate(corpus, budget, sep_tokens)
                st.detail.update(truncation=self.truncation, kept_tokens=budget,
                                 dropped_tokens=total - budget)
            context = SEPARATOR.join(corpus.document(d).text[a:b] for d, a, b in kept)
            # Token counts of a join can differ by a few from the sum of parts: trim to be safe.
            context = self._fit_exactly(context, question, st, reply)
        chunks = [c for c in corpus.chunks
                  if any(c.doc_id == d and c.start < b and c.end > a for d, a, b in kept)]
        ans = self.read(context, question, chunks, trace, generation=generation)
        ans.evidence = self._evidence(corpus, kept, chunks)
        return ans

    def _truncate(self, corpus: Corpus, budget: int, sep_tokens: int) -> list[tuple[str, int, int]]:
        # Work on a flat list of (doc, token offsets); keep tokens from the head, the tail or both.
        docs = [(d, corpus.token_offsets(d)) for d in corpus.documents]
        budget -= sep_tokens * (len(docs) - 1)
        if self.truncation == "head":
            return _take(docs, budget)
        if self.truncation == "tail":
            return [(d, a, b) for d, a, b in reversed(_take(_reverse(docs), budget, tail=True))]
        head = _take(docs, budget // 2)
        tail = [(d, a, b) for d, a, b in reversed(_take(_reverse(docs), budget - budget // 2,
                                                          tail=True))]
        merged: dict[str, list[tuple[int, int]]] = {}
        for d, a, b in head + tail:
            merged.setdefault(d, []).append((a, b))
        out = []
        for d, *_ in [(doc.id,) for doc, _ in docs]:
            for a, b in sorted(merged.get(d, [])):
                if out and out[-1][0] == d and a <= out[-1][2]:
                    out[-1] = (d, out[-1][1], max(b, out[-1][2]))
                else:
                    out.append((d, a, b))
        return out

    def _fit_exactly(self, context: str, question: str, st, reply: int) -> str:
        over = (self.backend.count_prompt_tokens(self.reader_request(context, question).messages)
                + reply - self.backend.context_window)
        if over > 0:
            if self.truncation is None:
                raise ContextOverflowError(over + self.backend.context_window,
                                           self.backend.context_window,
                                           what="the corpus with the prompt")
            offs = self.backend.tokenizer.offsets(context)
            cut = len(offs) - over - 8
            if cut < 1:  # nothing of the corpus would be left (check_room makes this rare)
                raise ContextOverflowError(over + self.backend.context_window,
                                           self.backend.context_window,
                                           what="the prompt and question alone")
            context = context[: offs[cut][0]] if self.truncation != "tail" else context[offs[over + 8][0]:]
            st.detail["trimmed_tokens"] = over + 8
        return context

    @staticmethod
    def _evidence(corpus, kept, chunks) -> list[Evidence]:
        ev = []
        for c in chunks:
            for d, a, b in kept:
                if c.doc_id == d and c.start < b and c.end > a:
                    ev.append(Evidence(chunk_id=c.id, doc_id=d, start=max(a, c.start),
                                       end=min(b, c.end)))
        return ev


def _reverse(docs):
    return [(d, offs) for d, offs in reversed(docs)]


def _take(docs, budget: int, tail: bool = False) -> list[tuple[str, int, int]]:
    """Character ranges covering ``budget`` tokens from the start (or the end) of ``docs``."""
    out = []
    for d, offs in docs:
        if budget <= 0:
            break
        n = min(budget, len(offs))
        if n == len(offs):
            out.append((d.id, 0, len(d.text)))
        elif tail:
            out.append((d.id, offs[len(offs) - n][0], len(d.text)))
        else:
            out.append((d.id, 0, offs[n][0]))
        budget -= n
    return out
