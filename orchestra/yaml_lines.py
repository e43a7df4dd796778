"""YAML loading that remembers where every value came from, for error messages.

PyYAML's composed node tree knows each node's line; we convert it to plain Python while
recording ``path (tuple of keys/indices) -> line`` so a pydantic error location can be turned
into "file:line: field a.b.c".

Hostile files are refused before they cost anything: a file over ``MAX_FILE_BYTES``, anything but
a regular file (a FIFO would block forever), YAML aliases (``*name``: ten levels of nine aliases
expand a 618-byte file to a billion values, and pipeline files have no use for them), nesting
deeper than ``MAX_DEPTH`` and any tag PyYAML's safe loader does not know.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from orchestra.errors import ConfigError
from orchestra.files import read_text_file

MAX_FILE_BYTES = 1 << 20  # pipeline files are a few hundred bytes; 1 MiB is generous
MAX_DEPTH = 64  # nesting levels; PyYAML's composer recurses once per level

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class EnvValue(str):
    """A value that was one ``${VAR}`` reference: text from the environment, which
    orchestra.config parses by the option's annotated type (``max_tokens: ${MT}`` with MT=32
    is the integer 32; an API key stays text)."""


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
                out = _interpolate(v, self.where(path))
                # The whole value is one reference: its text is parsed by the option's type
                # when the file is checked (orchestra.config), as Compose and OmegaConf do.
                return EnvValue(out) if out != v and _ENV.fullmatch(v) else out
            return v

        return walk(self.data, ())

    def where(self, path: tuple) -> str:
        """'file:line' for the deepest known prefix of ``path``."""
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        line = self.lines.get(p, 1)
        return f"{self.source}:{line}"


class _Refused(Exception):
    def __init__(self, line: int, message: str):
        self.line, self.message = line, message


class _Loader(yaml.SafeLoader):
    """SafeLoader's composer, refusing aliases and deep nesting as it reads."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            ev = self.peek_event()
            raise _Refused(ev.start_mark.line + 1,
                           f"YAML aliases (*{ev.anchor}) are not allowed in pipeline files; "
                           "write the value out")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(self.peek_event().start_mark.line + 1,
                               f"values are nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_located(text: str, source: str) -> Located:
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"{source}: {len(text)} characters, more than a pipeline file may hold "
                          f"({MAX_FILE_BYTES})")
    loader = None
    try:
        loader = _Loader(text)  # its reader refuses control characters at once
        node = loader.get_single_node()
    except _Refused as e:
        raise ConfigError(f"{source}:{e.line}: {e.message}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}{line}: not valid YAML: {getattr(e, 'problem', e)}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        raise ConfigError(f"{source}: the file is empty")
    lines: dict[tuple, int] = {}
    data = _convert(node, (), lines, source)
    return Located(data, lines, source)


def load_file(path: str | Path) -> Located:
    path = Path(path)
    text = read_text_file(path, ConfigError, "a pipeline file", max_bytes=MAX_FILE_BYTES)
    return load_located(text, str(path))


# The tags PyYAML gives an untagged mapping and sequence. Any other tag on one (`!!python/tuple`,
# `!!python/name:os.system`, `!!set`, a custom `!thing`) would be dropped silently by _convert,
# so it is refused: a pipeline file holds plain data only.
_PLAIN_TAGS = {yaml.MappingNode: "tag:yaml.org,2002:map", yaml.SequenceNode: "tag:yaml.org,2002:seq"}


def _refuse_tag(node: yaml.Node, source: str) -> None:
    plain = _PLAIN_TAGS.get(type(node))
    if plain is not None and node.tag != plain:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!", 1)
        raise ConfigError(f"{source}:{node.start_mark.line + 1}: the YAML tag {tag} is not "
                          "allowed in pipeline files (tags are refused; write plain values)")


def _convert(node: yaml.Node, path: tuple, lines: dict, source: str) -> Any:
    lines[path] = node.start_mark.line + 1
    _refuse_tag(node, source)
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
    return _scalar(node, source)


def _scalar(node: yaml.ScalarNode, source: str) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as e:  # e.g. a !!python/name tag: SafeLoader refuses it, we say where
        raise ConfigError(f"{source}:{node.start_mark.line + 1}: value {node.value!r} cannot be "
                          f"read ({getattr(e, 'problem', None) or e})") from None
    except ValueError as e:  # a malformed !!timestamp / !!int scalar that the resolver accepted
        raise ConfigError(f"{source}:{node.start_mark.line + 1}: value {node.value!r} cannot be "
                          f"read ({e})") from None
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
