"""Settings of page-selecting attention, checked against the model's trained window.

Every forward pass attends to: the first ``sink`` tokens (attention sinks), ``top_pages`` pages of
``page_size`` tokens chosen by score, the local window (the last ``local`` tokens, extended back
to a page boundary, so up to ``local + page_size - 1``) and the tokens being processed. All of
them get contiguous positions starting at 0, so the sum must fit the trained window: nothing is
ever out of distribution for RoPE however long the document is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from orchestra.errors import ConfigError

SCORERS = ("max", "quest", "mean")
SELECTIONS = ("question", "step")


@dataclass(frozen=True)
class PageConfig:
    page_size: int = 64
    top_pages: int = 16
    sink: int = 4
    local: int = 512
    chunk: int = 512  # prefill chunk: queries processed together
    # How a page is scored against the current queries (per KV head, max over its query heads):
    #   max   - log of the attention mass the page would get (exact logits over its keys);
    #   quest - Quest's upper bound from per-channel min/max of the page's keys;
    #   mean  - the dot product with the page's mean key (InfLLM-style representative).
    scorer: str = "max"
    # The question is read this many tokens at a time, each piece choosing its own pages (one
    # choice for a whole question loses the needle: its words want different pages).
    prompt_step: int = 8
    # When decoding chooses its pages:
    #   question - once per question: every layer and KV head votes (its pages' attention share)
    #              while the question is read; the best pages, each with the ``follow`` pages
    #              after it, become one set that every layer reads for the whole answer;
    #   step     - at every step, in every layer and KV head separately (Quest).
    # Measured on needles (benchmarks/kv_pages.py): per-step sets differ from layer to layer,
    # and the pages chosen for a "number" question are full of other numbers, which the 135M
    # reader then copies; one consistent set found 3/3 at 16k where per-step found 2/3.
    selection: str = "question"
    # A needle sentence often straddles a page edge and its answer follows the words that match
    # the question, so a chosen page brings the page after it.
    follow: int = 1
    lead: int = 0  # and this many pages before it

    def check(self, window: int) -> "PageConfig":
        for name in ("page_size", "top_pages", "chunk"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"kv_pages: {name} must be a positive integer, got {v!r}")
        for name in ("sink", "local", "prompt_step", "follow", "lead"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"kv_pages: {name} must be a non-negative integer, got {v!r}")
        if self.page_size > window:
            raise ConfigError(
                f"kv_pages: page_size {self.page_size} is larger than the model's window "
                f"({window} tokens)"
            )
        if self.selection not in SELECTIONS:
            raise ConfigError(f"kv_pages: selection must be one of {', '.join(SELECTIONS)}, "
                              f"not {self.selection!r}")
        if self.scorer not in SCORERS:
            raise ConfigError(f"kv_pages: scorer must be one of {', '.join(SCORERS)}, "
                              f"not {self.scorer!r}")
        need = self.attended_tokens() + self.chunk
        if need > window:
            raise ConfigError(
                f"kv_pages: sink {self.sink} + top_pages*page_size {self.top_pages}*"
                f"{self.page_size} + local {self.local} (+ up to a page) + chunk {self.chunk} = "
                f"{need} tokens exceeds the model's window of {window}; lower top_pages, "
                "page_size, local or chunk"
            )
        return self

    def attended_tokens(self) -> int:
        """The most document tokens one step attends to."""
        return self.sink + self.top_pages * self.page_size + self.local + self.page_size - 1

    def as_dict(self) -> dict:
        return asdict(self)
