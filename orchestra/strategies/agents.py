"""Strategies 4a and 4b: read everything in window-sized pieces with worker agents, then answer.

- ``chain_of_agents`` (Zhang et al., 2024): workers in document order; each reads one chunk, the
  question and the notes so far, and adds what its chunk says; notes over ``note_tokens`` are
  compressed by a reduce call (or, if that fails, the oldest are dropped). The manager answers
  from the final notes.
- ``map_reduce``: all workers read their chunk independently, as ONE ``backend.generate`` batch
  (vLLM or batched transformers run them together); the notes are reduced in a tree until they
  fit the manager's window (agents/manager.py), then the manager answers.

Both keep worker notes extractive and grounded (agents/notes.py): a worker copies sentences, a
sentence its chunk does not support is dropped (or, with ``align_notes``, replaced by the chunk's
sentence it paraphrased), and a worker that finds nothing replies
``NO RELEVANT INFORMATION`` and is dropped before the manager reads. Evidence is the chunks whose
notes survived; Cost counts every backend call. Agents get the backend; they load no model.

Chunk size: a worker prompt (template + question + carried notes + chunk) plus the worker's
output must fit the window; a ``chunk_tokens`` that does not is refused with the sizes named.
The default (1000 tokens) is what the embedded 135M model reads well (see benchmarks/agents.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from tqdm import tqdm  # plain tqdm: tqdm.auto warns in a kernel without ipywidgets

from orchestra.agents.ledger import Ledger
from orchestra.agents.manager import Manager
from orchestra.agents.notes import Note, parse_reply, render
from orchestra.agents.prompts import agent_prompts, split_prompts
from orchestra.agents.worker import Worker
from orchestra.backends.base import GenerationSettings
from orchestra.corpus import Chunk, Corpus, check_chunking
from orchestra.errors import ConfigError, InputError, OptionError
from orchestra.prompts import UNANSWERABLE, format_passages
from orchestra.strategies.base import AGENTS, Strategy
from orchestra.types import Answer, Evidence

# Chat templates tokenise a chunk inside a prompt a few tokens differently from alone.
MARGIN = 16
# Packed chunks are joined by a blank line (format_passages); a join may also merge or split a
# token at each edge.
PACK_SEPARATOR_TOKENS = 3


@dataclass
class Piece:
    """One worker's reading: one chunk, or several short chunks (documents) packed together."""

    chunks: list[Chunk]

    @property
    def text(self) -> str:
        return format_passages(self.chunks)

    def label(self) -> str:
        a, b = self.chunks[0].order + 1, self.chunks[-1].order + 1
        return f"chunk {a}" if a == b else f"chunks {a}-{b}"


class AgentStrategy(Strategy):
    kind = AGENTS
    carries_notes = False  # whether worker prompts include earlier notes

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Value checks shared with `orchestra validate` (orchestra.checks); the budget against
        the window needs the backend and is checked when the strategy is built."""
        from orchestra.checks import as_option_error, positive_int

        where = f"strategy {cls.name!r}"
        if "prompts" in options:
            try:
                reader = split_prompts(options["prompts"])[1]
            except ConfigError as e:
                raise OptionError("prompts", f"{where}: {e}") from None
            super().check_options({**options, "prompts": reader})
        else:
            super().check_options(options)
        given = {k: options[k] for k in ("chunk_tokens", "overlap") if k in options}
        if given:
            try:
                check_chunking(options.get("chunk_tokens", 1000), options.get("overlap", 32),
                               where, ConfigError)
            except ConfigError as e:
                raise as_option_error(e, given) from None
        if not isinstance(options.get("align_notes", False), bool):
            raise OptionError("align_notes", f"{where}: align_notes must be true or false, "
                                             f"not {options['align_notes']!r}")
        positive_int(options, "note_tokens", where)
        positive_int(options, "worker_max_tokens", where)
        m = options.get("min_overlap", 0.5)
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float))
                              or not 0 < m <= 1):
            raise OptionError("min_overlap", f"{where}: min_overlap must be in (0, 1] or null "
                                             f"(no grounding), not {m!r}")
        w, n = options.get("worker_max_tokens", 48), options.get("note_tokens", 256)
        if isinstance(w, int) and isinstance(n, int) and w > n:
            raise OptionError("worker_max_tokens" if "worker_max_tokens" in options
                              else "note_tokens",
                              f"{where}: worker_max_tokens ({w}) must not exceed note_tokens "
                              f"({n}): a note is at most one reply")

    def __init__(self, backend, chunk_tokens: int = 1000, note_tokens: int = 256,
                 prompts: dict[str, str] | None = None, *, worker_max_tokens: int = 48,
                 overlap: int = 32, min_overlap: float | None = 0.5,
                 align_notes: bool = False, progress: bool | None = None,
                 max_tokens: int = 64, reader_template: str = "orchestra",
                 reader_system: str = "orchestra", passage_format: str = "plain",
                 repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
                 decline: str = "explicit"):
        """``align_notes``: a worker sentence its chunk does not support becomes the chunk's
        sentence sharing the most content terms with it (agents/notes.py, ``Aligner``) instead
        of being dropped: notes stay verbatim text of the document when a small worker
        paraphrases instead of copying. The reader's options are Strategy's. Every value was
        checked by check_options when the object was made (orchestra.spec.Component)."""
        agent_over, reader_over = split_prompts(prompts)
        super().__init__(backend, max_tokens, reader_over, reader_template=reader_template,
                         reader_system=reader_system, passage_format=passage_format,
                         repetition_penalty=repetition_penalty,
                         no_repeat_ngram_size=no_repeat_ngram_size, decline=decline)
        self.align_notes = align_notes
        self.chunk_tokens, self.overlap = chunk_tokens, overlap
        self.note_tokens, self.worker_max_tokens = note_tokens, worker_max_tokens
        self.min_overlap = min_overlap
        self.progress = progress
        self.agent_prompts = agent_prompts(agent_over)
        self.worker = Worker(backend, self.agent_prompts, self.worker_max_tokens, min_overlap,
                             align=align_notes)
        self.manager = Manager(backend, self.agent_prompts, self.max_tokens, self.note_tokens,
                               min_overlap)
        self.check_budget("")  # a budget that cannot work is a configuration error, found early

    # -- sizing ------------------------------------------------------------------------------
    def max_chunk_tokens(self, question: str) -> int:
        """The largest chunk a worker prompt can hold with this question."""
        notes = self.note_tokens if self.carries_notes else 0
        return (self.backend.context_window - self.worker.overhead(question, self.carries_notes)
                - notes - self.worker_max_tokens - MARGIN)

    def check_budget(self, question: str, reply: int | None = None) -> None:
        """Refuse chunk, note and answer sizes the window cannot hold (``reply``: the answer's
        budget, default max_tokens)."""
        reply = reply or self.max_tokens
        window = self.backend.context_window
        overhead = self.worker.overhead(question, self.carries_notes)
        notes = self.note_tokens if self.carries_notes else 0
        limit = self.max_chunk_tokens(question)
        sizes = (f"worker prompt {overhead} + notes {notes} + worker output "
                 f"{self.worker_max_tokens} + margin {MARGIN}")
        if limit < 1:
            raise ConfigError(f"the {window}-token window cannot hold a chunk: {sizes} "
                              f"already take {window - limit} tokens; lower note_tokens or "
                              "worker_max_tokens, or use a shorter prompt")
        if self.chunk_tokens > limit:
            raise ConfigError(f"chunk_tokens={self.chunk_tokens} does not fit the {window}-token "
                              f"window with {sizes}; use chunk_tokens <= {limit}")
        manager_min = self.backend.count_prompt_tokens(
            self.manager.request([Note("")], question).messages)
        need = manager_min + self.note_tokens + reply
        if need > window:
            # Name the larger of the two settings first: a huge max_tokens is the usual cause.
            lower = ("max_tokens (the answer's length) or note_tokens"
                     if reply >= self.note_tokens else "note_tokens or max_tokens")
            raise ConfigError(f"max_tokens {reply} + note_tokens {self.note_tokens} + "
                              f"the manager prompt ({manager_min} tokens) = {need} tokens exceed "
                              f"the model's {window}-token window; lower {lower}")

    def chunks(self, corpus: Corpus) -> list[Chunk]:
        chunks = [c for c in corpus.chunk(self.chunk_tokens, self.overlap) if c.text.strip()]
        if not chunks:
            raise InputError(f"the corpus ({len(corpus.documents)} document(s)) holds no text "
                             "for the agents to read")
        return chunks

    def pieces(self, corpus: Corpus) -> list[Piece]:
        """What each worker reads: consecutive chunks packed up to ``chunk_tokens``.

        A chunk never crosses a document, so a corpus of many short documents (RULER-QA's
        paragraphs, a folder of notes) would otherwise cost one worker call per document.
        """
        out: list[Piece] = []
        size = 0
        for c in self.chunks(corpus):
            if out and size + PACK_SEPARATOR_TOKENS + c.n_tokens <= self.chunk_tokens:
                out[-1].chunks.append(c)
                size += PACK_SEPARATOR_TOKENS + c.n_tokens
            else:
                out.append(Piece([c]))
                size = c.n_tokens
        return out

    def _bar(self, items, desc: str):
        # progress=None: tqdm's own choice (shown on a terminal, hidden in logs and CI).
        disable = None if self.progress is None else not self.progress
        return tqdm(items, desc=desc, unit="chunk", disable=disable, leave=False)

    def _keep(self, piece: Piece, res, notes: list[Note], ledger: Ledger) -> None:
        parsed = self.worker.parse(piece.chunks, piece.text, res, notes)
        if parsed.note is not None:
            notes.append(parsed.note)
        else:
            ledger.drop(piece.label(), parsed.reason, res.text)

    # -- the manager ----------------------------------------------------------------------
    def finish(self, question: str, notes: list[Note], ledger: Ledger,
               pieces: list[Piece], generation: GenerationSettings | None = None) -> Answer:
        """The manager's answer from the notes (reduced to fit beside the reply budget)."""
        reply = self.reply_tokens(generation)
        ledger.trace.add("notes", chunks=sum(len(p.chunks) for p in pieces),
                         workers=len(pieces), kept=len(notes),
                         dropped=ledger.drop_counts(), dropped_replies=list(ledger.dropped))
        depth, before = 0, len(ledger.dropped)
        if notes:
            notes, depth = self.manager.reduce(notes, question, ledger, reply)
        ledger.trace.add("reduce", depth=depth, notes=len(notes),
                         dropped_replies=ledger.dropped[before:])
        if not notes:
            # Nothing bears on the question: say so instead of letting the manager invent.
            return Answer(question=question, text=UNANSWERABLE, strategy=self.name,
                          cost=ledger.cost, trace=ledger.trace, unanswerable=True)
        cited = sorted({c for n in notes for c in n.chunks}, key=lambda c: c.order)
        evidence = [Evidence(chunk_id=c.id, doc_id=c.doc_id, start=c.start, end=c.end)
                    for c in cited]
        # The manager's answer is the final read: it streams inside Pipeline.stream.
        request = self.manager.request(notes, question, reply)
        if generation is not None:
            request = generation.apply(request)
        [res] = ledger.generate([request], "manager",
                                stream_as=(self, evidence), notes=len(notes))
        return Answer(question=question, text=res.text, strategy=self.name, evidence=evidence,
                      cost=ledger.cost, trace=ledger.trace)


class ChainOfAgents(AgentStrategy):
    name = "chain_of_agents"
    carries_notes = True

    def _answer(self, question: str, corpus: Corpus, *,
                generation: GenerationSettings | None = None) -> Answer:
        self.check_budget(question, self.reply_tokens(generation))
        pieces = self.pieces(corpus)
        ledger = Ledger(self.backend)
        notes: list[Note] = []
        for piece in self._bar(pieces, "chain of agents"):
            [res] = ledger.generate([self.worker.request(piece.text, question, notes)],
                                    "worker", chunk=piece.chunks[0].order + 1,
                                    chunks=len(piece.chunks))
            self._keep(piece, res, notes, ledger)
            if self.backend.count_tokens(render(notes)) > self.note_tokens:
                notes = self.compress(notes, question, ledger)
        return self.finish(question, notes, ledger, pieces, generation)

    def compress(self, notes: list[Note], question: str, ledger: Ledger) -> list[Note]:
        """Notes over the cap: one reduce call merges them; if it fails, drop the oldest."""
        before = len(notes)
        [res] = ledger.generate([self.manager.reduce_request(notes, question)], "compress",
                                notes_in=before)
        chunks = list(dict.fromkeys(c for n in notes for c in n.chunks))
        parsed = parse_reply(res.text, chunks, render(notes), self.min_overlap)
        if parsed.note is not None and (
                self.backend.count_tokens(render([parsed.note])) <= self.note_tokens):
            ledger.trace.add("compressed", notes_in=before, notes_out=1)
            return [parsed.note]
        ledger.drop("compress", parsed.reason or "too long", res.text)
        kept = list(notes)
        while len(kept) > 1 and self.backend.count_tokens(render(kept)) > self.note_tokens:
            kept.pop(0)
        if self.backend.count_tokens(render(kept)) > self.note_tokens:
            kept = [self.manager.cut(kept, ledger, "one note over note_tokens")]
        ledger.trace.add("capped", notes_in=before, notes_out=len(kept))
        return kept


class MapReduce(AgentStrategy):
    name = "map_reduce"

    def _answer(self, question: str, corpus: Corpus, *,
                generation: GenerationSettings | None = None) -> Answer:
        self.check_budget(question, self.reply_tokens(generation))
        pieces = self.pieces(corpus)
        ledger = Ledger(self.backend)
        requests = [self.worker.request(p.text, question) for p in pieces]
        results = ledger.generate(requests, "map", chunks=sum(len(p.chunks) for p in pieces))
        notes: list[Note] = []
        for piece, res in zip(pieces, results):
            self._keep(piece, res, notes, ledger)
        return self.finish(question, notes, ledger, pieces, generation)
