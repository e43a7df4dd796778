"""The worker agent: reads one chunk, the question and earlier notes; writes a note.

It builds requests and reads replies; it never calls the backend itself, so chain-of-agents can
send workers one at a time and map-reduce can send them all as one batch.
"""

from __future__ import annotations

from typing import Sequence

from orchestra.agents.notes import Note, Parsed, parse_reply, render, supporting
from orchestra.agents.prompts import NOTES_HEADER
from orchestra.backends.base import Backend, GenerationRequest, GenerationResult, Message
from orchestra.corpus import Chunk


class Worker:
    def __init__(self, backend: Backend, prompts: dict[str, str], max_tokens: int,
                 min_overlap: float | None, align: bool = False):
        self.backend = backend
        self.align = align
        self.prompts = prompts
        self.max_tokens = max_tokens
        self.min_overlap = min_overlap

    def request(self, chunk_text: str, question: str,
                notes: Sequence[Note] = ()) -> GenerationRequest:
        block = NOTES_HEADER + render(notes) + "\n\n" if notes else ""
        user = self.prompts["worker"].format(notes=block, chunk=chunk_text.strip(),
                                             question=question)
        return GenerationRequest(
            messages=[Message(role="system", content=self.prompts["worker_system"]),
                      Message(role="user", content=user)],
            max_tokens=self.max_tokens,
        )

    def overhead(self, question: str, with_notes: bool) -> int:
        """Prompt tokens of a worker request around an empty chunk (and empty notes)."""
        notes = [Note("")] if with_notes else []
        return self.backend.count_prompt_tokens(self.request("", question, notes).messages)

    def parse(self, chunks: Sequence[Chunk], text: str, result: GenerationResult,
              earlier: Sequence[Note] = ()) -> Parsed:
        """The reply as a note citing the chunks it came from (of several packed: those whose
        text supports one of its sentences, so evidence stays as narrow as the reading allows)."""
        parsed = parse_reply(result.text, list(chunks), text, self.min_overlap, earlier,
                             align=self.align)
        if parsed.note is not None and len(chunks) > 1:
            parsed.note.chunks = supporting(parsed.note.text, chunks, self.min_overlap)
        return parsed
