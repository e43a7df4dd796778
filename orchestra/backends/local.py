"""Local model folders: the one resolver every loader uses, and the base of the backends that
count and template prompts with a local Hugging Face tokenizer (transformers, vLLM).

Nothing is downloaded at run time: a model is ``embedded`` (converted from the bundled GGUF on
first use), a local folder holding the files its loader reads, or a hub id already in the local
Hugging Face cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from orchestra.backends.base import Backend, Message, Tokenizer
from orchestra.errors import BackendError, ContextOverflowError


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
        return refuse_custom_code(path, what, error)
    if not path.exists() and str(model).count("/") == 1:
        try:
            from huggingface_hub import snapshot_download

            cached = Path(snapshot_download(str(model), local_files_only=True))
        except Exception:  # noqa: BLE001  (not cached, or no huggingface_hub)
            cached = None
        if cached is not None and any((cached / f).is_file() for f in needs):
            return refuse_custom_code(cached, what, error)
    raise error(
        f"{what} {str(model)!r} is not 'embedded', a local Hugging Face {what} directory (with "
        f"{' or '.join(needs)}) nor in the local Hugging Face cache; nothing is downloaded at "
        "run time: fetch it beforehand (huggingface-cli download) or use 'embedded'")


def check_model_option(options: dict, where: str) -> None:
    """``model`` as a local backend takes it ('embedded', a folder or a cached hub id), found
    but not loaded; refused as an OptionError naming ``where`` (shared with validate)."""
    from orchestra.errors import OptionError

    model = options.get("model")
    if model in (None, "embedded"):
        return
    if not isinstance(model, str):
        raise OptionError("model", f"{where}: model must be 'embedded', a folder or a hub id, "
                                   f"not {model!r}")
    try:
        model_dir(model)
    except BackendError as e:
        raise OptionError("model", f"{where}: {e}") from None


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


# Files in which a folder can ask transformers to import its own Python (``auto_map``).
CODE_CONFIGS = ("config.json", "tokenizer_config.json", "preprocessor_config.json",
                "processor_config.json", "generation_config.json")


def refuse_custom_code(path: Path, what: str = "model",
                       error: type[Exception] = BackendError) -> Path:
    """``path``, or one ``error`` when the folder asks to run its own code. Every load also
    passes ``trust_remote_code=False``, so transformers never prompts and never imports it; this
    names the folder and its code up front, before a model loads (``orchestra validate`` too).
    A config that is not JSON is left to the loader, which names it."""
    for name in CODE_CONFIGS:
        try:
            data = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        auto_map = data.get("auto_map") if isinstance(data, dict) else None
        if auto_map:
            refs = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
            code = sorted({str(r).split("--")[-1].split(".")[0] + ".py"
                           for ref in refs for r in (ref if isinstance(ref, list) else [ref])
                           if r})
            raise error(f"{path}: cannot be loaded as a Hugging Face {what}: the folder asks "
                        f"to run its own code (auto_map in {name}: {', '.join(code)}); "
                        "orchestra never runs code from a model folder: use a model whose "
                        "architecture transformers ships")
    return path


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

    def check_fits(self, prompt_tokens: int, max_tokens: int) -> None:
        """A prompt of ``prompt_tokens`` and its reply must fit the window."""
        if prompt_tokens + max_tokens > self._window:
            raise ContextOverflowError(prompt_tokens + max_tokens, self._window,
                                       what="the prompt plus max_tokens")

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """The token ids of the chat prompt (the template holds the special tokens)."""
        return self._tokenizer.encode(self.chat_text(messages))
