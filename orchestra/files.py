"""Reading a user's file: a regular file, within a size, as UTF-8 text, or one clear error."""

from __future__ import annotations

import stat
from pathlib import Path

from orchestra.errors import OrchestraError


def read_text_file(path: Path, error: type[OrchestraError], give: str,
                   max_bytes: int | None = None) -> str:
    """The text of ``path``; anything else raises ``error`` naming the file.

    ``give`` completes "…; give …" (what the caller expects), ``max_bytes`` caps the size.
    Only regular files are read: a FIFO or device would block or never end.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{path}: no such file or directory") from None
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise error(f"{path}: {what}; give {give}")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{path}: {st.st_size} bytes, more than {give} may hold ({max_bytes})")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (invalid byte at offset {e.start}); "
                    "convert it to UTF-8") from None
