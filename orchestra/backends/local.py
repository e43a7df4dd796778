"""Local model folders: the one resolver every loader uses, and the base of the backends that
count and template prompts with a local Hugging Face tokenizer (transformers, vLLM).

Nothing is downloaded at run time: a model is ``embedded`` (converted from the bundled GGUF on
first use), a local folder holding the files its loader reads, or a hub id already in the local
Hugging Face cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from orchestra.backends.base import Backend, Message, Tokenizer
from orchestra.errors import BackendError


def model_dir(model: str, what: str = "model", needs: Sequence[str] = ("config.json",),
              default: Callable[[], Path] | None = None,
              error: type[Exception] = BackendError) -> Path:
    """The local folder of ``model``: ``embedded`` (or ``default()`` where the caller has its
    own default, e.g. the bundled embedder), a folder holding one of ``needs``, or a hub id
    (``org/name``) already in the local Hugging Face cache. Anything else is one ``error``
    naming what was looked for."""
    if model == "embedded" and default is None:
        from orchestra.backends.embedded import embedded_model_dir

        return embedded_model_dir()
    if default is not None and model in (None, "", "default", "embedded"):
        return default()
    path = Path(model).expanduser()
    if any((path / f).is_file() for f in needs):
        return path
    if not path.exists() and str(model).count("/") == 1:
        try:
            from huggingface_hub import snapshot_download

            cached = Path(snapshot_download(str(model), local_files_only=True))
            if any((cached / f).is_file() for f in needs):
                return cached
        except Exception:  # noqa: BLE001  (not cached, or no huggingface_hub)
            pass
    raise error(
        f"{what} {str(model)!r} is not 'embedded', a local Hugging Face {what} directory (with "
        f"{' or '.join(needs)}) nor in the local Hugging Face cache; nothing is downloaded at "
        "run time: fetch it beforehand (huggingface-cli download) or use 'embedded'")


class HFTokenizer(Tokenizer):
    def __init__(self, tok: Any):
        if not getattr(tok, "is_fast", False):
            raise BackendError("a fast (Rust) tokenizer is required for character offsets")
        self.hf = tok

    def count(self, text: str) -> int:
        return len(self.hf(text, add_special_tokens=False)["input_ids"])

    def offsets(self, text: str) -> list[tuple[int, int]]:
        enc = self.hf(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(o) for o in enc["offset_mapping"]]

    def encode(self, text: str) -> list[int]:
        return self.hf(text, add_special_tokens=False)["input_ids"]

    def chat_text(self, messages: Sequence[Message | dict]) -> str:
        """The prompt text the model sees: the chat template with the assistant's turn opened."""
        msgs = [m.model_dump() if isinstance(m, Message) else dict(m) for m in messages]
        return self.hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    def count_chat(self, messages: Sequence[Message | dict]) -> int:
        return self.count(self.chat_text(messages))


class HFTokenizerBackend(Backend):
    """A backend whose prompts are counted and templated by a local Hugging Face tokenizer:
    the window, the tokenizer, chat text and prompt counts live here once. Subclasses call
    ``_use_tokenizer`` when they have loaded one."""

    hf_tokenizer: Any

    def _use_tokenizer(self, hf_tokenizer: Any, window: int) -> None:
        self.hf_tokenizer = hf_tokenizer
        self._tokenizer = HFTokenizer(hf_tokenizer)
        self._window = int(window)

    @property
    def context_window(self) -> int:
        return self._window

    @property
    def tokenizer(self):
        return self._tokenizer

    def chat_text(self, messages: Sequence[Message]) -> str:
        return self._tokenizer.chat_text(messages)

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        return self._tokenizer.count_chat(messages)

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """The token ids of the chat prompt (the template holds the special tokens)."""
        return self._tokenizer.encode(self.chat_text(messages))
