"""The corpus registry of one ``serve --replicas`` replica, shared through the corpus book (a
Ray actor, orchestra.cluster.serve.CorpusBook)."""

from __future__ import annotations

import threading

from orchestra.server.corpora import Corpora


class SharedCorpora(Corpora):
    """Registrations are written to the book; an id this replica lacks is read from it and
    registered here (the same id: it is the documents' content hash)."""

    def __init__(self, book, pipeline, metrics, max_request_tokens: int, max_corpora: int = 8):
        super().__init__(pipeline, metrics, max_request_tokens, max_corpora)
        self.book = book
        self.new_ids: list[str] = []  # registered here since the last request finished
        self.new_lock = threading.Lock()

    def build(self, docs, warm: bool = True):
        import ray

        entry, new = super().build(docs, warm)
        ray.get(self.book.put.remote(entry.id, [tuple(d) for d in docs]))
        with self.new_lock:
            self.new_ids.append(entry.id)
        return entry, new

    def get(self, corpus_id: str):
        if not self.holds(corpus_id):
            self.fetch(corpus_id)
        return super().get(corpus_id)

    def delete(self, corpus_id: str):
        import ray

        entry = super().delete(corpus_id)
        ray.get(self.book.drop.remote(corpus_id))
        return entry

    def fetch(self, corpus_id: str) -> bool:
        """Register ``corpus_id`` here from the book (blocking); False if no replica
        registered it."""
        import ray

        if self.holds(corpus_id):
            return True
        docs = ray.get(self.book.get.remote(corpus_id))
        if docs is None:
            return False
        entry, _ = super().build([tuple(d) for d in docs], True)
        return entry.id == corpus_id

    def drain(self) -> list[str]:
        with self.new_lock:
            out, self.new_ids = self.new_ids, []
        return out
