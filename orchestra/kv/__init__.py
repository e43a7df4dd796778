"""KV-page retrieval inside attention for Llama-style models (RoPE, GQA).

- ``config.PageConfig``: page size, pages per step, sink, local window, scorer; checked against
  the trained window.
- ``pages.PagedKV``: a document's pre-RoPE keys and values per layer, in pages, with summaries.
- ``engine.PagedEngine``: our forward pass over the model's own weights: paged prefill and
  page-selecting decoding, positions always inside the window.
- ``reader.PagedReader``: what the kv_pages strategy needs from a model (tokenizer pieces,
  prefill to a handle, decode with a selection); ``TransformersPagedReader`` implements it.
- ``handle.PrefilledDocument``: prefill once, ask many; save/load with version and fingerprint.
"""

from orchestra.kv.config import PageConfig
from orchestra.kv.engine import PagedEngine
from orchestra.kv.reader import PagedReader, TransformersPagedReader
from orchestra.kv.handle import PrefilledDocument, model_fingerprint
from orchestra.kv.pages import PagedKV

__all__ = ["PageConfig", "PagedEngine", "PagedKV", "PagedReader", "PrefilledDocument",
           "TransformersPagedReader", "model_fingerprint"]
