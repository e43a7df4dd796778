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
from typing import Any, Sequence

from orchestra.backends.base import (
    BATCHING,
    PREFIX_CACHE,
    GenerationRequest,
    GenerationResult,
    check_requests,
)
from orchestra.backends.local import HFTokenizerBackend, model_dir
from orchestra.errors import BackendError, ConfigError, ContextOverflowError

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
    if request.repetition_penalty != 1.0:
        kw["repetition_penalty"] = request.repetition_penalty
    if request.no_repeat_ngram_size:
        # vLLM's sampler has no n-gram ban; dropping it silently would change the answers.
        raise ConfigError("the vllm backend cannot apply no_repeat_ngram_size "
                          f"({request.no_repeat_ngram_size}); set it to 0 or use repetition_penalty")
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


class VLLMBackend(HFTokenizerBackend):
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
        self.model_name = model
        path = model_dir(model)
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
        kwargs["trust_remote_code"] = False  # never a model folder's code, whatever the options
        self._vllm = vllm
        t0 = time.perf_counter()
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as e:  # noqa: BLE001  (CUDA, memory and config failures alike)
            raise BackendError(f"vllm could not load {str(path)!r}: {type(e).__name__}: {e}") from e
        self.load_seconds = time.perf_counter() - t0
        self._use_tokenizer(self.llm.get_tokenizer(), context_window or self._engine_window())
        self.prefix_caching = bool(enable_prefix_caching)

    def _engine_window(self) -> int:
        for get in (lambda: self.llm.llm_engine.model_config.max_model_len,
                    lambda: self.llm.llm_engine.vllm_config.model_config.max_model_len):
            try:
                return int(get())
            except AttributeError:
                continue
        raise BackendError("cannot read the context window from vllm; give context_window=")

    # -- protocol (the window, tokenizer and prompt counts: HFTokenizerBackend) -------------
    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({BATCHING, PREFIX_CACHE} if self.prefix_caching else {BATCHING})

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        requests = check_requests(requests)
        prompts, params = [], []
        for r in requests:
            ids = self.prompt_ids(r.messages)
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
