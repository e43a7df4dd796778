"""LangChain and LlamaIndex adapters, both directions.

Fast tests check the mapping logic (foreign hits back to our chunks, Runnable input forms) on
the scripted backend. The slow tests use the real embedded model, the bundled embedder, real
LangChain / LlamaIndex retrievers and a real essay with a fact planted in it.
"""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.callbacks import CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document as LCDocument  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402

from orchestra.backends.scripted import ScriptedBackend  # noqa: E402
from orchestra.corpus import Corpus, Document  # noqa: E402
from orchestra.errors import ConfigError, InputError  # noqa: E402
from orchestra.integrations.langchain import LangChainRetriever, PipelineRunnable  # noqa: E402
from orchestra.integrations.llama_index import (  # noqa: E402
    LlamaIndexRetriever,
    nodes_to_documents,
)

FACT = "The archive's secret passcode is 736194."
QUESTION = "What is the archive's secret passcode?"
ANSWER = "736194"


class KeywordRetriever(BaseRetriever):
    """A tiny real LangChain retriever: documents sharing the most words with the query."""

    docs: list
    k: int = 2

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kw) -> list[LCDocument]:
        q = set(query.lower().split())
        ranked = sorted(self.docs, key=lambda d: -len(q & set(d.page_content.lower().split())))
        return ranked[: kw.get("k", self.k)]


def scripted_corpus(texts):
    return Corpus([Document(id=f"d{i}", text=t) for i, t in enumerate(texts)],
                  ScriptedBackend().tokenizer)


# -- mapping foreign hits to our chunks (fast) ----------------------------------------------
def test_factory_hits_map_to_corpus_chunks_by_id():
    corpus = scripted_corpus(["red apples grow on trees " * 20, "blue whales swim in oceans " * 20])
    r = LangChainRetriever(factory=lambda docs: KeywordRetriever(docs=docs), chunk_tokens=20,
                           overlap=0)
    r.index(corpus)
    hits = r.retrieve("where do whales swim", 3)
    ids = {c.id for c in corpus.chunk(20, 0)}
    assert len(hits) == 3 and all(h.chunk.id in ids for h in hits)
    assert all(h.chunk.doc_id == "d1" for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_ready_retriever_hits_map_by_text_and_keep_offsets():
    text = "Intro words here. " + FACT + " Outro words there."
    corpus = scripted_corpus([text])
    outside = LCDocument(page_content="Unrelated note from another source.",
                         metadata={"source": "wiki"})
    inside = LCDocument(page_content=FACT)
    r = LangChainRetriever(KeywordRetriever(docs=[inside, outside], k=2))
    r.index(corpus)
    first, second = r.retrieve("secret passcode archive", 2)
    assert (first.chunk.doc_id, first.chunk.start) == ("d0", text.index(FACT))
    assert text[first.chunk.start:first.chunk.end] == FACT
    assert second.chunk.doc_id == "wiki" and second.chunk.text == outside.page_content


def test_adapter_needs_exactly_one_source_and_an_index():
    with pytest.raises(ConfigError, match="exactly one"):
        LangChainRetriever()
    with pytest.raises(InputError, match="index"):
        LangChainRetriever(KeywordRetriever(docs=[])).retrieve("q", 2)


def test_llama_index_nodes_become_documents():
    from llama_index.core.schema import NodeWithScore, TextNode

    docs = nodes_to_documents([TextNode(text="alpha", id_="n1", metadata={"file_name": "a.txt"}),
                               NodeWithScore(node=TextNode(text="beta", id_="n2"), score=0.5)])
    assert [(d.id, d.text, d.source) for d in docs] == [("n1", "alpha", "a.txt"),
                                                        ("n2", "beta", None)]
    with pytest.raises(InputError, match="empty"):
        nodes_to_documents([TextNode(text="  ", id_="n3")])


def test_runnable_input_forms_and_batch_grouping():
    from orchestra.pipeline import Pipeline
    from orchestra.strategies.full_context import FullContext

    backend = ScriptedBackend(lambda r: "seen: " + r.messages[-1].content.split("Question: ")[-1])
    pipe = Pipeline(backend, {"full": FullContext(backend)})
    runnable = PipelineRunnable(pipe, documents=["some document text"])
    assert runnable.invoke("q1?") == "seen: q1?"
    assert runnable.invoke({"question": "q2?", "documents": ["other text"]}) == "seen: q2?"
    assert list(runnable.stream("q3?")) == ["seen: q3?"]
    assert runnable.batch(["a?", "b?", {"question": "c?", "documents": ["x y"]}]) == [
        "seen: a?", "seen: b?", "seen: c?"]
    full = PipelineRunnable(pipe, ["text"], output="answer").invoke("q?")
    assert full.route.strategy == "full" and full.cost.model_calls == 1
    with pytest.raises(InputError, match="no documents"):
        PipelineRunnable(pipe).invoke("q?")


# -- the real model, real retrievers, a real essay (slow) -----------------------------------
@pytest.fixture(scope="module")
def essay(essays_dir):
    text = (essays_dir / "addiction.txt").read_text()[:5000]
    cut = text.index(". ", len(text) // 2) + 2
    return text[:cut] + FACT + " " + text[cut:]


def rag_pipeline(backend, retriever):
    from orchestra.pipeline import Pipeline
    from orchestra.strategies.rag import RAG

    return Pipeline(backend, {"rag": RAG(backend, retriever=retriever, top_k_tokens=400,
                                         max_tokens=24)})


@pytest.mark.slow
def test_langchain_vector_store_retriever_serves_our_rag(embedded, essay):
    from langchain_core.vectorstores import InMemoryVectorStore

    from orchestra.integrations.langchain import MiniLMEmbeddings

    retriever = LangChainRetriever(factory=lambda docs: InMemoryVectorStore.from_documents(
        docs, MiniLMEmbeddings()).as_retriever())
    answer = rag_pipeline(embedded, retriever).run(QUESTION, [essay])
    assert ANSWER in answer.text
    cited = [essay[e.start:e.end] for e in answer.evidence]
    assert any(FACT in c for c in cited)
    assert answer.cost.prompt_tokens > 0 and answer.route.strategy == "rag"


@pytest.mark.slow
def test_pipeline_as_runnable_and_backend_as_chat_model_in_a_chain(embedded, essay):
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough

    from orchestra.integrations.langchain import OrchestraChatModel, OrchestraRetriever
    from orchestra.retrievers.bm25 import BM25Retriever

    # Our Pipeline as a Runnable, composed with LangChain's own pieces.
    pipe = rag_pipeline(embedded, BM25Retriever())
    chain = PipelineRunnable(pipe, documents=[essay]) | (lambda text: text.upper())
    assert ANSWER in chain.invoke(QUESTION)

    # Our retriever and our backend inside a plain LCEL RAG chain.
    corpus = pipe.corpus([essay])
    retriever = OrchestraRetriever(retriever=BM25Retriever(), corpus=corpus, k=2)
    docs = retriever.invoke(QUESTION)
    assert any(FACT in d.page_content for d in docs)
    prompt = ChatPromptTemplate.from_messages([
        ("system", "You answer questions using only the given documents. Be brief."),
        ("human", "{context}\n\nAnswer with the passcode only.\nQuestion: {question}")])
    model = OrchestraChatModel(backend=embedded, max_tokens=24)
    rag = ({"context": retriever | (lambda ds: "\n\n".join(d.page_content for d in ds)),
            "question": RunnablePassthrough()} | prompt | model)
    msg = rag.invoke(QUESTION)
    assert ANSWER in msg.content
    usage = msg.usage_metadata
    assert 0 < usage["output_tokens"] <= 24
    assert usage["input_tokens"] > embedded.count_tokens(FACT)


@pytest.mark.slow
def test_llama_index_retriever_serves_our_rag_and_pipeline_is_a_query_engine(embedded, essay):
    from llama_index.core import VectorStoreIndex

    from orchestra.integrations.llama_index import MiniLMEmbedding, PipelineQueryEngine

    retriever = LlamaIndexRetriever(factory=lambda nodes: VectorStoreIndex(
        nodes, embed_model=MiniLMEmbedding()).as_retriever(similarity_top_k=8))
    engine = PipelineQueryEngine(rag_pipeline(embedded, retriever), [essay])
    response = engine.query(QUESTION)
    assert ANSWER in str(response)
    assert any(FACT in n.node.get_content() for n in response.source_nodes)
    assert response.metadata["route"]["strategy"] == "rag"
    assert response.metadata["cost"]["prompt_tokens"] > 0


@pytest.mark.slow
def test_backend_as_llama_index_llm_and_our_retriever_in_llama_index(embedded, essay):
    from llama_index.core import Document as LIDocument
    from llama_index.core import VectorStoreIndex
    from llama_index.core.llms import ChatMessage
    from llama_index.core.node_parser import SentenceSplitter

    from orchestra.integrations.llama_index import (
        MiniLMEmbedding,
        OrchestraLIRetriever,
        OrchestraLLM,
    )
    from orchestra.retrievers.bm25 import BM25Retriever

    llm = OrchestraLLM(backend=embedded, max_tokens=24)
    assert llm.metadata.context_window == embedded.context_window
    reply = llm.chat([ChatMessage(role="system", content="Be brief."),
                      ChatMessage(role="user", content=f"{FACT}\n\n{QUESTION}")])
    assert ANSWER in reply.message.content
    assert reply.raw["usage"]["completion_tokens"] <= 24

    # LlamaIndex's own query engine, reading with our backend.
    # Chunks MiniLM can embed whole (LlamaIndex's default 1024 tokens are cut at 256).
    index = VectorStoreIndex.from_documents([LIDocument(text=essay)],
                                            embed_model=MiniLMEmbedding(),
                                            transformations=[SentenceSplitter(chunk_size=160,
                                                                              chunk_overlap=20)])
    engine = index.as_query_engine(llm=llm, similarity_top_k=2)
    assert ANSWER in str(engine.query(QUESTION))

    # Our retriever, as a LlamaIndex retriever.
    corpus = Corpus.from_inputs([essay], embedded.tokenizer)
    hits = OrchestraLIRetriever(BM25Retriever(), corpus, k=2).retrieve(QUESTION)
    assert any(FACT in h.node.get_content() for h in hits)


def test_chat_model_and_llm_map_messages_usage_and_stop():
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
    from llama_index.core.llms import ChatMessage

    from orchestra.integrations.langchain import OrchestraChatModel
    from orchestra.integrations.llama_index import OrchestraLLM

    backend = ScriptedBackend(lambda r: "|".join(f"{m.role}:{m.content}" for m in r.messages)
                              + " STOP tail")
    model = OrchestraChatModel(backend=backend, max_tokens=50)
    msg = model.invoke([SystemMessage("s"), HumanMessage("h"), AIMessage("a"), HumanMessage("q")],
                       stop=["STOP"])
    assert msg.content == "system:s|user:h|assistant:a|user:q "
    req = backend.requests[-1]
    assert req.stop == ["STOP"] and req.max_tokens == 50 and req.temperature == 0.0
    assert msg.usage_metadata["input_tokens"] == backend.count_prompt_tokens(req.messages)
    assert msg.usage_metadata["output_tokens"] == backend.tokenizer.count(msg.content)
    assert "lc_versions" in (model.metadata or {})  # LangChain's own init hooks still ran
    with pytest.raises(InputError, match="role 'tool'"):
        model.invoke([ToolMessage("x", tool_call_id="1")])

    llm = OrchestraLLM(backend=backend, max_tokens=50)
    assert llm.metadata.context_window == backend.context_window
    reply = llm.chat([ChatMessage(role="system", content="s"),
                      ChatMessage(role="user", content="q")])
    assert reply.message.content.startswith("system:s|user:q")
    assert llm.complete("p").text.startswith("user:p")
    assert [c.delta for c in llm.stream_complete("p")] == [llm.complete("p").text]
