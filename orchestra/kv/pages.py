"""Per-layer key/value storage of a document in pages, with the page summaries used to score.

Keys are stored *before* the rotary embedding so a page can be given any position when it is
read. Pages start after the ``sink`` tokens: page ``j`` holds tokens
``[sink + j*page_size, sink + (j+1)*page_size)``. The summaries (per KV head and channel: min,
max and mean of the page's keys) are kept for complete pages only; the incomplete tail is always
inside the local window.
"""

from __future__ import annotations

import torch

from orchestra.kv.config import PageConfig


class PagedKV:
    def __init__(self, cfg: PageConfig, keys: torch.Tensor, values: torch.Tensor,
                 kmin: torch.Tensor, kmax: torch.Tensor, kmean: torch.Tensor, n_tokens: int):
        self.cfg = cfg
        self.keys = keys  # [layers, kv_heads, tokens, head_dim], pre-RoPE
        self.values = values
        self.kmin = kmin  # [layers, kv_heads, pages, head_dim]
        self.kmax = kmax
        self.kmean = kmean
        self.n_tokens = n_tokens

    @classmethod
    def allocate(cls, cfg: PageConfig, layers: int, kv_heads: int, head_dim: int,
                 n_tokens: int, dtype: torch.dtype, device="cpu") -> "PagedKV":
        pages = max(0, (n_tokens - cfg.sink) // cfg.page_size)
        kv = lambda n: torch.zeros(layers, kv_heads, n, head_dim, dtype=dtype, device=device)  # noqa: E731
        return cls(cfg, kv(n_tokens), kv(n_tokens), kv(pages), kv(pages), kv(pages), 0)

    @property
    def n_pages(self) -> int:
        """Complete pages of the whole document."""
        return self.kmin.shape[2]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size()
                   for t in (self.keys, self.values, self.kmin, self.kmax, self.kmean))

    def candidates(self, n: int) -> int:
        """How many pages precede the local window when ``n`` document tokens are visible."""
        c = self.cfg
        return max(0, (n - c.local - c.sink) // c.page_size)

    def local_start(self, n: int) -> int:
        return min(n, self.cfg.sink + self.candidates(n) * self.cfg.page_size)

    def summarize(self, layer: int, upto: int, done: int) -> int:
        """Summaries of pages completed by tokens ``[0, upto)``, after ``done`` pages; new done."""
        c = self.cfg
        now = min(self.n_pages, max(0, (upto - c.sink) // c.page_size))
        if now > done:
            k = self.keys[layer, :, c.sink + done * c.page_size: c.sink + now * c.page_size]
            k = k.float().unflatten(1, (now - done, c.page_size))
            self.kmin[layer, :, done:now] = k.amin(2).to(self.kmin.dtype)
            self.kmax[layer, :, done:now] = k.amax(2).to(self.kmax.dtype)
            self.kmean[layer, :, done:now] = k.mean(2).to(self.kmean.dtype)
        return max(now, done)

    def page_of(self, token: int) -> int | None:
        """The page holding document token ``token`` (None for sink tokens)."""
        if token < self.cfg.sink:
            return None
        return (token - self.cfg.sink) // self.cfg.page_size

    def context_index(self, pages: torch.Tensor, n: int) -> torch.Tensor:
        """Token indices (per KV head) of sink + ``pages`` (sorted) + local window: [heads, C]."""
        c = self.cfg
        heads = pages.shape[0]
        sink = torch.arange(min(c.sink, n)).expand(heads, -1)
        offs = torch.arange(c.page_size)
        paged = (c.sink + pages[..., None] * c.page_size + offs).flatten(1)
        local = torch.arange(self.local_start(n), n).expand(heads, -1)
        return torch.cat([sink, paged, local], dim=1)
