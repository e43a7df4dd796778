"""LangChain and LlamaIndex adapters, both directions.

Fast tests check the mapping logic (foreign hits back to our chunks, Runnable input forms) on
the scripted backend. The slow tests use the real embedded model, the bundled embedder, real
LangChain / LlamaIndex retrievers and a real essay with a fact planted in it.
"""

from __future__ import annotations

from pathlib import Path

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
    runnable = PipelineRunnable(pipe, documents=[Document(id="a", text="some document text")])
    assert runnable.invoke("q1?") == "seen: q1?"
    assert runnable.invoke({"question": "q2?", "documents": [Document(id="b", text="other text")]}) == "seen: q2?"
    assert list(runnable.stream("q3?")) == ["seen: q3?"]
    assert runnable.batch(["a?", "b?", {"question": "c?", "documents": [Document(id="c", text="x y")]}]) == [
        "seen: a?", "seen: b?", "seen: c?"]
    full = PipelineRunnable(pipe, [Document(id="d", text="text")], output="answer").invoke("q?")
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
    answer = rag_pipeline(embedded, retriever).run(QUESTION, [Document("essay", essay)])
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
    corpus = pipe.corpus([Document("essay", essay)])
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
    corpus = Corpus.from_texts([essay], embedded.tokenizer)
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
    streamed = list(llm.stream_complete("p"))
    assert "".join(c.delta for c in streamed) == streamed[-1].text == llm.complete("p").text
    assert streamed[-1].additional_kwargs["output_tokens"] > 0
    chunks = list(model.stream([HumanMessage("q")], stop=["STOP"]))
    assert "".join(c.content for c in chunks) == "user:q "
    whole = chunks[0]
    for c in chunks[1:]:
        whole = whole + c  # LangChain merges chunks, usage included
    assert whole.usage_metadata["output_tokens"] == backend.tokenizer.count("user:q ") > 0


# -- every step visible; adapters that follow the conventions (issue 15) --------------------
GETTYSBURG = Path(__file__).resolve().parent.parent / "examples" / "data" / "gettysburg_address.txt"
FIELD_Q = "What did they come to dedicate?"


def scripted_rag_pipeline(reply="a portion of that field"):
    from orchestra.pipeline import Pipeline
    from orchestra.retrievers.bm25 import BM25Retriever
    from orchestra.strategies.rag import RAG

    backend = ScriptedBackend(lambda r: reply)
    return Pipeline(backend, {"rag": RAG(backend, retriever=BM25Retriever(), top_k_tokens=300)})


def _child_events(events, root_name="orchestra_pipeline"):
    root = next(e for e in events if e["event"] == "on_chain_start" and e["name"] == root_name)
    return [e for e in events if root["run_id"] in e.get("parent_ids", [])]


def test_runnable_steps_are_child_runs_in_astream_events_and_callbacks():
    import asyncio

    from langchain_core.callbacks import BaseCallbackHandler

    runnable = PipelineRunnable(scripted_rag_pipeline(), documents=[GETTYSBURG])

    async def collect():
        return [e async for e in runnable.astream_events(FIELD_Q, version="v2")]

    children = _child_events(asyncio.run(collect()))
    kinds = [(e["event"], e["name"]) for e in children]
    assert ("on_chain_end", "route") in kinds
    assert ("on_retriever_end", "retrieve") in kinds
    assert ("on_llm_end", "read") in kinds
    route = next(e for e in children if e["event"] == "on_chain_end" and e["name"] == "route")
    assert route["data"]["output"]["strategy"] == "rag" and route["data"]["output"]["reason"]
    docs = next(e for e in children if e["event"] == "on_retriever_end")["data"]["output"]
    text = GETTYSBURG.read_text()
    assert docs and all(d.page_content == text[d.metadata["start"]:d.metadata["end"]]
                        for d in docs)
    assert all(isinstance(d.metadata["score"], float) for d in docs)
    llm_end = next(e for e in children if e["event"] == "on_llm_end")["data"]["output"]
    usage = llm_end["llm_output"]["token_usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0

    # A plain callback handler on invoke sees the same steps, as children of the pipeline run.
    class Seen(BaseCallbackHandler):
        def __init__(self):
            self.runs = []

        def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, **kw):
            self.runs.append(("chain", kw.get("name"), parent_run_id))

        def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, **kw):
            self.runs.append(("retriever", kw.get("name"), parent_run_id))

        def on_llm_start(self, serialized, prompts, *, run_id, parent_run_id=None, **kw):
            self.runs.append(("llm", kw.get("name"), parent_run_id))

    seen = Seen()
    assert runnable.invoke(FIELD_Q, config={"callbacks": [seen]}) == "a portion of that field"
    names = {(kind, name) for kind, name, parent in seen.runs if parent is not None}
    assert {("chain", "route"), ("retriever", "retrieve"), ("llm", "read")} <= names


def test_as_tool_works_in_a_tool_calling_loop():
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    tool = PipelineRunnable(scripted_rag_pipeline(), documents=[GETTYSBURG]).as_tool(
        name="ask_address", description="Answer a question about the Gettysburg Address")
    assert set(tool.args) == {"question", "documents"}
    assert tool.args["question"]["type"] == "string"
    # A scripted chat model that calls the tool, then answers from its result.
    model = GenericFakeChatModel(messages=iter([
        AIMessage(content="", tool_calls=[{"name": "ask_address", "args": {"question": FIELD_Q},
                                           "id": "call_1"}]),
        AIMessage(content="They came to dedicate a portion of that field."),
    ]))
    history = [HumanMessage(FIELD_Q)]
    ai = model.invoke(history)
    history.append(ai)
    tools = {tool.name: tool}
    for call in ai.tool_calls:
        result = tools[call["name"]].invoke(call)
        assert isinstance(result, ToolMessage) and result.tool_call_id == "call_1"
        assert result.content == "a portion of that field"
        history.append(result)
    assert "portion" in model.invoke(history).content
    # Documents given in the tool call (texts: a tool call never names local files) are read.
    runnable = PipelineRunnable(scripted_rag_pipeline(), output="answer")
    answer = runnable.as_tool().invoke({"question": FIELD_Q,
                                        "documents": [GETTYSBURG.read_text()]})
    assert answer.text == "a portion of that field" and answer.evidence


def test_langchain_documents_are_accepted_with_their_metadata():
    pipe = scripted_rag_pipeline()
    docs = [LCDocument(page_content="Four score and seven years ago.\nOur fathers.",
                       metadata={"source": "speech.txt", "year": 1863}),
            LCDocument(page_content="A second text.\nWith lines.", metadata={"page": 2})]
    runnable = PipelineRunnable(pipe, documents=docs, output="answer")
    corpus = runnable._corpus
    assert [d.metadata for d in corpus.documents] == [{"source": "speech.txt", "year": 1863},
                                                      {"page": 2}]
    assert corpus.documents[0].source == "speech.txt"
    answer = runnable.invoke("How many years ago?")
    assert any(e.source == "speech.txt" for e in answer.evidence)
    assert PipelineRunnable(pipe, output="answer").invoke(
        {"question": "How many years ago?", "documents": docs}).evidence


def test_retriever_adapters_honour_k_and_search_kwargs():
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.vectorstores import InMemoryVectorStore
    from llama_index.core import MockEmbedding, VectorStoreIndex

    from orchestra.integrations.langchain import OrchestraRetriever
    from orchestra.integrations.llama_index import OrchestraLIRetriever
    from orchestra.retrievers.bm25 import BM25Retriever

    corpus = scripted_corpus([" ".join(f"alpha word{i} fact{i}." for i in range(300))])
    n = len(corpus.chunk(20, 0))
    assert n >= 6
    # A LangChain retriever with a k field (default 2), and a vector store (search_kwargs).
    for lc in (LangChainRetriever(factory=lambda docs: KeywordRetriever(docs=docs)),
               LangChainRetriever(factory=lambda docs: InMemoryVectorStore.from_documents(
                   docs, DeterministicFakeEmbedding(size=16)).as_retriever())):
        lc.chunk_tokens, lc.overlap = 20, 0
        lc.index(corpus)
        assert len(lc.retrieve("word3 fact3", 5)) == 5
        assert len(lc.retrieve("word3 fact3", 1)) == 1
    # A LlamaIndex retriever (similarity_top_k 2 of its own).
    li = LlamaIndexRetriever(factory=lambda nodes: VectorStoreIndex(
        nodes, embed_model=MockEmbedding(embed_dim=8)).as_retriever(similarity_top_k=2),
        chunk_tokens=20, overlap=0)
    li.index(corpus)
    assert len(li.retrieve("word3", 5)) == 5 and li.external.similarity_top_k == 2
    # Ours, seen from LangChain and LlamaIndex.
    ours = OrchestraRetriever(retriever=BM25Retriever(chunk_tokens=20, overlap=0),
                              corpus=corpus, search_kwargs={"k": 3})
    assert len(ours.invoke("alpha word3")) == 3
    assert len(ours.invoke("alpha word3", k=5)) == 5
    with pytest.raises(InputError, match="fetch_k"):
        OrchestraRetriever(retriever=BM25Retriever(), corpus=corpus, search_kwargs={"fetch_k": 3})
    assert len(OrchestraLIRetriever(BM25Retriever(chunk_tokens=20, overlap=0), corpus,
                                    similarity_top_k=4)
               .retrieve("alpha word3")) == 4


def test_chat_model_counts_tokens_with_the_backend_tokenizer():
    from langchain_core.messages import HumanMessage, SystemMessage

    from orchestra.backends.base import Message
    from orchestra.integrations.langchain import OrchestraChatModel

    backend = ScriptedBackend()
    model = OrchestraChatModel(backend=backend)
    text = "Four score and seven years ago our fathers brought forth"
    assert model.get_num_tokens(text) == backend.count_tokens(text) > 0
    msgs = [SystemMessage("Be brief."), HumanMessage(text)]
    assert model.get_num_tokens_from_messages(msgs) == backend.count_prompt_tokens(
        [Message(role="system", content="Be brief."), Message(role="user", content=text)])


def test_query_engine_dispatches_step_events_and_cites_files():
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler

    from orchestra.integrations.llama_index import (
        OrchestraStepEndEvent,
        OrchestraStepStartEvent,
        PipelineQueryEngine,
    )

    class Collect(BaseEventHandler):
        events: list = []

        @classmethod
        def class_name(cls) -> str:
            return "Collect"

        def handle(self, event, **kwargs):
            self.events.append(event)

    handler = Collect(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    try:
        engine = PipelineQueryEngine(scripted_rag_pipeline(), [GETTYSBURG])
        response = engine.query(FIELD_Q)
        ends = [e for e in handler.events if isinstance(e, OrchestraStepEndEvent)]
        starts = [e for e in handler.events if isinstance(e, OrchestraStepStartEvent)]
        assert {"route", "retrieve", "read"} <= {e.step for e in ends}
        assert {"retrieval", "model", "route"} <= {e.kind for e in ends}
        read = next(e for e in ends if e.step == "read")
        assert read.detail["prompt_tokens"] > 0 and read.seconds >= 0
        assert len(starts) == len(ends) and all(e.span_id for e in ends)
        assert response.source_nodes
        for n in response.source_nodes:
            assert n.node.metadata["file_name"] == "gettysburg_address.txt"
            assert n.node.metadata["file_path"] == str(GETTYSBURG)
            assert n.node.metadata["line_start"] >= 1

        streamed = PipelineQueryEngine(scripted_rag_pipeline(), [GETTYSBURG], streaming=True)
        sresp = streamed.query(FIELD_Q)
        assert "".join(sresp.response_gen) == "a portion of that field"
        assert sresp.metadata["route"]["strategy"] == "rag"
        assert sresp.source_nodes[0].node.metadata["file_name"] == "gettysburg_address.txt"
    finally:
        root.event_handlers.remove(handler)


@pytest.mark.slow
def test_runnable_streams_real_tokens_and_shows_steps(embedded):
    import asyncio

    from orchestra.pipeline import Pipeline
    from orchestra.retrievers.bm25 import BM25Retriever
    from orchestra.strategies.rag import RAG

    pipe = Pipeline(embedded, {"rag": RAG(embedded, retriever=BM25Retriever(), top_k_tokens=300,
                                          max_tokens=16)})
    runnable = PipelineRunnable(pipe, documents=[GETTYSBURG])
    chunks = list(runnable.stream(FIELD_Q))
    assert len(chunks) > 1 and all(isinstance(c, str) for c in chunks)
    assert "".join(chunks).strip() == runnable.invoke(FIELD_Q).strip()

    async def collect():
        return [e async for e in runnable.astream_events(FIELD_Q, version="v2")]

    events = asyncio.run(collect())
    streamed = [e for e in events if e["event"] == "on_chain_stream"
                and e["name"] == "orchestra_pipeline"]
    assert len(streamed) > 1
    names = {(e["event"], e["name"]) for e in _child_events(events)}
    assert {("on_chain_end", "route"), ("on_retriever_end", "retrieve"),
            ("on_llm_end", "read")} <= names


def _yaml_pipeline(retriever_yaml: str, allow=()):
    from orchestra.pipeline import Pipeline

    text = f"""
backend: {{type: "orchestra.backends.scripted:ScriptedBackend",
          replies: {["a portion of that field"] * 20}}}
retrievers:
  foreign: {retriever_yaml}
strategies:
  rag: {{type: rag, retriever: foreign, top_k_tokens: 300}}
router: {{type: fixed, strategy: rag}}
"""
    return Pipeline.from_yaml_text(text, allow_modules=("orchestra.backends.scripted", *allow),
                                   source="foreign.yaml")


def test_pipeline_file_names_a_langchain_retriever_through_the_allowlist():
    pytest.importorskip("langchain_community")
    pytest.importorskip("sklearn")
    spec = ('{type: langchain, factory: "langchain_community.retrievers:TFIDFRetriever'
            '.from_documents", factory_options: {k: 2}, chunk_tokens: 64, overlap: 0}')
    with pytest.raises(ConfigError, match="has not allowed"):
        _yaml_pipeline(spec)
    pipe = _yaml_pipeline(spec, allow=["langchain_community.retrievers"])
    answer = pipe.run(FIELD_Q, [GETTYSBURG])
    text = GETTYSBURG.read_text()
    assert answer.evidence and any("dedicate a portion" in text[e.start:e.end]
                                   for e in answer.evidence)
    rag = pipe.strategies["rag"]
    assert type(rag.retriever.external).__name__ == "TFIDFRetriever"
    assert len(rag.retriever.retrieve(FIELD_Q, 5)) == 5  # k honoured over its own k=2


def test_pipeline_file_names_a_llama_index_retriever_through_the_allowlist():
    spec = '{type: llama_index, factory: "foreign_retrievers:summary_retriever"}'
    with pytest.raises(ConfigError, match="foreign_retrievers"):
        _yaml_pipeline(spec)
    pipe = _yaml_pipeline(spec, allow=["foreign_retrievers"])
    answer = pipe.run(FIELD_Q, [GETTYSBURG])
    assert answer.evidence and all(e.source == str(GETTYSBURG) for e in answer.evidence)
    with pytest.raises(ConfigError, match="import path"):
        _yaml_pipeline('{type: llama_index, factory: "no_colon_here"}', allow=["no_colon_here"])


@pytest.mark.slow
def test_chat_model_and_llm_stream_real_tokens(embedded):
    from langchain_core.messages import HumanMessage

    from orchestra.integrations.langchain import OrchestraChatModel
    from orchestra.integrations.llama_index import OrchestraLLM

    model = OrchestraChatModel(backend=embedded, max_tokens=16)
    prompt = [HumanMessage("Name three colours.")]
    chunks = list(model.stream(prompt))
    assert sum(1 for c in chunks if c.content) > 1
    assert "".join(c.content for c in chunks) == model.invoke(prompt).content
    deltas = [r.delta for r in OrchestraLLM(backend=embedded, max_tokens=16)
              .stream_complete("Name three colours.") if r.delta]
    assert len(deltas) > 1


# -- issue 22: the conventions LangChain and LlamaIndex users rely on ------------------------
def test_batch_with_return_exceptions_gives_one_result_or_error_per_input():
    """One empty question fails only its own item (run_batch used to check every question
    first and fail them all)."""
    from orchestra.pipeline import Pipeline
    from orchestra.strategies.full_context import FullContext

    backend = ScriptedBackend(lambda r: "seen: " + r.messages[-1].content.split("Question: ")[-1])
    pipe = Pipeline(backend, {"full": FullContext(backend)})
    runnable = PipelineRunnable(pipe, documents=[Document(id="a", text="some document text")])
    out = runnable.batch(["a?", "   ", "c?"], return_exceptions=True)
    assert out[0] == "seen: a?" and out[2] == "seen: c?"
    assert isinstance(out[1], InputError) and "empty" in str(out[1])
    with pytest.raises(InputError, match="empty"):
        runnable.batch(["a?", "   "])


def test_batch_runs_inputs_concurrently():
    """Runnable.batch's thread pool: a backend that serves requests concurrently gets them
    at the same time (each call here sleeps 0.3 s; four in sequence would take 1.2 s)."""
    import threading
    import time

    from orchestra.pipeline import Pipeline
    from orchestra.strategies.full_context import FullContext

    state = {"now": 0, "most": 0}
    lock = threading.Lock()

    class Concurrent(ScriptedBackend):  # a backend serving requests at once (openai, vLLM)
        def generate(self, requests):
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
            time.sleep(0.3)
            with lock:
                state["now"] -= 1
            return super().generate(requests)

    backend = Concurrent(lambda r: "ok")
    pipe = Pipeline(backend, {"full": FullContext(backend)})
    runnable = PipelineRunnable(pipe, documents=[Document(id="a", text="some document text")])
    t0 = time.monotonic()
    assert runnable.batch([f"q{i}?" for i in range(4)], {"max_concurrency": 4}) == ["ok"] * 4
    assert state["most"] > 1 and time.monotonic() - t0 < 1.0


def test_runnable_output_schema_is_the_answer():
    from orchestra.pipeline import Pipeline
    from orchestra.strategies.full_context import FullContext

    backend = ScriptedBackend(["x"])
    pipe = Pipeline(backend, {"full": FullContext(backend)})
    schema = PipelineRunnable(pipe, output="answer").get_output_jsonschema()
    assert {"text", "route", "evidence", "cost"} <= set(schema["properties"])
    assert PipelineRunnable(pipe).get_output_jsonschema()["type"] == "string"


def test_runnable_tokens_reach_on_llm_new_token():
    from langchain_core.callbacks import BaseCallbackHandler

    class Tokens(BaseCallbackHandler):
        def __init__(self):
            self.tokens = []

        def on_llm_new_token(self, token, **kw):
            self.tokens.append(token)

    handler = Tokens()
    runnable = PipelineRunnable(scripted_rag_pipeline(), documents=[GETTYSBURG])
    assert runnable.invoke(FIELD_Q, {"callbacks": [handler]}) == "a portion of that field"
    assert "".join(handler.tokens) == "a portion of that field"
    handler.tokens.clear()
    assert "".join(runnable.stream(FIELD_Q, {"callbacks": [handler]})) == "a portion of that field"
    assert "".join(handler.tokens) == "a portion of that field"


def test_retriever_adapters_carry_file_and_lines_like_evidence():
    from orchestra.integrations.langchain import OrchestraRetriever
    from orchestra.integrations.llama_index import OrchestraLIRetriever
    from orchestra.retrievers.bm25 import BM25Retriever

    pipe = scripted_rag_pipeline()
    corpus = pipe.corpus([GETTYSBURG])
    answer = pipe.run(FIELD_Q, corpus)
    ev = answer.evidence[0]
    lc = OrchestraRetriever(retriever=BM25Retriever(), corpus=corpus, k=2).invoke(FIELD_Q)
    li = OrchestraLIRetriever(BM25Retriever(), corpus, k=2).retrieve(FIELD_Q)
    for meta in [d.metadata for d in lc] + [n.node.metadata for n in li]:
        assert meta["source"] == meta["file_path"] == str(GETTYSBURG) == ev.source
        assert meta["file_name"] == "gettysburg_address.txt"
        assert 1 <= meta["line_start"] <= meta["line_end"]
    top = lc[0].metadata
    text = GETTYSBURG.read_text()
    assert top["line_start"] == text.count("\n", 0, top["start"]) + 1


def test_query_engine_formatted_sources_show_file_and_lines():
    from orchestra.integrations.llama_index import PipelineQueryEngine

    response = PipelineQueryEngine(scripted_rag_pipeline(), [GETTYSBURG]).query(FIELD_Q)
    shown = response.get_formatted_sources()
    ev = response.metadata["answer"].evidence
    assert f"gettysburg_address.txt:{ev[0].line_start}-{ev[0].line_end}" in shown
    assert ev[0].chunk_id not in shown
