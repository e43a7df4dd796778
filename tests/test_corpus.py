import pytest

from orchestra.backends.scripted import RegexTokenizer
from orchestra.corpus import Corpus, Document, load_documents
from orchestra.errors import InputError

TOK = RegexTokenizer()
TEXT = " ".join(f"word{i}." for i in range(500))


def test_chunks_cover_the_text_with_offsets_and_overlap():
    corpus = Corpus([Document("a", TEXT), Document("b", "short text here")], TOK)
    chunks = corpus.chunk(50, 10)
    a = [c for c in chunks if c.doc_id == "a"]
    assert a[0].start == 0 and a[-1].end == len(TEXT)
    for c in chunks:
        assert corpus.document(c.doc_id).text[c.start:c.end] == c.text
        assert c.n_tokens <= 50
    # consecutive chunks overlap by exactly 10 tokens
    for x, y in zip(a, a[1:]):
        assert x.end > y.start
        assert TOK.count(TEXT[y.start:x.end]) == 10
    assert [c.order for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].doc_id == "b" and chunks[-1].index == 0
    assert corpus.n_tokens == TOK.count(TEXT) + 3


def test_chunk_ids_are_stable_content_hashes():
    c1 = Corpus([Document("a", TEXT)], TOK).chunk(40, 0)
    c2 = Corpus([Document("a", TEXT)], TOK).chunk(40, 0)
    assert [c.id for c in c1] == [c.id for c in c2]
    assert len({c.id for c in c1}) == len(c1)
    c3 = Corpus([Document("a", TEXT.replace("word7.", "WORD7."))], TOK).chunk(40, 0)
    assert c3[0].id != c1[0].id and c3[1].id == c1[1].id


def test_bad_chunk_settings_are_refused():
    corpus = Corpus([Document("a", TEXT)], TOK)
    with pytest.raises(InputError, match="overlap"):
        corpus.chunk(10, 10)
    with pytest.raises(InputError, match="chunk_tokens"):
        corpus.chunk(0, 0)


def test_loads_paths_directories_documents_and_text(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# B\ntext b")
    (tmp_path / "a.txt").write_text("text a")
    (tmp_path / "ignored.json").write_text("{}")
    (tmp_path / "c.txt").write_text("text c")
    docs = load_documents([tmp_path / "sub", str(tmp_path / "c.txt"), Document("d", "doc d")],
                          text="inline text\nwith a newline")
    assert [d.text for d in docs] == ["# B\ntext b", "text c", "doc d",
                                      "inline text\nwith a newline"]
    assert [d.id for d in docs][2:] == ["d", "text1"]
    assert docs[1].source == str(tmp_path / "c.txt")
    assert [d.text for d in load_documents([tmp_path])] == ["text a", "text c", "# B\ntext b"]


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing.txt", "missing.txt: no such file"),
    (lambda p: (p / "e.txt").write_text("  \n") and p / "e.txt", "e.txt: the document is empty"),
    (lambda p: (p / "x.pdf").write_bytes(b"%PDF") and p / "x.pdf", "x.pdf: unsupported file type '.pdf'"),
    (lambda p: (p / "l.txt").write_bytes(b"caf\xe9") and p / "l.txt", "l.txt: not UTF-8"),
    (lambda p: p, "holds no .txt or .md files"),
])
def test_bad_documents_are_named(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(InputError, match=match):
        load_documents([path])


def test_empty_inputs_are_refused():
    with pytest.raises(InputError, match="no documents"):
        load_documents([])
    with pytest.raises(InputError, match="not a path"):
        load_documents(["   "])
    with pytest.raises(InputError, match="empty"):
        load_documents(text=["   "])
    with pytest.raises(InputError, match="duplicate document ids"):
        load_documents([Document("x", "a"), Document("x", "b")])
