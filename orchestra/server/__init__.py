"""orchestra as a service: FastAPI + uvicorn.

``orchestra serve [PIPELINE.yaml]`` serves a pipeline (corpora, answers, OpenAI-compatible chat
completions with streaming); ``orchestra serve --model-only`` serves the backend's model alone
(OpenAI-compatible, with /tokenize). ``create_app`` builds the app; ``serve_in_thread`` runs
one on a daemon thread (tests, notebooks, benchmarks). See orchestra/server/app.py.
"""

from orchestra.server.app import ServeSettings, create_app  # noqa: F401
from orchestra.server.runner import serve_in_thread  # noqa: F401
