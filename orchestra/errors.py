"""Errors a user can act on. The CLI prints their message and exits non-zero, no traceback."""


def first_line(e: BaseException, limit: int | None = 300, empty: str = "") -> str:
    """The first line of an exception's message (``empty`` when it has none), cut to
    ``limit``: how a library's multi-line error becomes part of one line of ours."""
    return (str(e).strip().splitlines() or [empty])[0][:limit]


class OrchestraError(Exception):
    """Base class: the message alone must tell the user what to fix."""


class InputError(OrchestraError):
    """A document, path or question the user gave cannot be used."""


class ConfigError(OrchestraError):
    """A pipeline file or component option is invalid."""


class OptionError(ConfigError):
    """A component option has a bad value. ``option`` names it, so `orchestra validate` can point
    at the option's line in a pipeline file; constructors raise the same error from the same
    check (a component's ``check_options``), so what validates does not fail later."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(message)


class ContextOverflowError(OrchestraError):
    """Text does not fit the model's window and no truncation policy was chosen."""

    def __init__(self, needed: int, window: int, what: str = "the corpus"):
        self.needed = needed
        self.window = window
        super().__init__(
            f"{what} needs {needed} tokens but the model's window is {window} tokens; "
            "choose a truncation policy (head, tail or middle-out) or another strategy"
        )


class BackendError(OrchestraError):
    """The inference backend failed or is unavailable."""


class CapabilityError(OrchestraError):
    """A strategy needs a backend capability the backend does not have."""
