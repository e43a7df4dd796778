"""Shared fixtures: the real embedded backend (once per session) and the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("ORCHESTRA_DATA", REPO.parent / "shared" / "data"))


def data_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with a clear message when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"benchmark data not found at {path} (set ORCHESTRA_DATA or place "
                    "the shared data folder beside the repository)")
    return path


@pytest.fixture(scope="session")
def embedded():
    """The real embedded SmolLM2 backend, loaded once for the whole test session."""
    from orchestra.backends import default_backend

    return default_backend()


@pytest.fixture(scope="session")
def essays_dir() -> Path:
    return data_path("needle_haystack", "PaulGrahamEssays")
