"""What the service refuses, and why: one exception with a ``kind``.

The service and the request models raise ``ServiceError``; only the HTTP layer
(orchestra/server/http.py) turns a kind into a status line and OpenAI's error shape, so the
service can be driven without HTTP (a Ray Serve deployment, a notebook).
"""

from __future__ import annotations

# kind -> (HTTP status, OpenAI error type)
KINDS = {
    "invalid": (400, "invalid_request_error"),
    "unauthorized": (401, "authentication_error"),
    "not_found": (404, "not_found_error"),
    "timeout": (408, "timeout_error"),
    "conflict": (409, "invalid_request_error"),
    "too_large": (413, "invalid_request_error"),
    "busy": (429, "rate_limit_error"),
    "server": (500, "server_error"),
}


class ServiceError(Exception):
    """A request that cannot be served as given. ``code``: OpenAI's machine-readable code (a
    string such as ``model_not_found``), or None; ``param``: the field at fault, if one."""

    def __init__(self, message: str, kind: str = "invalid", *, code: str | None = None,
                 param: str | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.param = param

    @property
    def status(self) -> int:
        return KINDS[self.kind][0]

    @property
    def type(self) -> str:
        return KINDS[self.kind][1]

    def body(self) -> dict:
        """OpenAI's error shape: message, type, param and code (a string or null)."""
        return {"error": {"message": str(self), "type": self.type, "param": self.param,
                          "code": self.code}}
