"""benchmarks/read_audit.py's two paths agree: a plain transformers read (chat template, one
user turn, greedy) and orchestra's transformers backend give the model the same token ids and
return the same reply (on a tiny random Llama with SmolLM2's tokenizer and chat template: the
real code paths in a second; the real model's audit is in benchmarks/README.md)."""

from __future__ import annotations


def test_plain_and_orchestra_reads_are_the_same_tokens_and_reply(tiny_llama_dir, tiny_backend):
    from read_audit import PlainReader, orchestra_ids

    from orchestra.backends.base import GenerationRequest, Message

    prompt = "The following are given documents.\n\nDocument 1:\nParis is in France.\n\n" \
             "Question: Where is Paris? Answer:"
    plain = PlainReader(str(tiny_llama_dir), max_tokens=8)
    messages = [Message(role="user", content=prompt)]
    assert plain.input_ids(prompt) == orchestra_ids(tiny_backend, messages)
    ours = tiny_backend.generate_one(GenerationRequest(messages=messages, max_tokens=8)).text
    assert plain.read(prompt)[0] == ours


def test_squad_question_sets_pick_what_they_say():
    from conftest import data_path

    data_path("ruler", "squad.json")  # skips with a message when the data is absent
    from read_audit import squad_picks, squad_samples

    from orchestra.eval.datasets.squad import read_squad

    articles = read_squad(None)
    openings = squad_picks("squad-openings", 40, 0)
    # Paragraph 0 of each of the 35 articles first (each has an answerable question), then 1.
    assert [ctx for ctx, _ in openings[:35]] == [a["paragraphs"][0]["context"] for a in articles]
    assert openings[35][0] == articles[0]["paragraphs"][1]["context"]
    for how in ("squad-first", "squad-random"):
        samples = squad_samples(how, 30, 0)
        assert len({s.sample_id for s in samples}) == 30 and all(s.answers for s in samples)
        assert samples == squad_samples(how, 30, 0) != squad_samples(how, 30, 1)
    assert squad_samples("squad-first", 30, 0) != squad_samples("squad-random", 30, 0)
