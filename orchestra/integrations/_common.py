"""Pieces both adapters share: role mapping, the bundled embedder, evidence to text."""

from __future__ import annotations

from typing import Any, Iterable

from orchestra.backends.base import Backend, GenerationRequest, GenerationResult, Message
from orchestra.errors import InputError

ROLES = {
    # LangChain message types and LlamaIndex MessageRole values, to ours.
    "system": "system", "human": "user", "user": "user", "ai": "assistant",
    "assistant": "assistant", "developer": "system",
}


def to_message(role: str, content: Any, where: str) -> Message:
    ours = ROLES.get(str(role).lower())
    if ours is None:
        raise InputError(f"{where}: messages of role {role!r} are not supported; "
                         "use system, user (human) or assistant (ai) messages")
    if not isinstance(content, str):
        # Content blocks (LangChain lists, LlamaIndex blocks): keep their text parts only.
        parts = []
        for block in content or []:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and block.get("type") == "text":
                parts.append(block.get("text", ""))
            elif getattr(block, "text", None) is not None:
                parts.append(block.text)
            else:
                raise InputError(f"{where}: only text content is supported, got {block!r:.80}")
        content = "".join(parts)
    return Message(role=ours, content=content)


def shared_backend(backend: Any) -> Backend:
    """The backend an adapter wraps: the given one, or the embedded default."""
    if backend is None:
        from orchestra.backends import default_backend

        return default_backend()
    if not isinstance(backend, Backend):
        raise InputError(f"backend must be an orchestra Backend, not {type(backend).__name__}")
    return backend


def run_one(backend: Backend, messages: list[Message], max_tokens: int, temperature: float,
            stop: Iterable[str] | None) -> GenerationResult:
    if not messages:
        raise InputError("no messages were given")
    req = GenerationRequest(messages=messages, max_tokens=max_tokens, temperature=temperature,
                            stop=list(stop or []))
    return backend.generate_one(req)


def usage(result: GenerationResult) -> dict[str, int]:
    return {"input_tokens": result.prompt_tokens, "output_tokens": result.generated_tokens,
            "total_tokens": result.prompt_tokens + result.generated_tokens}


def backend_model_name(backend: Backend) -> str:
    return f"orchestra-{backend.name}:{backend.spec().get('model') or 'default'}"


def minilm():
    """The bundled all-MiniLM-L6-v2, shared with the dense retriever (one copy per process)."""
    from orchestra.retrievers.dense import load_embedder

    return load_embedder()


def embed(texts: list[str]) -> list[list[float]]:
    if not texts:
        return []
    vecs = minilm().encode(list(texts), batch_size=32, normalize_embeddings=True,
                           show_progress_bar=False)
    return [v.tolist() for v in vecs]


def source_metadata(corpus, doc_id: str, start: int, end: int) -> dict[str, Any]:
    """Where a span is, as the pipeline's evidence says it (orchestra.citations) and as each
    library's users look for it: ``source`` (LangChain's loaders), ``file_path`` and
    ``file_name`` (LlamaIndex's readers) when the document is a file, and its 1-based lines."""
    from pathlib import Path

    from orchestra.citations import cite_one
    from orchestra.types import Evidence

    ev = cite_one(Evidence(chunk_id="", doc_id=doc_id, start=start, end=end), corpus)
    if ev.source is None:  # a span from outside the corpus
        return {}
    meta: dict[str, Any] = {"source": ev.source, "line_start": ev.line_start,
                            "line_end": ev.line_end}
    doc = corpus.document(doc_id)
    given = doc.metadata or {}
    path = given.get("file_path") or doc.source
    if path:
        meta["file_path"] = str(path)
        meta["file_name"] = given.get("file_name") or Path(str(path)).name
    return meta


def chunk_metadata(chunk, corpus=None) -> dict[str, Any]:
    """A chunk's ids and offsets, plus its file and lines when the corpus is known."""
    meta = {"chunk_id": chunk.id, "doc_id": chunk.doc_id, "start": chunk.start, "end": chunk.end}
    if corpus is not None:
        meta.update(source_metadata(corpus, chunk.doc_id, chunk.start, chunk.end))
    return meta


def evidence_text(corpus, ev) -> str:
    """The text an Evidence span points at, from its document."""
    try:
        return corpus.document(ev.doc_id).text[ev.start:ev.end]
    except KeyError:
        return ""
