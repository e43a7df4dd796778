"""YAML loading that remembers where every value came from, for error messages.

PyYAML's composed node tree knows each node's line; we convert it to plain Python while
recording ``path (tuple of keys/indices) -> line`` so a pydantic error location can be turned
into "file:line: field a.b.c".
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from orchestra.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Located:
    """Plain data plus the line of each path inside it."""

    def __init__(self, data: Any, lines: dict[tuple, int], source: str):
        self.data = data
        self.lines = lines
        self.source = source

    def interpolated(self) -> Any:
        """The data with ${VAR} references replaced from the environment."""

        def walk(v: Any, path: tuple) -> Any:
            if isinstance(v, dict):
                return {k: walk(x, path + (k,)) for k, x in v.items()}
            if isinstance(v, list):
                return [walk(x, path + (i,)) for i, x in enumerate(v)]
            if isinstance(v, str):
                return _interpolate(v, self.where(path))
            return v

        return walk(self.data, ())

    def where(self, path: tuple) -> str:
        """'file:line' for the deepest known prefix of ``path``."""
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        line = self.lines.get(p, 1)
        return f"{self.source}:{line}"


def load_located(text: str, source: str) -> Located:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}{line}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if node is None:
        raise ConfigError(f"{source}: the file is empty")
    lines: dict[tuple, int] = {}
    data = _convert(node, (), lines, source)
    return Located(data, lines, source)


def load_file(path: str | Path) -> Located:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return load_located(text, str(path))


def _convert(node: yaml.Node, path: tuple, lines: dict, source: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            key = knode.value
            if not isinstance(knode, yaml.ScalarNode):
                raise ConfigError(f"{source}:{knode.start_mark.line + 1}: keys must be plain names")
            if key in out:
                raise ConfigError(f"{source}:{knode.start_mark.line + 1}: duplicate key {key!r}")
            out[key] = _convert(vnode, path + (key,), lines, source)
            lines[path + (key,)] = knode.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(v, path + (i,), lines, source) for i, v in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _interpolate(value: str, where: str) -> str:
    """Replace ${VAR} and ${VAR:-default} with the environment (for secrets such as API keys)."""

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set "
                          f"(write ${{{name}:-default}} to give a default)")

    return _ENV.sub(sub, value)
