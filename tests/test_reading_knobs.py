"""The reading knobs: passage order, structure-aware chunks, chunk count, query-aware
compression, reader templates and system prompts, decoding guards."""

from __future__ import annotations

import pytest

from orchestra.backends.base import GenerationRequest, Message
from orchestra.backends.scripted import ScriptedBackend
from orchestra.corpus import Corpus, Document, structured_spans
from orchestra.errors import ConfigError, InputError
from orchestra.prompts import READER_TEMPLATES, RULER_QA, SYSTEM_PROMPTS
from orchestra.retrievers.base import ScoredChunk
from orchestra.retrievers.bm25 import BM25Retriever
from orchestra.retrievers.compress import compress, sentence_spans
from orchestra.retrievers.reorder import POLICIES, reorder
from orchestra.strategies.full_context import FullContext
from orchestra.strategies.rag import RAG


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path / "cache"))


def _scored(n: int) -> list[ScoredChunk]:
    from orchestra.corpus import Chunk

    return [ScoredChunk(Chunk(id=f"c{i}", doc_id="d", index=i, order=i, start=i, end=i + 1,
                              text=f"rank{i + 1}", n_tokens=1), score=1.0 - i / 10)
            for i in range(n)]


# -- reorder -----------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5, 6])
def test_edges_last_puts_rank_one_next_to_the_question_and_rank_two_first(n):
    out = [s.text for s in reorder(_scored(n), "edges_last")]
    assert out[-1] == "rank1"
    if n > 1:
        assert out[0] == "rank2"
    assert sorted(out) == sorted(f"rank{i + 1}" for i in range(n))  # nothing lost


def test_edges_last_matches_langchain_long_context_reorder_for_even_counts():
    from langchain_community.document_transformers import LongContextReorder
    from langchain_core.documents import Document as LCDocument

    items = _scored(6)
    lc = LongContextReorder().transform_documents([LCDocument(page_content=s.text) for s in items])
    assert [d.page_content for d in lc] == [s.text for s in reorder(items, "edges_last")]


def test_score_last_is_best_last_and_unknown_policies_are_named():
    assert [s.text for s in reorder(_scored(3), "score_last")] == ["rank3", "rank2", "rank1"]
    with pytest.raises(ConfigError, match="edges_last"):
        reorder(_scored(3), "rank1_last")
    assert {"edges_last", "score_last", "edges", "document_order", "score"} <= set(POLICIES)


def test_rag_prompt_has_the_best_chunk_right_before_the_question():
    b = ScriptedBackend(["4217"])
    docs = [Document("a", "The keeper of the Quorvath lighthouse counted 4217 gulls."),
            Document("b", "Quorvath harbour boats were painted blue."),
            Document("c", "The lighthouse lamp burned whale oil."),
            Document("d", "Bread and roads and weather.")]
    rag = RAG(b, retriever=BM25Retriever(chunk_tokens=20, overlap=0), top_k_tokens=60,
              reorder="edges_last")
    rag.answer("How many gulls did the Quorvath keeper count?", Corpus(docs, b.tokenizer))
    prompt = b.requests[0].messages[-1].content
    passages = [p for p in prompt.split("\n\n") if any(d.text == p for d in docs)]
    assert len(passages) >= 2
    assert "4217 gulls" in passages[-1]  # rank 1: the last passage, next to the question


# -- structure-aware chunks ---------------------------------------------------------------
TEXT = ("Normans came from Normandy. They spoke French! Were they Vikings?\n\n"
        "The second paragraph is here, and it talks about castles and horses.\n"
        "A line of its own.\n\n\n" + " ".join(f"Sentence number {i} ends here." for i in range(40)))


def test_structure_chunks_keep_exact_offsets_and_cut_at_boundaries():
    b = ScriptedBackend()
    corpus = Corpus([Document("d", TEXT)], b.tokenizer)
    chunks = corpus.chunk(24, 4, boundaries="structure")
    assert len(chunks) > 3
    for c in chunks:
        assert TEXT[c.start:c.end] == c.text and c.text == c.text.strip()
        assert c.n_tokens <= 24
        # each chunk ends at a sentence end, or at a word when a sentence is longer than 24
        assert c.text[-1] in ".!?" or c.n_tokens == 24 or c.end == len(TEXT)
    # the first paragraph stays whole, with its sentences
    assert chunks[0].text.startswith("Normans came from Normandy. They spoke French!")
    # every character of the text (but whitespace) is in some chunk
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert all(i in covered for i, ch in enumerate(TEXT) if not ch.isspace())
    # ids are stable and chunkings are memoised separately from token windows
    assert corpus.chunk(24, 4, boundaries="structure") is chunks
    assert corpus.chunk(24, 4) is not chunks


def test_structure_spans_match_the_splitter_library():
    b = ScriptedBackend()
    spans = structured_spans(TEXT, 30, 0, b.tokenizer.count)
    assert [TEXT[a:e] for a, e in spans][0].endswith("Were they Vikings?")
    assert spans == sorted(spans)


def test_retriever_chunking_option_validates_and_round_trips():
    r = BM25Retriever(chunk_tokens=32, overlap=0, chunking="structure")
    assert r.spec()["chunking"] == "structure"
    assert BM25Retriever(**r.spec()).spec() == r.spec()
    with pytest.raises(ConfigError, match="chunking must be one of tokens, structure"):
        BM25Retriever(chunking="sentences")
    with pytest.raises(InputError, match="boundaries"):
        Corpus([Document("d", TEXT)], ScriptedBackend().tokenizer).chunk(20, 0, "words")


# -- number of chunks ----------------------------------------------------------------------
def test_top_k_caps_the_chunks_read():
    b = ScriptedBackend(["x", "y"])
    words = ["red", "blue", "green", "black", "white", "pink", "grey", "gold"]
    docs = [Document(f"d{i}", f"Gulls near the lighthouse were {w} in year {1900 + i}.")
            for i, w in enumerate(words)]
    corpus = Corpus(docs, b.tokenizer)
    kw = dict(retriever=BM25Retriever(chunk_tokens=16, overlap=0), top_k_tokens=200)
    assert len(RAG(b, **kw).answer("gulls lighthouse", corpus).evidence) == 8
    assert len(RAG(b, top_k=3, **kw).answer("gulls lighthouse", corpus).evidence) == 3
    with pytest.raises(ConfigError, match="top_k must be a positive integer"):
        RAG(b, top_k=0, **kw)


# -- query-aware compression ---------------------------------------------------------------
PASSAGE = ("The castle was built in 1066 by the duke. Its walls are grey. The moat is dry. "
           "Tourists visit in summer. The duke's horse was called Bayard.")


def test_sentence_spans_are_exact():
    spans = sentence_spans(PASSAGE)
    assert [PASSAGE[a:e] for a, e in spans] == [
        "The castle was built in 1066 by the duke.", "Its walls are grey.", "The moat is dry.",
        "Tourists visit in summer.", "The duke's horse was called Bayard."]


def test_compression_keeps_the_answer_sentence_with_exact_offsets():
    b = ScriptedBackend(["Bayard"])
    filler = " ".join(f"Grey stones number {i} lie in the field." for i in range(12))
    docs = [Document("castle", filler + " " + PASSAGE), Document("other", filler)]
    corpus = Corpus(docs, b.tokenizer)
    rag = RAG(b, retriever=BM25Retriever(chunk_tokens=400, overlap=0), top_k_tokens=600,
              compress=True, compress_tokens=20)
    ans = rag.answer("What was the name of the duke's horse?", corpus)
    prompt = b.requests[0].messages[-1].content
    assert "The duke's horse was called Bayard." in prompt
    assert "Grey stones number 3" not in prompt  # unrelated sentences were dropped
    assert b.requests[0].messages[-1].content.count("Grey stones") <= 1
    for e in ans.evidence:
        cited = corpus.document(e.doc_id).text[e.start:e.end]
        assert cited in prompt
    assert any("Bayard" in corpus.document(e.doc_id).text[e.start:e.end] for e in ans.evidence)
    step = ans.trace.steps[0].detail
    assert step["selected_tokens"] <= 20 and step["pieces"] >= 1


def test_compress_merges_adjacent_sentences_and_respects_the_budget():
    b = ScriptedBackend()
    corpus = Corpus([Document("d", PASSAGE)], b.tokenizer)
    chunk = corpus.chunk(200, 0)[0]
    out = compress("When was the castle built by the duke? Its walls?", [ScoredChunk(chunk, 1.0)],
                   budget=40, count=b.tokenizer.count, documents={"d": PASSAGE})
    texts = [p.text for p in out]
    assert texts[0].startswith("The castle was built in 1066 by the duke. Its walls are grey.")
    assert sum(b.tokenizer.count(t) + 1 for t in texts) <= 40
    for p in out:
        assert PASSAGE[p.chunk.start:p.chunk.end] == p.text


def test_compress_options_validate_and_round_trip():
    b = ScriptedBackend()
    rag = RAG(b, retriever="bm25", compress=True, compress_tokens=256, top_k=4,
              reorder="edges_last")
    opts = rag.spec()
    assert (opts["compress"], opts["compress_tokens"], opts["top_k"]) == (True, 256, 4)
    assert RAG(b, **opts).spec() == opts
    with pytest.raises(ConfigError, match="compress must be true or false"):
        RAG(b, compress="yes")
    with pytest.raises(ConfigError, match="compress_tokens must be a positive integer"):
        RAG(b, compress=True, compress_tokens=0)


# -- reader templates, system prompts, passage formats ------------------------------------
def test_ruler_template_default_system_and_numbered_passages():
    b = ScriptedBackend(["x"])
    corpus = Corpus([Document("alpha", "Alpha text."), Document("beta", "Beta text.")],
                    b.tokenizer)
    fc = FullContext(b, reader_template="ruler", reader_system="default",
                     passage_format="numbered")
    rag = RAG(b, retriever="bm25", reader_template="ruler", reader_system="default",
              passage_format="numbered", top_k_tokens=200)
    b._replies = ["x", "y"]
    fc.answer("What?", corpus)
    rag.answer("Alpha text?", corpus)
    for req in b.requests:
        # no system message: the model's chat template supplies its own default
        assert [m.role for m in req.messages] == ["user"]
        text = req.messages[0].content
        assert text.startswith(RULER_QA.split("{context}")[0])
        assert text.rstrip().endswith("Answer:")
        assert text.count("Only give me the answer") == 2  # before and after the documents
    assert "Document 1:\nAlpha text." in b.requests[1].messages[0].content


def test_reader_library_options_validate_and_round_trip():
    b = ScriptedBackend()
    for t in READER_TEMPLATES:
        for s in SYSTEM_PROMPTS:
            rag = RAG(b, retriever="bm25", reader_template=t, reader_system=s,
                      passage_format="titled", repetition_penalty=1.2, no_repeat_ngram_size=3)
            assert RAG(b, **rag.spec()).spec() == rag.spec()
    with pytest.raises(ConfigError, match="reader_template must be one of orchestra, ruler"):
        RAG(b, reader_template="fancy")
    with pytest.raises(ConfigError, match="reader_system must be one of"):
        FullContext(b, reader_system="pirate")
    with pytest.raises(ConfigError, match="passage_format must be one of plain, numbered, titled"):
        FullContext(b, passage_format="bullets")
    # literal prompts still override a named template
    fc = FullContext(b, reader_template="ruler", prompts={"reader": "{context}\nQ: {question}"})
    assert fc.reader_request("C", "Q?").messages[-1].content == "C\nQ: Q?"


# -- decoding guards -----------------------------------------------------------------------
def test_decoding_guards_validate_and_reach_the_request():
    b = ScriptedBackend(["x"])
    fc = FullContext(b, repetition_penalty=1.3, no_repeat_ngram_size=4)
    fc.answer("What?", Corpus([Document("d", "Text.")], b.tokenizer))
    req = b.requests[0]
    assert (req.repetition_penalty, req.no_repeat_ngram_size) == (1.3, 4)
    for bad in (0.9, 2.5, "1.1", True):
        with pytest.raises(ConfigError, match="repetition_penalty must be a number in"):
            FullContext(b, repetition_penalty=bad)
    for bad in (-1, 2.0, True):
        with pytest.raises(ConfigError, match="no_repeat_ngram_size must be an integer >= 0"):
            FullContext(b, no_repeat_ngram_size=bad)
    with pytest.raises(ValueError):
        GenerationRequest(messages=[Message(role="user", content="x")], repetition_penalty=0.5)


def test_backends_that_cannot_ban_ngrams_refuse_them():
    from orchestra.backends.vllm_backend import sampling_kwargs

    req = GenerationRequest(messages=[Message(role="user", content="x")],
                            repetition_penalty=1.2)
    assert sampling_kwargs(req)["repetition_penalty"] == 1.2
    with pytest.raises(ConfigError, match="no_repeat_ngram_size"):
        sampling_kwargs(req.model_copy(update={"no_repeat_ngram_size": 3}))


@pytest.mark.slow
def test_decoding_guards_reach_the_models_generate_call(embedded, monkeypatch):
    seen = []
    real = embedded.model.generate

    def spy(*a, **kw):
        seen.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(embedded.model, "generate", spy)
    loop = "Repeat after me: the invention of the invention of the invention of the"
    plain = embedded.generate_one(GenerationRequest.user(loop, max_tokens=24))
    guarded = embedded.generate_one(GenerationRequest.user(loop, max_tokens=24,
                                                           repetition_penalty=1.3,
                                                           no_repeat_ngram_size=3))
    assert "repetition_penalty" not in seen[0] and "no_repeat_ngram_size" not in seen[0]
    assert seen[1]["repetition_penalty"] == 1.3 and seen[1]["no_repeat_ngram_size"] == 3
    # no 3-gram repeats in the guarded reply's tokens
    ids = embedded.tokenizer.encode(guarded.text)
    grams = [tuple(ids[i:i + 3]) for i in range(len(ids) - 2)]
    assert len(grams) == len(set(grams))
    assert plain.text != guarded.text or len(set(grams)) == len(grams)
