"""The vllm backend: request/response mapping without vLLM; the real engine only on a GPU."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestra.backends.base import GenerationRequest, Message
from orchestra.backends.vllm_backend import (
    INSTALL_MESSAGE,
    VLLMBackend,
    result_from_output,
    sampling_kwargs,
)
from orchestra.errors import BackendError, ContextOverflowError

REPO = Path(__file__).resolve().parent.parent
HAVE_VLLM = importlib.util.find_spec("vllm") is not None


def test_sampling_kwargs_follow_the_request():
    greedy = GenerationRequest.user("q", max_tokens=7)
    assert sampling_kwargs(greedy) == {"max_tokens": 7, "temperature": 0.0, "top_p": 1.0}
    sampled = GenerationRequest.user("q", max_tokens=3, temperature=0.7, stop=["\n", "END"],
                                     seed=11)
    assert sampling_kwargs(sampled) == {"max_tokens": 3, "temperature": 0.7,
                                        "stop": ["\n", "END"], "seed": 11}


def test_result_from_output_counts_vllm_token_ids():
    out = SimpleNamespace(prompt_token_ids=list(range(12)), outputs=[SimpleNamespace(
        text="  Paris \n", token_ids=[5, 6, 7], finish_reason="length")])
    res = result_from_output(out, 0.5)
    assert (res.text, res.prompt_tokens, res.generated_tokens, res.finish_reason) == (
        "Paris", 12, 3, "length")
    out.outputs[0].finish_reason = "stop"
    assert result_from_output(out, 0.5).finish_reason == "stop"
    with pytest.raises(BackendError, match="no completion"):
        result_from_output(SimpleNamespace(prompt_token_ids=[1], outputs=[]), 0.0)


def test_without_vllm_building_gives_the_install_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(BackendError) as e:
        VLLMBackend(model="embedded")
    assert str(e.value) == INSTALL_MESSAGE and "pip install" in str(e.value)


# -- the whole path against a stand-in `vllm` module ----------------------------------------
def _tiny_tokenizer():
    """A real fast tokenizer (word level) with a chat template, built without any download."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "<unk> <eos> <system> <user> <assistant> the cat sat on mat what did".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    hf.chat_template = ("{% for m in messages %}<{{ m.role }}> {{ m.content }} {% endfor %}"
                        "{% if add_generation_prompt %}<assistant>{% endif %}")
    return hf


class FakeLLM:
    instances: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []
        self.tok = _tiny_tokenizer()
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=64))
        FakeLLM.instances.append(self)

    def get_tokenizer(self):
        return self.tok

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        return [SimpleNamespace(prompt_token_ids=p["prompt_token_ids"], outputs=[
            SimpleNamespace(text=f" reply {i} ", token_ids=[1] * (i + 1), finish_reason="stop")])
            for i, p in enumerate(prompts)]


@pytest.fixture
def fake_vllm(monkeypatch, tmp_path):
    mod = types.ModuleType("vllm")
    mod.LLM = FakeLLM
    mod.SamplingParams = lambda **kw: dict(kw)
    monkeypatch.setitem(sys.modules, "vllm", mod)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    FakeLLM.instances.clear()
    return tmp_path


def test_batch_goes_whole_with_prefix_caching_and_per_request_params(fake_vllm):
    b = VLLMBackend(model=str(fake_vllm))
    llm = FakeLLM.instances[0]
    assert llm.kwargs["enable_prefix_caching"] is True
    assert "kv_pages" not in b.capabilities and "prefix_cache" in b.capabilities
    assert b.context_window == 64
    doc = "the cat sat on the mat"
    reqs = [GenerationRequest.user(f"{doc} what did the cat", max_tokens=4),
            GenerationRequest.user(f"{doc} what sat", max_tokens=6, temperature=0.5, seed=3)]
    results = b.generate(reqs)
    assert len(llm.calls) == 1  # one batch, not one call per request
    prompts, params = llm.calls[0]
    assert [p["max_tokens"] for p in params] == [4, 6] and params[1]["seed"] == 3
    # Document first, question last: both prompts share the document's token prefix.
    a, c = prompts[0]["prompt_token_ids"], prompts[1]["prompt_token_ids"]
    shared = next(i for i, (x, y) in enumerate(zip(a, c)) if x != y)
    assert shared >= b.count_tokens(doc)
    assert [r.text for r in results] == ["reply 0", "reply 1"]
    assert [r.prompt_tokens for r in results] == [
        b.count_prompt_tokens(r.messages) for r in reqs]
    assert [r.generated_tokens for r in results] == [1, 2]


def test_spec_keeps_every_engine_setting(fake_vllm):
    from orchestra.registry import resolve
    from orchestra.spec import entry

    b = VLLMBackend(model=str(fake_vllm), tensor_parallel_size=2, max_num_seqs=4, seed=7)
    spec = entry(b, full=False)
    assert spec == {"type": "vllm", "model": str(fake_vllm), "tensor_parallel_size": 2,
                    "max_num_seqs": 4, "seed": 7}
    again = resolve("backend", "vllm")(**{k: v for k, v in spec.items() if k != "type"})
    assert entry(again, full=False) == spec
    assert FakeLLM.instances[-1].kwargs["tensor_parallel_size"] == 2


def test_overlong_prompt_is_refused_before_vllm(fake_vllm):
    b = VLLMBackend(model=str(fake_vllm))
    with pytest.raises(ContextOverflowError, match="window is 64"):
        b.generate([GenerationRequest.user("the cat " * 40, max_tokens=8)])
    assert FakeLLM.instances[0].calls == []


def test_model_must_be_a_local_directory(fake_vllm):
    with pytest.raises(BackendError, match="nothing is downloaded"):
        VLLMBackend(model="no-such-org/no-such-model")
    with pytest.raises(BackendError, match="local Hugging Face model directory"):
        VLLMBackend(model=str(fake_vllm / "missing"))


# -- the pipeline file -----------------------------------------------------------------------
def _vllm_yaml() -> Path:
    path = REPO / "examples" / "pipelines" / "vllm.yaml"
    if not path.is_file():
        pytest.skip(f"{path} is not there yet")
    return path


def test_vllm_pipeline_file_validates_without_importing_vllm(monkeypatch):
    from orchestra.config import check, load_config

    path = _vllm_yaml()
    monkeypatch.setitem(sys.modules, "vllm", None)
    cfg, located = load_config(path)
    check(cfg, located)
    assert cfg.backend.type == "vllm"


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed here")
def test_building_the_vllm_pipeline_without_vllm_gives_the_install_message():
    from orchestra.pipeline import Pipeline

    with pytest.raises(BackendError, match=r"pip install 'orchestra-longdoc\[vllm\]'"):
        Pipeline.from_yaml(_vllm_yaml())


# -- the real engine --------------------------------------------------------------------------
def _gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed (pip install 'orchestra-longdoc[vllm]')")
@pytest.mark.skipif(not _gpu(), reason="vLLM needs a CUDA GPU")
def test_real_vllm_answers_and_counts_tokens():
    b = VLLMBackend(model="embedded", context_window=4096, gpu_memory_utilization=0.3)
    doc = "The museum opened in 1887. Its first curator was Ada Lindqvist, a botanist."
    reqs = [GenerationRequest.user(f"{doc}\n\nIn which year did the museum open?",
                                   system="Answer briefly.", max_tokens=24),
            GenerationRequest.user(f"{doc}\n\nWho was the first curator?",
                                   system="Answer briefly.", max_tokens=24)]
    results = b.generate(reqs)
    assert "1887" in results[0].text and "Lindqvist" in results[1].text
    for req, res in zip(reqs, results):
        assert res.prompt_tokens == b.count_prompt_tokens(req.messages)
        assert 0 < res.generated_tokens <= 24
    msgs = [Message(role="user", content=doc)]
    assert b.count_prompt_tokens(msgs) > b.count_tokens(doc)
