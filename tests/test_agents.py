"""Control flow of chain_of_agents and map_reduce, with a scripted backend.

These check what the strategies send and how they handle replies (chunk sizing, note capping,
tree reduction depth, dropped notes, cost and evidence). They prove no model quality: the
real-model test is tests/test_agents_integration.py.
"""

from __future__ import annotations

import re

import pytest

from orchestra.agents.notes import Grounder, is_garbled, parse_reply
from orchestra.agents.prompts import NO_INFO
from orchestra.backends.scripted import ScriptedBackend
from orchestra.corpus import Corpus, Document
from orchestra.errors import ConfigError, InputError
from orchestra.registry import resolve
from orchestra.strategies.agents import ChainOfAgents, MapReduce

FILLER = "The weather was mild and the river ran slowly past the old mill. "


def corpus_with(backend, facts: dict[int, str], n_parts: int = 6, words: int = 60) -> Corpus:
    """``n_parts`` short documents of filler (about ``words`` tokens; one chunk each when
    chunk_tokens >= words + 10); document i may hold facts[i]."""
    docs = []
    for i in range(n_parts):
        body = (FILLER * max(1, words // 14)).strip()
        if i in facts:
            body = body + " " + facts[i]
        docs.append(Document(f"d{i}", body))
    return Corpus(docs, backend.tokenizer)


def user_text(req) -> str:
    return req.messages[-1].content


def copy_facts(req) -> str:
    """A well-behaved worker: copies the sentences with 'magic' from its chunk."""
    text = user_text(req)
    if "Copy the sentences from the text" in text:
        chunk = text.split("Text:\n", 1)[1].split("\n\nQuestion:", 1)[0]
        found = re.findall(r"[^.]*magic[^.]*\.", chunk)
        return " ".join(s.strip() for s in found) if found else NO_INFO
    return "ANSWER: " + " | ".join(re.findall(r"magic number (?:\d+ )?is \d+", text))


def test_registered_and_options_round_trip():
    b = ScriptedBackend(copy_facts, context_window=4096)
    for name, cls in (("chain_of_agents", ChainOfAgents), ("map_reduce", MapReduce)):
        assert resolve("strategy", name) is cls
        s = cls(b, chunk_tokens=300, note_tokens=100, prompts={"manager": "N:{notes} Q:{question}"},
                worker_max_tokens=40, overlap=0, min_overlap=None, max_tokens=20)
        opts = s.spec()
        again = cls(b, **opts)
        assert again.spec() == opts
        assert opts["chunk_tokens"] == 300
        assert opts["prompts"] == {"manager": "N:{notes} Q:{question}"}


def test_map_reduce_one_batch_drops_empty_notes_and_cites_chunks():
    b = ScriptedBackend(copy_facts, context_window=4096)
    corpus = corpus_with(b, {1: "The first magic number is 111.",
                             4: "The second magic number is 222."})
    s = MapReduce(b, chunk_tokens=80, overlap=0, note_tokens=64, progress=False)
    chunks = s.chunks(corpus)
    assert len(chunks) >= 5
    ans = s.answer("What are the magic numbers?", corpus)
    # All workers went in one generate() call, then one manager call.
    assert b.batches == [len(chunks), 1]
    manager_prompt = user_text(b.requests[-1])
    assert NO_INFO not in manager_prompt
    assert "111" in manager_prompt and "222" in manager_prompt
    assert "111" in ans.text and "222" in ans.text
    # Evidence: only the chunks whose notes survived, with their spans.
    assert len(ans.evidence) == 2
    first, second = ans.evidence
    assert "111" in corpus.document(first.doc_id).text[first.start:first.end]
    assert "222" in corpus.document(second.doc_id).text[second.start:second.end]
    dropped = next(st for st in ans.trace.steps if st.name == "notes").detail["dropped"]
    assert dropped == {"no_information": len(chunks) - 2}
    # Cost: every call counted, tokens summed over all results.
    assert ans.cost.model_calls == len(chunks) + 1
    expected = sum(b.count_prompt_tokens(r.messages) for r in b.requests)
    assert ans.cost.prompt_tokens == expected
    assert ans.cost.generated_tokens > 0 and ans.cost.wall_seconds > 0


def test_chain_passes_notes_forward_in_order():
    b = ScriptedBackend(copy_facts, context_window=4096)
    corpus = corpus_with(b, {0: "The first magic number is 111.",
                             3: "The second magic number is 222."})
    s = ChainOfAgents(b, chunk_tokens=80, overlap=0, note_tokens=64, progress=False)
    n = len(s.chunks(corpus))
    ans = s.answer("What are the magic numbers?", corpus)
    assert b.batches == [1] * (n + 1)  # one worker at a time, then the manager
    worker_prompts = [user_text(r) for r in b.requests[:-1]]
    assert "Notes from earlier" not in worker_prompts[0]
    assert all("[chunk 1] The first magic number is 111." in p for p in worker_prompts[1:])
    assert "222" in ans.text and "111" in ans.text
    assert ans.cost.model_calls == n + 1


def test_ungrounded_and_garbled_replies_are_dropped_and_recorded():
    replies = {}

    def worker(req):
        text = user_text(req)
        if "Copy the sentences from the text" not in text:
            return "the answer"
        i = len(replies)
        replies[i] = ["The first magic number is 111.",   # the real fact: kept
                      "The second magic number is 2.",    # invented: ungrounded
                      "",                                 # empty
                      "!!! ### ???",                      # garbled
                      "the the the the the the the the the",  # a loop: garbled
                      ][i % 5]
        return replies[i]

    b = ScriptedBackend(worker, context_window=4096)
    corpus = corpus_with(b, {0: "The first magic number is 111."}, n_parts=5)
    s = MapReduce(b, chunk_tokens=80, overlap=0, progress=False)
    assert len(s.chunks(corpus)) == 5
    ans = s.answer("What are the magic numbers?", corpus)
    dropped = next(st for st in ans.trace.steps if st.name == "notes").detail["dropped"]
    assert dropped == {"ungrounded": 1, "empty": 1, "garbled": 2}
    manager_prompt = user_text(b.requests[-1])
    assert "111" in manager_prompt and "number is 2." not in manager_prompt
    assert [e.chunk_id for e in ans.evidence] == [s.chunks(corpus)[0].id]


def test_no_surviving_notes_is_unanswerable_without_a_manager_call():
    b = ScriptedBackend(lambda r: NO_INFO, context_window=4096)
    corpus = corpus_with(b, {})
    for cls in (MapReduce, ChainOfAgents):
        before = len(b.requests)
        ans = cls(b, chunk_tokens=80, overlap=0, progress=False).answer("What is it?", corpus)
        assert ans.unanswerable and ans.evidence == []
        assert ans.cost.model_calls == len(b.requests) - before  # workers only


def test_grounding_can_be_turned_off_for_abstractive_notes():
    b = ScriptedBackend(lambda r: "A story about a mill." if "Copy" in user_text(r) else "ok",
                        context_window=4096)
    corpus = corpus_with(b, {}, n_parts=2)
    grounded = MapReduce(b, chunk_tokens=80, overlap=0).answer("Summarise", corpus)
    assert grounded.unanswerable
    free = MapReduce(b, chunk_tokens=80, overlap=0, min_overlap=None).answer("Summarise", corpus)
    assert not free.unanswerable and len(free.evidence) == 2


def test_aligned_notes_copy_the_sentence_a_paraphrase_came_from():
    source = ("The mill stood by the river for a century. Antigone defies Creon and chooses to "
              "obey her conscience rather than human law. The bakery opened at dawn.")
    reply = "The civil disobedience in Antigone is shown when she defies King Creon."
    dropped = parse_reply(reply, [], source, 0.5)
    assert dropped.note is None and dropped.reason == "ungrounded"
    kept = parse_reply(reply, [], source, 0.5, align=True)
    assert kept.note.text == ("Antigone defies Creon and chooses to obey her conscience rather "
                              "than human law.")
    # declines and replies sharing under two content terms with any sentence stay dropped
    for text in ("The text does not mention Antigone or Creon.", "The answer is 1471."):
        assert parse_reply(text, [], source, 0.5, align=True).note is None
    # through the strategy: the note and the evidence are the copied sentence's chunk
    b = ScriptedBackend(lambda r: reply if "Copy the sentences" in user_text(r) else "ok",
                        context_window=4096)
    corpus = corpus_with(b, {1: source}, n_parts=3)
    ans = MapReduce(b, chunk_tokens=80, overlap=0, align_notes=True, progress=False).answer(
        "How is civil disobedience shown in Antigone?", corpus)
    assert "obey her conscience rather than human law" in user_text(b.requests[-1])
    assert [corpus.document(e.doc_id).text[e.start:e.end] for e in ans.evidence] == [
        c.text for c in MapReduce(b, chunk_tokens=80, overlap=0).chunks(corpus)
        if "Antigone" in c.text]
    with pytest.raises(ConfigError, match="align_notes must be true or false"):
        MapReduce(b, align_notes="yes")


def test_grounder_requires_numbers_and_trigrams():
    g = Grounder("It said: the first magic number is 482913. Nothing else.", 0.5)
    assert g.supports("The first magic number is 482913.")
    assert not g.supports("The first magic number is 482914.")  # one digit off
    assert not g.supports("The second magic number is 2.")
    assert is_garbled("") and is_garbled("... ,,, ;;;") and not is_garbled("Yes, 42.")


def test_overlap_duplicates_merge_citations():
    b = ScriptedBackend(lambda r: "x")
    corpus = corpus_with(b, {0: "The first magic number is 111."}, n_parts=1)
    c1, c2 = corpus.chunk(40, 0)[:2]
    first = parse_reply("The first magic number is 111.", [c1], c1.text + c2.text, 0.5)
    again = parse_reply("The first magic number is 111.", [c2], c1.text + c2.text, 0.5,
                        [first.note])
    assert again.note is None and again.reason == "repeated"
    assert first.note.chunks == [c1, c2]


def test_chain_caps_and_compresses_notes():
    facts = {i: f"The magic number {i} is {100 + i}." for i in range(8)}

    def script(req):
        text = user_text(req)
        if "Copy the notes that help" in text:  # the compress call: keep the last fact only
            return re.findall(r"The magic number \d is \d+\.", text)[-1]
        return copy_facts(req)

    b = ScriptedBackend(script, context_window=4096)
    corpus = corpus_with(b, facts, n_parts=8)
    s = ChainOfAgents(b, chunk_tokens=80, overlap=0, note_tokens=30, worker_max_tokens=20,
                      progress=False)
    ans = s.answer("What are the magic numbers?", corpus)
    compress_calls = [r for r in b.requests if "Copy the notes that help" in user_text(r)]
    assert compress_calls, "notes over note_tokens must be compressed"
    for r in b.requests:
        if "Notes from earlier" in user_text(r):
            block = user_text(r).split("Notes from earlier parts of the document:\n")[1]
            block = block.split("\n\nText:")[0]
            assert b.count_tokens(block) <= 30
    assert any(st.name == "compressed" for st in ans.trace.steps)
    assert ans.cost.model_calls == len(b.requests)


def test_chain_compress_failure_drops_oldest_notes():
    facts = {i: f"The magic number {i} is {100 + i}." for i in range(6)}

    def script(req):
        if "Copy the notes that help" in user_text(req):
            return "I made this up entirely."  # ungrounded: the cap falls back to dropping
        return copy_facts(req)

    b = ScriptedBackend(script, context_window=4096)
    corpus = corpus_with(b, facts, n_parts=6)
    s = ChainOfAgents(b, chunk_tokens=80, overlap=0, note_tokens=30, worker_max_tokens=20,
                      progress=False)
    ans = s.answer("What are the magic numbers?", corpus)
    assert any(st.name == "capped" for st in ans.trace.steps)
    manager_prompt = user_text(b.requests[-1])
    assert "105" in manager_prompt and "100" not in manager_prompt


@pytest.mark.parametrize("n_chunks,expected_depth", [(4, 0), (8, 1), (32, 2)])
def test_map_reduce_tree_depth(n_chunks, expected_depth):
    facts = {i: f"The magic number {i} is {100 + i}." for i in range(n_chunks)}

    def script(req):
        text = user_text(req)
        if "Copy the notes that help" in text:
            # A reduce keeps the first fact of its group: each level shrinks the notes.
            return re.findall(r"The magic number \d+ is \d+\.", text)[0]
        return copy_facts(req)

    # The window holds the manager prompt with about 4 notes, a reduce prompt with 3 or 4.
    b = ScriptedBackend(script, context_window=130)
    corpus = corpus_with(b, facts, n_parts=n_chunks, words=24)
    s = MapReduce(b, chunk_tokens=40, overlap=0, note_tokens=24, worker_max_tokens=20,
                  max_tokens=16, progress=False)
    assert len(s.chunks(corpus)) == n_chunks
    ans = s.answer("What are the magic numbers?", corpus)
    depth = next(st for st in ans.trace.steps if st.name == "reduce").detail["depth"]
    assert depth == expected_depth
    levels = [st for st in ans.trace.steps if st.name.startswith("reduce.level")]
    assert len(levels) == expected_depth
    # Each level is one batched call, with fewer groups than the level before.
    groups = [st.detail["groups"] for st in levels]
    assert groups == sorted(groups, reverse=True) and all(g >= 1 for g in groups)
    assert b.batches == [n_chunks] + groups + [1]
    assert ans.cost.model_calls == n_chunks + sum(groups) + 1
    # The manager prompt fits the window.
    assert b.count_prompt_tokens(b.requests[-1].messages) + 16 <= 130
    assert "100" in ans.text  # the first fact survives every level of this script


def test_chunk_budget_too_small_for_prompt():
    b = ScriptedBackend(copy_facts, context_window=512)
    with pytest.raises(ConfigError, match=r"chunk_tokens=1000 does not fit the 512-token window"):
        MapReduce(b, chunk_tokens=1000)
    with pytest.raises(ConfigError, match=r"use chunk_tokens <= \d+"):
        ChainOfAgents(b, chunk_tokens=400, note_tokens=100)
    tiny = ScriptedBackend(copy_facts, context_window=60)
    with pytest.raises(ConfigError, match="cannot hold a chunk"):
        MapReduce(tiny, chunk_tokens=10, overlap=0, worker_max_tokens=8, note_tokens=8)
    # A long question can push a valid config over the window at answer time.
    s = MapReduce(b, chunk_tokens=380, overlap=0, note_tokens=48, max_tokens=16)
    corpus = corpus_with(b, {})
    with pytest.raises(ConfigError, match="does not fit"):
        s.answer("why " * 200, corpus)


@pytest.mark.parametrize("bad", [
    {"chunk_tokens": 0}, {"note_tokens": -1}, {"chunk_tokens": "big"},
    {"overlap": 300, "chunk_tokens": 300}, {"min_overlap": 2.0},
    {"worker_max_tokens": 300, "note_tokens": 100},
    {"prompts": {"worker": "no fields"}}, {"prompts": {"wrokre": "x"}},
])
def test_bad_options_name_the_problem(bad):
    b = ScriptedBackend(copy_facts, context_window=4096)
    with pytest.raises((ConfigError, InputError)) as e:
        MapReduce(b, **{"chunk_tokens": 300, **bad})
    key = next(iter(bad)) if "prompts" not in bad else next(iter(bad["prompts"]))
    assert key.split("_")[0] in str(e.value) or "worker" in str(e.value)


def test_empty_corpus_is_refused():
    b = ScriptedBackend(copy_facts, context_window=4096)
    with pytest.raises(InputError, match="empty"):
        Corpus([], b.tokenizer)
    blank = Corpus([Document("blank", "   \n\n  ")], b.tokenizer)
    with pytest.raises(InputError, match="holds no text"):
        MapReduce(b, chunk_tokens=100).answer("What?", blank)
    with pytest.raises(InputError, match="question is empty"):
        ChainOfAgents(b, chunk_tokens=100).answer("  ", corpus_with(b, {}))
    assert b.requests == []  # nothing was sent


def test_prompt_overrides_reach_the_requests():
    b = ScriptedBackend(lambda r: "The first magic number is 111." if "READ" in user_text(r)
                        else "done", context_window=4096)
    corpus = corpus_with(b, {0: "The first magic number is 111."}, n_parts=1)
    s = MapReduce(b, chunk_tokens=100, overlap=0, prompts={
        "worker": "READ {chunk} ASK {question} {notes}",
        "worker_system": "Be a copier.",
        "manager": "NOTES {notes} ASK {question}",
    })
    ans = s.answer("What is the magic number?", corpus)
    worker_req, manager_req = b.requests
    assert user_text(worker_req).startswith("READ The weather")
    assert worker_req.messages[0].content == "Be a copier."
    assert user_text(manager_req).startswith("NOTES [chunk 1] The first magic number is 111.")
    assert ans.text == "done"


def test_failed_reduction_keeps_the_groups_notes_cut():
    facts = {i: f"The magic number {i} is {100 + i}." for i in range(8)}

    def script(req):
        if "Copy the notes that help" in user_text(req):
            return "%%% ### %%%"  # garbled: the group's notes are kept, joined and cut
        return copy_facts(req)

    b = ScriptedBackend(script, context_window=130)
    corpus = corpus_with(b, facts, n_parts=8, words=24)
    s = MapReduce(b, chunk_tokens=40, overlap=0, note_tokens=24, worker_max_tokens=20,
                  max_tokens=16, progress=False)
    ans = s.answer("What are the magic numbers?", corpus)
    cuts = [st for st in ans.trace.steps if st.name == "cut_notes"]
    assert cuts and all(st.detail["tokens_after"] <= 24 for st in cuts)
    reduce_step = next(st for st in ans.trace.steps if st.name == "reduce")
    reasons = {d["reason"] for d in reduce_step.detail["dropped_replies"]}
    assert reasons == {"garbled (kept notes, cut)"}
    assert not ans.unanswerable and "100" in ans.text


def test_short_documents_are_packed_into_one_worker_input_and_cited_narrowly():
    """Many short documents (RULER-QA's paragraphs) share worker calls; evidence stays per doc."""
    b = ScriptedBackend(copy_facts, context_window=4096)
    corpus = corpus_with(b, {5: "The first magic number is 111."}, n_parts=12, words=14)
    for cls in (MapReduce, ChainOfAgents):
        s = cls(b, chunk_tokens=200, overlap=0, note_tokens=64, progress=False)
        chunks, pieces = s.chunks(corpus), s.pieces(corpus)
        assert len(chunks) == 12 and 1 < len(pieces) < 12
        assert [c for p in pieces for c in p.chunks] == chunks  # nothing lost, order kept
        assert all(sum(c.n_tokens for c in p.chunks) <= 200 for p in pieces)
        before = len(b.requests)
        ans = s.answer("What is the magic number?", corpus)
        workers = len(b.requests) - before - 1
        assert workers == len(pieces)
        assert "111" in ans.text
        # The note came from a piece of several documents; it cites only the one that says it.
        assert [e.doc_id for e in ans.evidence] == ["d5"]
    # A document longer than chunk_tokens still becomes several chunks, never packed past it.
    s = MapReduce(b, chunk_tokens=40, overlap=0, progress=False)
    assert all(sum(c.n_tokens for c in p.chunks) <= 40 for p in s.pieces(corpus))
