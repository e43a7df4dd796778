"""orchestra as a service: FastAPI + uvicorn.

``orchestra serve [PIPELINE.yaml]`` serves a pipeline (corpora, answers, OpenAI-compatible chat
completions with streaming); ``orchestra serve --model-only`` serves the backend's model alone
(OpenAI-compatible, with /tokenize). The layers, lowest first: ``schemas`` (request and
response models), ``service`` (``PipelineService`` / ``ModelService``: the work, no HTTP),
``routes_pipeline`` / ``routes_openai`` / ``routes_model`` (thin routes), ``app`` (the
factory, ``create_app``); ``runner.serve_in_thread`` runs an app on a daemon thread (tests,
notebooks, benchmarks).
"""

from orchestra.server.app import ServeSettings, create_app  # noqa: F401
from orchestra.server.runner import serve_in_thread  # noqa: F401
from orchestra.server.service import Limits, ModelService, PipelineService  # noqa: F401
