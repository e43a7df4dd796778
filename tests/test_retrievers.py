"""Retrievers on real components: bm25s, MiniLM + FAISS, networkx; reordering; index caching."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import data_path
from orchestra.backends.scripted import RegexTokenizer
from orchestra.corpus import Chunk, Corpus, Document
from orchestra.errors import ConfigError, InputError
from orchestra.retrievers.base import IndexCacheWarning, ScoredChunk, make_retriever, score_shape
from orchestra.spec import entry
from orchestra.retrievers.bm25 import BM25Retriever
from orchestra.retrievers.graph import GraphRetriever
from orchestra.retrievers.hybrid import HybridRetriever
from orchestra.retrievers.reorder import reorder
from squad_haystack import hit, squad_cases


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def smol_tokenizer():
    """The embedded model's tokenizer alone (chunk sizes as the reader counts them)."""
    from transformers import AutoTokenizer

    from orchestra.backends.embedded import embedded_model_dir
    from orchestra.backends.local import HFTokenizer

    return HFTokenizer(AutoTokenizer.from_pretrained(embedded_model_dir()))


@pytest.fixture(scope="module")
def squad_50(smol_tokenizer):
    # 50 questions from different articles, 10 per ~16k-token haystack: each gold paragraph sits
    # among ~100 paragraphs of other articles, and indexing costs a fifth.
    return squad_cases(data_path("ruler", "squad.json"), 50, 16_000, smol_tokenizer.count,
                       seed=3, per_haystack=10)


def _recall_at_5(retriever_factory, cases, tokenizer) -> float:
    hits, corpora = 0, {}
    for c in cases:
        if c.text not in corpora:
            corpora[c.text] = retriever_factory().index(Corpus([Document("hay", c.text)], tokenizer))
        res = corpora[c.text].retrieve(c.question, 5)
        hits += any(hit(c, s.chunk.start, s.chunk.end, s.chunk.text) for s in res)
    return hits / len(cases)


def _essay_corpus(extra: list[Document] = (), n_docs: int = 6) -> Corpus:
    essays = sorted(data_path("needle_haystack", "PaulGrahamEssays").glob("*.txt"))[:n_docs]
    docs = [Document(p.stem, p.read_text()[:6000]) for p in essays]
    return Corpus(docs + list(extra), RegexTokenizer())


# -- recall on real data ---------------------------------------------------------------------
def test_squad_haystacks_are_the_promised_size(squad_50, smol_tokenizer):
    assert len(squad_50) == 50
    n_tokens = smol_tokenizer.count(squad_50[0].text)
    assert 15_000 <= n_tokens <= 17_500
    assert len({c.question for c in squad_50}) == 50


def test_bm25_recall_at_5_on_squad_haystacks(squad_50, smol_tokenizer):
    recall = _recall_at_5(lambda: BM25Retriever(), squad_50, smol_tokenizer)
    assert recall >= 0.9, recall


@pytest.mark.slow
def test_dense_recall_at_5_on_squad_haystacks(squad_50, smol_tokenizer):
    from orchestra.retrievers.dense import DenseRetriever

    recall = _recall_at_5(lambda: DenseRetriever(show_progress=False), squad_50, smol_tokenizer)
    assert recall >= 0.9, recall


# -- BM25 behaviour --------------------------------------------------------------------------
def test_bm25_ranks_the_matching_chunk_first_and_returns_nothing_for_unknown_terms():
    corpus = _essay_corpus([Document("zeta", "The Quorvath lighthouse keeper counted 4217 gulls.")])
    r = BM25Retriever(chunk_tokens=64, overlap=8).index(corpus)
    top = r.retrieve("How many gulls did the Quorvath lighthouse keeper count?", 3)
    assert top[0].chunk.doc_id == "zeta"
    assert [s.score for s in top] == sorted((s.score for s in top), reverse=True)
    assert r.retrieve("xyzzyplugh frobnicate", 5) == []
    assert r.retrieve("the and of", 5) == []  # stopwords only: nothing to match


def test_retrieve_before_index_and_bad_arguments_are_clear_errors():
    r = BM25Retriever()
    with pytest.raises(InputError, match="no index"):
        r.retrieve("anything", 3)
    r.index(_essay_corpus(n_docs=1))
    with pytest.raises(InputError, match="empty"):
        r.retrieve("   ", 3)
    with pytest.raises(InputError, match="positive"):
        r.retrieve("startups", 0)
    with pytest.raises(InputError, match="Corpus"):
        r.index(["not a corpus"])
    with pytest.raises(ConfigError, match="overlap"):
        BM25Retriever(chunk_tokens=32, overlap=32)
    with pytest.raises(ConfigError, match="type"):
        make_retriever({"chunk_tokens": 5})
    with pytest.raises(ConfigError, match="unknown retriever"):
        make_retriever("nonesuch")


def test_k_larger_than_the_corpus_returns_every_matching_chunk():
    corpus = Corpus([Document("a", "alpha beta gamma. " * 20)], RegexTokenizer())
    r = BM25Retriever(chunk_tokens=16, overlap=0).index(corpus)
    assert len(r.retrieve("alpha", 1000)) == len(r.chunks)


# -- persistence -----------------------------------------------------------------------------
def test_bm25_index_is_reused_and_a_corrupt_file_is_rebuilt_with_a_warning(monkeypatch):
    corpus = _essay_corpus(n_docs=3)
    first = BM25Retriever().index(corpus)
    assert not first.loaded_from_cache
    expected = [s.id for s in first.retrieve("how to start a startup", 5)]
    path = first.index_path(corpus, first._key)
    assert path.exists()

    built = []
    real = BM25Retriever._build
    monkeypatch.setattr(BM25Retriever, "_build",
                        lambda self, *a: built.append(1) or real(self, *a))
    second = BM25Retriever().index(Corpus(corpus.documents, RegexTokenizer()))
    assert second.loaded_from_cache and built == []
    assert [s.id for s in second.retrieve("how to start a startup", 5)] == expected

    for damage in (b"not an npz file", path.read_bytes()[: path.stat().st_size // 2]):
        path.write_bytes(damage)
        with pytest.warns(IndexCacheWarning, match="corrupt or partial"):
            third = BM25Retriever().index(Corpus(corpus.documents, RegexTokenizer()))
        assert not third.loaded_from_cache and built
        assert [s.id for s in third.retrieve("how to start a startup", 5)] == expected
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the rebuilt file is sound again
            assert BM25Retriever().index(Corpus(corpus.documents, RegexTokenizer())).loaded_from_cache


def test_other_settings_or_corpus_get_their_own_index():
    corpus = _essay_corpus(n_docs=2)
    a = BM25Retriever().index(corpus)
    b = BM25Retriever(k1=1.2).index(Corpus(corpus.documents, RegexTokenizer()))
    c = BM25Retriever().index(_essay_corpus(n_docs=3))
    assert not b.loaded_from_cache and not c.loaded_from_cache
    assert len({a._key, b._key, c._key}) == 3


def test_no_temporary_files_are_left_behind():
    corpus = _essay_corpus(n_docs=2)
    r = BM25Retriever().index(corpus)
    folder = r.index_path(corpus, r._key).parent
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_dense_second_index_of_the_same_corpus_does_no_embedding(monkeypatch, smol_tokenizer):
    from orchestra.retrievers.dense import DenseRetriever

    corpus = Corpus(_essay_corpus(n_docs=3).documents, smol_tokenizer)
    calls = []
    real = DenseRetriever.encode
    monkeypatch.setattr(DenseRetriever, "encode",
                        lambda self, texts, **kw: calls.append(len(texts)) or real(self, texts, **kw))
    first = DenseRetriever(show_progress=False).index(corpus)
    assert sum(calls) == len(first.chunks)  # every chunk fits MiniLM: one vector each
    expected = [s.id for s in first.retrieve("why do startups fail", 5)]
    calls.clear()
    again = DenseRetriever(show_progress=False).index(Corpus(corpus.documents, smol_tokenizer))
    assert again.loaded_from_cache and calls == []
    assert [s.id for s in again.retrieve("why do startups fail", 5)] == expected


@pytest.mark.slow
def test_dense_embeds_long_chunks_in_windows_and_finds_their_tail(smol_tokenizer):
    from orchestra.retrievers.dense import DenseRetriever

    filler = " ".join(p.read_text()[:3000] for p in sorted(
        data_path("needle_haystack", "PaulGrahamEssays").glob("*.txt"))[:4])
    tail = " The blue heron colony on Lake Verrin nests in the tallest cypress trees."
    docs = [Document("long", filler[:2500] + tail), Document("other", filler[2500:])]
    r = DenseRetriever(chunk_tokens=1000, overlap=0, show_progress=False).index(
        Corpus(docs, smol_tokenizer))
    assert len(r.row_chunk) > len(r.chunks)  # 1000-token chunks exceed MiniLM's 256 pieces
    top = r.retrieve("Where does the blue heron colony nest?", 1)
    assert top[0].chunk.doc_id == "long" and "heron" in top[0].chunk.text


# -- hybrid ----------------------------------------------------------------------------------
def test_hybrid_fuses_ranks_of_its_members():
    corpus = _essay_corpus([Document("zeta", "The Quorvath lighthouse keeper counted 4217 gulls.")])
    a = BM25Retriever(chunk_tokens=64, overlap=8)
    b = BM25Retriever(chunk_tokens=64, overlap=8, stem=False)
    h = HybridRetriever(retrievers=[a, b]).index(corpus)
    top = h.retrieve("Quorvath lighthouse gulls", 3)
    assert top[0].chunk.doc_id == "zeta"
    assert top[0].score == pytest.approx(2 / 61)  # first in both lists: 1/(60+1) twice
    with pytest.raises(ConfigError, match="chunk differently"):
        HybridRetriever(retrievers=[BM25Retriever(chunk_tokens=64), BM25Retriever(chunk_tokens=32)])
    spec = entry(h)  # members are written as their own entries
    assert spec["retrievers"][1] == entry(b) and entry(b)["type"] == "bm25"
    assert {"chunk_tokens": 64, "overlap": 8, "stem": False, "k1": 1.5}.items() <= \
        spec["retrievers"][1].items()
    rebuilt = make_retriever(spec)
    assert isinstance(rebuilt, HybridRetriever) and entry(rebuilt) == spec


# -- graph -----------------------------------------------------------------------------------
TWO_HOP = [
    Document("prize", "The Zorblax Prize for 1997 went to Miriam Okafor for her bridge designs."),
    Document("bio", "Miriam Okafor grew up in the mountain town of Velmont, where her father "
                    "repaired clocks."),
]
QUESTION = "In which town did the winner of the Zorblax Prize grow up?"


def test_graph_finds_the_linked_chunk_the_seed_misses():
    # Distractors mention towns and growing up, so lexical retrieval alone ranks them above the
    # biography, which names neither the prize nor the question's words except "town".
    distract = [Document(f"d{i}", t) for i, t in enumerate([
        "The painter grew up in a town by the sea and sold seashells to tourists.",
        "A chess champion grew up in a town in the hills, far from any railway.",
        "Our town had a mill; children who grow up near a river learn to swim early.",
        "Growing up on a plain, the poet watched storms cross the wheat for hours.",
    ])]
    corpus = _essay_corpus(TWO_HOP + distract)
    seed = BM25Retriever(chunk_tokens=64, overlap=8)
    graph = GraphRetriever(seed=seed).index(corpus)
    seed_ids = [s.chunk.doc_id for s in seed.retrieve(QUESTION, 3)]
    graph_ids = [s.chunk.doc_id for s in graph.retrieve(QUESTION, 3)]
    assert "prize" in seed_ids and "bio" not in seed_ids
    assert "prize" in graph_ids and "bio" in graph_ids
    prize = next(c for c in graph.chunks if c.doc_id == "prize")
    bio = next(c for c in graph.chunks if c.doc_id == "bio")
    assert graph.neighbours(prize.id)[bio.id]["terms"] > 0  # linked by the shared name


def test_graph_has_sequence_edges_and_is_cached():
    corpus = _essay_corpus(n_docs=2)
    g = GraphRetriever(seed=BM25Retriever(chunk_tokens=64, overlap=8)).index(corpus)
    c0, c1 = g.chunks[0], g.chunks[1]
    assert c0.doc_id == c1.doc_id
    assert g.neighbours(c0.id)[c1.id]["sequence"] == 1.0
    again = GraphRetriever(seed=BM25Retriever(chunk_tokens=64, overlap=8)).index(
        Corpus(corpus.documents, RegexTokenizer()))
    assert again.loaded_from_cache
    assert again.graph.number_of_edges() == g.graph.number_of_edges()
    with pytest.raises(ConfigError, match="seed"):
        GraphRetriever(seed="bm25", chunk_tokens=10)


@pytest.mark.slow
def test_graph_over_dense_seeds_uses_similarity_edges(smol_tokenizer):
    from orchestra.retrievers.dense import DenseRetriever

    corpus = Corpus(_essay_corpus(TWO_HOP, n_docs=3).documents, smol_tokenizer)
    g = GraphRetriever(seed=DenseRetriever(show_progress=False), similarity_threshold=0.3).index(corpus)
    kinds = [d["similarity"] for _, _, d in g.graph.edges(data=True)]
    assert any(k > 0 for k in kinds)
    ids = [s.chunk.doc_id for s in g.retrieve(QUESTION, 3)]
    assert "prize" in ids and "bio" in ids


# -- reordering ------------------------------------------------------------------------------
def _scored(scores: list[float]) -> list[ScoredChunk]:
    out = []
    for i, s in enumerate(scores):
        out.append(ScoredChunk(Chunk(id=f"c{i}", doc_id="d", index=i, order=i, start=10 * i,
                                     end=10 * i + 10, text=f"chunk {i}", n_tokens=2), s))
    return out


def test_reorder_policies_put_chunks_where_they_say():
    items = _scored([0.3, 0.9, 0.1, 0.7, 0.5])  # document order c0..c4
    shuffled = [items[i] for i in (3, 0, 4, 1, 2)]
    assert [s.id for s in reorder(shuffled, "score")] == ["c1", "c3", "c4", "c0", "c2"]
    assert [s.id for s in reorder(shuffled, "document_order")] == ["c0", "c1", "c2", "c3", "c4"]
    edged = reorder(shuffled, "edges")
    # strongest first, second strongest last, the weakest in the middle
    assert edged[0].id == "c1" and edged[-1].id == "c3" and edged[len(edged) // 2].id == "c2"
    assert [s.id for s in edged] == ["c1", "c4", "c2", "c0", "c3"]
    assert reorder([], "edges") == []
    with pytest.raises(ConfigError, match="reorder policy"):
        reorder(items, "random")


def test_score_shape_signals():
    p = score_shape(_scored([0.2, 0.8, 0.5]))
    assert p["retrieval_top"] == 0.8 and p["retrieval_margin"] == pytest.approx(0.3)
    assert p["retrieval_lead"] == pytest.approx((0.8 - 0.5) / 0.8)
    assert p["retrieval_hits"] == 3 and "retrieval_score_kind" not in p
    assert score_shape([]) == {}
