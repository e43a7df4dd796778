"""LlamaIndex interop (needs only ``llama-index-core``), in both directions.

- ``OrchestraLLM``: any orchestra backend as a LlamaIndex ``LLM`` (a ``CustomLLM``; chat
  messages go to the backend as messages, so its own chat template applies).
- ``PipelineQueryEngine``: a Pipeline as a query engine; ``query()`` returns a ``Response``
  whose source nodes are the evidence the reader saw, with the route and cost in metadata.
- ``LlamaIndexRetriever``: a LlamaIndex retriever (ready, or built over our chunks by a
  factory) usable as an orchestra retriever.
- ``nodes_to_documents``: LlamaIndex nodes / Documents as orchestra Documents.
- ``OrchestraLIRetriever``: an orchestra retriever as a LlamaIndex retriever.
- ``MiniLMEmbedding``: the bundled embedder as a LlamaIndex embedding model (offline).
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

try:
    import llama_index.core  # noqa: F401
except ImportError:
    raise ImportError("orchestra.integrations.llama_index needs llama-index-core: "
                      "pip install 'orchestra-longdoc[llamaindex]'") from None

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.base.response.schema import Response, StreamingResponse
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle, TextNode
from pydantic import ConfigDict, Field, model_validator

from orchestra import observe
from orchestra.backends.base import Message
from orchestra.corpus import Document, strings_as_text
from orchestra.errors import InputError
from orchestra.integrations import _common
from orchestra.integrations._stream import stream_one
from orchestra.integrations.retriever_adapter import ExternalRetriever

__all__ = ["OrchestraLLM", "PipelineQueryEngine", "LlamaIndexRetriever", "nodes_to_documents",
           "OrchestraLIRetriever", "MiniLMEmbedding", "OrchestraStepStartEvent",
           "OrchestraStepEndEvent"]


# -- our backend as a LlamaIndex LLM --------------------------------------------------------
class OrchestraLLM(CustomLLM):
    """An orchestra backend as a LlamaIndex LLM (the embedded default when none is given)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Any = Field(default=None, exclude=True)
    max_tokens: int = 256
    temperature: float = 0.0

    @model_validator(mode="after")
    def _orchestra_backend(self) -> "OrchestraLLM":
        self.backend = _common.shared_backend(self.backend)
        return self

    @classmethod
    def class_name(cls) -> str:
        return "orchestra_llm"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.backend.context_window,
                           num_output=self.max_tokens, is_chat_model=True,
                           model_name=_common.backend_model_name(self.backend))

    def _run(self, messages: list[Message], kwargs: dict):
        return _common.run_one(self.backend, messages,
                               kwargs.get("max_tokens", self.max_tokens),
                               kwargs.get("temperature", self.temperature), kwargs.get("stop"))

    @staticmethod
    def _raw(res) -> dict:
        return {"finish_reason": res.finish_reason, "usage": {
            "prompt_tokens": res.prompt_tokens, "completion_tokens": res.generated_tokens,
            "total_tokens": res.prompt_tokens + res.generated_tokens}}

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        res = self._run([Message(role="user", content=prompt)], kwargs)
        return CompletionResponse(text=res.text, raw=self._raw(res),
                                  additional_kwargs=_common.usage(res))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False,
                        **kwargs: Any) -> CompletionResponseGen:
        # Tokens as the backend writes them; the last response carries usage.
        return self._stream([Message(role="user", content=prompt)], kwargs,
                            lambda text, delta, raw, extra: CompletionResponse(
                                text=text, delta=delta, raw=raw, additional_kwargs=extra))

    def _stream(self, messages: list[Message], kwargs: dict, make):
        pieces = stream_one(self.backend, messages,
                                    kwargs.get("max_tokens", self.max_tokens),
                                    kwargs.get("temperature", self.temperature),
                                    kwargs.get("stop"))

        def gen():
            text = ""
            for item in pieces:
                if isinstance(item, str):
                    text += item
                    yield make(text, item, None, {})
                else:
                    yield make(item.text, "", self._raw(item), _common.usage(item))

        return gen()

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        ours = [_common.to_message(getattr(m.role, "value", m.role), m.content or "",
                                   f"message {i}") for i, m in enumerate(messages)]
        res = self._run(ours, kwargs)
        return ChatResponse(message=ChatMessage(role="assistant", content=res.text),
                            raw=self._raw(res), additional_kwargs=_common.usage(res))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        ours = [_common.to_message(getattr(m.role, "value", m.role), m.content or "",
                                   f"message {i}") for i, m in enumerate(messages)]
        return self._stream(ours, kwargs, lambda text, delta, raw, extra: ChatResponse(
            message=ChatMessage(role="assistant", content=text), delta=delta, raw=raw,
            additional_kwargs=extra))


# -- LlamaIndex nodes as our documents ------------------------------------------------------
def nodes_to_documents(nodes: Iterable[Any]) -> list[Document]:
    """LlamaIndex Documents / nodes (or NodeWithScore) as orchestra Documents."""
    docs = []
    for i, n in enumerate(nodes):
        node = n.node if isinstance(n, NodeWithScore) else n
        if not isinstance(node, BaseNode):
            raise InputError(f"item {i} is a {type(n).__name__}, not a LlamaIndex node")
        text = node.get_content()
        if not text.strip():
            raise InputError(f"node {node.node_id!r} is empty")
        meta = dict(node.metadata or {})
        docs.append(Document(id=str(node.node_id), text=text,
                             source=meta.get("file_path") or meta.get("file_name"),
                             metadata=meta))
    return docs


def _documents(documents):
    """Accept LlamaIndex nodes wherever documents are taken; a string is a text (give a
    pathlib.Path for a file)."""
    if isinstance(documents, (list, tuple)) and documents and all(
            isinstance(d, (BaseNode, NodeWithScore)) for d in documents):
        return nodes_to_documents(documents)
    return strings_as_text(documents)


# -- responses whose sources say where they are ----------------------------------------------
def _formatted_sources(source_nodes, length: int | None) -> str:
    """LlamaIndex's format, naming each source by ``file:line-line`` (as the evidence does)
    rather than the node id, a chunk hash nobody can look up."""
    from llama_index.core.utils import truncate_text

    texts = []
    for sn in source_nodes:
        meta = sn.node.metadata or {}
        where = meta.get("file_name") or meta.get("source") or sn.node.node_id
        if meta.get("line_start") is not None:
            where = f"{where}:{meta['line_start']}-{meta['line_end']}"
        text = sn.node.get_content()
        texts.append(f"> Source ({where}): "
                     f"{truncate_text(text, length) if length is not None else text}")
    return "\n\n".join(texts)


class OrchestraResponse(Response):
    def get_formatted_sources(self, length: int = 100) -> str:
        return _formatted_sources(self.source_nodes, length)


class OrchestraStreamingResponse(StreamingResponse):
    def get_formatted_sources(self, length: int = 100, trim_text: int = True) -> str:
        return _formatted_sources(self.source_nodes, length if trim_text else None)


# -- a Pipeline's steps as LlamaIndex instrumentation events -------------------------------
_dispatcher = get_dispatcher(__name__)


class OrchestraStepStartEvent(BaseEvent):
    """A pipeline step started (route, retrieval, a model call, a prefill...)."""

    step: str
    kind: str
    detail: dict = Field(default_factory=dict)

    @classmethod
    def class_name(cls) -> str:
        return "OrchestraStepStartEvent"


class OrchestraStepEndEvent(BaseEvent):
    """A pipeline step ended: its seconds and details (tokens, scores, pages)."""

    step: str
    kind: str
    seconds: float = 0.0
    detail: dict = Field(default_factory=dict)
    error: Optional[str] = None

    @classmethod
    def class_name(cls) -> str:
        return "OrchestraStepEndEvent"


class LlamaIndexSteps:
    """An ``orchestra.observe`` listener: each step as a pair of instrumentation events,
    dispatched inside the query's span (handlers on the root dispatcher see them)."""

    def step_started(self, step: Any) -> Any:
        _dispatcher.event(OrchestraStepStartEvent(step=step.name, kind=step.kind,
                                                  detail=dict(step.detail)))

    def step_ended(self, step: Any, token: Any, error: BaseException | None) -> None:
        _dispatcher.event(OrchestraStepEndEvent(step=step.name, kind=step.kind,
                                                seconds=step.seconds, detail=dict(step.detail),
                                                error=None if error is None else repr(error)))


# -- a Pipeline as a query engine -----------------------------------------------------------
class PipelineQueryEngine(BaseQueryEngine):
    """A Pipeline as a LlamaIndex query engine over ``documents`` (texts, pathlib.Paths, Documents
    or LlamaIndex nodes). ``query(q)`` returns a Response with the evidence as source nodes (with
    ``file_name``/``file_path`` where the document came from a file); ``streaming=True``
    returns a StreamingResponse whose ``response_gen`` yields the tokens as they are written.
    Each pipeline step is dispatched as ``OrchestraStepStartEvent``/``OrchestraStepEndEvent``."""

    def __init__(self, pipeline, documents, callback_manager=None, streaming: bool = False):
        self.pipeline = pipeline
        self.corpus = pipeline.corpus(_documents(documents))
        self.streaming = streaming
        super().__init__(callback_manager=callback_manager)

    def _get_prompt_modules(self) -> dict:
        return {}

    def _node(self, ev) -> NodeWithScore:
        meta = {"doc_id": ev.doc_id, "start": ev.start, "end": ev.end,
                **_common.source_metadata(self.corpus, ev.doc_id, ev.start, ev.end)}
        node = TextNode(text=_common.evidence_text(self.corpus, ev), id_=ev.chunk_id,
                        metadata=meta, excluded_embed_metadata_keys=list(_INTERNAL),
                        excluded_llm_metadata_keys=list(_INTERNAL))
        return NodeWithScore(node=node, score=ev.score)

    @staticmethod
    def _metadata(answer) -> dict:
        return {"strategy": answer.strategy_type, "cost": answer.cost.model_dump(),
                "route": answer.route.model_dump() if answer.route else None,
                "unanswerable": answer.unanswerable, "answer": answer}

    def _query(self, query_bundle: QueryBundle):
        if self.streaming:
            return self._stream(query_bundle.query_str)
        with observe.listening(LlamaIndexSteps()):
            answer = self.pipeline.run(query_bundle.query_str, self.corpus)
        return OrchestraResponse(response=answer.text,
                                 source_nodes=[self._node(e) for e in answer.evidence],
                                 metadata=self._metadata(answer))

    def _stream(self, question: str) -> StreamingResponse:
        """Read until the evidence is known (before the first token), then hand the rest of
        the stream to the response; its metadata and source nodes are completed at the end."""
        events = self.pipeline.stream(question, self.corpus)
        pending: list[str] = []
        evidence = []
        # Pipeline.stream copies the context of its first step to its reading thread, so the
        # listener set here sees every step of the read, also those after this block.
        with observe.listening(LlamaIndexSteps()):
            for event in events:
                if event.type == "evidence":
                    evidence = event.evidence
                    break
                if event.type == "token":
                    pending.append(event.text)
                if event.type == "answer":
                    evidence = event.answer.evidence
                    pending.append(event.answer.text)
                    break
        response = OrchestraStreamingResponse(response_gen=iter(()), metadata={},
                                              source_nodes=[self._node(e) for e in evidence])

        def gen():
            yield from pending
            for ev in events:
                if ev.type == "token":
                    yield ev.text
                elif ev.type == "answer":
                    response.metadata.update(self._metadata(ev.answer))
                    response.source_nodes[:] = [self._node(e) for e in ev.answer.evidence]

        response.response_gen = gen()
        return response

    async def _aquery(self, query_bundle: QueryBundle):
        return self._query(query_bundle)


# -- LlamaIndex retrievers as ours ----------------------------------------------------------
# Bookkeeping keys kept out of what LlamaIndex embeds and shows the LLM (the file stays in).
_INTERNAL = ("chunk_id", "doc_id", "start", "end", "line_start", "line_end", "source")


def _to_node(chunk, corpus=None) -> TextNode:
    return TextNode(text=chunk.text, id_=chunk.id,
                    metadata=_common.chunk_metadata(chunk, corpus),
                    excluded_embed_metadata_keys=list(_INTERNAL),
                    excluded_llm_metadata_keys=list(_INTERNAL))


class LlamaIndexRetriever(ExternalRetriever):
    """A LlamaIndex ``BaseRetriever`` as an orchestra retriever.

    Give a ready ``retriever`` (hits map back to the corpus by ``chunk_id`` metadata or text),
    or ``factory(nodes) -> BaseRetriever`` to build one over the corpus chunks at index time,
    e.g. ``lambda nodes: VectorStoreIndex(nodes, embed_model=MiniLMEmbedding())
    .as_retriever(similarity_top_k=8)``.
    """

    name = "llama_index"

    def _make(self, chunks):
        return self.factory([_to_node(c) for c in chunks])

    def _search(self, question: str, k: int):
        # LlamaIndex retrievers hold their size as similarity_top_k; ours is set for this
        # search (retrieve() holds this adapter's lock) and restored after.
        ext = self.external
        if hasattr(ext, "similarity_top_k"):
            before = ext.similarity_top_k
            ext.similarity_top_k = k
            try:
                hits = ext.retrieve(question)
            finally:
                ext.similarity_top_k = before
        else:
            hits = ext.retrieve(question)
        out = []
        for h in hits:
            meta = dict(h.node.metadata or {})
            if "chunk_id" not in meta:
                meta["chunk_id"] = h.node.node_id
            out.append((h.node.get_content(), meta, h.score))
        return out


# -- our retrievers as LlamaIndex's ---------------------------------------------------------
class OrchestraLIRetriever(BaseRetriever):
    """An orchestra retriever, indexed over ``corpus``, as a LlamaIndex retriever."""

    def __init__(self, retriever, corpus, k: int = 4, similarity_top_k: int | None = None,
                 **kw: Any):
        """``similarity_top_k`` (LlamaIndex's name) is the same as ``k`` and wins if given."""
        k = similarity_top_k if similarity_top_k is not None else k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"OrchestraLIRetriever: k must be a positive integer, got {k!r}")
        self.retriever = retriever
        self.corpus = corpus
        self.k = k
        retriever.index(corpus)
        super().__init__(**kw)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [NodeWithScore(node=_to_node(h.chunk, self.corpus), score=h.score)
                for h in self.retriever.retrieve(query_bundle.query_str, self.similarity_top_k)]

    @property
    def similarity_top_k(self) -> int:
        return self.k

    @similarity_top_k.setter
    def similarity_top_k(self, value: int) -> None:
        self.k = value


# -- the bundled embedder as a LlamaIndex embedding model -----------------------------------
class MiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 from the installed package; normalised vectors, offline."""

    model_name: str = "all-MiniLM-L6-v2"

    @classmethod
    def class_name(cls) -> str:
        return "orchestra_minilm"

    def _get_query_embedding(self, query: str) -> list[float]:
        return _common.embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return _common.embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return _common.embed(texts)
