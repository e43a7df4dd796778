"""Strategy 3: retrieval inside attention over the pages of the document's KV cache.

The corpus is prefilled once into pages (orchestra/kv); each question and each generated token
then attends to the sink tokens, the local window and the best ``top_pages`` pages, all at
positions inside the trained window (InfLLM's scheme). Pages are scored against the current
queries in every layer and KV head; with ``selection="question"`` (the default) those scores,
taken while the question is read, are summed into one page set (each chosen page with the page
after it) that the whole answer reads; with ``selection="step"`` every step, layer and head
chooses its own (Quest). Prefilled documents are kept in memory (and on disk with
``persist``), so many questions over one document pay for one prefill. Cost reports pages read
over pages available (summed over steps, layers and KV heads) and prefill and decode time
separately.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import OrderedDict

from orchestra import observe
from orchestra.backends.base import KV_PAGES, GenerationSettings, Message
from orchestra.cache import cache_dir, stable_hash
from orchestra.corpus import Corpus
from orchestra.errors import ConfigError, InputError, OptionError
from orchestra.kv.config import PageConfig
from orchestra.strategies.base import PAGES, Fit, Strategy
from orchestra.types import Answer, Cost, Evidence, Trace

SEPARATOR = "\n\n"
_CONTEXT_MARK = "\x00orchestra-context\x00"
_QUESTION_MARK = "\x00orchestra-question\x00"
_DTYPES = ("float32", "float16", "bfloat16")
# Question-time selection ranks pages by the attention the question gives them minus what this
# question, about nothing in particular, gives them (orchestra/kv/engine.py: question_pages).
BASELINE_QUESTION = "What is the main topic of the provided text?"


class KVPages(Strategy):
    name = "kv_pages"
    kind = PAGES
    requires = frozenset({KV_PAGES})

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Value checks shared with `orchestra validate` (orchestra.checks): the page layout's
        own checks (those against the model's window need the backend), the baseline question
        and the KV dtype."""
        from dataclasses import fields

        from orchestra.checks import as_option_error

        super().check_options(options)
        layout = {f.name: options[f.name] for f in fields(PageConfig) if f.name in options}
        if layout:
            try:
                PageConfig(**layout).check(window=1 << 40)
            except (ConfigError, TypeError) as e:
                raise as_option_error(e, layout) from None
        q = options.get("baseline_question", BASELINE_QUESTION)
        if q is not None and not (isinstance(q, str) and q.strip()):
            raise OptionError("baseline_question", "kv_pages: baseline_question must be a "
                              "non-empty question, or null to rank pages by the question's "
                              "attention alone")
        if options.get("kv_dtype") not in (None, *_DTYPES):
            raise OptionError("kv_dtype", f"kv_pages: kv_dtype must be one of "
                                          f"{', '.join(_DTYPES)}, not {options['kv_dtype']!r}")

    def __init__(self, backend, page_size: int = 64, top_pages: int = 16, sink: int = 4,
                 local: int = 512, chunk: int = 512, scorer: str = "max", prompt_step: int = 8,
                 selection: str = "question", follow: int = 1, lead: int = 0,
                 baseline_question: str | None = BASELINE_QUESTION,
                 kv_dtype: str | None = None, persist: bool = False, max_handles: int = 2,
                 *, max_tokens: int = 64, prompts: dict[str, str] | None = None,
                 reader_template: str = "orchestra", reader_system: str = "orchestra",
                 passage_format: str = "plain", repetition_penalty: float = 1.0,
                 no_repeat_ngram_size: int = 0, decline: str = "explicit"):
        super().__init__(backend, max_tokens, prompts, reader_template=reader_template,
                         reader_system=reader_system, passage_format=passage_format,
                         repetition_penalty=repetition_penalty,
                         no_repeat_ngram_size=no_repeat_ngram_size, decline=decline)
        self.config = PageConfig(page_size=page_size, top_pages=top_pages, sink=sink,
                                 local=local, chunk=chunk, scorer=scorer,
                                 prompt_step=prompt_step, selection=selection,
                                 follow=follow, lead=lead)
        self.baseline_question = baseline_question
        self.kv_dtype = kv_dtype
        self.persist = bool(persist)
        self.max_handles = max(1, int(max_handles))
        # Everything that touches the model goes through the backend's PagedReader
        # (orchestra/kv/reader.py), so another implementation can plug in.
        self.reader = backend.paged_reader(self.config, kv_dtype)
        self.fingerprint = self.reader.fingerprint
        self._handles: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.RLock()
        self._split_prompt()  # fail at construction if the prompt cannot be split

    def fits(self, corpus: Corpus, question: str = "", *,
             generation: GenerationSettings | None = None) -> Fit:
        """A corpus of less than one page is refused (full context reads it better)."""
        return Fit(corpus.n_tokens >= self.config.page_size, corpus.n_tokens,
                   None)

    # -- prompt ----------------------------------------------------------------------------
    def _split_prompt(self) -> tuple[str, str]:
        """The chat prompt as (text before the document, text after it with {question})."""
        text = self.reader.chat_text([
            Message(role="system", content=self.prompts["reader_system"]),
            Message(role="user", content=self.prompts["reader"].format(
                context=_CONTEXT_MARK, question=_QUESTION_MARK)),
        ])
        head, _, rest = text.partition(_CONTEXT_MARK)
        if _QUESTION_MARK not in rest:
            raise ConfigError("kv_pages: the reader prompt must put {context} before {question}, "
                              "so a prefilled document serves any question")
        return head, rest

    # -- prefill once ------------------------------------------------------------------------
    def prefill(self, corpus: Corpus, progress: bool = False):
        """The prefilled handle for ``corpus`` (from memory, disk with ``persist``, or new)."""
        from orchestra.kv.handle import PrefilledDocument

        head, _ = self._split_prompt()
        texts = [d.text for d in corpus.documents]
        key = stable_hash(corpus.hash, head, self.config.page_size, self.config.sink,
                          self.config.local, self.config.top_pages, self.config.chunk,
                          self.config.scorer, self.kv_dtype)
        with self._lock:
            if key in self._handles:
                self._handles.move_to_end(key)
                return self._handles[key], False
            path = cache_dir("kv_pages") / f"{self.fingerprint}-{key}.pt" if self.persist else None
            if path is not None and path.is_file():
                try:
                    handle = PrefilledDocument.load(
                        path, self.fingerprint, self.config,
                        dims=self.reader.dims)
                except InputError as e:  # damaged or foreign: prefill again, over it
                    from orchestra.cache import CacheWarning

                    warnings.warn(f"{e}; prefilling the document again (the file is replaced)",
                                  CacheWarning, stacklevel=2)
                else:
                    self._remember(key, handle)
                    return handle, False
            context = SEPARATOR.join(texts)
            ids, char_spans = self.reader.encode_with_offsets(head + context)
            n_doc = len(ids) - len(self.reader.encode(head))
            if n_doc < self.config.page_size:
                raise InputError(
                    f"kv_pages: the corpus has {n_doc} tokens, fewer than one page "
                    f"(page_size {self.config.page_size}); read it with full context instead")
            offsets = [(a - len(head), b - len(head)) if a >= len(head) else (-1, -1)
                       for a, b in char_spans]
            t0 = time.perf_counter()
            kv = self.reader.prefill(ids, progress=progress)
            observe.work(observe.KV_PREFILLED, strategy=self.name, tokens=len(ids))
            handle = PrefilledDocument(kv=kv, token_ids=ids, fingerprint=self.fingerprint,
                                       key=key, char_offsets=offsets)
            self._baseline(handle, Cost())  # part of the document's one-time work, and saved
            handle.prefill_seconds = time.perf_counter() - t0
            if path is not None:
                handle.save(path)
            self._remember(key, handle)
            return handle, True

    def _remember(self, key: str, handle) -> None:
        self._handles[key] = handle
        while len(self._handles) > self.max_handles:
            self._handles.popitem(last=False)

    # -- answering ---------------------------------------------------------------------------
    def _answer(self, question: str, corpus: Corpus, *,
                generation: GenerationSettings | None = None) -> Answer:
        trace = Trace()
        cost = Cost()
        with trace.step("prefill") as st:
            handle, fresh = self.prefill(corpus)
            st.detail.update(tokens=handle.n_tokens, pages=handle.kv.n_pages, reused=not fresh,
                             kv_bytes=handle.nbytes)
        # A reused prefill took no time for this question: measured as 0, not unmeasured.
        cost.prefill_seconds = handle.prefill_seconds if fresh else 0.0
        return self.ask(question, corpus, handle, trace=trace, cost=cost,
                        generation=generation)

    def ask(self, question: str, corpus: Corpus, handle, trace: Trace | None = None,
            cost: Cost | None = None, watch_pages=(),
            generation: GenerationSettings | None = None) -> Answer:
        """Answer from an already prefilled handle (no prefill cost). Of ``generation``, the
        paged decoder honours max_tokens (it decodes greedily)."""
        from orchestra.streaming import token_callback

        trace = trace or Trace()
        cost = cost or Cost()
        if cost.prefill_seconds is None:
            cost.prefill_seconds = 0.0  # an already prefilled handle: no prefill here
        prompt = self._prompt_ids(question)
        max_tokens = self.reply_tokens(generation)
        self.reader.check_fits(handle.kv, len(prompt), max_tokens)
        baseline = self._baseline(handle, cost)
        with trace.step("decode") as st:
            t0 = time.perf_counter()
            # The selection: one page set for the whole answer when there is a choice
            # (selection="question"), else None: each step, layer and head picks its own.
            pages = (self.reader.question_pages(handle.kv, prompt, baseline)
                     if self.reader.pins_pages(handle.kv) else None)
            out = self.reader.generate(handle.kv, prompt, max_tokens, pages=pages,
                                       watch_pages=watch_pages,
                                       on_token=token_callback(self))
            stats = out.stats
            st.detail.update(prompt_tokens=len(prompt), generated_tokens=len(out.tokens),
                             pages_read=stats.pages_read, pages_total=stats.pages_total,
                             needle_hit_rate=stats.hit_rate())
        text = self.reader.decode(out.tokens)
        cost.prompt_tokens += handle.n_tokens + len(prompt)
        cost.generated_tokens += len(out.tokens)
        cost.model_calls += 1
        cost.kv_pages_read += stats.pages_read
        cost.kv_pages_total += stats.pages_total
        # the page choice and the decoding
        cost.decode_seconds = (cost.decode_seconds or 0.0) + time.perf_counter() - t0
        ans = Answer(question=question, text=text, strategy_type=self.name, cost=cost, trace=trace,
                     evidence=self._evidence(corpus, handle, stats.page_reads))
        return ans

    def _prompt_ids(self, question: str) -> list[int]:
        _, tail = self._split_prompt()
        return self.reader.encode(tail.replace(_QUESTION_MARK, question))

    def _baseline(self, handle, cost: Cost):
        """The baseline question's page votes for this document: once per handle, counted as
        prefill (it serves every later question)."""
        q = self.baseline_question
        if q is None or not self.reader.pins_pages(handle.kv):
            return None
        c = self.config
        # The votes depend on how pages are scored and the question read, not on top_pages.
        key = f"{q}\x00{c.scorer}\x00{c.prompt_step}\x00{self.reader.score_key}"
        if key not in handle.baselines:
            t0 = time.perf_counter()
            handle.baselines[key] = self.reader.page_votes(handle.kv, self._prompt_ids(q))
            cost.prefill_seconds = (cost.prefill_seconds or 0.0) + time.perf_counter() - t0
        return handle.baselines[key]

    def _evidence(self, corpus: Corpus, handle, page_reads: dict[int, int]) -> list[Evidence]:
        """What the reader saw of the document: every page it read (adjacent pages merged, the
        score being the share of reads) and the local window, which every step reads."""
        if not handle.char_offsets:
            return []
        c = self.config
        kv = handle.kv
        total = max(1, sum(page_reads.values()))
        runs: list[list] = []  # [first token, end token, reads]
        for page in sorted(page_reads):
            a = c.sink + page * c.page_size
            if runs and runs[-1][1] == a:
                runs[-1][1] += c.page_size
                runs[-1][2] += page_reads[page]
            else:
                runs.append([a, a + c.page_size, page_reads[page]])
        runs.append([kv.local_start(kv.n_tokens), kv.n_tokens, None])
        spans = []
        for a, b, n in runs:
            offs = [o for o in handle.char_offsets[a:b] if o[0] >= 0]
            if offs:
                spans.append((offs[0][0], offs[-1][1], 1.0 if n is None else n / total))
        # Map context offsets back to (document, offset) through the separators.
        starts, pos = [], 0
        for d in corpus.documents:
            starts.append((pos, d))
            pos += len(d.text) + len(SEPARATOR)
        ev = []
        for a, b, score in spans:
            for s0, d in starts:
                lo, hi = max(a - s0, 0), min(b - s0, len(d.text))
                if lo < hi:
                    chunk = next((ch for ch in corpus.chunks if ch.doc_id == d.id
                                  and ch.start <= lo < ch.end), None)
                    if chunk is not None:
                        ev.append(Evidence(chunk_id=chunk.id, doc_id=d.id, start=lo, end=hi,
                                           score=round(score, 4)))
        return ev
