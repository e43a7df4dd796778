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

from typing import Any, Iterator, Optional

try:
    import langchain_core  # noqa: F401
except ImportError:
    raise ImportError("orchestra.integrations.langchain needs langchain-core: "
                      "pip install 'orchestra-longdoc[langchain]'") from None

from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ConfigDict, Field, model_validator

from orchestra.errors import InputError
from orchestra.integrations import _common
from orchestra.integrations.retriever_adapter import ExternalRetriever

__all__ = [
    "OrchestraChatModel", "PipelineRunnable", "as_runnable", "LangChainRetriever",
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
        return {"backend": self.backend.describe(), "max_tokens": self.max_tokens,
                "temperature": self.temperature}

    def _run(self, messages: list[BaseMessage], stop: Optional[list[str]], **kwargs: Any):
        ours = [_common.to_message(m.type, m.content, f"message {i}")
                for i, m in enumerate(messages)]
        return _common.run_one(self.backend, ours, kwargs.get("max_tokens", self.max_tokens),
                               kwargs.get("temperature", self.temperature), stop)

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
        # Backends return whole replies; the stream is that reply as one chunk.
        res = self._run(messages, stop, **kwargs)
        chunk = ChatGenerationChunk(message=self._message(res, AIMessageChunk))
        if run_manager:
            run_manager.on_llm_new_token(res.text, chunk=chunk)
        yield chunk


# -- a Pipeline as a Runnable ---------------------------------------------------------------
class PipelineRunnable(Runnable):
    """A Pipeline as a LangChain Runnable.

    Input: a question (``str``) over the documents given here, or a dict
    ``{"question": ..., "documents": ...}``. Output: the answer text, or the whole
    ``orchestra.types.Answer`` with ``output="answer"``.
    """

    def __init__(self, pipeline, documents=None, output: str = "text"):
        if output not in ("text", "answer"):
            raise InputError(f"output must be 'text' or 'answer', not {output!r}")
        self.pipeline = pipeline
        self.output = output
        # Built once so retrieval indexes are reused across calls.
        self._corpus = pipeline.corpus(documents) if documents is not None else None

    @property
    def InputType(self) -> Any:  # noqa: N802  (LangChain's name)
        return str | dict

    def _split(self, value: Any):
        if isinstance(value, str):
            question, corpus = value, self._corpus
        elif isinstance(value, dict) and "question" in value:
            question = value["question"]
            docs = value.get("documents")
            corpus = self.pipeline.corpus(docs) if docs is not None else self._corpus
        else:
            raise InputError("the input must be a question (str) or a dict with 'question' "
                             f"(and 'documents'), not {type(value).__name__}")
        if corpus is None:
            raise InputError("no documents: give them to PipelineRunnable(documents=...) or "
                             "in the input as {'question': ..., 'documents': ...}")
        return question, corpus

    def _out(self, answer):
        return answer if self.output == "answer" else answer.text

    def _invoke(self, value: Any) -> Any:
        question, corpus = self._split(value)
        return self._out(self.pipeline.run(question, corpus))

    def invoke(self, input: Any, config: Optional[RunnableConfig] = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._invoke, input, config, run_type="chain")

    def _batch(self, values: list[Any]) -> list[Any]:
        split = [self._split(v) for v in values]
        out: list[Any] = [None] * len(values)
        # Questions over the same corpus go to run_batch together (one index, one batch).
        groups: dict[int, list[int]] = {}
        for i, (_, corpus) in enumerate(split):
            groups.setdefault(id(corpus), []).append(i)
        for idx in groups.values():
            answers = self.pipeline.run_batch([split[i][0] for i in idx], split[idx[0]][1])
            for i, a in zip(idx, answers):
                out[i] = self._out(a)
        return out

    def batch(self, inputs: list[Any], config=None, *, return_exceptions: bool = False,
              **kwargs: Any) -> list[Any]:
        if not inputs:
            return []
        return self._batch_with_config(self._batch, inputs, config,
                                       return_exceptions=return_exceptions, run_type="chain")


def as_runnable(pipeline, documents=None, output: str = "text") -> PipelineRunnable:
    return PipelineRunnable(pipeline, documents, output)


# -- LangChain retrievers as ours -----------------------------------------------------------
def _to_lc(chunk) -> LCDocument:
    return LCDocument(page_content=chunk.text, id=chunk.id,
                      metadata={"chunk_id": chunk.id, "doc_id": chunk.doc_id,
                                "start": chunk.start, "end": chunk.end})


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
        # Retrievers that take a per-call k (vector stores) get it; others return their own k.
        try:
            docs = self.external.invoke(question, k=k)
        except TypeError:
            docs = self.external.invoke(question)
        return [(d.page_content, d.metadata or {}, d.metadata.get("score")) for d in docs]


# -- our retrievers as LangChain's ----------------------------------------------------------
class OrchestraRetriever(BaseRetriever):
    """An orchestra retriever, indexed over ``corpus``, as a LangChain ``BaseRetriever``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any
    corpus: Any
    k: int = 4

    @model_validator(mode="after")
    def _orchestra_index(self) -> "OrchestraRetriever":
        self.retriever.index(self.corpus)
        return self

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[LCDocument]:
        out = []
        for hit in self.retriever.retrieve(query, self.k):
            doc = _to_lc(hit.chunk)
            doc.metadata["score"] = hit.score
            out.append(doc)
        return out


# -- the bundled embedder as LangChain Embeddings -------------------------------------------
class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 from the installed package; normalised vectors, offline."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return _common.embed(texts)

    def embed_query(self, text: str) -> list[float]:
        return _common.embed([text])[0]
