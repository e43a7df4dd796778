"""The LLM router (Pre-Route style): the model reads metadata and picks a way of reading.

The prompt shows what a router can see cheaply: the number of documents and their sizes against
the window, the first lines of each document, the question, and the usable options, each with one
line on when it suits. Options the corpus rules out (full context over the window, strategies the
backend cannot run) are never offered, so even a weak model cannot pick an impossible route.
Options are listed with the rules router's choice first (``order_by_rules``): a small model
tends to answer with the first option, so its default is then the measured choice; the reason
says whether the model agreed with the rules. The reply is parsed for an option's letter or
name; when it names none, the ``fallback`` strategy is used or, when none is set, the rules
router's choice; the reason says which. The model call is the Route's cost.
"""

from __future__ import annotations

import re
from typing import Any

from orchestra.backends.base import GenerationRequest
from orchestra.errors import ConfigError
from orchestra.types import Cost, Route

from orchestra.routers import features as F
from orchestra.routers import kinds
from orchestra.routers.base import Router, feasible
from orchestra.routers.rules import RulesRouter

HINTS = {
    kinds.FULL: "read the whole text at once; best when the text is short",
    kinds.RAG: "search for the few passages that matter; best to find one fact in a long text",
    kinds.PAGES: "let attention pick pages of the text; for one fact in a text that fits memory",
    kinds.AGENTS: "read every part in turn and take notes; best for summaries or counting over "
                  "a long text",
}
SYSTEM = "You choose how to read documents before answering a question. Be brief."
PROMPT = (
    "{docs}\n\n"
    "The model reads at most {window} tokens at once and works best with under {effective}.\n"
    "Question: {question}\n\n"
    "How should the documents be read? Options:\n{options}\n"
    "Reply with the letter of one option."
)
FIRST_LINES_CHARS = 160
MAX_DOCS_SHOWN = 5


class LLMRouter(Router):
    name = "llm"

    def __init__(self, strategies, fallback: str | None = None, max_tokens: int = 8,
                 effective_fraction: float = F.DEFAULT_EFFECTIVE_FRACTION,
                 order_by_rules: bool = True):
        super().__init__(strategies)
        if fallback is not None and fallback not in self.strategies:
            raise ConfigError(f"router 'llm': fallback must name a strategy "
                              f"({', '.join(self.strategies)}), not {fallback!r}; leave it out "
                              "to let the rules router decide")
        self.fallback = fallback
        self.max_tokens = max_tokens
        self.effective_fraction = effective_fraction
        self.order_by_rules = order_by_rules

    def prompt(self, question, corpus, backend, options: list[str]) -> str:
        shown = []
        for d in corpus.documents[:MAX_DOCS_SHOWN]:
            head = " ".join(d.text.split())[:FIRST_LINES_CHARS]
            shown.append(f"- {d.id} ({corpus.doc_tokens(d)} tokens): {head}...")
        if len(corpus.documents) > MAX_DOCS_SHOWN:
            shown.append(f"- and {len(corpus.documents) - MAX_DOCS_SHOWN} more documents")
        docs = (f"{len(corpus.documents)} document(s), {corpus.n_tokens} tokens in all:\n"
                + "\n".join(shown))
        lines = [f"{chr(65 + i)}) {name}: {HINTS[self.strategies[name].kind]}"
                 for i, name in enumerate(options)]
        return PROMPT.format(docs=docs, window=backend.context_window,
                             effective=int(backend.context_window * self.effective_fraction),
                             question=question, options="\n".join(lines))

    def _route(self, question, corpus, backend, generation=None) -> Route:
        strategies = self.available(backend)
        feats = {"corpus_tokens": corpus.n_tokens,
                 "fits_window": F.fits_window(corpus, question, backend, strategies)}
        options = [n for n, s in strategies.items()
                   if s.kind in HINTS
                   and feasible(n, s, corpus, question, backend, generation)[0]]
        rules = None
        if self.order_by_rules or self.fallback is None:
            rules = RulesRouter(self.strategies, effective_fraction=self.effective_fraction
                                ).route(question, corpus, backend, generation=generation)
        if self.order_by_rules and rules.strategy in options:
            # Small models favour the first option; put the measured choice there.
            options.remove(rules.strategy)
            options.insert(0, rules.strategy)
        signals: dict[str, Any] = {**feats, "options": options}
        if rules is not None:
            signals["rules_choice"] = rules.strategy
        cost = Cost()
        if len(options) == 1:
            return Route(strategy=options[0], signals=signals,
                         reason=f"only {options[0]} can read this corpus; no model call")
        reply = ""
        if options:
            req = GenerationRequest.user(self.prompt(question, corpus, backend, options),
                                         system=SYSTEM, max_tokens=self.max_tokens)
            res = backend.generate_one(req)
            cost.add_generation(res)
            reply = res.text
            signals["reply"] = reply
            choice = parse_choice(reply, options)
            if choice is not None:
                agree = ""
                if rules is not None:
                    agree = (" (the rules agree)" if choice == rules.strategy
                             else f" (the rules would pick {rules.strategy})")
                return Route(strategy=choice, signals=signals, cost=cost,
                             reason=f"the model chose {choice} from {', '.join(options)} "
                                    f"(reply: {reply.strip()[:40]!r}){agree}")
        why = (f"the model's reply {reply.strip()[:40]!r} names no option"
               if options else "no strategy of a known kind can read this corpus")
        if self.fallback is None:
            name, reason = rules.strategy, f"{why}; rules: {rules.reason}"
        else:
            name, reason = self.fallback, f"{why}; fallback {self.fallback}"
        return Route(strategy=name, signals=signals, cost=cost, reason=reason)


def parse_choice(reply: str, options: list[str]) -> str | None:
    """The option a reply names: a letter ("B", "B)", "Option B") or a name/kind; else None."""
    text = reply.strip()
    m = re.match(r"^\W*(?:option\s+)?([A-Za-z])\s*(?:[).:\],]|$)", text, re.I)
    if m:
        i = ord(m.group(1).upper()) - 65
        if 0 <= i < len(options):
            return options[i]
    low = text.lower()
    hits = []
    for name in options:
        for alias in {name.lower(), name.lower().replace("_", " ")}:
            j = low.find(alias)
            if j != -1:
                hits.append((j, name))
    m = re.search(r"\boption\s+([A-Za-z])\b|\b([A-Z])\)", text)
    if m:
        i = ord((m.group(1) or m.group(2)).upper()) - 65
        if 0 <= i < len(options):
            hits.append((m.start(), options[i]))
    return min(hits)[1] if hits else None
