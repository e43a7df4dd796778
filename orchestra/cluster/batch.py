"""Many model calls as one Ray Data job: the GPU batch path for map-reduce and chain-of-agents
workers over thousands of documents.

Two ways, both Ray's own (``ray.data.llm``):

- on GPUs in the cluster, ``vLLMEngineProcessorConfig``: Ray Data runs vLLM engines as actors
  and streams the prompts through them (needs ``orchestra-longdoc[vllm]`` and GPUs);
- against any OpenAI-compatible server, ``HttpRequestProcessorConfig``: each prompt becomes a
  ``/v1/chat/completions`` request (``vllm serve``, or ``orchestra serve --model-only`` for the
  embedded model, as the tests do).

``chat_batch`` is the HTTP variant: prompts in, replies out in the same order.
"""

from __future__ import annotations

from typing import Sequence


def chat_batch(prompts: Sequence[str], url: str, model: str, *, max_tokens: int = 64,
               api_key: str | None = None, concurrency: int = 1, batch_size: int = 8,
               system: str | None = None) -> list[str]:
    """Each prompt as one user message to ``url``'s chat completions (greedy), through
    ``ray.data.llm``'s HTTP processor on the Ray cluster this process joined."""
    import ray
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    config = HttpRequestProcessorConfig(
        url=url.rstrip("/") + "/v1/chat/completions", headers=headers,
        concurrency=concurrency, batch_size=batch_size, max_retries=2)

    def payload(row: dict) -> dict:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": row["prompt"]}]
        return {"i": row["i"], "payload": {"model": model, "messages": messages,
                                           "max_tokens": max_tokens, "temperature": 0}}

    def reply(row: dict) -> dict:
        return {"i": row["i"],
                "reply": row["http_response"]["choices"][0]["message"]["content"]}

    processor = build_processor(config, preprocess=payload, postprocess=reply)
    ds = ray.data.from_items([{"i": i, "prompt": p} for i, p in enumerate(prompts)])
    rows = processor(ds).take_all()
    out = [None] * len(prompts)
    for r in rows:
        out[int(r["i"])] = r["reply"]
    return out
