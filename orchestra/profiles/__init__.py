"""Per-model profiles: the reading defaults that suit one model family.

A small reader and a large one want different chunks, templates and decoding guards, so the
values a pipeline does not set come from a profile chosen by the backend's model family:

- ``smollm2.yaml``: the embedded SmolLM2-135M reader (``model: embedded`` or a SmolLM2 model
  name); its values are what ``orchestra tune`` chose on dev (the file says with which command).
- ``generic.yaml``: any other model: the strategies' own defaults.

A pipeline file may name one (``profile: smollm2``, ``profile: generic`` or
``profile: path/to/profile.yaml``, e.g. the ``profile.yaml`` a tune writes); any option the
pipeline gives itself wins over the profile. A profile file::

    family: smollm2
    match: ["smollm2", "^embedded$"]    # regexes over the backend's model name
    description: ...
    strategies:                          # by strategy type
      rag: {reorder: edges_last, reader_template: ruler}
    retrievers:                          # by retriever type
      dense: {chunk_tokens: 128}

Profiles are checked like pipeline files: an unknown strategy type or option is refused, naming
the profile file and the field.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestra.errors import ConfigError

HERE = Path(__file__).resolve().parent
GENERIC = "generic"


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family: str
    match: list[str] = Field(default_factory=list)
    description: str = ""
    tuned: str = ""  # how the values were chosen (the tune command and its dev score)
    strategies: dict[str, dict[str, Any]] = Field(default_factory=dict)
    retrievers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    source: str = Field(default="", exclude=True)


def builtin_names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def _load_path(path: str) -> Profile:
    # Keyed by the file's mtime and size too: an edited profile is read again (a notebook or a
    # server process lives across edits).
    try:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = None  # load_file names the problem
    return _load_stamped(path, stamp)


@lru_cache(maxsize=32)
def _load_stamped(path: str, stamp) -> Profile:
    from orchestra.yaml_lines import load_file

    located = load_file(path)
    data = located.data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a profile must be a mapping")
    try:
        prof = Profile.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        field = ".".join(map(str, loc))
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"{located.where(loc)}: profile field {field}: {msg}") from None
    prof.source = path
    _check(prof, located)
    return prof


def _check(prof: Profile, located) -> None:
    """Every type registered and every option one its constructor takes."""
    from orchestra.registry import resolve
    from orchestra.spec import parameters

    for kind, section in (("strategy", prof.strategies), ("retriever", prof.retrievers)):
        key = "strategies" if kind == "strategy" else "retrievers"
        for type_name, options in section.items():
            where = located.where((key, type_name))
            try:
                cls = resolve(kind, type_name)
            except ConfigError as e:
                raise ConfigError(f"{where}: profile field {key}.{type_name}: {e}") from None
            if not isinstance(options, dict):
                raise ConfigError(f"{where}: profile field {key}.{type_name}: expected a "
                                  f"mapping of options, got {options!r}")
            names, open_kw = parameters(cls)
            for opt in options:
                if opt not in names and not open_kw:
                    raise ConfigError(
                        f"{located.where((key, type_name, opt))}: profile field "
                        f"{key}.{type_name}.{opt}: unknown option for {type_name!r}; known: "
                        f"{', '.join(sorted(names)) or 'none'}")
    for pattern in prof.match:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"{located.where(('match',))}: profile field match: "
                              f"{pattern!r} is not a regular expression ({e})") from None


def load_profile(name: str, base_dir: Path | None = None) -> Profile:
    """A built-in profile by name, or a profile file by path (relative to ``base_dir``)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"profile must be a name ({', '.join(builtin_names())}) or a .yaml "
                          f"path, got {name!r}")
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise ConfigError(f"profile {name!r}: no such file ({path})")
        return _load_path(str(path.resolve()))
    if name not in builtin_names():
        raise ConfigError(f"unknown profile {name!r}; built-in: {', '.join(builtin_names())} "
                          "(or a path to a profile .yaml file)")
    return _load_path(str(HERE / f"{name}.yaml"))


def family_for_model(model: str | None) -> str:
    """The built-in profile whose ``match`` fits the model name (else ``generic``)."""
    text = str(model or "")
    for name in builtin_names():
        if name == GENERIC:
            continue
        if any(re.search(p, text, re.I) for p in load_profile(name).match):
            return name
    return GENERIC


def family_of_backend(backend: Any) -> str:
    """The profile family of a built backend: its ``model_family`` if it says, else by the
    model name it describes."""
    fam = getattr(backend, "model_family", None)
    if isinstance(fam, str) and fam in builtin_names():
        return fam
    for attr in ("model_name", "model"):
        value = getattr(backend, attr, None)
        if isinstance(value, str):
            return family_for_model(value)
    for method in ("spec", "describe"):
        try:
            model = (getattr(backend, method)() or {}).get("model")
        except Exception:  # no such method or it failed: try the next
            continue
        if isinstance(model, str):
            return family_for_model(model)
    return GENERIC


def apply_profile(data: dict, profile: Profile) -> dict:
    """A copy of pipeline ``data`` with the profile's values for every option it does not
    give. Strategies (and defined retrievers) get their type's values; a strategy that names a
    retriever by its bare type gets one defined with the profile's values for that type."""
    out = dict(data)
    strategies = {}
    for name, comp in (data.get("strategies") or {}).items():
        if isinstance(comp, dict):
            comp = {**prof_options(profile.strategies, comp.get("type")), **comp}
        strategies[name] = comp
    out["strategies"] = strategies
    retrievers = {}
    for name, comp in (data.get("retrievers") or {}).items():
        if isinstance(comp, dict):
            comp = {**prof_options(profile.retrievers, comp.get("type")), **comp}
        retrievers[name] = comp
    from orchestra.registry import names as registry_names

    for comp in strategies.values():
        if not isinstance(comp, dict):
            continue
        refs = comp.get("retriever")
        for ref in refs if isinstance(refs, list) else [refs]:
            if isinstance(ref, str) and ref not in retrievers and ref in profile.retrievers \
                    and ref in registry_names("retriever"):
                retrievers[ref] = {"type": ref, **profile.retrievers[ref]}
    if retrievers or "retrievers" in data:
        out["retrievers"] = retrievers
    return out


def prof_options(section: dict[str, dict[str, Any]], type_name: Any) -> dict[str, Any]:
    return dict(section.get(type_name) or {}) if isinstance(type_name, str) else {}
