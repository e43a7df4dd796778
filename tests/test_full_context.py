import pytest

from orchestra.backends.scripted import ScriptedBackend
from orchestra.corpus import Corpus, Document
from orchestra.errors import ConfigError, ContextOverflowError, InputError
from orchestra.strategies.full_context import FullContext

WORDS = [f"w{i}" for i in range(300)]
TEXT = " ".join(WORDS)


def echo_backend(window):
    # Replies with the user prompt so tests can see exactly what the reader was given.
    return ScriptedBackend(lambda r: r.messages[-1].content, context_window=window)


def corpus(backend):
    return Corpus([Document("d", TEXT)], backend.tokenizer)


def test_whole_corpus_in_document_order_when_it_fits():
    b = echo_backend(2048)
    a = FullContext(b).answer("what?", Corpus([Document("1", "alpha"), Document("2", "beta")],
                                                b.tokenizer))
    assert a.text.index("alpha") < a.text.index("beta")
    assert a.cost.model_calls == 1 and a.cost.prompt_tokens == b.count_prompt_tokens(
        b.requests[0].messages)
    assert {e.doc_id for e in a.evidence} == {"1", "2"}


def test_overflow_is_refused_with_both_sizes():
    b = echo_backend(200)
    with pytest.raises(ContextOverflowError) as e:
        FullContext(b).answer("what?", corpus(b))
    assert "corpus (300 tokens)" in str(e.value)
    assert "window is 200 tokens" in str(e.value)


@pytest.mark.parametrize("policy", ["head", "tail", "middle-out"])
def test_truncation_policies_keep_what_they_say(policy):
    b = echo_backend(200)
    a = FullContext(b, truncation=policy).answer("what?", corpus(b))
    seen = set(a.text.replace("\n", " ").split())
    kept = [w for w in WORDS if w in seen]
    assert 50 < len(kept) < 200
    if policy == "head":
        assert kept == WORDS[: len(kept)]
    elif policy == "tail":
        assert kept == WORDS[-len(kept):]
    else:
        assert "w0" in seen and "w299" in seen and "w150" not in seen
    assert b.requests[-1] and a.trace.steps[0].detail["truncation"] == policy
    assert a.trace.steps[0].detail["dropped_tokens"] > 0
    # evidence spans match what the reader saw
    for e in a.evidence:
        assert TEXT[e.start:e.end].split()[0] in seen


def test_bad_options_and_questions():
    b = echo_backend(200)
    with pytest.raises(ConfigError, match="truncation"):
        FullContext(b, truncation="sideways")
    with pytest.raises(InputError, match="question is empty"):
        FullContext(b).answer("  ", corpus(b))
