"""Documents and their token-aware chunks.

A Corpus holds documents and chunks them with the backend's own tokenizer (token counts differ
between tokenizers, so we never estimate from characters). Chunks keep their document id, their
order and character offsets, and a stable id (a content hash), so any strategy can cite them
and restore document order. Different strategies want different chunk sizes; chunkings are
computed on demand and memoised per (chunk_tokens, overlap).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from orchestra.backends.base import Tokenizer
from orchestra.errors import InputError
from orchestra.files import read_text_file

SUPPORTED_SUFFIXES = (".txt", ".md")
# "characters": LangChain's RecursiveCharacterTextSplitter as a plain LangChain pipeline runs it
# (its default separators, sizes counted in characters), so orchestra can read exactly as one.
CHUNK_BOUNDARIES = ("tokens", "structure", "characters")
# Paragraphs, lines, sentence ends, words, characters: the splitter tries each in turn.
_STRUCTURE_SEPARATORS = [r"\n\s*\n", r"\n", r"(?<=[.!?])\s+", r"\s+", ""]


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    source: str | None = None
    metadata: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Chunk:
    id: str
    doc_id: str
    index: int  # order of the chunk within its document
    order: int  # order of the chunk within the corpus (documents in the order given)
    start: int  # character offsets into the document's text
    end: int
    text: str
    n_tokens: int


def check_chunking(chunk_tokens: Any, overlap: Any, where: str = "",
                   error: type[Exception] = InputError) -> tuple[int, int]:
    """``(chunk_tokens, overlap)`` as integers with ``chunk_tokens >= 1`` and ``0 <= overlap <
    chunk_tokens``, else one ``error`` naming both (``where``: whose settings they are). The
    one check of a chunking: Corpus.chunk, the retrievers and the agent strategies use it."""
    pre = f"{where}: " if where else ""
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (chunk_tokens, overlap)):
        raise error(f"{pre}chunk_tokens and overlap must be integers, got {chunk_tokens!r} "
                    f"and {overlap!r}")
    if chunk_tokens < 1:
        raise error(f"{pre}chunk_tokens must be at least 1, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise error(f"{pre}overlap must be in [0, chunk_tokens={chunk_tokens}), got {overlap}")
    return chunk_tokens, overlap


def chunk_id(doc_id: str, start: int, end: int, text: str) -> str:
    h = hashlib.sha256(f"{doc_id}\x00{start}\x00{end}\x00".encode() + text.encode())
    return h.hexdigest()[:16]


def read_document(path: Path, doc_id: str | None = None) -> Document:
    """A .txt/.md regular file as a Document; anything else is refused naming the file."""
    if path.exists() and path.is_file() and path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise InputError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    text = read_text_file(path, InputError, "a .txt or .md file or a directory")
    nul = text.find("\x00")
    if nul >= 0:  # UTF-8 text never holds NUL bytes; this is a binary file
        raise InputError(f"{path}: a binary file, not text (a NUL byte at character {nul}); "
                         "give a UTF-8 .txt or .md file")
    if not text.strip():
        raise InputError(f"{path}: the document is empty")
    return Document(id=doc_id or str(path), text=text, source=str(path))


def texts_to_documents(texts: Iterable[str], prefix: str = "text") -> list[Document]:
    """Documents from texts given inline (ids text1, text2, ...)."""
    if isinstance(texts, str):
        texts = [texts]
    docs = []
    for n, text in enumerate(texts, 1):
        if not isinstance(text, str):
            raise InputError(f"text {n} is a {type(text).__name__}, not a string")
        docs.append(Document(id=f"{prefix}{n}", text=text))
    return docs


def strings_as_text(items: Any) -> Any:
    """For inputs whose strings are texts (a LangChain or LlamaIndex input, a tool call an LLM
    made): each ``str`` becomes a Document (text1, text2, ...); Paths and Documents stay as
    they are, so a file is read only when the caller gave a Path."""
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, (list, tuple)):
        return items
    return [Document(id=f"text{n}", text=x) if isinstance(x, str) else x
            for n, x in enumerate(items, 1)]


def load_documents(items: Iterable[str | Path | Document] = (), *,
                   text: str | Iterable[str] | None = None) -> list[Document]:
    """Documents from paths (files, and directories with .txt and .md inside, sorted),
    Documents, and texts given as ``text=``.

    A ``str`` or ``Path`` item is always a path, and a missing one is an error: a file name is
    never read as the document's text. Text goes in a ``Document`` or in ``text=``.
    """
    if isinstance(items, (str, Path, Document)):
        items = [items]
    items = list(items) + (texts_to_documents(text) if text is not None else [])
    docs: list[Document] = []
    for n, item in enumerate(items):
        if isinstance(item, Document):
            if not isinstance(item.text, str) or not item.text.strip():
                raise InputError(f"document {item.id!r} is empty")
            if "\x00" in item.text:
                raise InputError(f"document {item.id!r} holds a NUL character; it is not text")
            docs.append(item)
            continue
        if not isinstance(item, (str, os.PathLike)):
            raise InputError(f"document {n} is a {type(item).__name__}; give a path, or a "
                             "Document (or text=) for text")
        if isinstance(item, str) and (not item.strip() or "\x00" in item):
            raise InputError(f"document {n}: {item!r} is not a path; give text as a Document "
                             "or with text= (--text on the command line)")
        path = Path(item)
        if not _exists(path):
            if isinstance(item, str) and ("\n" in item or len(item) > 255):
                raise InputError(f"document {n} ({item[:40]!r}..., {len(item)} characters) is "
                                 "not an existing path; a string is a path: give text as a "
                                 "Document or with text= (--text on the command line)")
            raise InputError(f"{path}: no such file or directory")
        if path.is_dir():
            # A .txt/.md entry that is not a regular file (a FIFO) is refused by read_document,
            # not skipped: nothing named like a document is dropped without a word.
            files = sorted(p for p in path.rglob("*") if not p.is_dir()
                           and p.suffix.lower() in SUPPORTED_SUFFIXES)
            if not files:
                raise InputError(f"{path}: the directory holds no .txt or .md files")
            docs.extend(read_document(p) for p in files)
        else:
            docs.append(read_document(path))
    if not docs:
        raise InputError("no documents were given")
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise InputError(f"duplicate document ids: {', '.join(dup)}")
    return docs


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for the file system, for one
        return False


class Corpus:
    """Documents plus a tokenizer; chunks on demand."""

    def __init__(self, documents: Sequence[Document], tokenizer: Tokenizer,
                 chunk_tokens: int = 200, overlap: int = 20):
        if not documents:
            raise InputError("the corpus is empty: no documents were given")
        self.documents = list(documents)
        self.tokenizer = tokenizer
        self.default_chunk_tokens = chunk_tokens
        self.default_overlap = overlap
        self._chunkings: dict[tuple[int, int], list[Chunk]] = {}
        self._doc_tokens: dict[str, int] = {}
        self._offsets: dict[str, list[tuple[int, int]]] = {}
        self._by_id: dict[str, Chunk] = {}

    @classmethod
    def from_inputs(cls, items: Iterable[str | Path | Document], tokenizer: Tokenizer,
                    **kw) -> "Corpus":
        """From paths and Documents (a ``str`` is a path; see ``load_documents``)."""
        return cls(load_documents(items), tokenizer, **kw)

    @classmethod
    def from_texts(cls, texts: Iterable[str], tokenizer: Tokenizer, **kw) -> "Corpus":
        """From texts held in memory (ids text1, text2, ...)."""
        return cls(load_documents(text=texts), tokenizer, **kw)

    # -- sizes ----------------------------------------------------------------------------
    def doc_tokens(self, doc: Document) -> int:
        if doc.id not in self._doc_tokens:
            self._doc_tokens[doc.id] = len(self.token_offsets(doc))
        return self._doc_tokens[doc.id]

    @property
    def n_tokens(self) -> int:
        return sum(self.doc_tokens(d) for d in self.documents)

    @property
    def hash(self) -> str:
        h = hashlib.sha256()
        for d in self.documents:
            h.update(d.id.encode() + b"\x00" + d.text.encode() + b"\x01")
        return h.hexdigest()[:16]

    def document(self, doc_id: str) -> Document:
        for d in self.documents:
            if d.id == doc_id:
                return d
        raise KeyError(doc_id)

    # -- chunks ---------------------------------------------------------------------------
    @property
    def chunks(self) -> list[Chunk]:
        return self.chunk(self.default_chunk_tokens, self.default_overlap)

    def chunk(self, chunk_tokens: int | None = None, overlap: int | None = None,
              boundaries: str = "tokens") -> list[Chunk]:
        """Chunks of at most ``chunk_tokens`` tokens. ``boundaries="tokens"``: fixed windows
        sliding by ``chunk_tokens - overlap``; ``"structure"``: cut at paragraph breaks, then
        lines, then sentence ends, then words (the smallest that fits), with up to ``overlap``
        tokens repeated between neighbours; ``"characters"``: LangChain's default recursive
        splitter with ``chunk_tokens`` and ``overlap`` counted in characters (character_spans). Either way a chunk's text is exactly
        ``document.text[start:end]``."""
        chunk_tokens = self.default_chunk_tokens if chunk_tokens is None else chunk_tokens
        overlap = self.default_overlap if overlap is None else overlap
        check_chunking(chunk_tokens, overlap)
        if boundaries not in CHUNK_BOUNDARIES:
            raise InputError(f"chunk boundaries must be one of {', '.join(CHUNK_BOUNDARIES)}, "
                             f"got {boundaries!r}")
        if boundaries in ("structure", "characters"):
            return self._structured(chunk_tokens, overlap, boundaries)
        key = (chunk_tokens, overlap)
        if key not in self._chunkings:
            chunks: list[Chunk] = []
            for doc in self.documents:
                offs = self.token_offsets(doc)
                step = chunk_tokens - overlap
                starts = range(0, max(len(offs) - overlap, 1), step)
                for i, t0 in enumerate(starts):
                    t1 = min(t0 + chunk_tokens, len(offs))
                    # Character spans run from one token's start to the next chunk token's start,
                    # so whitespace between tokens stays with the earlier chunk and nothing is lost.
                    c0 = 0 if t0 == 0 else offs[t0][0]
                    c1 = len(doc.text) if t1 >= len(offs) else offs[t1][0]
                    text = doc.text[c0:c1]
                    chunks.append(Chunk(
                        id=chunk_id(doc.id, c0, c1, text), doc_id=doc.id, index=i,
                        order=len(chunks), start=c0, end=c1, text=text, n_tokens=t1 - t0,
                    ))
                    if t1 >= len(offs):
                        break
            self._chunkings[key] = chunks
            self._by_id.update({c.id: c for c in chunks})
        return self._chunkings[key]

    def _structured(self, chunk_tokens: int, overlap: int, boundaries: str) -> list[Chunk]:
        key = (boundaries, chunk_tokens, overlap)
        if key not in self._chunkings:
            chunks: list[Chunk] = []
            for doc in self.documents:
                spans = (character_spans(doc.text, chunk_tokens, overlap)
                         if boundaries == "characters" else
                         structured_spans(doc.text, chunk_tokens, overlap, self.tokenizer.count))
                for i, (c0, c1) in enumerate(spans):
                    text = doc.text[c0:c1]
                    chunks.append(Chunk(
                        id=chunk_id(doc.id, c0, c1, text), doc_id=doc.id, index=i,
                        order=len(chunks), start=c0, end=c1, text=text,
                        n_tokens=self.tokenizer.count(text),
                    ))
            self._chunkings[key] = chunks
            self._by_id.update({c.id: c for c in chunks})
        return self._chunkings[key]

    def get_chunk(self, chunk_id: str) -> Chunk:
        return self._by_id[chunk_id]

    def token_offsets(self, doc: Document) -> list[tuple[int, int]]:
        """The (start, end) character span of each of ``doc``'s tokens (measured once)."""
        if doc.id not in self._offsets:
            self._offsets[doc.id] = self.tokenizer.offsets(doc.text)
        return self._offsets[doc.id]

    def __len__(self) -> int:
        return len(self.documents)

    def __repr__(self) -> str:
        return f"Corpus({len(self.documents)} documents)"


def character_spans(text: str, chunk_chars: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) spans of LangChain's RecursiveCharacterTextSplitter as a tutorial runs it:
    its default separators, ``chunk_chars``/``overlap`` counted in characters (len), and its own
    ``add_start_index`` offsets, so each chunk is exactly the ``page_content`` and
    ``start_index`` LangChain gives (what benchmarks/peers.py's LangChain systems read)."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_chars, chunk_overlap=overlap,
                                              add_start_index=True)
    spans = []
    for d in splitter.create_documents([text]):
        start = d.metadata["start_index"]
        if start < 0 or text[start:start + len(d.page_content)] != d.page_content:
            raise InputError("character chunking lost a chunk's position in its document")
        spans.append((start, start + len(d.page_content)))
    return spans or [(0, len(text))]


def structured_spans(text: str, chunk_tokens: int, overlap: int,
                     count) -> list[tuple[int, int]]:
    """(start, end) character spans of structure-aware chunks of ``text``.

    LangChain's RecursiveCharacterTextSplitter does the splitting (a well-kept implementation
    of "largest unit that fits"); it returns stripped strings, so we locate each one in the
    text, searching from the previous chunk's start, which makes the offsets exact.
    """
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(
        separators=_STRUCTURE_SEPARATORS, is_separator_regex=True, keep_separator="end",
        chunk_size=chunk_tokens, chunk_overlap=overlap, length_function=count,
        strip_whitespace=True)
    spans: list[tuple[int, int]] = []
    pos = 0
    for piece in splitter.split_text(text):
        start = text.find(piece, pos)
        if start < 0:  # cannot happen for substrings; refuse rather than cite a wrong span
            raise InputError("structure-aware chunking lost a chunk's position in its document")
        spans.append((start, start + len(piece)))
        pos = start + 1
    if not spans:  # whitespace only: one chunk, as token windows give
        spans.append((0, len(text)))
    return spans
