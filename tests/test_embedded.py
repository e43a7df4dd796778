"""The embedded model's conversion: a standard checkpoint, converted again when old, once when
several processes ask at the same time. (The real conversion runs in the slow suite; the
folder's equal greedy tokens in transformers and vLLM: tests/test_vllm_engine.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest


def _fake_convert(calls):
    import orchestra.backends.embedded as E

    def convert(gguf, out):
        calls.append(out)
        for f in E.CONVERTED_FILES:
            (out / f).write_text("{}")
        (out / E.MARKER).write_text(json.dumps({"version": E.CONVERSION_VERSION}))

    return convert


def test_a_folder_from_the_first_conversion_is_converted_again_saying_why(tmp_path,
                                                                        monkeypatch):
    import orchestra.backends.embedded as E
    from orchestra.cache import CacheWarning

    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path))
    calls: list = []
    monkeypatch.setattr(E, "_convert", _fake_convert(calls))
    first = E.embedded_model_dir()
    assert len(calls) == 1 and E.embedded_model_dir() == first and len(calls) == 1
    # What version 1 left: every file but the marker, architectures null, lm_head.weight.
    (first / E.MARKER).unlink()
    (first / "config.json").write_text('{"architectures": null}')
    with pytest.warns(CacheWarning) as warned:
        assert E.embedded_model_dir() == first
    [w] = warned
    msg = str(w.message)
    assert str(first) in msg and "conversion version 1" in msg and "converting it again" in msg
    assert "lm_head.weight" in msg and "\n" not in msg
    assert len(calls) == 2 and json.loads((first / "config.json").read_text()) == {}
    # Nothing is left beside it (the old folder was renamed aside, then removed).
    assert sorted(p.name for p in first.parent.iterdir() if not p.name.endswith(".lock")) == [
        first.name]


def test_a_marker_from_another_version_is_converted_again(tmp_path, monkeypatch):
    import orchestra.backends.embedded as E
    from orchestra.cache import CacheWarning

    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path))
    calls: list = []
    monkeypatch.setattr(E, "_convert", _fake_convert(calls))
    first = E.embedded_model_dir()
    (first / E.MARKER).write_text('{"version": 99}')
    with pytest.warns(CacheWarning, match="conversion version 99, not 2"):
        E.embedded_model_dir()
    assert len(calls) == 2


CHILD = textwrap.dedent("""
    import json, sys, time
    import orchestra.backends.embedded as E

    def convert(gguf, out):
        with open(sys.argv[1], "a") as log:
            log.write("converted\\n")
        time.sleep(1.5)  # long enough for the other process to arrive meanwhile
        for f in E.CONVERTED_FILES:
            (out / f).write_text("{}")
        (out / E.MARKER).write_text(json.dumps({"version": E.CONVERSION_VERSION}))

    E._convert = convert
    print(E.embedded_model_dir())
""")


def test_two_processes_converting_at_once_convert_once(tmp_path):
    import os

    log = tmp_path / "log"
    env = {**os.environ, "ORCHESTRA_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(log)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    assert log.read_text().count("converted") == 1
    paths = {o.strip() for o, _ in outs}
    assert len(paths) == 1 and (tmp_path / "cache" / "models").is_dir()


def test_tied_weights_are_saved_under_the_embeddings_name():
    """As save_pretrained does: vLLM reads model.embed_tokens.weight and skips lm_head."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from orchestra.backends.embedded import checkpoint_tensors

    torch.manual_seed(0)
    conf = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    model = LlamaForCausalLM(conf)
    tensors = checkpoint_tensors(model)
    assert "lm_head.weight" not in tensors and "model.embed_tokens.weight" in tensors
    conf.tie_word_embeddings = False
    untied = checkpoint_tensors(LlamaForCausalLM(conf))
    assert "lm_head.weight" in untied
