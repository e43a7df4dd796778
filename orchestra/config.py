"""Pipeline files: validated by pydantic before anything is built.

A file names the backend once, the retrievers, the strategies and the router::

    backend: {type: transformers, model: embedded}
    retrievers:
      dense: {type: dense}
    strategies:
      rag: {type: rag, retriever: dense, top_k_tokens: 1000}
      full: {type: full_context}
    router: {type: self_route, first: rag, fallback: [full]}

Every error names the file, the line and the field. Component options are checked against the
component's constructor, so a typo in an option is caught too. Only registered types are built;
an import path (``mypkg.mod:Class``) is refused unless the caller passes ``allow_modules``.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from orchestra.checks import run_checks
from orchestra.errors import ConfigError, OptionError
from orchestra.registry import allowing
from orchestra.registry import names as registry_names
from orchestra.registry import resolve
from orchestra.spec import parameters
from orchestra.yaml_lines import EnvValue, Located, load_file, load_located

CONFIG_VERSION = 1

# Option names whose values are names of other components (checked as references).
STRATEGY_REFS = {"strategy", "first", "fallback", "default", "strategies"}
RETRIEVER_REFS = {"retriever", "retrievers", "seed"}


class Component(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str

    @field_validator("type")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("type must not be empty")
        return v

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CorpusSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chunk_tokens: int = Field(default=200, ge=8)
    overlap: int = Field(default=20, ge=0)


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = CONFIG_VERSION
    backend: Component = Field(default_factory=lambda: Component(type="transformers",
                                                                   model="embedded"))
    corpus: CorpusSettings = Field(default_factory=CorpusSettings)
    retrievers: dict[str, Component] = Field(default_factory=dict)
    strategies: dict[str, Component] = Field(min_length=1)
    router: Component = Field(default_factory=lambda: Component(type="fixed"))
    # The model-family profile whose values fill options this file does not give
    # (orchestra.profiles); None: chosen by the backend's model name.
    profile: str | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != CONFIG_VERSION:
            raise ValueError(f"this orchestra reads pipeline files of version {CONFIG_VERSION}")
        return v


def parse(located: Located) -> PipelineConfig:
    data = located.interpolated()
    if not isinstance(data, dict):
        raise ConfigError(f"{located.where(())}: a pipeline file must be a mapping")
    data = with_profile(data, located)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            elif err["type"] == "missing":
                msg = "required field is missing"
            msgs.append(f"{located.where(loc)}: field {field}: {msg}")
        raise ConfigError("\n".join(msgs)) from None


def with_profile(data: dict, located: Located) -> dict:
    """``data`` with its profile's values for the options it does not give: the profile it
    names, else the one its backend's model family picks (orchestra.profiles)."""
    from orchestra.profiles import apply_profile, family_for_model, load_profile

    if not all(isinstance(data.get(k) or {}, dict) for k in ("strategies", "retrievers")):
        return data  # not mappings: pydantic names the field
    name = data.get("profile")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{located.where(('profile',))}: field profile: a profile's name, "
                          f"not {name!r}")
    if name is None:
        backend = data.get("backend")
        model = backend.get("model") if isinstance(backend, dict) else "embedded"
        name = family_for_model(model if isinstance(model, str) else "embedded")
    source = Path(located.source)
    try:
        prof = load_profile(name, source.parent if source.is_file() else None)
    except ConfigError as e:
        raise ConfigError(f"{located.where(('profile',))}: field profile: {e}") from None
    return apply_profile(data, prof)


def load_config(path: str | Path) -> tuple[PipelineConfig, Located]:
    located = load_file(path)
    return parse(located), located


def load_config_text(text: str, source: str = "<string>") -> tuple[PipelineConfig, Located]:
    located = load_located(text, source)
    return parse(located), located


def check(cfg: PipelineConfig, located: Located, allow_modules: Iterable[str] = ()) -> None:
    """Every type registered (or allowed), every option known, every reference defined."""
    c = _Checker(located, tuple(allow_modules))
    backend_cls = c.cls_for("backend", cfg.backend, ("backend",))
    c.options(backend_cls, cfg.backend, ("backend",))
    for name, comp in cfg.retrievers.items():
        path = ("retrievers", name)
        c.options(c.cls_for("retriever", comp, path), comp, path)
        if "backend" in comp.options:
            raise ConfigError(f"{located.where(path + ('backend',))}: field "
                              f"{'.'.join(path)}.backend: components share the pipeline's backend")
        c.refs(comp, path, RETRIEVER_REFS, {k: v for k, v in cfg.retrievers.items()
                                            if k != name}, "retriever")
    for name, comp in cfg.strategies.items():
        path = ("strategies", name)
        strategy_cls = c.cls_for("strategy", comp, path)
        c.options(strategy_cls, comp, path)
        check_capabilities(backend_cls, strategy_cls, located, path)
        c.refs(comp, path, RETRIEVER_REFS, cfg.retrievers, "retriever")
    path = ("router",)
    c.options(c.cls_for("router", cfg.router, path), cfg.router, path)
    c.refs(cfg.router, path, STRATEGY_REFS, cfg.strategies, "strategy")


class _Checker:
    """check()'s steps for one file: each error names the file, the line and the field."""

    def __init__(self, located: Located, allow: tuple[str, ...]):
        self.located = located
        self.allow = allow

    def field(self, path: tuple) -> str:
        return f"{self.located.where(path)}: field {'.'.join(map(str, path))}"

    def cls_for(self, kind: str, comp: Component, path: tuple):
        try:
            return resolve(kind, comp.type, self.allow)
        except ConfigError as e:
            raise ConfigError(f"{self.field(path + ('type',))}: {e}") from None

    def options(self, cls, comp: Component, path: tuple) -> None:
        allowed, open_kw = parameters(cls)
        hints = option_types(cls)
        for opt, value in comp.options.items():
            where = self.field(path + (opt,))
            if opt not in allowed and not open_kw:
                raise ConfigError(f"{where}: unknown option for {comp.type!r}; "
                                  f"known: {', '.join(sorted(allowed)) or 'none'}")
            if isinstance(value, EnvValue) and opt in hints:
                value = comp.model_extra[opt] = _env_typed(value, hints[opt], where)
            if opt in hints and opt not in RETRIEVER_REFS | STRATEGY_REFS:
                _check_type(hints[opt], value, where)
        self.values(cls, comp, path)

    def values(self, cls, comp: Component, path: tuple) -> None:
        """The component's own value checks, the ones its constructor runs (orchestra.checks)."""
        try:
            with allowing(self.allow):  # import paths in options (a foreign retriever's factory)
                run_checks(cls, {k: v for k, v in comp.options.items()
                                 if k not in RETRIEVER_REFS | STRATEGY_REFS})
        except OptionError as e:
            p = path + (e.option,) if e.option in comp.options else path
            raise ConfigError(f"{self.field(p)}: {e}") from None
        except ConfigError as e:
            raise ConfigError(f"{self.field(path)}: {e}") from None

    def refs(self, comp: Component, path: tuple, fields: set[str], defined: dict, what: str):
        for opt, value in comp.options.items():
            if opt not in fields:
                continue
            names = value if isinstance(value, list) else [value]
            for i, n in enumerate(names):
                if n is None:
                    continue
                # A retriever may also be named by its registered type (built with defaults).
                if what == "retriever" and isinstance(n, str) and n not in defined \
                        and n in registry_names("retriever"):
                    continue
                p = path + (opt,) + ((i,) if isinstance(value, list) else ())
                known = ', '.join(defined) or 'none'
                if not isinstance(n, str):
                    # YAML reads `strategy: 1` as a number; names (keys) are always text.
                    raise ConfigError(
                        f"{self.field(p)}: expected the name of a {what}, got the "
                        f"{type(n).__name__} {n!r}; write names in quotes (\"{n}\") "
                        f"(defined: {known})")
                if n not in defined:
                    raise ConfigError(f"{self.field(p)}: {n!r} is not a defined {what} "
                                      f"(defined: {known})")


def _check_type(hint: Any, value: Any, where: str) -> None:
    try:
        TypeAdapter(hint).validate_python(value)
    except ValidationError as e:
        raise ConfigError(f"{where}: {e.errors()[0]['msg']} (got {value!r})") from None
    except Exception:  # an annotation pydantic cannot check; the constructor will
        pass


def _env_typed(value: EnvValue, hint: Any, where: str) -> Any:
    """An environment value's text parsed by the option's type (pydantic's string mode, as
    for a query parameter: '32' is 32 for an int, 'true' is True for a bool, text stays text)."""
    try:
        return TypeAdapter(hint).validate_strings(str(value))
    except ValidationError as e:
        kind = getattr(hint, "__name__", None) or str(hint)
        raise ConfigError(f"{where}: the environment gave {str(value)!r}, not a value of type "
                          f"{kind} ({e.errors()[0]['msg']})") from None
    except Exception:  # an annotation pydantic cannot read: the text goes on as text
        return str(value)


def check_capabilities(backend_cls, strategy_cls, located: Located, path: tuple) -> None:
    """A strategy needing what the backend can never do (kv_pages on vLLM) is refused here,
    before any model loads. Only backends that declare ``offers`` (their capabilities, known
    without loading) are checked; the others are checked when the strategy is built."""
    offers = getattr(backend_cls, "offers", None)
    missing = sorted(set(getattr(strategy_cls, "requires", ())) - set(offers or ()))
    if offers is None or not missing:
        return
    p = path + ("type",)
    raise ConfigError(
        f"{located.where(p)}: field {'.'.join(map(str, p))}: strategy "
        f"{strategy_cls.name!r} needs the backend capability {', '.join(map(repr, missing))}, "
        f"which the {backend_cls.name} backend does not have (it has: "
        f"{', '.join(sorted(offers))}); use the transformers backend for it")


def option_types(cls) -> dict[str, Any]:
    """Type annotations of constructor options along the MRO (first definition wins)."""
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            hints.update(typing.get_type_hints(init))
        except Exception:  # unresolvable forward references: leave those options unchecked
            continue
    hints.pop("return", None)
    return hints
