"""Shared fixtures: the real embedded backend (once per session) and the shared data folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Benchmarks are scripts (run as `python benchmarks/x.py`, their folder on sys.path), not a
# package; tests import them and their shared helpers (squad_haystack) as top-level modules.
if str(REPO / "benchmarks") not in sys.path:
    sys.path.append(str(REPO / "benchmarks"))
SHARED_DATA = Path(os.environ.get("ORCHESTRA_DATA", REPO.parent / "shared" / "data"))


def data_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with a clear message when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"benchmark data not found at {path} (set ORCHESTRA_DATA or place "
                    "the shared data folder beside the repository)")
    return path


@pytest.fixture(scope="session")
def embedded():
    """The real embedded SmolLM2 backend, loaded once for the whole test session."""
    from orchestra.backends import default_backend

    return default_backend()


def tiny_llama(vocab=101, window=512, seed=0, layers=3):
    """A tiny random Llama (real transformers code, no weights to load): for plumbing."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    conf = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=window, rope_theta=10000.0,
                       initializer_range=0.2)  # large weights: logits far from uniform
    return LlamaForCausalLM(conf).eval()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A model directory: a tiny random Llama with SmolLM2's tokenizer and chat template."""
    import shutil

    from orchestra.backends.embedded import embedded_model_dir

    src = embedded_model_dir()
    d = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(vocab=49152, window=1024, layers=2).save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (src / f).exists():
            shutil.copy(src / f, d / f)
    return d


@pytest.fixture(scope="session")
def tiny_backend(tiny_llama_dir):
    """A real TransformersBackend over the tiny random Llama: the real code path in a second,
    for tests where the model is only plumbing (its replies are noise)."""
    from orchestra.backends.hf import TransformersBackend

    return TransformersBackend(model=str(tiny_llama_dir), device="cpu")


@pytest.fixture(scope="session")
def essays_dir() -> Path:
    return data_path("needle_haystack", "PaulGrahamEssays")
