"""Bad input on disk (issue 14): caches that load but are damaged (D-4, C-3, C-9, P-4, C-4)
are rebuilt with a warning or named; a model folder's own code never runs (N-1); a full
disk during the embedded conversion is one line (N-2). The table of command-line probes is
tests/test_bad_input.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_probe import ORCHESTRA, pipeline, run_cli
from orchestra.backends.base import GenerationRequest, Message
from orchestra.corpus import Corpus, Document
from orchestra.errors import BackendError, InputError


# -- D-4, C-3, C-9, P-4: caches that load but are damaged ------------------------------------
def test_d4_bm25_index_with_nan_scores_is_rebuilt_with_a_warning(tmp_path, monkeypatch):
    from orchestra.backends.scripted import RegexTokenizer
    from orchestra.retrievers.base import IndexCacheWarning
    from orchestra.retrievers.bm25 import BM25Retriever

    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path))
    corpus = Corpus([Document("d", "Alice is 30 years old. " * 20 + "Bob likes tea.")],
                    RegexTokenizer())
    first = BM25Retriever(chunk_tokens=16, overlap=0).index(corpus)
    path = first.index_path(corpus, first._key)
    with np.load(path) as z:
        state = {k: z[k] for k in z.files}
    state["data"] = np.full_like(state["data"], np.nan)
    with open(path, "wb") as f:
        np.savez(f, **state)
    with pytest.warns(IndexCacheWarning, match="NaN"):
        again = BM25Retriever(chunk_tokens=16, overlap=0).index(
            Corpus(corpus.documents, RegexTokenizer()))
    assert not again.loaded_from_cache
    assert "tea" in again.retrieve("What does Bob like?", 1)[0].chunk.text


def _tiny_copy(tiny_llama_dir: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(tiny_llama_dir, dest)
    return dest


def test_d4_model_weights_with_nan_are_named(tiny_llama_dir, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from orchestra.backends.hf import TransformersBackend

    d = _tiny_copy(tiny_llama_dir, tmp_path / "model")
    weights = load_file(d / "model.safetensors")
    name = next(k for k in weights if k.endswith("mlp.down_proj.weight"))
    weights[name][0, :8] = torch.nan
    save_file(weights, d / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BackendError, match=f"{d}: the model's weights are damaged .*NaN"):
        TransformersBackend(model=str(d), device="cpu")


@pytest.mark.parametrize("damage", ["truncated", "config", "missing"])
def test_c3_a_damaged_model_folder_is_named(tiny_llama_dir, tmp_path, damage):
    from orchestra.backends.hf import TransformersBackend

    d = _tiny_copy(tiny_llama_dir, tmp_path / "model")
    w = d / "model.safetensors"
    if damage == "truncated":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif damage == "config":
        (d / "config.json").write_text('{"model_type": "llama", "hidden_')
    else:
        w.unlink()
    with pytest.raises(BackendError, match=f"{d}: cannot be loaded as a Hugging Face model"):
        TransformersBackend(model=str(d), device="cpu")


def _handle_blob(keys_shape=(2, 2, 100, 8), pages=1):
    import torch

    from orchestra.kv.config import PageConfig
    from orchestra.kv.handle import FORMAT, FORMAT_VERSION

    n = keys_shape[2]
    L, H, _, D = keys_shape
    return {"format": FORMAT, "version": FORMAT_VERSION, "fingerprint": "fp", "key": "k",
            "config": PageConfig().as_dict(), "n_tokens": n, "prefill_seconds": 0.1,
            "token_ids": torch.zeros(n, dtype=torch.long),
            "char_offsets": torch.zeros(n, 2, dtype=torch.long),
            "keys": torch.zeros(keys_shape), "values": torch.zeros(keys_shape),
            "kmin": torch.zeros(L, H, pages, D), "kmax": torch.zeros(L, H, pages, D),
            "kmean": torch.zeros(L, H, pages, D), "baselines": {}}


@pytest.mark.parametrize("change, words", [
    (lambda b: b.update(kmin=b["kmin"][:, :, :0]), "kmin has shape"),
    (lambda b: b.update(values=b["values"][:, :, :50]), "disagree"),
    (lambda b: b.update(keys=b["keys"][0]), "4-D float"),
    (lambda b: b.update(token_ids=b["token_ids"][:3]), "token ids"),
    (lambda b: b.pop("n_tokens"), "KeyError"),
], ids=["pages", "values", "dims", "token-ids", "missing-field"])
def test_c9_kv_handle_with_wrong_shapes_is_refused(tmp_path, change, words):
    import torch

    from orchestra.kv.handle import PrefilledDocument

    good = _handle_blob()
    torch.save(good, tmp_path / "good.pt")
    assert PrefilledDocument.load(tmp_path / "good.pt", "fp").n_tokens == 100
    bad = _handle_blob()
    change(bad)
    torch.save(bad, tmp_path / "h.pt")
    with pytest.raises(InputError, match=f"{tmp_path / 'h.pt'}: a damaged kv_pages handle .*"
                                         f"{words}.*delete it"):
        PrefilledDocument.load(tmp_path / "h.pt", "fp")
    with pytest.raises(InputError, match="not the model's"):
        PrefilledDocument.load(tmp_path / "good.pt", "fp", dims=(3, 2, 8))


@pytest.mark.parametrize("damage", [b"not a torch file", None], ids=["garbage", "shapes"])
def test_p4_kv_pages_prefills_a_damaged_handle_again(tiny_backend, tmp_path, monkeypatch, damage):
    import torch

    from orchestra.cache import CacheWarning
    from orchestra.kv.handle import PrefilledDocument
    from orchestra.strategies.kv_pages import KVPages

    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path))
    kw = dict(page_size=16, top_pages=4, sink=4, local=32, chunk=64, max_tokens=3, persist=True)
    corpus = Corpus.from_texts([" ".join(["word"] * 300)], tiny_backend.tokenizer)
    first = KVPages(tiny_backend, **kw)
    first.answer("Which word?", corpus)
    (path,) = (tmp_path / "kv_pages").glob("*.pt")
    if damage is None:
        blob = torch.load(path, weights_only=True)
        blob["kmin"] = blob["kmin"][:, :, :1]
        torch.save(blob, path)
    else:
        path.write_bytes(damage)
    with pytest.warns(CacheWarning, match=f"{path}.*prefilling the document again"):
        again = KVPages(tiny_backend, **kw).answer("Which word?", corpus)
    assert again.cost.prefill_seconds > 0
    assert PrefilledDocument.load(path, first.fingerprint).n_tokens > 0  # replaced, readable


def test_c3_incomplete_embedded_conversion_is_converted_again(tmp_path, monkeypatch):
    """A converted embedded model missing a file (weights deleted) is converted again with one
    warning. The conversion itself is replaced by a recorder: this checks the control flow (the
    real conversion runs in test_d4_damaged_embedded_cache_is_converted_again)."""
    import orchestra.backends.embedded as E
    from orchestra.cache import CacheWarning

    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path))
    calls = []

    def convert(gguf, target):
        calls.append(target)
        target.mkdir(parents=True, exist_ok=True)
        for f in E.CONVERTED_FILES:
            (target / f).write_text("{}")
        (target / E.MARKER).write_text(f'{{"version": {E.CONVERSION_VERSION}}}')

    monkeypatch.setattr(E, "_convert", convert)
    first = E.embedded_model_dir()
    assert E.embedded_model_dir() == first and len(calls) == 1  # complete: reused
    (first / "model.safetensors").unlink()
    with pytest.warns(CacheWarning, match="incomplete \\(missing model.safetensors\\)"):
        assert E.embedded_model_dir() == first
    assert len(calls) == 2 and (first / "model.safetensors").is_file()


def test_c4_read_only_cache_runs_without_caching(tmp_path, monkeypatch):
    import orchestra.cache as cache
    from orchestra.cache import CacheWarning, cache_dir

    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path / "file" / "cache"))
    monkeypatch.setattr(cache, "_fallback", None)
    with pytest.warns(CacheWarning, match="cannot be written") as warned:
        a = cache_dir("indexes", "bm25")
        b = cache_dir("models")
    assert len(warned) == 1 and a.is_dir() and b.is_dir()
    assert not str(a).startswith(str(tmp_path))


@pytest.mark.slow
def test_d4_damaged_embedded_cache_is_converted_again(tmp_path, monkeypatch):
    """The real embedded model: 4096 bytes of 0xFF inside its converted weights (they load,
    then answer nothing) are converted again, with a warning, and the model answers. (One
    conversion, ~1 min on 2 cores; a truncated or unreadable folder takes the same path:
    test_c3_a_damaged_model_folder_is_named shows it is detected.)"""
    import shutil

    from orchestra.backends.embedded import embedded_model_dir
    from orchestra.backends.hf import TransformersBackend
    from orchestra.cache import CacheWarning

    src = embedded_model_dir()
    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path))
    dest = tmp_path / "models" / src.name
    shutil.copytree(src, dest)
    w = dest / "model.safetensors"
    with open(w, "r+b") as f:
        f.seek(w.stat().st_size // 2)
        f.write(b"\xff" * 4096)
    with pytest.warns(CacheWarning, match="NaN or infinite.*converting the embedded model again"):
        backend = TransformersBackend(model="embedded", device="cpu")
    req = GenerationRequest(messages=[Message(role="user", content="What is 2 + 2?")],
                            max_tokens=8)
    assert backend.generate_one(req).text.strip()


@pytest.mark.slow
def test_d4_dense_index_with_nan_vectors_is_rebuilt(tmp_path, monkeypatch):
    from orchestra.backends.scripted import RegexTokenizer
    from orchestra.retrievers.base import IndexCacheWarning
    from orchestra.retrievers.dense import DenseRetriever

    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path))
    docs = [Document("a", "The lighthouse keeper counted gulls every morning."),
            Document("b", "Tea was served in the garden at four.")]
    first = DenseRetriever(show_progress=False).index(Corpus(docs, RegexTokenizer()))
    path = first.index_path(first.corpus, first._key)
    with np.load(path) as z:
        state = {k: z[k] for k in z.files}
    state["vectors"] = np.full_like(state["vectors"], np.nan)
    with open(path, "wb") as f:
        np.savez(f, **state)
    with pytest.warns(IndexCacheWarning, match="NaN"):
        again = DenseRetriever(show_progress=False).index(Corpus(docs, RegexTokenizer()))
    assert again.retrieve("Who counted gulls?", 1)[0].chunk.doc_id == "a"


@pytest.mark.slow
@pytest.mark.parametrize("argv, expect", [
    (["--strategy", "full_context", "--truncation", "head", "-q", "Why " + "really " * 9000 + "?"],
     ["the question is too long", "window is 8192 tokens"]),
    (["--strategy", "chain_of_agents", "--max-tokens", "100000", "-q", "How old is Alice?"],
     ["max_tokens 100000", "8192-token window", "lower max_tokens"]),
], ids=["C-2/P-1 a question over the window", "P-2 max_tokens over the window"])
def test_real_model_names_the_sizes(tmp_path, argv, expect):
    """The embedded model's own window and tokenizer (each run loads the model once)."""
    (tmp_path / "a.txt").write_text("Alice is 30 years old.")
    # The user's cache (the converted model is there), not the row's empty one.
    cache = os.environ.get("ORCHESTRA_CACHE") or str(Path.home() / ".cache" / "orchestra")
    proc = run_cli(["ask", "--docs", "a.txt", *argv], tmp_path,
                   {"ORCHESTRA_CACHE": cache}, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    for want in expect:
        assert want in line, line


# -- N-1: no code from a model folder runs, whatever stdin says ------------------------------
def _evil_folder(tmp: Path, marker: Path) -> Path:
    d = tmp / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "auto_map": {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilModel"}}))
    code = f"open({str(marker)!r}, 'w').write('ran')\n"
    (d / "configuration_evil.py").write_text(code)
    (d / "modeling_evil.py").write_text(code)
    return d


def test_n1_custom_code_never_runs_with_yes_on_stdin(tmp_path):
    """`echo y | orchestra run ...` used to answer transformers' "run the custom code? [y/N]"
    prompt, and the folder's Python ran."""
    marker = tmp_path / "evil-ran"
    model = _evil_folder(tmp_path, marker)
    (tmp_path / "p.yaml").write_text(pipeline("f: {type: full_context}", backend=(
        f"backend: {{type: transformers, model: '{model}'}}\n")))
    for argv in (["run", "p.yaml", "--text", "t", "-q", "q?"], ["validate", "p.yaml"]):
        proc = subprocess.run([str(ORCHESTRA), *argv], cwd=tmp_path, input="y\ny\n",
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "ORCHESTRA_CACHE": str(tmp_path / "cache")})
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "asks to run its own code" in proc.stderr and "[y/N]" not in proc.stderr
    assert not marker.exists()


def test_n1_every_load_passes_trust_remote_code_false(tmp_path, monkeypatch):
    """Below the folder check: the loaders themselves never prompt and never import the
    folder's code, even with 'y' waiting on stdin."""
    import io

    import torch

    from orchestra.backends.hf import _load_checked
    from orchestra.backends.local import model_dir

    marker = tmp_path / "evil-ran"
    model = _evil_folder(tmp_path, marker)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 4))
    with pytest.raises(BackendError, match="cannot be loaded as a Hugging Face model"):
        _load_checked(model, torch.float32)
    with pytest.raises(BackendError, match=r"asks to run its own code \(auto_map in "
                                           r"config.json: configuration_evil.py, modeling_evil"):
        model_dir(str(model))
    assert not marker.exists()
    assert sys.stdin.read() == "y\n" * 4  # nothing read the answer


# -- N-2: a full disk during the embedded conversion -----------------------------------------
def test_n2_no_room_for_the_conversion_is_one_line(tmp_path, monkeypatch):
    """The space check (any file system): too little room is named before converting."""
    import shutil as sh

    import orchestra.backends.embedded as E

    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path))
    monkeypatch.setattr(E.shutil, "disk_usage",
                        lambda p: sh._ntuple_diskusage(10 << 20, 8 << 20, 2 << 20))
    monkeypatch.setattr(E, "_write_conversion", lambda *a: pytest.fail("converted anyway"))
    with pytest.raises(BackendError, match=f"{tmp_path / 'models'}: no room to convert the "
                                           r"embedded model \(about 560 MB needed, 2 MB free\).*"
                                           "ORCHESTRA_CACHE"):
        E.embedded_model_dir()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MB tmpfs (needs root, as in the probe); skipped where it cannot be mounted."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): the size check is tested above")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_n2_cache_on_a_2mb_tmpfs_is_refused_with_one_line(small_tmpfs, tmp_path):
    (tmp_path / "a.txt").write_text("Alice is 30 years old.")
    proc = run_cli(["ask", "--docs", "a.txt", "-q", "How old is Alice?"], tmp_path,
                   {"ORCHESTRA_CACHE": str(small_tmpfs)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert f"{small_tmpfs}/models: no room to convert the embedded model" in line
    assert "MB needed" in line and "ORCHESTRA_CACHE" in line


@pytest.mark.slow
def test_n2_a_disk_filling_during_the_conversion_is_one_error(small_tmpfs, monkeypatch):
    """The space check passed (as if the disk filled after it): the write's ENOSPC is named
    the same way, no traceback, nothing half-written left behind."""
    import orchestra.backends.embedded as E

    monkeypatch.setenv("ORCHESTRA_CACHE", str(small_tmpfs))
    monkeypatch.setattr(E, "CONVERTED_BYTES", 1)
    with pytest.raises(BackendError, match="no room to convert the embedded model"):
        E.embedded_model_dir()
    assert not any(p.suffix == ".tmp" for p in (small_tmpfs / "models").iterdir())


def test_first_use_conversion_shows_one_progress_bar(tmp_path, monkeypatch):
    """transformers' own GGUF bar is off while ours runs (they interleaved), and back after."""
    import orchestra.backends.embedded as E
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    seen = []

    def probe(*a, **kw):
        seen.append(hf_logging.is_progress_bar_enabled())
        raise RuntimeError("stop here")

    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path))
    monkeypatch.setattr(E.shutil, "disk_usage",  # room enough, whatever /tmp holds
                        lambda p: E.shutil._ntuple_diskusage(1 << 40, 0, 1 << 40))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", probe)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", probe)
    hf_logging.enable_progress_bar()
    with pytest.raises(RuntimeError, match="stop here"):
        E.embedded_model_dir()
    assert seen == [False] and hf_logging.is_progress_bar_enabled()
