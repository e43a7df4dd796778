"""One spec per component: the keyword arguments it was built with.

As scikit-learn derives ``get_params`` from the constructor's signature, a component's spec is
derived from its constructor's keyword arguments, never written by hand: ``Component.__new__``
records the arguments each instance was built with (the same ones ``__init__`` receives), and
``spec()`` returns them (``cls(backend, **obj.spec())`` builds it again); ``entry(obj)`` adds
its registered ``type``, as a pipeline file holds it. A new constructor option
therefore appears in ``Pipeline.to_yaml()``, in ``orchestra validate`` (``parameters`` lists
what a type accepts) and in the eval report's run.json without anyone remembering to add it.

- ``parameters(cls)``: the keywords ``cls(...)`` accepts with their defaults, following
  ``**kwargs`` up the MRO (a subclass passes its extra options to its parent's constructor).
- ``CONTEXT``: what a pipeline hands every component (the backend, a router's strategies); not a
  setting, never in a spec.
- ``spec_hidden``: a class's arguments that are never written (an API key; a test hook).

Values keep what was given: a retriever instance passed to a strategy is written as its
pipeline name when ``names`` has it, else as its own spec (a nested ``{"type": ...}``), which
``make_retriever`` builds again.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, ClassVar, Mapping

CONTEXT = ("backend", "strategies")
REQUIRED = inspect.Parameter.empty


@functools.lru_cache(maxsize=None)
def parameters(cls: type) -> tuple[dict[str, Any], bool]:
    """(keyword name -> default, or REQUIRED; whether any other keyword is accepted) of
    ``cls(...)``, following ``**kwargs`` up the MRO; CONTEXT names are left out."""
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        if klass is object:
            return out, False
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = list(inspect.signature(init).parameters.values())[1:]  # drop self
        except (TypeError, ValueError):
            return out, True
        open_kw = False
        for p in params:
            if p.kind == p.VAR_KEYWORD:
                open_kw = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in CONTEXT:
                out.setdefault(p.name, p.default)
        if not open_kw:
            return out, False
    return out, True


@functools.lru_cache(maxsize=None)
def _signature(cls: type) -> inspect.Signature | None:
    try:
        return inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return None


def given_arguments(cls: type, args: tuple, kwargs: dict) -> dict[str, Any] | None:
    """The keyword arguments of ``cls(*args, **kwargs)``, by name (None when they do not bind:
    ``__init__`` then raises its own error)."""
    sig = _signature(cls)
    if sig is None:
        return None
    try:
        bound = sig.bind(None, *args, **kwargs)  # None stands for self
    except TypeError:
        return None
    out: dict[str, Any] = {}
    for i, (name, value) in enumerate(bound.arguments.items()):
        p = sig.parameters[name]
        if i == 0 or p.kind == p.VAR_POSITIONAL or name in CONTEXT:
            continue
        if p.kind == p.VAR_KEYWORD:
            out.update({k: v for k, v in value.items() if k not in CONTEXT})
        else:
            out[name] = value
    return out


class Component:
    """Base of backends, retrievers, strategies and routers: records its constructor's
    arguments so ``spec()`` can rebuild it."""

    spec_hidden: ClassVar[tuple[str, ...]] = ()

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = super().__new__(cls)
        obj._spec_args = given_arguments(cls, args, kwargs) or {}
        # Every option is checked here, once, by the class's own check_options (the checks
        # `orchestra validate` runs on a file, orchestra.checks); constructors only read the
        # values, and the message names the class that was built ("strategy 'rag'").
        check = getattr(cls, "check_options", None)
        if callable(check):
            check(dict(obj._spec_args))
        return obj

    def spec(self, names: Mapping[int, str] | None = None, full: bool = True) -> dict[str, Any]:
        """The keyword arguments this component was built with.

        ``full``: every accepted keyword, defaults included (as get_params; the eval report);
        else only those that differ from the default (``to_yaml``). ``names`` maps
        ``id(component)`` to its name in a pipeline, so shared components are written by name;
        others nested in it are written as their ``entry``."""
        defaults, _ = parameters(type(self))
        given = getattr(self, "_spec_args", {})
        values: dict[str, Any] = {}
        if full:
            values.update({k: v for k, v in defaults.items() if v is not REQUIRED})
        for k, v in given.items():
            if full or k not in defaults or not _same(v, defaults[k]):
                values[k] = v
        for k in self.spec_hidden:
            values.pop(k, None)
        return {k: plain(v, names, full) for k, v in values.items()}


def entry(obj: Component, names: Mapping[int, str] | None = None,
          full: bool = True) -> dict[str, Any]:
    """``{"type": registered name, **obj.spec()}``: a pipeline file's entry for ``obj``."""
    return {"type": type_name(obj), **obj.spec(names, full)}


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # a value whose == is not a plain bool (an array): count it as changed
        return False


def plain(value: Any, names: Mapping[int, str] | None = None, full: bool = False) -> Any:
    """``value`` as YAML can hold it: components by pipeline name or as their own spec."""
    if names and id(value) in names:
        return names[id(value)]
    if isinstance(value, Component):
        return entry(value, names, full)
    if isinstance(value, (list, tuple)):
        return [plain(v, names, full) for v in value]
    if isinstance(value, dict):
        return {k: plain(v, names, full) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


KIND_OF_BASE = {"Backend": "backend", "Retriever": "retriever", "Strategy": "strategy",
                "Router": "router"}


def component_kind(obj: Any) -> str | None:
    """``backend``, ``retriever``, ``strategy`` or ``router`` (by the base class)."""
    for klass in type(obj).__mro__:
        if klass.__name__ in KIND_OF_BASE and klass.__module__.startswith("orchestra."):
            return KIND_OF_BASE[klass.__name__]
    return None


def type_name(obj: Any) -> str:
    """The name ``obj``'s type is registered under, else its ``module:Class`` path."""
    from orchestra.registry import registered

    kind = component_kind(obj)
    path = f"{type(obj).__module__}:{type(obj).__name__}"
    if kind is not None:
        for name, target in registered(kind).items():
            if target == path or target is type(obj):
                return name
    return path
