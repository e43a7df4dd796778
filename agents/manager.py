"""The manager agent: answers from the final notes; and the reduce step that shrinks notes.

When the notes do not fit the window with the manager prompt, they are reduced in a tree: packed
in document order into groups whose reduce prompt fits, each group combined into one note (all
groups of a level as one batched backend call), level after level until the manager prompt fits.
A level with at least one group of two or more notes has fewer notes than the one before, so
the tree ends (a level where no two notes fit together is refused with a ConfigError).
A group whose reduction comes back empty, garbled or ungrounded keeps its notes joined and cut
to ``note_tokens`` (recorded), so a model failure never silently loses a level's facts; a
reduction that says NO_INFO drops the group, which is what reducing means.
"""

from __future__ import annotations

from typing import Sequence

from orchestra.agents.ledger import Ledger
from orchestra.agents.notes import Note, parse_reply, render
from orchestra.backends.base import Backend, GenerationRequest, Message
from orchestra.errors import ConfigError


class Manager:
    def __init__(self, backend: Backend, prompts: dict[str, str], max_tokens: int,
                 note_tokens: int, min_overlap: float | None):
        self.backend = backend
        self.prompts = prompts
        self.max_tokens = max_tokens
        self.note_tokens = note_tokens
        self.min_overlap = min_overlap

    @property
    def window(self) -> int:
        return self.backend.context_window

    # -- requests ---------------------------------------------------------------------------
    def _request(self, template: str, notes: Sequence[Note], question: str,
                 max_tokens: int) -> GenerationRequest:
        user = self.prompts[template].format(notes=render(notes), question=question)
        return GenerationRequest(
            messages=[Message(role="system", content=self.prompts["manager_system"]),
                      Message(role="user", content=user)],
            max_tokens=max_tokens,
        )

    def request(self, notes: Sequence[Note], question: str,
                max_tokens: int | None = None) -> GenerationRequest:
        """The manager's answer request; ``max_tokens``: the caller's reply budget, else the
        strategy's."""
        return self._request("manager", notes, question, max_tokens or self.max_tokens)

    def reduce_request(self, notes: Sequence[Note], question: str) -> GenerationRequest:
        return self._request("reduce", notes, question, self.note_tokens)

    def _tokens(self, req: GenerationRequest) -> int:
        return self.backend.count_prompt_tokens(req.messages) + req.max_tokens

    def fits(self, notes: Sequence[Note], question: str, max_tokens: int | None = None) -> bool:
        return self._tokens(self.request(notes, question, max_tokens)) <= self.window

    def reduce_fits(self, notes: Sequence[Note], question: str) -> bool:
        return self._tokens(self.reduce_request(notes, question)) <= self.window

    # -- reduction ----------------------------------------------------------------------------
    def groups(self, notes: Sequence[Note], question: str) -> list[list[Note]]:
        """Notes packed in order into groups whose reduce prompt fits (a note too long to pair
        with its neighbours stays alone and passes through the level unchanged)."""
        out: list[list[Note]] = []
        for note in notes:
            if out and self.reduce_fits(out[-1] + [note], question):
                out[-1].append(note)
            else:
                out.append([note])
        return out

    def reduce(self, notes: list[Note], question: str, ledger: Ledger,
               max_tokens: int | None = None) -> tuple[list[Note], int]:
        """Notes that fit the manager prompt beside a ``max_tokens`` answer, and the number of
        tree levels it took."""
        depth = 0
        while notes and not self.fits(notes, question, max_tokens):
            if len(notes) == 1:
                notes = [self.cut(notes, ledger, "a single note over the window")]
                break
            groups = self.groups(notes, question)
            if all(len(g) == 1 for g in groups):
                raise ConfigError(
                    f"no two of the {len(notes)} notes fit one reduce prompt in the "
                    f"{self.window}-token window; lower note_tokens (now {self.note_tokens})"
                )
            depth += 1
            merge = [g for g in groups if len(g) > 1]
            results = iter(ledger.generate(
                [self.reduce_request(g, question) for g in merge], f"reduce.level{depth}",
                notes_in=len(notes), groups=len(merge), passed_through=len(groups) - len(merge),
            ))
            reduced: list[Note] = []
            for g in groups:
                if len(g) == 1:
                    reduced.extend(g)
                    continue
                res = next(results)
                chunks = list(dict.fromkeys(c for n in g for c in n.chunks))
                parsed = parse_reply(res.text, chunks, render(g), self.min_overlap, reduced)
                if parsed.note is not None:
                    reduced.append(parsed.note)
                elif parsed.reason in ("no_information", "repeated"):
                    ledger.drop(f"reduce.level{depth}", parsed.reason, res.text)
                else:
                    ledger.drop(f"reduce.level{depth}", parsed.reason + " (kept notes, cut)",
                                res.text)
                    reduced.append(self.cut(g, ledger, f"reduction {parsed.reason}"))
            notes = reduced
        return notes, depth

    def cut(self, notes: Sequence[Note], ledger: Ledger, why: str) -> Note:
        """The notes joined, cut to note_tokens tokens (recorded in the trace)."""
        text = " ".join(n.text for n in notes)
        offs = self.backend.tokenizer.offsets(text)
        if len(offs) > self.note_tokens:
            text = text[: offs[self.note_tokens][0]].rstrip()
        ledger.trace.add("cut_notes", why=why, notes=len(notes), tokens_before=len(offs),
                         tokens_after=min(len(offs), self.note_tokens))
        chunks = list(dict.fromkeys(c for n in notes for c in n.chunks))
        return Note(text, chunks)
