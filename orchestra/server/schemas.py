"""The server's request and response bodies (pydantic): what each endpoint takes and gives.

Every request field is checked before any work (max_tokens within the window, temperature
finite, seed in range, ``stream`` a real boolean) with one message naming the field; fields
this server cannot honour (``tools``, ``response_format``, ...) are refused naming them, never
ignored. ``parse(Model, body, window=...)`` turns a failed check into a ``ServiceError``. The
same models document the API at /docs and /openapi.json.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, \
    ValidationInfo, field_validator, model_validator

from orchestra.backends.base import GenerationRequest, GenerationSettings, Message
from orchestra.server.errors import ServiceError

DEFAULT_MAX_TOKENS = 256
SEED_MAX = 2**63 - 1  # torch.manual_seed's range; larger seeds made the old server answer 500
# Fields a chat-completions client may send that change nothing here when at these values.
NEUTRAL = {"top_p": 1, "frequency_penalty": 0, "presence_penalty": 0, "logprobs": False,
           "parallel_tool_calls": None, "store": False, "service_tier": None}
# Where a pipeline server takes a chat request's documents: top-level fields (the openai
# client's extra_body, as vLLM takes its extras) or, as before, inside ``metadata``.
PIPELINE_EXTRAS = ("documents", "corpus_id", "strategy")


def parse(model: type[BaseModel], data: Any, **context: Any) -> Any:
    """``data`` as ``model`` (``context``: the window and limits its checks need); the first
    failed check as one ServiceError naming the field."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "value_error":
            msg = str(err["ctx"]["error"])
        elif err["type"] == "missing":
            msg = f"{where!r} is required"
        else:
            msg = f"{where!r}: {err['msg'].lower()}, got {_short(err.get('input'))}"
        raise ServiceError(msg, "too_large" if "(--max-" in msg else "invalid",
                           param=where or None) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _int(v: Any, key: str, lo: int, hi: int) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{key!r} must be an integer, got {_short(v)}")
    if not lo <= v <= hi:
        raise ValueError(f"{key!r} must be between {lo} and {hi}, got {v}")
    return v


def _window(info: ValidationInfo) -> int:
    return int((info.context or {}).get("window") or 2**31)


class Body(BaseModel):
    """A JSON request body; ``stream`` and the other flags are real booleans (no "yes", no 1)."""

    model_config = ConfigDict(extra="forbid")


# -- generation settings ------------------------------------------------------------------------
class Sampling(Body):
    """max_tokens, temperature, seed and stop (None where not given: the strategy's own)."""

    max_tokens: Optional[int] = Field(None, description="reply budget, 1 to the window")
    temperature: Optional[float] = Field(None, description="0 (greedy) to 2")
    seed: Optional[int] = Field(None, description=f"0 to {SEED_MAX}")
    stop: Union[str, list[str], None] = Field(None, description="up to 4 stop strings")

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _max_tokens(cls, v: Any, info: ValidationInfo) -> Optional[int]:
        return _int(v, info.field_name, 1, _window(info))

    @field_validator("temperature", mode="before")
    @classmethod
    def _temperature(cls, t: Any) -> Optional[float]:
        if t is None:
            return None
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) \
                or not 0 <= t <= 2:
            raise ValueError(f"'temperature' must be a finite number in [0, 2], got {_short(t)}")
        return float(t)

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, v: Any) -> Optional[int]:
        return _int(v, "seed", 0, SEED_MAX)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, stop: Any) -> Optional[list[str]]:
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and (not isinstance(stop, list) or len(stop) > 4
                                 or not all(isinstance(s, str) and s for s in stop)):
            raise ValueError("'stop' must be a string or a list of up to 4 non-empty strings")
        return stop or None

    def settings(self) -> GenerationSettings:
        return GenerationSettings(max_tokens=self.max_tokens, temperature=self.temperature,
                                  seed=self.seed, stop=self.stop)


# -- documents ----------------------------------------------------------------------------------
class NamedText(BaseModel):
    name: Optional[str] = None
    text: str


def documents_field(value: Any, where: str, max_documents: int) -> list[tuple[str, str]]:
    """(name, text) pairs from a list of strings or {"name", "text"} objects."""
    if not isinstance(value, list) or not value:
        raise ServiceError(f"{where} must be a non-empty list of texts (or of "
                           "{\"name\", \"text\"} objects)")
    if len(value) > max_documents:
        raise ServiceError(f"{where} has {len(value)} documents; this server takes at most "
                           f"{max_documents} per request (--max-documents)", "too_large")
    out = [_document(d, i, where) for i, d in enumerate(value)]
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ServiceError(f"{where}: duplicate document names "
                           f"{sorted({n for n in names if names.count(n) > 1})}")
    return out


def _document(d: Any, i: int, where: str) -> tuple[str, str]:
    if isinstance(d, str):
        name, text = f"doc{i}", d
    elif isinstance(d, dict) and isinstance(d.get("text"), str):
        name = d.get("name") or f"doc{i}"
        if not isinstance(name, str):
            raise ServiceError(f"{where}[{i}].name must be a string")
        text = d["text"]
    else:
        raise ServiceError(f"{where}[{i}] must be a text or a {{\"name\", \"text\"}} object")
    if not text.strip():
        raise ServiceError(f"{where}[{i}] ({name}) is empty")
    return name, text


Documents = list[Union[str, NamedText]]


def _shape(value: Any, where: str) -> Any:
    """The documents' shape checked with this server's messages (the count is checked where
    the limit is known)."""
    if value is not None:
        try:
            documents_field(value, where, 2**31)
        except ServiceError as e:
            raise ValueError(str(e)) from None
    return value


class Source(BaseModel):
    """What a pipeline request reads: a registered corpus or documents sent with it."""

    corpus_id: Optional[str] = None
    documents: Optional[list[tuple[str, str]]] = None  # (name, text), checked
    strategy: Optional[str] = None  # a strategy of the pipeline; None: the router decides


def source_of(fields: dict, where: str, max_documents: int) -> Source:
    corpus_id, documents = fields.get("corpus_id"), fields.get("documents")
    if (corpus_id is None) == (documents is None):
        raise ServiceError(f"give exactly one of {where}corpus_id and {where}documents")
    if corpus_id is not None and not isinstance(corpus_id, str):
        raise ServiceError(f"{where}corpus_id must be a string")
    strategy = fields.get("strategy")
    if strategy is not None and not isinstance(strategy, str):
        raise ServiceError(f"{where}strategy must be a string")
    docs = (None if documents is None
            else documents_field(documents, f"{where}documents", max_documents))
    return Source(corpus_id=corpus_id, documents=docs,
                  strategy=None if strategy == "auto" else strategy)


class CorpusBody(Body):
    """POST /v1/corpora as JSON (a multipart upload sends ``files`` and ``warm`` instead)."""

    documents: Documents
    warm: StrictBool = Field(True, description="index and prefill now (default) or on first "
                                               "use")

    @model_validator(mode="before")
    @classmethod
    def _fields(cls, body: Any) -> Any:
        if isinstance(body, dict):
            unknown = set(body) - {"documents", "warm"}
            if unknown:
                raise ValueError(f"unknown field(s) {sorted(unknown)}; give 'documents' "
                                 "(and optionally 'warm')")
            if not isinstance(body.get("warm", True), bool):
                raise ValueError("'warm' must be true or false")
        return body

    @field_validator("documents", mode="before")
    @classmethod
    def _documents(cls, v: Any) -> Any:
        return _shape(v, "'documents'")

    def pairs(self, max_documents: int) -> list[tuple[str, str]]:
        return documents_field(_plain_list(self.documents), "'documents'", max_documents)


def _plain(d: Any) -> Any:
    return d.model_dump() if isinstance(d, NamedText) else d


# -- /v1/answer ---------------------------------------------------------------------------------
class AnswerBody(Sampling):
    """POST /v1/answer: one question over a registered corpus or documents sent with it."""

    question: str
    corpus_id: Optional[str] = None
    documents: Optional[Documents] = None
    strategy: Optional[str] = Field(None, description="a strategy of the pipeline, or auto")
    stream: StrictBool = Field(False, description="server-sent events: route, evidence, "
                                                  "tokens, answer")

    @model_validator(mode="before")
    @classmethod
    def _fields(cls, body: Any) -> Any:
        if isinstance(body, dict):
            unknown = set(body) - set(cls.model_fields)
            if unknown:
                raise ValueError(f"unknown field(s) {sorted(unknown)}")
            q = body.get("question")
            if not isinstance(q, str) or not q.strip():
                raise ValueError("'question' must be a non-empty string")
            _strict_bool(body, "stream")
        return body

    @field_validator("documents", mode="before")
    @classmethod
    def _documents(cls, v: Any) -> Any:
        return _shape(v, "documents")

    def source(self, max_documents: int) -> Source:
        fields = {k: _plain_list(getattr(self, k)) for k in PIPELINE_EXTRAS}
        return source_of({k: v for k, v in fields.items() if v is not None}, "",
                         max_documents)


def _strict_bool(body: dict, key: str) -> None:
    v = body.get(key)
    if v is not None and not isinstance(v, bool):
        raise ValueError(f"{key!r} must be true or false, got {_short(v)}")


# -- chat completions ---------------------------------------------------------------------------
class ContentPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart], None] = None


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class ChatBody(Sampling):
    """POST /v1/chat/completions. A pipeline server also takes ``documents`` or ``corpus_id``
    (and ``strategy``) as top-level fields (the openai client's ``extra_body``) or in
    ``metadata``."""

    model_config = ConfigDict(extra="allow")  # the NEUTRAL fields, checked in _fields

    model: Optional[str] = None
    messages: list[ChatMessage]
    max_completion_tokens: Optional[int] = None
    stream: StrictBool = False
    stream_options: Optional[StreamOptions] = None
    n: Optional[int] = None
    user: Optional[str] = None
    metadata: Optional[dict[str, Any]] = None
    documents: Optional[Documents] = None
    corpus_id: Optional[str] = None
    strategy: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _fields(cls, body: Any) -> Any:
        if not isinstance(body, dict):
            return body
        for key, value in body.items():
            if key in cls.model_fields:
                continue
            if key in NEUTRAL and (value is None or value == NEUTRAL[key]):
                continue
            raise ValueError(f"field {key!r} is not supported by this server (it serves "
                             "plain chat completions: no tools, response formats, logprobs or "
                             "sampling penalties); remove it")
        _strict_bool(body, "stream")
        if body.get("n", 1) not in (None, 1):
            raise ValueError(f"only n=1 is supported, got n={body.get('n')!r}")
        so = body.get("stream_options")
        if so is not None and not isinstance(so, dict):
            raise ValueError("'stream_options' must be an object")
        body["messages"] = _messages(body.get("messages"))
        return body

    @field_validator("documents", mode="before")
    @classmethod
    def _documents(cls, v: Any) -> Any:
        return _shape(v, "documents")

    @field_validator("max_completion_tokens", mode="before")
    @classmethod
    def _completion_tokens(cls, v: Any, info: ValidationInfo) -> Optional[int]:
        return _int(v, "max_completion_tokens", 1, _window(info))

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def settings(self) -> GenerationSettings:
        s = super().settings()
        if self.max_completion_tokens is not None:
            s = s.model_copy(update={"max_tokens": self.max_completion_tokens})
        return s

    def chat_messages(self) -> list[Message]:
        return [Message(role="system" if m.role == "developer" else m.role,
                        content=_joined(m.content)) for m in self.messages]

    def question(self) -> str:
        """The pipeline answers one question: the last user message, with nothing after it."""
        messages = self.chat_messages()
        if messages[-1].role != "user":
            raise ServiceError("the last message must be the user's question")
        others = [m.role for m in messages[:-1]]
        if others:
            raise ServiceError(f"the pipeline answers one question over documents: send one "
                               f"user message (got {len(others)} more before it: "
                               f"{', '.join(others)}); earlier turns would be ignored")
        if not messages[-1].content.strip():
            raise ServiceError("the question (the user message) is empty")
        return messages[-1].content

    def extras(self) -> dict[str, Any]:
        """The pipeline fields given at the top level (extra_body)."""
        return {k: getattr(self, k) for k in PIPELINE_EXTRAS if getattr(self, k) is not None}

    def source(self, max_documents: int) -> Source:
        """What to read: top-level fields (extra_body) or ``metadata``, not both."""
        top = {k: _plain_list(v) for k, v in self.extras().items()}
        meta = self.metadata or {}
        unknown = set(meta) - set(PIPELINE_EXTRAS)
        if unknown:
            raise ServiceError(f"unknown metadata field(s) {sorted(unknown)}; give "
                               "metadata.documents or metadata.corpus_id (and optionally "
                               "metadata.strategy)")
        if top and meta:
            raise ServiceError("give the documents (or corpus_id) either as top-level fields "
                               "(extra_body) or in metadata, not both")
        if top:
            return source_of(top, "", max_documents)
        return source_of(meta, "metadata.", max_documents)

    def generation_request(self, window: int) -> GenerationRequest:
        """A model-level chat body as a GenerationRequest (OpenAI's defaults)."""
        if self.metadata or self.extras():
            raise ServiceError("documents (metadata or extra_body) need a pipeline server; "
                               "this one serves the model only (orchestra serve --model-only)")
        s = self.settings()
        return GenerationRequest(
            messages=self.chat_messages(),
            max_tokens=s.max_tokens or min(DEFAULT_MAX_TOKENS, window),
            temperature=1.0 if s.temperature is None else s.temperature,
            stop=s.stop or [], seed=s.seed)


def _plain_list(v: Any) -> Any:
    return [_plain(d) for d in v] if isinstance(v, list) else v


def _messages(raw: Any) -> Any:
    """The messages checked with this server's messages (the role, text parts only)."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("'messages' must be a non-empty list")
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}] must be an object")
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise ValueError(f"messages[{i}].role must be system, user or assistant, "
                             f"not {role!r}")
        _check_content(m.get("content"), f"messages[{i}]")
    return raw


def _check_content(content: Any, where: str) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise ValueError(f"{where}: content must be a string or a list of text parts")
    for p in content:
        if not (isinstance(p, dict) and p.get("type") == "text"
                and isinstance(p.get("text"), str)):
            raise ValueError(f"{where}: only text content parts are supported")


def _joined(content: Union[str, list[ContentPart], None]) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text for p in content)


def parse_messages(raw: Any) -> list[Message]:
    """Chat messages (the /tokenize body's ``messages``), checked."""
    try:
        _messages(raw)
    except ValueError as e:
        raise ServiceError(str(e)) from None
    return [Message(role="system" if m["role"] == "developer" else m["role"],
                    content=_joined(parse(ChatMessage, m).content)) for m in raw]


class TokenizeBody(BaseModel):
    """POST /tokenize: vLLM's shape ({"prompt"} or {"messages"}) and llama.cpp's
    ({"content"}); ``return_offsets`` (our extension) adds each token's character span."""

    model_config = ConfigDict(extra="allow")

    model: Optional[str] = None
    prompt: Optional[str] = None
    content: Optional[str] = None
    messages: Optional[list[ChatMessage]] = None
    return_offsets: StrictBool = False


# -- responses ----------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt: int, generated: int) -> "Usage":
        return cls(prompt_tokens=prompt, completion_tokens=generated,
                   total_tokens=prompt + generated)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    finish_reason: Optional[str] = "stop"
    logprobs: None = None
    message: AssistantMessage


class ChatCompletion(BaseModel):
    """OpenAI's chat.completion; a pipeline server adds ``orchestra`` (route, evidence, cost,
    strategy, corpus_id)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    orchestra: Optional[dict[str, Any]] = None


class CorpusInfo(BaseModel):
    """A registered corpus: its documents, sizes and how often its work was reused."""

    id: str
    object: Literal["corpus"] = "corpus"
    created: int
    documents: list[dict[str, Any]]
    tokens: int
    chunks: int
    index_builds: int
    index_loads: int
    kv_prefills: int
    questions: int
    warm: dict[str, str]
    new: Optional[bool] = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "orchestra"
    max_model_len: int
    capabilities: list[str]
    strategies: Optional[list[str]] = None
    router: Optional[str] = None
