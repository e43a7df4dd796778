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
