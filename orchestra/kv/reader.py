"""The protocol between the kv_pages strategy and a model that can read KV pages.

The strategy (orchestra/strategies/kv_pages.py) builds prompts, keeps prefilled handles, picks
question-time page sets and turns page reads into evidence; everything that touches the model
goes through a ``PagedReader``, which a backend with the ``kv_pages`` capability hands out
(``Backend.paged_reader(config, kv_dtype)``). The transformers backend's reader wraps
``PagedEngine`` (our forward pass over a Llama-style model's weights); another implementation
(vLLM, another attention kernel) plugs in by implementing these methods:

- the tokenizer pieces a prefilled prompt needs: ``chat_text``, ``encode``,
  ``encode_with_offsets``, ``decode`` (a reply's text without end-of-turn tokens);
- ``prefill(ids) -> PagedKV``: the document in pages (the handle's cache);
- ``page_votes(kv, prompt)``: each page's attention share while ``prompt`` is read;
- ``question_pages(kv, prompt, baseline)``: one page set for a whole answer;
- ``generate(kv, prompt, max_tokens, pages=None)``: decode with that selection (None: each
  step, layer and head chooses its own), returning tokens and page-read statistics;
- ``fingerprint``, ``dims`` and ``score_key`` identify what saved handles and votes depend on.

A reader holds no per-call state (selections and votes are arguments and return values) and
serialises model work under the backend's lock, so one reader serves concurrent questions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:  # torch is imported by the implementations, not by this protocol
    import torch

    from orchestra.kv.config import PageConfig
    from orchestra.kv.engine import GenerationOutput
    from orchestra.kv.pages import PagedKV


class PagedReader(ABC):
    config: "PageConfig"
    fingerprint: str  # the model's identity: saved handles of another model are refused
    dims: tuple[int, int, int]  # (layers, KV heads, head size): a saved handle must match
    score_key: str  # what page votes depend on besides the config (scoring position)

    # -- tokenizer pieces ---------------------------------------------------------------------
    @abstractmethod
    def chat_text(self, messages: Sequence[Any]) -> str:
        """The prompt text the model sees (chat template, assistant turn opened)."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""

    @abstractmethod
    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of ``text`` and each token's character span."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """A reply's text: end-of-turn and special tokens dropped, whitespace stripped."""

    # -- pages --------------------------------------------------------------------------------
    @abstractmethod
    def prefill(self, ids: Sequence[int], progress: bool = False) -> "PagedKV": ...

    @abstractmethod
    def check_fits(self, kv: "PagedKV", prompt_tokens: int, max_tokens: int) -> None:
        """Raise ContextOverflowError when the attended pages, the prompt and the answer
        cannot fit the window."""

    @abstractmethod
    def pins_pages(self, kv: "PagedKV") -> bool:
        """Whether an answer over ``kv`` reads one question-time page set (there is a choice
        and ``selection`` is ``question``)."""

    @abstractmethod
    def page_votes(self, kv: "PagedKV", prompt: Sequence[int]) -> "torch.Tensor": ...

    @abstractmethod
    def question_pages(self, kv: "PagedKV", prompt: Sequence[int],
                       baseline: "torch.Tensor | None" = None) -> "torch.Tensor": ...

    @abstractmethod
    def generate(self, kv: "PagedKV", prompt: Sequence[int], max_tokens: int,
                 pages: "torch.Tensor | None" = None, watch_pages: Sequence[int] = (),
                 on_token: Callable[[str], None] | None = None) -> "GenerationOutput":
        """Decode greedily; ``on_token`` sees the reply's text so far after each token
        (streaming)."""


class TransformersPagedReader(PagedReader):
    """The transformers backend's reader: PagedEngine over the loaded model, its fast
    tokenizer, model work under the backend's lock."""

    def __init__(self, backend: Any, config: "PageConfig", kv_dtype: str | None = None):
        import torch

        from orchestra.kv.engine import PagedEngine
        from orchestra.kv.handle import model_fingerprint

        self._backend = backend
        self._tok = backend.hf_tokenizer
        self._lock = backend.lock
        self._engine = PagedEngine(backend.model, config, window=backend.context_window,
                                   kv_dtype=getattr(torch, kv_dtype) if kv_dtype else None)
        self._eos = frozenset(backend.eos_ids())
        self.config = self._engine.cfg
        self.fingerprint = model_fingerprint(backend.model)
        e = self._engine
        self.dims = (e.n_layers, e.n_kv, e.head_dim)
        self.score_key = str(e.score_distance)

    def chat_text(self, messages: Sequence[Any]) -> str:
        return self._backend.chat_text(messages)

    def encode(self, text: str) -> list[int]:
        return self._tok(text, add_special_tokens=False)["input_ids"]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self._tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([t for t in ids if t not in self._eos],
                                skip_special_tokens=True).strip()

    def prefill(self, ids: Sequence[int], progress: bool = False) -> "PagedKV":
        with self._lock:
            return self._engine.prefill(ids, progress=progress)

    def check_fits(self, kv: "PagedKV", prompt_tokens: int, max_tokens: int) -> None:
        self._engine.check_fits(kv, prompt_tokens, max_tokens)

    def pins_pages(self, kv: "PagedKV") -> bool:
        return self._engine.pins_pages(kv)

    def page_votes(self, kv: "PagedKV", prompt: Sequence[int]) -> "torch.Tensor":
        with self._lock:
            return self._engine.page_votes(kv, prompt)

    def question_pages(self, kv: "PagedKV", prompt: Sequence[int],
                       baseline: "torch.Tensor | None" = None) -> "torch.Tensor":
        with self._lock:
            return self._engine.question_pages(kv, prompt, baseline)

    def generate(self, kv: "PagedKV", prompt: Sequence[int], max_tokens: int,
                 pages: "torch.Tensor | None" = None, watch_pages: Sequence[int] = (),
                 on_token: Callable[[str], None] | None = None) -> "GenerationOutput":
        step: Callable[[int], None] | None = None
        if on_token is not None:
            ids: list[int] = []

            def each(token_id: int) -> None:
                if token_id in self._eos:
                    return
                ids.append(token_id)
                # The whole reply so far: multi-token characters and spaces decode right.
                on_token(self._tok.decode(ids, skip_special_tokens=True).lstrip())

            step = each
        with self._lock:
            return self._engine.generate(kv, prompt, max_tokens, set(self._eos), pages=pages,
                                         watch_pages=watch_pages, on_token=step)
