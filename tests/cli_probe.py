"""What the bad-input tests share: the real `orchestra` command run in a subprocess, and a
pipeline file over the scripted backend (no model loads)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ORCHESTRA = Path(sys.executable).with_name("orchestra")
ALLOW = ["--allow-module", "orchestra.backends.scripted"]
SCRIPTED = ('backend: {type: "orchestra.backends.scripted:ScriptedBackend", '
            'replies: ["Alice is 30."], context_window: 512}\n')


def pipeline(strategy: str, router: str = "", backend: str = SCRIPTED) -> str:
    return backend + "strategies:\n  " + strategy + "\n" + router


def run_cli(argv: list[str], cwd: Path, env: dict | None = None, timeout: float = 60):
    return subprocess.run([str(ORCHESTRA), *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, "ORCHESTRA_QUIET": "1",
                               "ORCHESTRA_CACHE": str(cwd / "cache"), **(env or {})})
