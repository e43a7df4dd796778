"""The one place a model runs. Every component of a pipeline shares one Backend instance.

A backend takes a *batch* of chat requests (backends that batch natively get the whole batch),
counts tokens with the model's own tokenizer, and says what it can do through
``capabilities`` so routers only pick strategies it supports.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterator, Sequence

from pydantic import BaseModel, Field, field_validator

from orchestra.errors import ConfigError, InputError
from orchestra.spec import Component

# Capability names strategies may require.
KV_PAGES = "kv_pages"
PREFIX_CACHE = "prefix_cache"
BATCHING = "batching"
LOGPROBS = "logprobs"


class Message(BaseModel):
    role: str
    content: str

    @field_validator("role")
    @classmethod
    def _role(cls, v: str) -> str:
        if v not in ("system", "user", "assistant"):
            raise ValueError(f"role must be system, user or assistant, not {v!r}")
        return v


class GenerationRequest(BaseModel):
    messages: list[Message]
    max_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)  # 0 means greedy
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    # Decoding guards against the loops small readers fall into ("the invention of the
    # invention of ..."): 1.0 and 0 mean off. Backends that cannot apply one refuse it.
    repetition_penalty: float = Field(default=1.0, ge=1.0, le=2.0)
    no_repeat_ngram_size: int = Field(default=0, ge=0)
    # Return each generated token's log probability (backends with the logprobs capability).
    logprobs: bool = False

    @classmethod
    def user(cls, content: str, system: str | None = None, **kw) -> "GenerationRequest":
        msgs = [Message(role="system", content=system)] if system else []
        msgs.append(Message(role="user", content=content))
        return cls(messages=msgs, **kw)


class GenerationSettings(BaseModel):
    """A caller's own reply settings for one answer (a served request's ``max_tokens``,
    ``temperature``, ``seed`` and ``stop``); a field left None keeps the strategy's own.
    ``Pipeline.run(..., generation=...)`` passes them through the router to the strategy,
    which sizes its prompt for ``max_tokens`` and applies them to its final read."""

    model_config = {"frozen": True}

    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0)
    seed: int | None = None
    stop: list[str] | None = None

    def fields(self) -> dict[str, Any]:
        """The GenerationRequest fields given (those not None)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}

    def apply(self, request: "GenerationRequest") -> "GenerationRequest":
        """``request`` with the given fields in place of its own."""
        given = self.fields()
        return request.model_copy(update=given) if given else request


class GenerationResult(BaseModel):
    text: str
    prompt_tokens: int
    generated_tokens: int
    seconds: float
    finish_reason: str = "stop"  # "stop" (eos or stop string) or "length"
    token_logprobs: list[float] | None = None  # when the request asked for logprobs


class Tokenizer(ABC):
    """What the corpus needs from a tokenizer: counts and character offsets of tokens."""

    @abstractmethod
    def count(self, text: str) -> int: ...

    @abstractmethod
    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character (start, end) of every token of ``text``, in order, no special tokens."""


class Backend(Component, ABC):
    """Interface every backend implements."""

    name: ClassVar[str] = "backend"

    @property
    @abstractmethod
    def context_window(self) -> int: ...

    @property
    @abstractmethod
    def capabilities(self) -> frozenset[str]: ...

    @property
    @abstractmethod
    def tokenizer(self) -> Tokenizer: ...

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]: ...

    @abstractmethod
    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens of a chat prompt as the model sees it (chat template included)."""

    def count_tokens(self, text: str) -> int:
        return self.tokenizer.count(text)

    def generate_one(self, request: GenerationRequest) -> GenerationResult:
        return self.generate([request])[0]

    def stream(self, request: GenerationRequest) -> Iterator[str | GenerationResult]:
        """Generate one reply, yielding text pieces as they are written, then the
        GenerationResult (always last; its ``text`` is authoritative: stripped, cut at stop
        strings). Closing the iterator early stops the generation where the backend can.

        This default generates the whole reply, then yields it once; backends that can
        stream (transformers, openai) override it."""
        result = self.generate_one(request)
        yield result.text
        yield result

    def paged_reader(self, config: Any, kv_dtype: str | None = None) -> Any:
        """The ``orchestra.kv.reader.PagedReader`` the kv_pages strategy reads through, for
        backends with the ``kv_pages`` capability (``config``: an orchestra.kv PageConfig)."""
        from orchestra.errors import CapabilityError

        raise CapabilityError(f"the {self.name} backend cannot read KV pages (it has no "
                              "PagedReader); use the transformers backend for kv_pages")


def check_requests(requests: Sequence[GenerationRequest]) -> list[GenerationRequest]:
    requests = list(requests)
    for i, r in enumerate(requests):
        if not isinstance(r, GenerationRequest):
            raise InputError(f"request {i} is a {type(r).__name__}, not a GenerationRequest")
        if not r.messages:
            raise InputError(f"request {i} has no messages")
    return requests


def sampling_extras(request: GenerationRequest, backend: str, verb: str,
                    reason: str = "") -> dict[str, Any]:
    """The optional settings that chat-completion servers and vLLM's ``SamplingParams`` name
    alike: ``stop``, ``seed`` and ``repetition_penalty``, each only when set. Neither has an
    n-gram ban, so a request with ``no_repeat_ngram_size`` is refused ("the ``backend`` backend
    cannot ``verb`` ...: ``reason``"): dropping it silently would change the answers."""
    if request.no_repeat_ngram_size:
        why = f": {reason}" if reason else ""
        raise ConfigError(f"the {backend} backend cannot {verb} no_repeat_ngram_size "
                          f"({request.no_repeat_ngram_size}){why}; set it to 0 or use "
                          "repetition_penalty")
    extras: dict[str, Any] = {}
    if request.stop:
        extras["stop"] = list(request.stop)
    if request.seed is not None:
        extras["seed"] = request.seed
    if request.repetition_penalty != 1.0:
        extras["repetition_penalty"] = request.repetition_penalty
    return extras


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; return (text, whether one was found)."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut], cut < len(text)
