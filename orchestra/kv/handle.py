"""A prefilled document: its paged keys/values, reusable by any number of questions.

Saved with ``torch.save`` through an atomic write; loading checks the format version and the
model fingerprint so a cache written by another model (or another layout) is refused with a
clear message instead of producing silent garbage.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from orchestra.cache import atomic_file, stable_hash
from orchestra.errors import InputError
from orchestra.kv.config import PageConfig
from orchestra.kv.pages import PagedKV

FORMAT = "orchestra.kv_pages"
FORMAT_VERSION = 1
_TENSORS = ("keys", "values", "kmin", "kmax", "kmean")


def model_fingerprint(model) -> str:
    """Architecture plus a digest of a few weight tensors: cheap, and differs between models."""
    conf = {k: v for k, v in model.config.to_dict().items()
            if not k.startswith("_") and k not in ("transformers_version", "architectures")}
    inner = model.model
    h = hashlib.sha256()
    for t in (inner.embed_tokens.weight[:64], inner.layers[0].self_attn.q_proj.weight[:16],
              inner.layers[-1].mlp.down_proj.weight[:16], inner.norm.weight):
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return stable_hash(conf, h.hexdigest())


@dataclass
class PrefilledDocument:
    kv: PagedKV
    token_ids: list[int]
    fingerprint: str
    key: str = ""  # what was prefilled (corpus hash and prompt prefix), for cache lookups
    prefill_seconds: float = 0.0
    # Character (start, end) of every prefilled token in the context text; -1 for prompt tokens.
    char_offsets: list[tuple[int, int]] = field(default_factory=list)
    # Page votes of the baseline question (question-time selection), keyed by that question and
    # the scoring settings; saved with the handle, so a loaded document needs no extra pass.
    baselines: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def n_tokens(self) -> int:
        return self.kv.n_tokens

    @property
    def nbytes(self) -> int:
        return self.kv.nbytes

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        blob = {
            "format": FORMAT, "version": FORMAT_VERSION, "fingerprint": self.fingerprint,
            "key": self.key, "config": self.kv.cfg.as_dict(), "n_tokens": self.kv.n_tokens,
            "prefill_seconds": self.prefill_seconds,
            "token_ids": torch.tensor(self.token_ids, dtype=torch.long),
            "char_offsets": torch.tensor(self.char_offsets or [], dtype=torch.long),
            **{name: getattr(self.kv, name) for name in _TENSORS},
            "baselines": dict(self.baselines),
        }
        with atomic_file(path) as f:
            torch.save(blob, f)
        return path

    @classmethod
    def load(cls, path: str | Path, fingerprint: str, cfg: PageConfig | None = None,
             dims: tuple[int, int, int] | None = None) -> "PrefilledDocument":
        """Load a saved handle for the model with ``fingerprint``; ``cfg`` sets the decoding
        knobs (top_pages, local, scorer), and must share the saved page layout. ``dims``
        (layers, kv heads, head size) of the model: tensors of other shapes are refused.
        Every refusal is an InputError naming the file (kv_pages prefills again over it)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no saved kv_pages handle there")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file: say so, not a pickle traceback
            raise InputError(f"{path}: not a readable kv_pages handle ({type(e).__name__}); "
                             "delete it to prefill again") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise InputError(f"{path}: not a kv_pages handle (format {blob.get('format')!r})"
                             if isinstance(blob, dict) else f"{path}: not a kv_pages handle")
        if blob.get("version") != FORMAT_VERSION:
            raise InputError(f"{path}: kv_pages handle version {blob.get('version')!r}, but this "
                             f"orchestra reads version {FORMAT_VERSION}; prefill the document again")
        if blob.get("fingerprint") != fingerprint:
            raise InputError(f"{path}: this handle was prefilled by another model (fingerprint "
                             f"{blob.get('fingerprint')}, the loaded model is {fingerprint}); "
                             "prefill the document again with this model")
        try:
            saved = PageConfig(**blob["config"])
            _check_tensors(blob, saved, dims)
        except InputError:
            raise
        except Exception as e:  # a field of the wrong type or a missing one: damaged
            raise InputError(f"{path}: a damaged kv_pages handle ({type(e).__name__}: {e}); "
                             "delete it to prefill again") from None
        if cfg is not None and (cfg.page_size, cfg.sink) != (saved.page_size, saved.sink):
            raise InputError(f"{path}: saved with page_size {saved.page_size} and sink "
                             f"{saved.sink}, but page_size {cfg.page_size} and sink {cfg.sink} "
                             "were asked for; prefill again with these settings")
        try:
            kv = PagedKV(cfg or saved, *(blob[name] for name in _TENSORS),
                         n_tokens=int(blob["n_tokens"]))
            return cls(kv=kv, token_ids=blob["token_ids"].tolist(), fingerprint=fingerprint,
                       key=str(blob["key"]), prefill_seconds=float(blob["prefill_seconds"]),
                       char_offsets=[tuple(o) for o in blob["char_offsets"].tolist()],
                       baselines=dict(blob.get("baselines", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"{path}: a damaged kv_pages handle ({type(e).__name__}: {e}); "
                             "delete it to prefill again") from None


def _check_tensors(blob: dict, cfg: PageConfig, dims: tuple[int, int, int] | None) -> None:
    """Shapes that agree with each other, the page layout and the model: a handle whose
    tensors do not (damaged, or written by other code) would fail deep in attention."""
    n = int(blob["n_tokens"])
    keys, values = blob["keys"], blob["values"]
    tensors = [blob[name] for name in _TENSORS]
    if not all(isinstance(t, torch.Tensor) and t.dim() == 4 and t.is_floating_point()
               for t in tensors):
        raise ValueError("its key/value tensors are not 4-D float tensors")
    if keys.shape != values.shape or not 0 <= n <= keys.shape[2]:
        raise ValueError(f"keys {tuple(keys.shape)} and values {tuple(values.shape)} disagree "
                         f"with each other or with its {n} tokens")
    pages = max(0, (keys.shape[2] - cfg.sink) // cfg.page_size)
    want = (keys.shape[0], keys.shape[1], pages, keys.shape[3])
    for name in ("kmin", "kmax", "kmean"):
        if tuple(blob[name].shape) != want:
            raise ValueError(f"{name} has shape {tuple(blob[name].shape)}, not {want}")
    if dims is not None and (keys.shape[0], keys.shape[1], keys.shape[3]) != tuple(dims):
        raise ValueError(f"its layers, heads and head size {(keys.shape[0], keys.shape[1], keys.shape[3])} "
                         f"are not the model's {tuple(dims)}")
    if len(blob["token_ids"]) != n:
        raise ValueError(f"it has {len(blob['token_ids'])} token ids for {n} tokens")
