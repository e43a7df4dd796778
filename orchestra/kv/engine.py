"""Our own forward pass over a Llama-style model's layers with page-selecting attention.

The model's weights are used as they are (norms, projections, MLP, rotary tables); only the
attention is ours, because each step attends to a *different* set of pages placed at new,
contiguous positions. With every page selected and a document inside the window that is exactly
ordinary causal attention, which tests/test_kv_pages.py checks against the model's own forward.

The engine holds the model and the page settings, never the state of one call: the page set
an answer reads is an argument of ``generate`` (``pages``), and the votes ``page_votes`` sums
are local to that call, so threads may share an engine (each call under the model's lock).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from orchestra.errors import ContextOverflowError, InputError
from orchestra.kv.config import PageConfig
from orchestra.kv.pages import PagedKV

# A chunk of many tokens scores pages with the mean of its queries plus its last few queries
# (scoring with every query of a long chunk costs more than the rest of the step).
SCORING_LAST_QUERIES = 8


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


@dataclass
class SelectionStats:
    """Pages read over pages available, summed over steps, layers and KV heads."""

    pages_read: int = 0
    pages_total: int = 0
    steps: int = 0
    # Optional watch: how often the watched pages (e.g. the needle's) were among those selected,
    # per layer and KV head, over decoding steps where selection happened.
    watch_pages: frozenset[int] = frozenset()
    watch_hits: torch.Tensor | None = None
    watch_trials: int = 0
    page_reads: dict[int, int] = field(default_factory=dict)  # page -> times selected

    def hit_rate(self) -> float | None:
        if self.watch_hits is None or not self.watch_trials:
            return None
        return float(self.watch_hits.float().mean() / self.watch_trials)


@dataclass
class _Votes:
    """Page attention shares summed over one ``page_votes`` call (its own, not the engine's)."""

    total: torch.Tensor
    calls: int = 0


@dataclass
class GenerationOutput:
    tokens: list[int]
    finish_reason: str
    stats: SelectionStats
    seconds: float


class PagedEngine:
    def __init__(self, model, cfg: PageConfig, window: int | None = None,
                 kv_dtype: torch.dtype | None = None):
        conf = model.config
        self.model = model
        self.window = int(window or conf.max_position_embeddings)
        self.cfg = cfg.check(self.window)
        self.inner = model.model
        self.layers = list(self.inner.layers)
        self.n_layers = len(self.layers)
        self.n_heads = conf.num_attention_heads
        self.n_kv = conf.num_key_value_heads
        self.head_dim = getattr(conf, "head_dim", None) or conf.hidden_size // conf.num_attention_heads
        self.group = self.n_heads // self.n_kv
        self.scale = self.head_dim ** -0.5
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.kv_dtype = kv_dtype or self.dtype
        with torch.no_grad():
            pos = torch.arange(self.window, device=self.device)[None]
            cos, sin = self.inner.rotary_emb(torch.zeros(1, dtype=self.dtype, device=self.device), pos)
        self.cos, self.sin = cos[0], sin[0]  # [window, head_dim]
        # Pages are scored as if they sat this far behind the query: about where they will be put.
        self.score_distance = min(self.window - 1,
                                  cfg.local + (cfg.top_pages * cfg.page_size) // 2)

    # -- public -----------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, ids: Sequence[int], progress: bool = False) -> PagedKV:
        c = self.cfg
        n = len(ids)
        if n < c.page_size:
            raise InputError(f"kv_pages: the document has {n} tokens, fewer than one page "
                             f"({c.page_size} tokens); use full context for it")
        kv = PagedKV.allocate(c, self.n_layers, self.n_kv, self.head_dim, n, self.kv_dtype,
                              self.device)
        ids_t = torch.tensor(list(ids), dtype=torch.long, device=self.device)
        done = [0] * self.n_layers
        starts = range(0, n, c.chunk)
        if progress:
            from tqdm import tqdm  # plain tqdm: tqdm.auto warns in a kernel without ipywidgets
            starts = tqdm(starts, desc="kv prefill", unit="chunk", leave=False)
        for s in starts:
            e = min(n, s + c.chunk)
            x = self.inner.embed_tokens(ids_t[s:e])[None]
            for li, layer in enumerate(self.layers):
                x = self._layer(li, layer, x, kv, n_doc=s, doc_write=s, tail=None, stats=None)
                done[li] = kv.summarize(li, e, done[li])
            kv.n_tokens = e
        return kv

    @torch.inference_mode()
    def logits(self, kv: PagedKV, ids: Sequence[int]) -> torch.Tensor:
        """Logits for every token of ``ids`` read after the document: [len(ids), vocab]."""
        tail = self._new_tail(len(ids))
        x = self._forward_tail(kv, ids, tail, SelectionStats())
        return self.model.lm_head(self.inner.norm(x))[0].float()

    @torch.inference_mode()
    def generate(self, kv: PagedKV, prompt: Sequence[int], max_tokens: int,
                 eos_ids: set[int], pages: torch.Tensor | None = None,
                 watch_pages: Sequence[int] = (),
                 on_token: Callable[[int], None] | None = None) -> GenerationOutput:
        """Read ``prompt`` after the document, then decode greedily. ``pages`` is the
        selection: one page set that every step, layer and head reads (``question_pages``);
        None: each step, layer and KV head selects its own (Quest). ``on_token`` sees each
        token id as it is chosen (streaming)."""
        t0 = time.perf_counter()
        stats = SelectionStats(watch_pages=frozenset(watch_pages))
        if stats.watch_pages:
            stats.watch_hits = torch.zeros(self.n_layers, self.n_kv, dtype=torch.long)
        tail = self._new_tail(len(prompt) + max_tokens)
        x = self._read_prompt(kv, prompt, tail, stats, pages)
        out, finish = self._decode(kv, x, tail, stats, max_tokens, eos_ids, pages, on_token)
        return GenerationOutput(out, finish, stats, time.perf_counter() - t0)

    def pins_pages(self, kv: PagedKV) -> bool:
        """Whether answers over ``kv`` read one question-time page set (there is a choice)."""
        return (self.cfg.selection == "question"
                and kv.candidates(kv.n_tokens) > self.cfg.top_pages)

    @torch.inference_mode()
    def page_votes(self, kv: PagedKV, prompt: Sequence[int]) -> torch.Tensor:
        """Each page's attention share while ``prompt`` is read (per-step selection), averaged
        over layers, KV heads and prompt pieces: [pages before the local window]."""
        votes = _Votes(torch.zeros(kv.candidates(kv.n_tokens)))
        self._read_prompt(kv, prompt, self._new_tail(len(prompt)), SelectionStats(),
                          votes=votes)
        return votes.total / max(1, votes.calls)

    def question_pages(self, kv: PagedKV, prompt: Sequence[int],
                       baseline: torch.Tensor | None = None) -> torch.Tensor:
        """One page set for a whole answer: pages ranked by the attention the question gives
        them, minus what ``baseline`` (the votes of a question about nothing in particular)
        gives them, each with the ``follow`` pages after it, up to ``top_pages``.

        Without the baseline, pages that draw attention whatever is asked (the document's
        start, headings) win; measured on needles at 8k and 16k, the needle's page ranked
        5th-107th by raw votes and first by the difference."""
        votes = self.page_votes(kv, prompt)
        if baseline is not None:
            votes = votes - baseline
        m, top = len(votes), self.cfg.top_pages
        chosen: dict[int, None] = {}
        for p in votes.argsort(descending=True).tolist():
            for q in range(max(0, p - self.cfg.lead), min(m, p + 1 + self.cfg.follow)):
                if len(chosen) < top:
                    chosen[q] = None
            if len(chosen) >= top:
                break
        return torch.tensor(sorted(chosen), dtype=torch.long)

    def _decode(self, kv: PagedKV, x: torch.Tensor, tail: dict, stats: SelectionStats,
                max_tokens: int, eos_ids: set[int], pages: torch.Tensor | None = None,
                on_token: Callable[[int], None] | None = None) -> tuple[list[int], str]:
        out: list[int] = []
        finish = "length"
        for _ in range(max_tokens):
            nxt = int(self.model.lm_head(self.inner.norm(x[:, -1:]))[0, -1].argmax())
            out.append(nxt)
            if on_token is not None:
                on_token(nxt)
            if nxt in eos_ids:
                finish = "stop"
                break
            if len(out) == max_tokens:
                break
            x = self._forward_tail(kv, [nxt], tail, stats, pages)
        return out, finish

    def check_fits(self, kv: PagedKV, prompt_tokens: int, max_tokens: int) -> None:
        n = kv.n_tokens
        m = kv.candidates(n)
        doc = n - max(0, m - self.cfg.top_pages) * self.cfg.page_size
        need = doc + prompt_tokens + max_tokens
        if need > self.window:
            raise ContextOverflowError(need, self.window, what=(
                "the attended pages, sink and local window plus the question and max_tokens"))

    # -- internals --------------------------------------------------------------------------
    def _new_tail(self, capacity: int) -> dict:
        shape = (self.n_layers, self.n_kv, capacity, self.head_dim)
        return {"k": torch.zeros(shape, dtype=self.dtype, device=self.device),
                "v": torch.zeros(shape, dtype=self.dtype, device=self.device), "n": 0}

    def _read_prompt(self, kv: PagedKV, prompt: Sequence[int], tail: dict,
                     stats: SelectionStats, pages: torch.Tensor | None = None,
                     votes: _Votes | None = None) -> torch.Tensor:
        """The question, ``prompt_step`` tokens at a time (0: all at once)."""
        step = self.cfg.prompt_step or len(prompt)
        for a in range(0, len(prompt), step):
            x = self._forward_tail(kv, prompt[a:a + step], tail, stats, pages, votes)
        return x

    def _forward_tail(self, kv: PagedKV, ids: Sequence[int], tail: dict,
                      stats: SelectionStats, pages: torch.Tensor | None = None,
                      votes: _Votes | None = None) -> torch.Tensor:
        if tail["n"] + len(ids) > tail["k"].shape[2]:
            raise InputError("kv_pages: more tokens than the generation buffer holds")
        x = self.inner.embed_tokens(torch.tensor(list(ids), dtype=torch.long,
                                                 device=self.device))[None]
        for li, layer in enumerate(self.layers):
            x = self._layer(li, layer, x, kv, n_doc=kv.n_tokens, doc_write=None, tail=tail,
                            stats=stats, pages=pages, votes=votes)
        tail["n"] += len(ids)
        stats.steps += 1
        return x

    def _layer(self, li: int, layer, x: torch.Tensor, kv: PagedKV, n_doc: int,
               doc_write: int | None, tail: dict | None, stats: SelectionStats | None,
               pages: torch.Tensor | None = None, votes: _Votes | None = None):
        attn = layer.self_attn
        t = x.shape[1]
        h = layer.input_layernorm(x)
        q = attn.q_proj(h).view(1, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(t, self.n_kv, self.head_dim).transpose(0, 1)
        v = attn.v_proj(h).view(t, self.n_kv, self.head_dim).transpose(0, 1)
        if doc_write is not None:  # prefill: the chunk's keys become part of the document
            kv.keys[li, :, doc_write:doc_write + t] = k.to(kv.keys.dtype)
            kv.values[li, :, doc_write:doc_write + t] = v.to(kv.values.dtype)
        ctx_k, ctx_v = self._doc_context(li, q, kv, n_doc, stats, pages, votes)
        parts_k, parts_v = [ctx_k], [ctx_v]
        if tail is not None:
            a = tail["n"]
            tail["k"][li, :, a:a + t] = k
            tail["v"][li, :, a:a + t] = v
            parts_k.append(tail["k"][li, :, :a + t])
            parts_v.append(tail["v"][li, :, :a + t])
        else:
            parts_k.append(k)
            parts_v.append(v)
        K = torch.cat(parts_k, dim=1)
        V = torch.cat(parts_v, dim=1)
        S = K.shape[1]
        if S > self.window:
            raise ContextOverflowError(S, self.window, what="one attention step")
        K = _rope(K, self.cos[:S], self.sin[:S])
        q = _rope(q, self.cos[S - t:S], self.sin[S - t:S])
        mask = None
        if t > 1:
            mask = (torch.arange(S, device=self.device)[None]
                    <= torch.arange(S - t, S, device=self.device)[:, None])
        o = F.scaled_dot_product_attention(q, K[None], V[None], attn_mask=mask, scale=self.scale,
                                           enable_gqa=True)
        x = x + attn.o_proj(o.transpose(1, 2).reshape(1, t, -1))
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def _doc_context(self, li: int, q: torch.Tensor, kv: PagedKV, n: int,
                     stats: SelectionStats | None, pinned: torch.Tensor | None = None,
                     votes: _Votes | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (pre-RoPE) and values the queries attend to among the first ``n`` doc tokens:
        the ``pinned`` pages when given (decoding an answer), else the best by score."""
        m = kv.candidates(n)
        top = min(self.cfg.top_pages, m)
        if stats is not None and m:
            stats.pages_read += top * self.n_kv
            stats.pages_total += m * self.n_kv
        if top == m:  # everything fits: plain causal attention over the document so far
            return (kv.keys[li, :, :n].to(self.dtype), kv.values[li, :, :n].to(self.dtype))
        if pinned is not None and stats is not None:  # decoding, not prefilling
            pages = pinned.expand(self.n_kv, -1)
        else:
            pages = self._select(li, q, kv, m, top, votes)
        if stats is not None:
            self._record(li, pages, stats)
        idx = kv.context_index(pages, n).to(self.device)[..., None].expand(-1, -1, self.head_dim)
        return (torch.gather(kv.keys[li], 1, idx).to(self.dtype),
                torch.gather(kv.values[li], 1, idx).to(self.dtype))

    def _select(self, li: int, q: torch.Tensor, kv: PagedKV, m: int, top: int,
                votes: _Votes | None = None) -> torch.Tensor:
        """The ``top`` best pages among the first ``m``, per KV head, in document order."""
        c = self.cfg
        d = self.score_distance
        qs = _rope(q[0], self.cos[d], self.sin[d])  # [heads, t, dim], as if d tokens after a key
        qs = qs.view(self.n_kv, self.group, qs.shape[1], self.head_dim).float()
        if qs.shape[2] > SCORING_LAST_QUERIES + 1:
            qs = torch.cat([qs.mean(2, keepdim=True), qs[:, :, -SCORING_LAST_QUERIES:]], dim=2)
        if c.scorer == "max":
            keys = kv.keys[li, :, c.sink:c.sink + m * c.page_size].float()
            logits = torch.einsum("hgtd,hnd->hgtn", qs, keys) * self.scale
            page_logit = logits.unflatten(-1, (m, c.page_size)).logsumexp(-1)
        elif c.scorer == "quest":
            lo = kv.kmin[li, :, :m].float()[:, None, None]
            hi = kv.kmax[li, :, :m].float()[:, None, None]
            qe = qs[..., None, :]
            page_logit = torch.maximum(qe * lo, qe * hi).sum(-1) * self.scale
        else:  # mean
            page_logit = torch.einsum("hgtd,hpd->hgtp", qs, kv.kmean[li, :, :m].float()) * self.scale
        # Each query head's share of attention over pages; a page counts by its best head/token.
        share = page_logit.softmax(-1)
        share = share.amax(dim=(1, 2))  # over a KV group's query heads and a chunk's queries
        if votes is not None:
            votes.total += share.sum(0).float().cpu()
            votes.calls += 1
        return share.topk(top, dim=-1).indices.sort(dim=-1).values.cpu()

    def _record(self, li: int, pages: torch.Tensor, stats: SelectionStats) -> None:
        for p in pages.flatten().tolist():
            stats.page_reads[p] = stats.page_reads.get(p, 0) + 1
        if stats.watch_hits is not None:
            watch = torch.tensor(sorted(stats.watch_pages))
            hit = torch.isin(pages, watch).any(dim=-1)
            stats.watch_hits[li] += hit.long()
            if li == self.n_layers - 1:
                stats.watch_trials += 1
