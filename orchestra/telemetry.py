"""OpenTelemetry spans for every pipeline step, when ``opentelemetry-api`` is installed
(``pip install 'orchestra-longdoc[otel]'``).

``orchestra.observe`` registers ``OTelSteps`` process-wide on first use when the API imports.
Each Trace step (route, retrieve, read, decode, prefill, worker, ...) becomes a span named
``orchestra.<step>``, a child of whatever span is current (a web request's, a user's own), with
the step's kind and details as ``orchestra.*`` attributes (tokens, scores, pages, the route's
strategy, reason and signals). Without an SDK configured the API's spans are no-ops, so this
costs next to nothing until someone exports traces.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

_SCALARS = (str, bool, int, float)


def attributes(step: Any) -> dict[str, Any]:
    """The step's details as OpenTelemetry attributes (primitives and lists of them)."""
    out: dict[str, Any] = {"orchestra.step.kind": step.kind, "orchestra.step.name": step.name}

    def put(key: str, value: Any) -> None:
        if isinstance(value, _SCALARS):
            out[key] = value
        elif isinstance(value, (list, tuple)) and value and all(
                isinstance(v, _SCALARS) for v in value):
            out[key] = list(value)
        elif isinstance(value, (list, tuple)):
            out[key + ".count"] = len(value)

    for k, v in step.detail.items():
        if isinstance(v, dict):  # one level: the route's signals
            for k2, v2 in v.items():
                put(f"orchestra.{k}.{k2}", v2)
        else:
            put(f"orchestra.{k}", v)
    return out


class OTelSteps:
    """An ``orchestra.observe`` listener that opens a span per step."""

    def __init__(self, tracer_provider: Any = None):
        self.tracer_provider = tracer_provider

    def _tracer(self):
        from orchestra import __version__

        return trace.get_tracer("orchestra", __version__, tracer_provider=self.tracer_provider)

    def step_started(self, step: Any) -> Any:
        # A step recorded after the fact (Trace.add) already has its duration: start it then.
        start = time.time_ns() - int(step.seconds * 1e9)
        span = self._tracer().start_span(f"orchestra.{step.name}", start_time=start,
                                         attributes={"orchestra.step.kind": step.kind})
        token = otel_context.attach(trace.set_span_in_context(span))
        return span, token

    def step_ended(self, step: Any, handle: Any, error: BaseException | None) -> None:
        span, token = handle
        try:
            span.set_attributes(attributes(step))
            span.set_attribute("orchestra.seconds", float(step.seconds))
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, repr(error)[:200]))
        finally:
            otel_context.detach(token)
            span.end()
