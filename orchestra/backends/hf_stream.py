"""Streaming for the transformers backend: ``model.generate`` on a thread feeding transformers'
``TextIteratorStreamer``; the caller iterates text pieces as tokens are decoded.

Stop strings are held back until they can no longer start a stop string, so no text past a
stop string is ever yielded; a caller that stops iterating stops the generation (a stopping
criterion watches an Event) and frees the model lock.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

from orchestra.backends.base import GenerationRequest, GenerationResult, apply_stop, check_requests


def _stop_criterion(event: threading.Event):
    from transformers import StoppingCriteria

    class _EventStop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001
            import torch

            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool,
                              device=input_ids.device)

    return _EventStop()


def stream_generation(backend: Any, request: GenerationRequest
                      ) -> Iterator[str | GenerationResult]:
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    [request] = check_requests([request])
    stop = threading.Event()
    # The timeout keeps a consumer from waiting forever if the generating thread dies early.
    streamer = TextIteratorStreamer(backend.hf_tokenizer, skip_prompt=True,
                                    skip_special_tokens=True, timeout=600)
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            with backend.lock:
                box["result"] = backend.generate_batch(
                    [request], streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_stop_criterion(stop)]))[0]
        except BaseException as e:  # noqa: BLE001  (re-raised to the consumer)
            box["error"] = e
            streamer.end()  # unblocks the consumer

    thread = threading.Thread(target=work, name="orchestra-hf-stream", daemon=True)
    thread.start()
    longest = max((len(s) for s in request.stop), default=0)
    text = ""
    sent = 0
    try:
        for piece in streamer:
            text += piece
            cut, stopped = apply_stop(text, request.stop)
            # Keep back what could still be the start of a stop string.
            safe = len(cut) if stopped else max(sent, len(cut) - max(0, longest - 1))
            if safe > sent:
                yield cut[sent:safe]
                sent = safe
            if stopped:
                break
    finally:
        stop.set()
        thread.join()
    if "error" in box:
        raise box["error"]
    yield box["result"]
