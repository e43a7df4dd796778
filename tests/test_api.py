"""orchestra/api.py: ``orchestra.ask`` keeps the default pipeline per backend, so a second
question over the same documents reuses the first one's index and corpus instead of building
them again (on a real TransformersBackend over a tiny random Llama, the real dense retriever)."""

from __future__ import annotations

from conftest import REPO
import orchestra
from orchestra import observe
from orchestra.api import default_pipeline

DOC = REPO / "examples" / "data" / "gettysburg_address.txt"


class Work:
    """An observe listener counting index builds and loads."""

    def __init__(self):
        self.done: list[str] = []

    def step_started(self, step):
        return None

    def step_ended(self, step, token, error):
        pass

    def work_done(self, name, detail):
        self.done.append(name)


def _asked(question: str, backend, **options) -> list[str]:
    work = Work()
    with observe.listening(work):
        answer = orchestra.ask(question, [str(DOC)], backend=backend, **options)
    assert answer.route is not None
    return [w for w in work.done if w in (observe.INDEX_BUILT, observe.INDEX_LOADED)]


# The tiny Llama's window is 1024 tokens: KV pages and agents' chunks sized for it.
SMALL = {"max_tokens": 4, "page_size": 16, "top_pages": 4, "local": 64, "chunk": 64,
         "chunk_tokens": 500}


def test_ask_keeps_the_default_pipeline_and_its_index_between_calls(tiny_backend):
    first = _asked("Where was the address given?", tiny_backend, **SMALL)
    assert first, "the first question indexes the documents (built, or read from the cache)"
    # Without the kept pipeline the second call would build a new retriever and index again.
    assert _asked("Who gave the address?", tiny_backend, **SMALL) == []
    pipe = default_pipeline(tiny_backend, **SMALL)
    assert pipe is default_pipeline(tiny_backend, **SMALL)
    # Other options are another pipeline (their strategies differ).
    assert default_pipeline(tiny_backend, **{**SMALL, "max_tokens": 5}) is not pipe
