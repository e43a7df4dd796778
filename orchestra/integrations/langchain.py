"""LangChain interop (needs only ``langchain-core``), in both directions.

- ``OrchestraChatModel``: any orchestra backend as a LangChain chat model (token usage from
  the backend's own counts).
- ``PipelineRunnable`` (or ``as_runnable(pipeline)``): a Pipeline as a ``Runnable`` whose
  invoke/batch/stream give the final answer.
- ``LangChainRetriever``: any LangChain ``BaseRetriever`` usable where orchestra wants a
  retriever (RAG strategies, routers' retrieval probes).
- ``OrchestraRetriever``: an orchestra retriever over a corpus as a LangChain ``BaseRetriever``.
- ``MiniLMEmbeddings``: the bundled embedder as LangChain ``Embeddings`` (offline), so vector
  stores such as ``InMemoryVectorStore`` work without any download.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator, Optional

try:
    import langchain_core  # noqa: F401
except ImportError:
    raise ImportError("orchestra.integrations.langchain needs langchain-core: "
                      "pip install 'orchestra-longdoc[langchain]'") from None

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
    CallbackManagerForLLMRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document as LCDocument
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import run_in_executor
from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestra import observe
from orchestra.corpus import Document, strings_as_text
from orchestra.errors import InputError
from orchestra.integrations import _common
from orchestra.integrations._stream import stream_one
from orchestra.integrations.langchain_steps import LangChainSteps
from orchestra.integrations.retriever_adapter import ExternalRetriever
from orchestra.spec import entry
from orchestra.types import Answer
from orchestra.streaming import iterate_in_thread

__all__ = [
    "OrchestraChatModel", "PipelineRunnable", "PipelineInput", "as_runnable", "lc_documents",
    "LangChainRetriever",
    "OrchestraRetriever", "MiniLMEmbeddings",
]


# -- our backend as a LangChain chat model --------------------------------------------------
class OrchestraChatModel(BaseChatModel):
    """An orchestra backend as a LangChain chat model.

    ``OrchestraChatModel()`` uses the embedded default; ``OrchestraChatModel(backend=b)`` any
    backend. Greedy by default, like the rest of orchestra.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Any = Field(default=None, exclude=True)
    max_tokens: int = 256
    temperature: float = 0.0

    @model_validator(mode="after")
    def _orchestra_backend(self) -> "OrchestraChatModel":
        self.backend = _common.shared_backend(self.backend)
        return self

    @property
    def _llm_type(self) -> str:
        return "orchestra"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"backend": entry(self.backend), "max_tokens": self.max_tokens,
                "temperature": self.temperature}

    def _run(self, messages: list[BaseMessage], stop: Optional[list[str]], **kwargs: Any):
        ours = [_common.to_message(m.type, m.content, f"message {i}")
                for i, m in enumerate(messages)]
        return _common.run_one(self.backend, ours, kwargs.get("max_tokens", self.max_tokens),
                               kwargs.get("temperature", self.temperature), stop)

    # Token counts from the backend's own tokenizer (LangChain's default is GPT-2's, which
    # would need a download and counts a different vocabulary).
    def get_num_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def get_token_ids(self, text: str) -> list[int]:
        hf = getattr(self.backend, "hf_tokenizer", None)
        if hf is None:
            raise NotImplementedError(f"the {self.backend.name} backend does not expose token "
                                      "ids; get_num_tokens counts with its tokenizer")
        return hf(text, add_special_tokens=False)["input_ids"]

    def get_num_tokens_from_messages(self, messages: list[BaseMessage],
                                     tools: Any = None) -> int:
        """Tokens of the prompt as the model sees it (its chat template included)."""
        if tools:
            raise InputError("orchestra chat models do not take tools")
        return self.backend.count_prompt_tokens(
            [_common.to_message(m.type, m.content, f"message {i}")
             for i, m in enumerate(messages)])

    def _message(self, res, cls=AIMessage):
        return cls(content=res.text, usage_metadata=_common.usage(res),
                   response_metadata={"finish_reason": res.finish_reason,
                                      "model_name": _common.backend_model_name(self.backend)})

    def _generate(self, messages: list[BaseMessage], stop: Optional[list[str]] = None,
                  run_manager: Optional[CallbackManagerForLLMRun] = None,
                  **kwargs: Any) -> ChatResult:
        res = self._run(messages, stop, **kwargs)
        return ChatResult(
            generations=[ChatGeneration(message=self._message(res),
                                        generation_info={"finish_reason": res.finish_reason})],
            llm_output={"token_usage": {"prompt_tokens": res.prompt_tokens,
                                        "completion_tokens": res.generated_tokens,
                                        "total_tokens": res.prompt_tokens + res.generated_tokens},
                        "model_name": _common.backend_model_name(self.backend)},
        )

    def _stream(self, messages: list[BaseMessage], stop: Optional[list[str]] = None,
                run_manager: Optional[CallbackManagerForLLMRun] = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        # Tokens as the backend writes them (Backend.stream), then a last empty chunk with the
        # usage and finish reason.
        ours = [_common.to_message(m.type, m.content, f"message {i}")
                for i, m in enumerate(messages)]
        for item in stream_one(self.backend, ours,
                                       kwargs.get("max_tokens", self.max_tokens),
                                       kwargs.get("temperature", self.temperature), stop):
            if isinstance(item, str):
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=item))
            else:
                final = self._message(item, AIMessageChunk)
                final.content = ""
                chunk = ChatGenerationChunk(message=final,
                                            generation_info={"finish_reason": item.finish_reason})
            if run_manager and chunk.message.content:
                run_manager.on_llm_new_token(chunk.message.content, chunk=chunk)
            yield chunk


# -- a Pipeline as a Runnable ---------------------------------------------------------------
class PipelineInput(BaseModel):
    """The Runnable's input schema (``as_tool()`` and LangServe-style clients read it)."""

    question: str = Field(description="the question to answer")
    documents: Optional[list[str]] = Field(
        default=None, description="texts to read; leave out to read the documents the "
                                  "pipeline was given")


def lc_documents(docs: Any) -> Any:
    """LangChain Documents as orchestra Documents (metadata kept; ``source`` names the file);
    a string is a text (a chain's or an LLM's input is never read as a local path; give a
    pathlib.Path for a file); anything else is returned as is."""
    items = [docs] if isinstance(docs, LCDocument) else docs
    if not isinstance(items, (list, tuple)) or not any(isinstance(d, LCDocument) for d in items):
        return strings_as_text(docs)
    out = []
    for i, d in enumerate(items):
        if not isinstance(d, LCDocument):
            out.append(Document(id=f"text{i + 1}", text=d) if isinstance(d, str) else d)
            continue
        meta = dict(d.metadata or {})
        source = meta.get("source") or meta.get("file_path")
        # Chunks of one file share a source, so ids add the position.
        doc_id = d.id or (f"{source}#{i}" if source else f"doc{i}")
        out.append(Document(id=str(doc_id), text=d.page_content,
                            source=str(source) if source else None, metadata=meta))
    return out


class PipelineRunnable(Runnable):
    """A Pipeline as a LangChain Runnable.

    Input: a question (``str``) over the documents given here, or a dict / ``PipelineInput``
    ``{"question": ..., "documents": ...}`` (texts, pathlib.Paths, orchestra or LangChain
    Documents; a string is always a text).
    Output: the answer text, or the whole ``orchestra.types.Answer`` with ``output="answer"``.

    Each step inside (route, retrieval, model calls) is a child run, so callbacks,
    ``astream_events`` and LangSmith show them; ``stream``/``astream`` yield the answer's
    tokens as the model writes them (``Pipeline.stream``).
    """

    def __init__(self, pipeline, documents=None, output: str = "text"):
        if output not in ("text", "answer"):
            raise InputError(f"output must be 'text' or 'answer', not {output!r}")
        self.pipeline = pipeline
        self.output = output
        # Built once so retrieval indexes are reused across calls.
        self._corpus = (pipeline.corpus(lc_documents(documents))
                        if documents is not None else None)

    @property
    def InputType(self) -> Any:  # noqa: N802  (LangChain's name)
        return PipelineInput

    def get_name(self, suffix: Optional[str] = None, *, name: Optional[str] = None) -> str:
        return super().get_name(suffix, name=name or "orchestra_pipeline")

    def _split(self, value: Any):
        if isinstance(value, PipelineInput):
            value = value.model_dump()
        if isinstance(value, str):
            question, corpus = value, self._corpus
        elif isinstance(value, dict) and "question" in value:
            question = value["question"]
            docs = value.get("documents")
            corpus = (self.pipeline.corpus(lc_documents(docs)) if docs is not None
                      else self._corpus)
        else:
            raise InputError("the input must be a question (str) or a dict with 'question' "
                             f"(and 'documents'), not {type(value).__name__}")
        if corpus is None:
            raise InputError("no documents: give them to PipelineRunnable(documents=...) or "
                             "in the input as {'question': ..., 'documents': ...}")
        return question, corpus

    def _out(self, answer):
        return answer if self.output == "answer" else answer.text

    @property
    def OutputType(self) -> Any:  # noqa: N802  (LangChain's name)
        """The reply text, or with ``output="answer"`` the Answer: text, route, evidence, cost."""
        return Answer if self.output == "answer" else str

    def _invoke(self, value: Any, run_manager: CallbackManagerForChainRun) -> Any:
        # Read as a stream so the answer's tokens reach on_llm_new_token of the read's LLM run
        # (as a streaming chat model's would); the Answer is the one Pipeline.run returns.
        question, corpus = self._split(value)
        with observe.listening(LangChainSteps(run_manager, corpus, str(question))):
            for event in self.pipeline.stream(question, corpus):
                if event.type == "answer":
                    return self._out(event.answer)
        raise RuntimeError("the pipeline's stream ended without an answer")  # not reached

    def invoke(self, input: Any, config: Optional[RunnableConfig] = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._invoke, input, config, run_type="chain")

    # -- streaming ----------------------------------------------------------------------------
    def _events(self, value: Any, run_manager: CallbackManagerForChainRun) -> Iterator[Any]:
        """Text pieces as the model writes them (``output="text"``), or the final Answer."""
        question, corpus = self._split(value)
        with observe.listening(LangChainSteps(run_manager, corpus, str(question))):
            # Pipeline.stream copies this context (with the listener) to its reading thread.
            for event in self.pipeline.stream(question, corpus):
                if event.type == "token" and self.output == "text" and event.text:
                    yield event.text
                elif event.type == "answer" and self.output == "answer":
                    yield event.answer

    def _transform(self, inputs: Iterator[Any], run_manager: CallbackManagerForChainRun
                   ) -> Iterator[Any]:
        for value in inputs:
            yield from self._events(value, run_manager)

    def stream(self, input: Any, config: Optional[RunnableConfig] = None,
               **kwargs: Any) -> Iterator[Any]:
        yield from self._transform_stream_with_config(iter([input]), self._transform, config,
                                                      run_type="chain")

    def transform(self, input: Iterator[Any], config: Optional[RunnableConfig] = None,
                  **kwargs: Any) -> Iterator[Any]:
        yield from self._transform_stream_with_config(input, self._transform, config,
                                                      run_type="chain")

    async def _atransform(self, inputs: AsyncIterator[Any],
                          run_manager: AsyncCallbackManagerForChainRun) -> AsyncIterator[Any]:
        sync_manager = run_manager.get_sync()  # the listener runs on the reading thread
        async for value in inputs:
            async for item in iterate_in_thread(lambda v=value: self._events(v, sync_manager)):
                yield item

    async def astream(self, input: Any, config: Optional[RunnableConfig] = None,
                      **kwargs: Any) -> AsyncIterator[Any]:
        async def one():
            yield input

        async for item in self._atransform_stream_with_config(one(), self._atransform, config,
                                                              run_type="chain"):
            yield item

    async def ainvoke(self, input: Any, config: Optional[RunnableConfig] = None,
                      **kwargs: Any) -> Any:
        return await run_in_executor(config, self.invoke, input, config)

    # -- batches ------------------------------------------------------------------------------
    # ``batch``/``abatch`` are Runnable's own: each input is invoked on a thread pool
    # (``max_concurrency`` in the config), so with ``return_exceptions=True`` every input gets
    # its own result or exception, and backends that serve requests concurrently (openai,
    # vLLM) get them concurrently. A transformers backend runs one generate at a time (its
    # lock); corpora and indexes are still built in parallel.


def as_runnable(pipeline, documents=None, output: str = "text") -> PipelineRunnable:
    return PipelineRunnable(pipeline, documents, output)


# -- LangChain retrievers as ours -----------------------------------------------------------
def _to_lc(chunk, corpus=None) -> LCDocument:
    return LCDocument(page_content=chunk.text, id=chunk.id,
                      metadata=_common.chunk_metadata(chunk, corpus))


class LangChainRetriever(ExternalRetriever):
    """A LangChain ``BaseRetriever`` as an orchestra retriever.

    Either give a ready ``retriever`` (its documents are matched back to the corpus by the
    ``chunk_id`` metadata or by their text), or a ``factory(documents) -> BaseRetriever`` that
    builds one over the corpus chunks at ``index()`` time (then every hit maps to a chunk).
    """

    name = "langchain"

    def _make(self, chunks):
        return self.factory([_to_lc(c) for c in chunks])

    def _search(self, question: str, k: int):
        # LangChain retrievers take their size in one of three ways: search_kwargs["k"]
        # (vector stores and most community retrievers), a ``k`` field (BM25, TF-IDF), or a
        # per-call keyword. A copy with our k is searched, so the shared retriever is unchanged.
        ext, extra = self.external, {}
        fields = getattr(type(ext), "model_fields", {})
        if "search_kwargs" in fields:
            ext = ext.model_copy(update={"search_kwargs": {**(ext.search_kwargs or {}), "k": k}})
        elif "k" in fields:
            ext = ext.model_copy(update={"k": k})
        elif getattr(ext, "_expects_other_args", False):
            extra = {"k": k}
        docs = ext.invoke(question, **extra)
        return [(d.page_content, d.metadata or {}, (d.metadata or {}).get("score"))
                for d in docs]


# -- our retrievers as LangChain's ----------------------------------------------------------
class OrchestraRetriever(BaseRetriever):
    """An orchestra retriever, indexed over ``corpus``, as a LangChain ``BaseRetriever``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any
    corpus: Any
    k: int = 4
    # LangChain's convention: {"k": 8, "score_threshold": 0.2}; a per-call invoke(q, k=8)
    # overrides both.
    search_kwargs: dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _orchestra_index(self) -> "OrchestraRetriever":
        _check_search_kwargs(self.search_kwargs)
        self.retriever.index(self.corpus)
        return self

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[LCDocument]:
        opts = {"k": self.k, **self.search_kwargs, **kwargs}
        _check_search_kwargs(opts)
        threshold = opts.get("score_threshold")
        out = []
        for hit in self.retriever.retrieve(query, opts["k"]):
            if threshold is not None and hit.score < threshold:
                continue
            doc = _to_lc(hit.chunk, self.corpus)  # source, file and lines, as evidence has
            doc.metadata["score"] = hit.score
            out.append(doc)
        return out


def _check_search_kwargs(opts: dict) -> None:
    unknown = sorted(set(opts) - {"k", "score_threshold"})
    if unknown:
        raise InputError(f"OrchestraRetriever: unknown search option(s) {', '.join(unknown)}; "
                         "supported: k, score_threshold")
    k = opts.get("k", 1)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"OrchestraRetriever: k must be a positive integer, got {k!r}")


# -- the bundled embedder as LangChain Embeddings -------------------------------------------
class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 from the installed package; normalised vectors, offline."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return _common.embed(texts)

    def embed_query(self, text: str) -> list[float]:
        return _common.embed([text])[0]
