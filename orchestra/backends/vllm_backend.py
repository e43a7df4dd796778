"""The ``vllm`` backend: an in-process ``vllm.LLM`` with prefix caching (CUDA GPU only).

vLLM is an optional extra, imported only when this backend is built, so pipeline files naming
it validate on machines without it. Our prompts put the documents first and the question last
(orchestra/prompts.py), so questions over the same document share its token prefix and vLLM's
prefix cache prefills that document once. A batch goes to ``LLM.generate`` whole, each request
with its own ``SamplingParams``. No ``kv_pages`` capability: routers never pick page retrieval
on this backend.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from orchestra.backends.base import (
    BATCHING,
    PREFIX_CACHE,
    Backend,
    GenerationRequest,
    GenerationResult,
    Message,
    check_requests,
)
from orchestra.errors import BackendError, ContextOverflowError

INSTALL_MESSAGE = (
    "the vllm backend needs vLLM, which is not installed here: install it with "
    "`pip install 'orchestra-longdoc[vllm]'` (or `pip install vllm`) on a machine with a CUDA GPU; "
    "without one, use the transformers backend, or the openai backend against a `vllm serve` "
    "server"
)


def sampling_kwargs(request: GenerationRequest) -> dict[str, Any]:
    """``SamplingParams`` keyword arguments for one request (greedy when temperature is 0)."""
    kw: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": request.temperature}
    if request.temperature == 0:
        kw["top_p"] = 1.0
    if request.stop:
        kw["stop"] = list(request.stop)
    if request.seed is not None:
        kw["seed"] = request.seed
    return kw


def result_from_output(output: Any, seconds: float) -> GenerationResult:
    """A ``vllm.RequestOutput`` as our GenerationResult (token counts from vLLM's own ids)."""
    if not output.outputs:
        raise BackendError("vllm returned no completion for a request")
    completion = output.outputs[0]
    return GenerationResult(
        text=(completion.text or "").strip(),
        prompt_tokens=len(output.prompt_token_ids or []),
        generated_tokens=len(completion.token_ids or []),
        seconds=seconds,
        finish_reason="length" if completion.finish_reason == "length" else "stop",
    )


def _import_vllm():
    try:
        import vllm
    except ImportError:
        raise BackendError(INSTALL_MESSAGE) from None
    return vllm


def _local_model(model: str) -> Path:
    """A local model directory: a path, or a hub id already in the local Hugging Face cache."""
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return path
    if not path.exists() and model.count("/") == 1:
        try:
            from huggingface_hub import snapshot_download

            cached = Path(snapshot_download(model, local_files_only=True))
            if (cached / "config.json").is_file():
                return cached
        except Exception:  # noqa: BLE001  (not cached, or no huggingface_hub)
            pass
    raise BackendError(
        f"model {model!r} is not 'embedded', a local Hugging Face model directory (with "
        "config.json) nor a model in the local Hugging Face cache; nothing is downloaded at "
        "run time: fetch it beforehand (huggingface-cli download) or use model: embedded"
    )


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(
        self,
        model: str = "embedded",
        context_window: int | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        max_num_seqs: int | None = None,
        seed: int = 0,
        engine_options: dict[str, Any] | None = None,
    ):
        vllm = _import_vllm()
        from orchestra.backends.hf import HFTokenizer

        self.model_name = model
        if model == "embedded":
            from orchestra.backends.embedded import embedded_model_dir

            path = embedded_model_dir()
        else:
            path = _local_model(model)
        kwargs: dict[str, Any] = dict(
            model=str(path), dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching, seed=seed,
        )
        if context_window:
            kwargs["max_model_len"] = int(context_window)
        if max_num_seqs:
            kwargs["max_num_seqs"] = int(max_num_seqs)
        kwargs.update(engine_options or {})
        self._vllm = vllm
        t0 = time.perf_counter()
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as e:  # noqa: BLE001  (CUDA, memory and config failures alike)
            raise BackendError(f"vllm could not load {str(path)!r}: {type(e).__name__}: {e}") from e
        self.load_seconds = time.perf_counter() - t0
        self.hf_tokenizer = self.llm.get_tokenizer()
        self._tokenizer = HFTokenizer(self.hf_tokenizer)
        self._window = int(context_window or self._engine_window())
        self.prefix_caching = bool(enable_prefix_caching)

    def _engine_window(self) -> int:
        for get in (lambda: self.llm.llm_engine.model_config.max_model_len,
                    lambda: self.llm.llm_engine.vllm_config.model_config.max_model_len):
            try:
                return int(get())
            except AttributeError:
                continue
        raise BackendError("cannot read the context window from vllm; give context_window=")

    # -- protocol -------------------------------------------------------------------------
    @property
    def context_window(self) -> int:
        return self._window

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({BATCHING, PREFIX_CACHE} if self.prefix_caching else {BATCHING})

    @property
    def tokenizer(self):
        return self._tokenizer

    def chat_text(self, messages: Sequence[Message]) -> str:
        return self._tokenizer.chat_text(messages)

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return self._tokenizer.count_chat(messages)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        requests = check_requests(requests)
        prompts, params = [], []
        for r in requests:
            ids = self.hf_tokenizer(self.chat_text(r.messages),
                                    add_special_tokens=False)["input_ids"]
            if len(ids) + r.max_tokens > self._window:
                raise ContextOverflowError(len(ids) + r.max_tokens, self._window,
                                           what="the prompt plus max_tokens")
            # Token ids, not text: the chat template already holds the special tokens, and
            # vLLM must not add a second BOS.
            prompts.append({"prompt_token_ids": ids})
            params.append(self._vllm.SamplingParams(**sampling_kwargs(r)))
        t0 = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        seconds = (time.perf_counter() - t0) / max(1, len(requests))
        return [result_from_output(o, seconds) for o in outputs]
