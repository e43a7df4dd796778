"""Every step of a run, as it happens: listeners see each Trace step start and end.

A Trace records its steps after the fact (the Answer's ``trace``); observers (LangChain
callbacks, LlamaIndex instrumentation, OpenTelemetry spans, the CLI's progress line) need them
live. ``Trace.step`` / ``Trace.add`` call ``started`` and ``ended`` here, so every strategy,
router and agent that records a step is observable without knowing who listens.

Listeners are scoped with ``listening(...)`` (a ContextVar, so concurrent runs in other threads
or tasks do not see each other's steps) or process-wide with ``add_global`` (OpenTelemetry
spans, registered on first use when ``opentelemetry-api`` is installed: orchestra/telemetry.py).
A listener is any object with ``step_started(step) -> token`` and
``step_ended(step, token, error)`` (and, to see the answer's tokens as a streaming read writes
them, ``step_token(text)``); a listener that raises is logged and never breaks a run.

Work that belongs to no answer's trace (a retriever index built or read back from its cache,
a document prefilled into KV pages: done once, reused by later answers) is reported with
``work(name, **detail)`` to the listeners that define ``work_done(name, detail)``; the server
counts corpus reuse this way.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Protocol

log = logging.getLogger(__name__)

# What a step is, for observers that type their events (LangChain run types, span kinds).
ROUTE, RETRIEVAL, MODEL, PREFILL, STEP = "route", "retrieval", "model", "prefill", "step"
STEP_KINDS = (ROUTE, RETRIEVAL, MODEL, PREFILL, STEP)

# Steps recorded before kinds existed, by name; a step given an explicit kind keeps it.
_KIND_BY_NAME = {
    "route": ROUTE, "retrieve": RETRIEVAL, "prefill": PREFILL,
    "read": MODEL, "decode": MODEL, "manager": MODEL, "worker": MODEL, "compress": MODEL,
    "map": MODEL,
}


def kind_of(name: str) -> str:
    base = name.rsplit(".", 1)[-1]
    if base.startswith("reduce"):
        return MODEL
    return _KIND_BY_NAME.get(base, STEP)


class Listener(Protocol):
    def step_started(self, step: Any) -> Any: ...

    def step_ended(self, step: Any, token: Any, error: BaseException | None) -> None: ...


_scoped: ContextVar[tuple] = ContextVar("orchestra_listeners", default=())
_global: list = []


def add_global(listener: Listener) -> None:
    if listener not in _global:
        _global.append(listener)


def remove_global(listener: Listener) -> None:
    if listener in _global:
        _global.remove(listener)


@contextmanager
def listening(*listeners: Listener) -> Iterator[None]:
    """Let ``listeners`` see the steps of whatever runs inside this block (this context)."""
    token = _scoped.set(_scoped.get() + tuple(listeners))
    try:
        yield
    finally:
        _scoped.reset(token)


_otel_checked = False


def _register_otel() -> None:
    """OpenTelemetry spans for every step, process-wide, when its API is installed."""
    global _otel_checked
    _otel_checked = True
    try:
        from orchestra.telemetry import OTelSteps
    except ImportError:  # opentelemetry-api is optional (the [otel] extra)
        return
    if not any(isinstance(g, OTelSteps) for g in _global):
        _global.append(OTelSteps())


def active() -> list:
    if not _otel_checked:
        _register_otel()
    return [*_global, *_scoped.get()]


def started(step: Any) -> list[tuple[Any, Any]]:
    """Tell the listeners ``step`` started; the handles go back to ``ended``."""
    handles = []
    for listener in active():
        try:
            handles.append((listener, listener.step_started(step)))
        except Exception:  # an observer must never break the run it observes
            log.warning("step listener %r failed on start of %s", listener, step.name,
                        exc_info=True)
    return handles


def ended(handles: list[tuple[Any, Any]], step: Any, error: BaseException | None = None) -> None:
    for listener, token in reversed(handles):
        try:
            listener.step_ended(step, token, error)
        except Exception:
            log.warning("step listener %r failed on end of %s", listener, step.name,
                        exc_info=True)


# Names of the work reported with ``work``.
INDEX_BUILT, INDEX_LOADED, KV_PREFILLED = "index_built", "index_loaded", "kv_prefilled"


def work(name: str, **detail: Any) -> None:
    """Tell the listeners that define ``work_done`` that ``name`` was done (once-per-corpus
    work that is no step of an answer: INDEX_BUILT, INDEX_LOADED, KV_PREFILLED)."""
    for listener in active():
        done = getattr(listener, "work_done", None)
        if done is None:
            continue
        try:
            done(name, detail)
        except Exception:
            log.warning("work listener %r failed on %s", listener, name, exc_info=True)


def token(text: str) -> None:
    """A piece of the answer's text as the model writes it (a streaming read, inside its model
    step): listeners with ``step_token(text)`` get it (LangChain's ``on_llm_new_token``)."""
    for listener in active():
        hook = getattr(listener, "step_token", None)
        if hook is None:
            continue
        try:
            hook(text)
        except Exception:  # an observer must never break the run it observes
            log.warning("step listener %r failed on a token", listener, exc_info=True)


def emit(step: Any) -> None:
    """Show listeners a step that is already complete (it is not added to any Trace)."""
    ended(started(step), step)
