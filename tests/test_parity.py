"""Parity (issue 19): examples/pipelines/parity_langchain_ruler.yaml reads exactly as
benchmarks/peers.py's `langchain_ruler` (a plain LangChain pipeline over the same backend):
the same reader input token ids and the same replies, question by question."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, data_path

PARITY = REPO / "examples" / "pipelines" / "parity_langchain_ruler.yaml"
N_QUESTIONS = 30


class InputIds:
    """What the model itself is given: every ``model.generate`` call's input ids."""

    def __init__(self, model):
        self.model, self.calls, self._inner = model, [], model.generate

    def __enter__(self):
        def generate(*args, **kw):
            self.calls.append(kw["input_ids"][0].tolist())
            return self._inner(*args, **kw)

        self.model.generate = generate
        return self

    def __exit__(self, *exc):
        self.model.generate = self._inner

    def take(self) -> list[list[int]]:
        out, self.calls = self.calls, []
        return out


def test_long_context_reorder_is_langchains_for_every_count():
    from langchain_community.document_transformers import LongContextReorder
    from langchain_core.documents import Document

    from orchestra.corpus import Chunk
    from orchestra.retrievers.base import ScoredChunk
    from orchestra.retrievers.reorder import reorder

    for n in range(1, 9):
        hits = [ScoredChunk(Chunk(id=f"c{i}", doc_id="d", index=i, order=i, start=i, end=i + 1,
                                  text=f"t{i}", n_tokens=1), 1.0 - i / 10) for i in range(n)]
        theirs = LongContextReorder().transform_documents(
            [Document(page_content=h.chunk.text) for h in hits])
        ours = reorder(hits, "long_context_reorder")
        assert [h.chunk.text for h in ours] == [d.page_content for d in theirs], n


def test_character_chunking_is_langchains_split_with_its_offsets():
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from orchestra.corpus import Corpus, Document
    from orchestra.backends.scripted import RegexTokenizer

    # The address three times: repeated text is where a naive offset search goes wrong.
    one = (REPO / "examples" / "data" / "gettysburg_address.txt").read_text(encoding="utf-8")
    text = "\n\n".join([one] * 3)
    corpus = Corpus([Document(id="d", text=text)], RegexTokenizer())
    ours = corpus.chunk(1000, 200, "characters")
    theirs = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200,
                                            add_start_index=True).create_documents([text])
    assert [(c.text, c.start) for c in ours] == [(d.page_content, d.metadata["start_index"])
                                                 for d in theirs]
    assert all(text[c.start:c.end] == c.text for c in ours)


@pytest.mark.slow
def test_parity_pipeline_reads_as_langchain_ruler():
    from peers import LangChainRuler

    from orchestra.corpus import Corpus
    from orchestra.eval.datasets import load_dataset
    from orchestra.pipeline import Pipeline

    data_path("ruler", "squad.json")
    pipe = Pipeline.from_yaml(PARITY)
    backend = pipe.backend
    peer = LangChainRuler(backend)
    ds = load_dataset("ruler_qa:dev", backend.tokenizer, [2000], N_QUESTIONS, 0)
    assert len(ds.samples) == N_QUESTIONS
    same_ids = same_text = 0
    with InputIds(backend.model) as ids:
        for s in ds.samples:
            theirs = peer.answer(s.question, Corpus(s.documents, backend.tokenizer)).text
            their_ids = ids.take()
            ours = pipe.run(s.question, Corpus(s.documents, backend.tokenizer)).text
            our_ids = ids.take()
            assert len(our_ids) == len(their_ids) == 1, s.sample_id
            assert our_ids == their_ids, s.sample_id
            assert ours == theirs, s.sample_id
            same_ids += 1
            same_text += 1
    assert same_ids == same_text == N_QUESTIONS
