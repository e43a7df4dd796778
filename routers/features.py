"""Cheap signals a router decides from (a Pre-Route "query features").

``compute_features(question, corpus, backend, strategies=None)`` returns a flat JSON-able dict;
the evaluation runner stores it with every results row, and the learned router trains on it, so
the keys below are a contract (add keys, never rename them):

- ``corpus_tokens``, ``n_documents``, ``max_doc_tokens``: sizes by the backend's tokenizer.
- ``context_window``, ``effective_window`` (= ``effective_fraction`` x window),
  ``window_ratio`` and ``effective_ratio`` (corpus tokens over each), ``fits_window`` (the
  corpus plus the reader prompt fits the window), ``fits_effective``.
- ``question_tokens``, ``question_words``.
- ``question_kind`` (``lookup``, ``aggregation`` or ``multi_hop``), ``question_kind_rule`` (the
  rule that fired, for reasons in words), and the one-hot ``kind_lookup`` / ``kind_aggregation``
  / ``kind_multi_hop``.
- When a RAG strategy is among ``strategies``: its ``signals(question, corpus)``, the score
  shape of its retrieval candidates (orchestra.retrievers.base.score_shape):
  ``retrieval_top`` (best score), ``retrieval_margin`` (best minus second),
  ``retrieval_rel_margin`` (margin over |best|), ``retrieval_lead`` ((best minus the candidates'
  mean) over |best|), ``retrieval_hits`` and ``retrieval_score_kind`` (cosine, bm25, rrf, ...).
  Raw scores depend on the retriever, so rules use the scale-free ``retrieval_rel_margin``.

Default: the effective window is 1/8 of the nominal one (``DEFAULT_EFFECTIVE_FRACTION``). The
design notes measured SmolLM2 (window 8192): full context at 12k tokens is truncated and poor,
and already at 2k it loses to RAG on QA (0.19 vs 0.44 "contains"), while RAG hands the reader
about 1000-1500 tokens. So full context pays only while the corpus is about as small as what RAG
would give the reader anyway: 8192 / 8 = 1024 tokens. Larger models tolerate more; raise the
fraction for them.

Question kinds come from a small rule set (checked in this order, first match wins):
1. aggregation/summary: asks for the whole (``summar*``, ``overview``, ``main points/ideas/
   themes``, ``key points``, ``overall``, ``gist``, ``what is the document/text/essay ... about``),
   counts or lists over it (``how many times``, ``how often``, ``list all``, ``every time/
   mention``, ``each of the``, ``throughout``, ``most common``), or spans documents (``across
   the``). Bare ``all`` or ``how many`` are not enough: "How many people live in X?" is a lookup.
2. multi-value: asks for every value of one thing (``what/which are all (of) the ...``, the
   phrasing of RULER's multi-value needles): several facts spread through the text. RULER
   files it under retrieval, not aggregation (its aggregation tasks count or rank words), and
   so does this rule set: a kind of its own (``multi_value``), routed as a lookup unless a
   router is told otherwise (Self-Route's ``kinds``, the learned router's ``kind_*``).
3. multi-hop: joins facts: ``both``, ``compare``, ``difference/relationship between``, ``in
   common``, ``the same``, ``whose``, a choice between two named things (``..., X or Y?`` with
   ``which``/``who`` or a comparative such as ``first``, ``older``, ``more``), a chain of two
   or more ``of the`` relations ("the director of the film that ..."), or a relation asked of
   a named thing's relation ("the magic number for Lima's partner city", "the name of
   Bohemond's nephew": the possessive names a thing the text must be searched for first), or
   a thing named only by a clause about it, HotpotQA's bridge ("the woman who portrayed
   Corliss Archer", "a hotel company that has a head office"; ``that``/``which`` only before
   a verb of making, owning or acting). A possessive alone ("Lima's population") is one fact:
   a lookup. On SQuAD 2.0 dev (single-hop questions) the possessive rule fires on 109 of the
   11,873 (0.9%), the clause rule on 25 (0.2%), the multi-value rule on none.
4. lookup: everything else (one fact in one place).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from orchestra.backends.base import Backend
from orchestra.corpus import Corpus
from orchestra.strategies.base import Strategy

from orchestra.routers import kinds

DEFAULT_EFFECTIVE_FRACTION = 0.125
# Tokens kept free for the reader's instructions, the question and the answer when checking
# whether a corpus fits the window without a full-context strategy to ask.
PROMPT_RESERVE = 256

QUESTION_KINDS = ("lookup", "aggregation", "multi_hop", "multi_value")

# Signals of the first (RAG) read (orchestra/signals.py): known only after reading, so a
# learned router that uses one reads RAG first (routers/learned.py).
READ_FEATURES = ("logprob_mean", "logprob_min", "logprob_head", "answer_in_passages",
                 "answer_support", "declined", "reply_tokens", "second_read_agreement")
# The numeric features the learned router may train on (categorical ones are one-hot above).
NUMERIC_FEATURES = (
    "corpus_tokens", "n_documents", "max_doc_tokens", "window_ratio", "effective_ratio",
    "fits_window", "fits_effective", "question_tokens", "question_words",
    "kind_lookup", "kind_aggregation", "kind_multi_hop", "kind_multi_value",
    "retrieval_top", "retrieval_margin", "retrieval_rel_margin", "retrieval_lead",
) + READ_FEATURES

_AGGREGATION = [
    ("summary", r"\bsummar(y|ies|ize|ise|izing|ising)\b|\boverview\b|\bgist\b|\brecap\b"),
    ("main points", r"\b(main|key|central|major)\s+(points?|ideas?|themes?|topics?|arguments?|"
                    r"findings|takeaways?|messages?|lessons?)\b"),
    ("overall", r"\boverall\b|\bin general\b|\bas a whole\b"),
    ("about the whole", r"\bwhat\s+(is|are)\s+(this|the|these)\s+(\w+\s+)?(documents?|texts?|"
                        r"essays?|articles?|papers?|stor(y|ies)|books?|reports?|transcripts?|"
                        r"meetings?|passages?|chapters?)\s+(mainly\s+|mostly\s+)?about\b"),
    ("counting", r"\bhow\s+(many\s+times|often)\b|\bnumber\s+of\s+times\b|\bcount\b"),
    ("listing", r"\blist\s+(all|every|each|the)\b|\b(name|list|give)\s+all\b|"
                r"\bevery\s+(time|one|mention|instance|occurrence)\b|\beach\s+of\s+the\b|"
                r"\bthroughout\b"),
    ("frequency", r"\bmost\s+(common|frequent|frequently|often)\b|\brecurring\b"),
    ("across documents", r"\bacross\s+(the|all|these)\b"),
]
_MULTI_HOP = [
    ("both", r"\bboth\b"),
    ("comparison", r"\bcompar(e|ed|ing|ison)\b|\b(difference|relationship|connection)\s+between\b|"
                   r"\bin\s+common\b|\bthe\s+same\b"),
    ("whose", r"\bwhose\b"),
]
_COMPARATIVE = (r"\b(which|who|first|earlier|later|older|younger|larger|bigger|smaller|longer|"
                r"shorter|more|less|fewer|higher|lower|taller|closer|further|farther)\b")
_CHOICE = re.compile(r",\s*[^,?]+\s+or\s+[^,?]+\?\s*$|\b\w+\s+or\s+\w+\?\s*$", re.I)
_OF_THE = re.compile(r"\bof\s+(the|a|an|his|her|their|its)\b", re.I)
_MULTI_VALUE = re.compile(r"\b(what|which|who)\s+(are|were)\s+all\s+(of\s+)?the\b", re.I)
# "of/for" + a named thing (up to four capitalised words) + "'s" + a lowercase noun. Case
# matters here (no re.I): the capital marks a name, the lowercase word a relation.
_RELATION_OF_RELATION = re.compile(
    r"\b(of|for)\s+(the\s+)?(?:[A-Z][\w.\-]*\s+){0,3}[A-Z][\w.\-]*['’]s\s+[a-z]\w*")
# A noun phrase then a relative clause: the thing is found by what the clause says of it.
# ``who`` may be followed by any word (re.I: a name too); ``that``/``which`` only by a verb of
# making, owning or acting, since "the region that is ..." in a single-hop question is a
# description, not a hop.
_DESCRIBED = re.compile(
    r"\b(the|a|an)\s+(\w+\s+){1,3}(?:(who|whom)\s+[a-z]\w*|(that|which)\s+(\w+\s+)?"
    r"(played|portrayed|wrote|directed|founded|created|had|has|won|starred|sang|owns|owned|"
    r"married|produced|hosted|released|published|designed|built|invented|discovered)\b)", re.I)


def question_kind(question: str) -> tuple[str, str]:
    """(kind, rule that fired) by the rule set in the module docstring."""
    q = question.strip()
    for rule, pattern in _AGGREGATION:
        if re.search(pattern, q, re.I):
            return "aggregation", rule
    if _MULTI_VALUE.search(q):
        return "multi_value", "all the values"
    for rule, pattern in _MULTI_HOP:
        if re.search(pattern, q, re.I):
            return "multi_hop", rule
    if _CHOICE.search(q) and re.search(_COMPARATIVE, q, re.I):
        return "multi_hop", "choice between two"
    if len(_OF_THE.findall(q)) >= 2:
        return "multi_hop", "chained relations"
    if _RELATION_OF_RELATION.search(q):
        return "multi_hop", "relation of a relation"
    if _DESCRIBED.search(q):
        return "multi_hop", "a thing described by a clause"
    return "lookup", "default"


def with_todays_kind(feats: Mapping[str, Any], question: str) -> dict[str, Any]:
    """``feats`` with the question-kind fields recomputed by today's rules: results rows keep
    the kind of the code that wrote them, and a router trained or replayed on old rows should
    see the kinds it will meet."""
    kind, rule = question_kind(question)
    return {**feats, "question_kind": kind, "question_kind_rule": rule,
            **{f"kind_{k}": int(k == kind) for k in QUESTION_KINDS}}


def retrieval_shape(strategy: Strategy, question: str, corpus: Corpus) -> dict[str, Any]:
    """The ``retrieval_*`` signals of a RAG strategy for this question ({} without scores)."""
    return {k: v for k, v in strategy.signals(question, corpus).items()
            if k.startswith("retrieval_")}


def fits_window(corpus: Corpus, question: str, backend: Backend,
                strategies: Mapping[str, Any] | None = None) -> bool:
    """Whether full context could read the whole corpus (asks a full-context strategy if any)."""
    name = kinds.first_of(strategies or {}, kinds.FULL)
    if name is not None:
        fit = strategies[name].fits(corpus, question)
        # Truncation lets full context take any corpus; this signal is whether all of it fits.
        if fit.needed is not None and fit.available is not None:
            return fit.needed <= fit.available
        return fit.ok
    return corpus.n_tokens + PROMPT_RESERVE <= backend.context_window


def compute_features(question: str, corpus: Corpus, backend: Backend,
                     strategies: Mapping[str, Any] | None = None,
                     effective_fraction: float = DEFAULT_EFFECTIVE_FRACTION,
                     retrieval: bool = True) -> dict[str, Any]:
    """The query features (keys in the module docstring). ``strategies`` lets a RAG strategy
    add the retrieval score shape; without it those keys are absent."""
    window = backend.context_window
    n_tokens = corpus.n_tokens
    effective = max(1, int(window * effective_fraction))
    kind, rule = question_kind(question)
    feats: dict[str, Any] = {
        "corpus_tokens": n_tokens,
        "n_documents": len(corpus.documents),
        "max_doc_tokens": max(corpus.doc_tokens(d) for d in corpus.documents),
        "context_window": window,
        "effective_window": effective,
        "window_ratio": n_tokens / window,
        "effective_ratio": n_tokens / effective,
        "fits_window": fits_window(corpus, question, backend, strategies),
        "fits_effective": n_tokens <= effective,
        "question_tokens": backend.count_tokens(question),
        "question_words": len(question.split()),
        "question_kind": kind,
        "question_kind_rule": rule,
        **{f"kind_{k}": int(k == kind) for k in QUESTION_KINDS},
    }
    rag = kinds.first_of(strategies or {}, kinds.RAG)
    if retrieval and rag is not None:
        feats.update(retrieval_shape(strategies[rag], question, corpus))
    return feats
