"""Strategy 2: read only what a retriever finds, in the order the reader reads best.

Retrieve until ``top_k_tokens`` (counted with the backend's tokenizer) are filled, drop
near-duplicate chunks, reorder (``document_order`` by default), read once. The Answer cites the
exact character spans the reader was given, and its Cost is what the backend measured for that
prompt. ``signals`` gives routers the score shape of that selection without a model call
(``retrieve_with_shape``: the selection, its score shape and bookkeeping).
"""

from __future__ import annotations

import math
import re
import time
from contextlib import nullcontext
from typing import Any

from orchestra.backends.base import GenerationSettings
from orchestra.corpus import Corpus
from orchestra.declines import corpus_titles
from orchestra.errors import ConfigError, InputError
from orchestra.prompts import UNANSWERABLE
from orchestra.strategies.base import RAG as RAG_KIND, Strategy, check_question
from orchestra.types import Answer, Evidence, Trace
from orchestra.retrievers.base import Retriever, ScoredChunk, make_retriever, score_shape
from orchestra.retrievers.compress import compress
from orchestra.retrievers.reorder import check_policy, reorder

# Measured with benchmarks/rag_sweep.py (dense, 128-token chunks, document order): evidence
# recall was 1.00 at 768 tokens on 30 SQuAD questions in 16k-token haystacks and 4 needles
# (0.97 at 384); the embedded reader's contains was the same at 384, 768 and 1152 (QA1 0.33 on
# 6 questions, NIAH 1.00 on 2, 8k tokens). 768 keeps full recall at ~750 prompt tokens, below
# the 1,000-1,300 of LangChain's top-6, and leaves the small reader little to get lost in.
DEFAULT_TOP_K_TOKENS = 768
NOT_FOUND = "No passage in the documents matches the question."
_WORD = re.compile(r"\w+")


def _shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


class RAG(Strategy):
    name = "rag"
    kind = RAG_KIND
    can_decline = True

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Value checks shared with `orchestra validate` (orchestra.checks)."""
        from orchestra.checks import positive_int
        from orchestra.errors import OptionError

        super().check_options(options)
        for name in ("top_k_tokens", "compress_tokens"):
            positive_int(options, name, "strategy 'rag'")
        if options.get("top_k") is not None:
            positive_int(options, "top_k", "strategy 'rag'")
        for name in ("compress", "dedup"):
            if not isinstance(options.get(name, False), bool):
                raise OptionError(name, f"strategy 'rag': {name} must be true or false, "
                                        f"got {options[name]!r}")
        d = options.get("dedup_threshold", 0.8)
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d <= 1:
            raise OptionError("dedup_threshold", f"strategy 'rag': dedup_threshold must be in "
                                                 f"(0, 1], got {d!r}")
        if "reorder" in options:
            try:
                check_policy(options["reorder"])
            except ConfigError as e:
                raise OptionError("reorder", f"strategy 'rag': {e}") from None

    def __init__(self, backend, retriever: Any = None, top_k_tokens: int = DEFAULT_TOP_K_TOKENS,
                 reorder: str = "document_order", dedup_threshold: float = 0.8,
                 top_k: int | None = None, compress: bool = False, compress_tokens: int = 384,
                 dedup: bool = True, *, max_tokens: int = 64, prompts: dict[str, str] | None = None,
                 reader_template: str = "orchestra", reader_system: str = "orchestra",
                 passage_format: str = "plain", repetition_penalty: float = 1.0,
                 no_repeat_ngram_size: int = 0, decline: str = "explicit"):
        """``top_k``: read at most this many chunks (None: as many as top_k_tokens holds).
        ``dedup``: drop a chunk sharing ``dedup_threshold`` of its word 3-grams with one kept
        (false: read every chunk found, as a plain LangChain retriever does).
        ``compress``: keep only the sentences of the selected chunks most related to the
        question, up to ``compress_tokens`` tokens; see retrievers/compress.py."""
        super().__init__(backend, max_tokens, prompts, reader_template=reader_template,
                         reader_system=reader_system, passage_format=passage_format,
                         repetition_penalty=repetition_penalty,
                         no_repeat_ngram_size=no_repeat_ngram_size, decline=decline)
        if retriever is None:
            retriever = "dense"
        if isinstance(retriever, (list, tuple)):
            from orchestra.retrievers.hybrid import HybridRetriever

            retriever = (make_retriever(retriever[0], backend) if len(retriever) == 1
                         else HybridRetriever(backend, retrievers=list(retriever)))
        self.retriever: Retriever = make_retriever(retriever, backend)
        chunk_tokens = getattr(self.retriever, "chunk_tokens", None)
        if chunk_tokens and top_k_tokens < chunk_tokens:
            raise ConfigError(
                f"strategy 'rag': top_k_tokens={top_k_tokens} is smaller than one chunk of the "
                f"{self.retriever.name} retriever ({chunk_tokens} tokens); raise top_k_tokens or "
                "give the retriever a smaller chunk_tokens")
        self.top_k_tokens = top_k_tokens
        self.reorder = check_policy(reorder)
        self.dedup_threshold = float(dedup_threshold)
        self.dedup = dedup
        self.top_k = top_k
        self.compress = compress
        self.compress_tokens = compress_tokens

    # -- selection (no model call) -----------------------------------------------------------
    def budget(self, question: str, reply: int | None = None) -> int:
        """Context tokens: top_k_tokens, or less when the window cannot hold that much beside
        a ``reply``-token answer (default: max_tokens)."""
        overhead = self.backend.count_prompt_tokens(self.reader_request("", question).messages)
        room = self.backend.context_window - overhead - (reply or self.max_tokens)
        return max(0, min(self.top_k_tokens, room))

    def retrieve(self, question: str, corpus: Corpus) -> list[ScoredChunk]:
        """The chunks the reader would be given, in the order it would read them."""
        return self.retrieve_with_shape(check_question(question), corpus)[0]

    def signals(self, question: str, corpus: Corpus) -> dict[str, Any]:
        """The retrieval's score shape (``retrieval_*`` keys of retrievers.base.score_shape)."""
        shape = self.retrieve_with_shape(check_question(question), corpus)[1]
        return {k: v for k, v in shape.items() if k.startswith("retrieval_")}

    def retrieve_with_shape(self, question: str, corpus: Corpus, reply: int | None = None
                            ) -> tuple[list[ScoredChunk], dict[str, Any]]:
        """The chunks to read (within the budget beside a ``reply``-token answer) and the
        retrieval's score shape and bookkeeping."""
        if not isinstance(corpus, Corpus):
            raise InputError(f"RAG needs a Corpus, got {type(corpus).__name__}")
        budget = self.budget(question, reply)
        candidates, n_chunks, t_index, t_search = self._search(question, corpus, budget)
        selected, used, dup, too_big = self._select(candidates, budget)
        chosen = len(selected)
        if self.compress and selected:
            selected = compress(question, selected, min(self.compress_tokens, budget),
                                self.backend.count_tokens,
                                {d.id: d.text for d in corpus.documents}, self._encoder())
            used = sum(sc.chunk.n_tokens for sc in selected)
        shape = {
            **score_shape(candidates, getattr(self.retriever, "score_kind", "score")),
            "retriever": self.retriever.name,
            "candidates": len(candidates),
            "selected": chosen,
            "pieces": len(selected),
            "selected_tokens": used,
            "budget": budget,
            "duplicates_dropped": dup,
            "over_budget_skipped": too_big,
            "corpus_chunks": n_chunks,
            "reorder": self.reorder,
            "index_seconds": t_index,
            "search_seconds": t_search,
            "index_from_cache": bool(getattr(self.retriever, "loaded_from_cache", False)),
        }
        return reorder(selected, self.reorder), shape

    def _search(self, question: str, corpus: Corpus, budget: int
                ) -> tuple[list[ScoredChunk], int, float, float]:
        """Candidates for ``budget`` tokens, the corpus's chunk count and the index and search
        times."""
        per = getattr(self.retriever, "chunk_tokens", None) or 128
        # Index and search under the retriever's lock: a shared retriever indexing another
        # corpus in between would answer from the wrong documents.
        # A duck-typed retriever (an adapter) without exclusive() is used as it is.
        exclusive = getattr(self.retriever, "exclusive", None)
        with exclusive() if exclusive is not None else nullcontext():
            t0 = time.perf_counter()
            self.retriever.index(corpus)
            t_index = time.perf_counter() - t0
            n_chunks = len(self.retriever.chunks or []) or 1
            # Enough candidates to fill the budget even after duplicates and oversize chunks drop.
            depth = min(n_chunks, max(8, 2 * math.ceil(budget / per) + 4))
            t1 = time.perf_counter()
            candidates = self.retriever.retrieve(question, depth)
            t_search = time.perf_counter() - t1
        return candidates, n_chunks, t_index, t_search

    def _select(self, candidates: list[ScoredChunk], budget: int
                ) -> tuple[list[ScoredChunk], int, int, int]:
        """Candidates in rank order while they fit ``budget``, near-duplicates dropped: the
        selection, its tokens, and how many were dropped as duplicates and as too big."""
        selected, used, dup, too_big, smallest = [], 0, 0, 0, None
        sep = self.backend.count_tokens("\n\n")
        kept_shingles: list[set] = []
        for sc in candidates:
            sh = _shingles(sc.chunk.text)
            if self.dedup and any(_overlap(sh, o) >= self.dedup_threshold
                                  for o in kept_shingles):
                dup += 1
                continue
            cost = (self.backend.count_tokens(sc.chunk.text.strip()) + (sep if selected else 0)
                    + self._label_tokens(sc.chunk))
            smallest = cost if smallest is None else min(smallest, cost)
            if used + cost > budget:
                too_big += 1
                continue
            selected.append(sc)
            kept_shingles.append(sh)
            used += cost
            if budget - used < 8 or (self.top_k and len(selected) >= self.top_k):
                break
        if candidates and not selected:
            raise ConfigError(
                f"strategy 'rag': the context budget ({budget} tokens) is smaller than any "
                f"retrieved chunk (the smallest has {smallest} tokens); raise top_k_tokens or use "
                "smaller chunks")
        return selected, used, dup, too_big

    def _label_tokens(self, chunk) -> int:
        """Tokens passage_format adds before a passage ("Document 12:", "Title: ...")."""
        if self.passage_format == "plain":
            return 0
        label = self.format_context([chunk]).split("\n", 1)[0].replace("1:", "99:") + "\n"
        return self.backend.count_tokens(label)

    def _encoder(self):
        """The dense embedder of the retriever (or of a fused member), for compression."""
        for r in [self.retriever, *getattr(self.retriever, "retrievers", [])]:
            if callable(getattr(r, "encode", None)):
                return r.encode
        return None  # lexical scoring

    # -- answering ---------------------------------------------------------------------------
    def _answer(self, question: str, corpus: Corpus, may_decline: bool = False, *,
                generation: GenerationSettings | None = None) -> Answer:
        trace = Trace()
        with trace.step("retrieve") as st:
            chunks, shape = self.retrieve_with_shape(question, corpus,
                                                     self.reply_tokens(generation))
            st.detail.update(shape)
            # The passages found, with scores (observers show them: LangChain retriever runs).
            st.detail["hits"] = [{"chunk_id": c.chunk.id, "doc_id": c.chunk.doc_id,
                                  "start": c.chunk.start, "end": c.chunk.end, "score": c.score}
                                 for c in chunks]
        if not chunks:
            # Nothing matched: reading an empty context would only invite an invented answer.
            return Answer(question=question, text=UNANSWERABLE if may_decline else NOT_FOUND,
                          strategy_type=self.name, trace=trace, unanswerable=True)
        context = self.format_context([c.chunk for c in chunks])
        ans = self.read(context, question, [c.chunk for c in chunks], trace,
                        may_decline=may_decline, titles=corpus_titles(corpus),
                        generation=generation)
        ans.evidence = [_evidence(c) for c in chunks]
        return ans


    def second_read(self, question: str, corpus: Corpus) -> Answer:
        """A second, cheap read for routers to compare with the first: the best-scoring
        passage alone (one chunk instead of ``top_k_tokens``), with the ordinary reader
        prompt. An answer both reads give is more likely right (orchestra/signals.py)."""
        question = check_question(question)
        chunks, _ = self.retrieve_with_shape(question, corpus)
        trace = Trace()
        if not chunks:
            return Answer(question=question, text=NOT_FOUND, strategy_type=self.name, trace=trace)
        best = max(chunks, key=lambda c: c.score)
        ans = self.read(self.format_context([best.chunk]), question, [best.chunk], trace,
                        step="second_read")
        ans.evidence = [_evidence(best)]
        return ans


def _overlap(a: set, b: set) -> float:
    """Share of the smaller shingle set found in the other (1.0: one contains the other)."""
    if not a or not b:
        return 0.0
    return len(a & b) / min(len(a), len(b))


def _evidence(sc: ScoredChunk) -> Evidence:
    """The exact span given to the reader: format_passages strips each chunk's whitespace."""
    c = sc.chunk
    lead = len(c.text) - len(c.text.lstrip())
    trail = len(c.text) - len(c.text.rstrip())
    return Evidence(chunk_id=c.id, doc_id=c.doc_id, start=c.start + lead,
                    end=c.end - trail, score=sc.score)
