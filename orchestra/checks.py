"""Value checks that both a component's constructor and `orchestra validate` run.

A component class may define ``check_options(options: dict)`` (a classmethod) that checks the
values it can judge without a backend and raises ``OptionError(option, message)``. Building a
component runs it on the arguments given (``orchestra.spec.Component.__new__``: one place, so
no constructor checks again) and ``orchestra.config.check`` runs it on a pipeline file's
options, so a value `orchestra run` would refuse is refused by `validate` too, with the file,
line and field.
"""

from __future__ import annotations

from typing import Any, Iterable

from orchestra.errors import OptionError


def positive_int(options: dict, name: str, where: str) -> None:
    if name not in options or options[name] is None:
        return
    v = options[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise OptionError(name, f"{where}: {name} must be a positive integer, not {v!r}")


def non_negative_int(options: dict, name: str, where: str) -> None:
    if name not in options or options[name] is None:
        return
    v = options[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise OptionError(name, f"{where}: {name} must be an integer >= 0, not {v!r}")


def positive_number(options: dict, name: str, where: str) -> None:
    if name not in options or options[name] is None:
        return
    v = options[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v != v:
        raise OptionError(name, f"{where}: {name} must be a number > 0, not {v!r}")


def choice(options: dict, name: str, allowed: Iterable[Any], where: str) -> None:
    if name not in options:
        return
    allowed = tuple(allowed)
    if options[name] not in allowed:
        raise OptionError(name, f"{where}: {name} must be one of "
                                f"{', '.join(map(str, allowed))}, not {options[name]!r}")


def run_checks(cls: type, options: dict) -> None:
    """``cls.check_options(options)`` when the class defines it."""
    fn = getattr(cls, "check_options", None)
    if callable(fn):
        fn(dict(options))


def as_option_error(error: Exception, options: dict) -> OptionError:
    """``error`` (a check that does not say which option it is about) as an OptionError naming
    the first of ``options`` its message mentions, so validate can point at that line."""
    import re

    text = str(error)
    found = [(m.start(), name) for name in options
             if (m := re.search(rf"\b{re.escape(name)}\b", text))]
    return OptionError(min(found)[1] if found else next(iter(options), ""), text)
