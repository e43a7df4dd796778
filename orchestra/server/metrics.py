"""Prometheus metrics (prometheus_client), one registry per app so several apps in one process
(tests) do not share counts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("orchestra_requests", "HTTP requests answered",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("orchestra_request_seconds", "Time to answer a request",
                                 ["endpoint"], registry=r,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
        self.tokens = Counter("orchestra_tokens", "Model tokens", ["kind"], registry=r)
        self.routes = Counter("orchestra_route_choices", "Strategies chosen", ["strategy"],
                              registry=r)
        self.index_builds = Counter("orchestra_index_builds",
                                    "Retriever indexes built (chunks embedded or BM25-indexed)",
                                    ["retriever"], registry=r)
        self.kv_prefills = Counter("orchestra_kv_prefills", "Documents prefilled into KV pages",
                                   registry=r)
        self.in_flight = Gauge("orchestra_requests_in_flight",
                               "Requests running or waiting for the model", registry=r)
        self.rejected = Counter("orchestra_rejected", "Requests refused because the queue was "
                                "full", registry=r)
        self.disconnects = Counter("orchestra_client_disconnects",
                                   "Clients that left before their answer was complete",
                                   registry=r)

    def count_answer(self, answer) -> None:
        self.tokens.labels("prompt").inc(answer.cost.prompt_tokens)
        self.tokens.labels("generated").inc(answer.cost.generated_tokens)
        if answer.route is not None:
            self.routes.labels(answer.route.strategy).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
