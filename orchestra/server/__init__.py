"""An OpenAI-compatible chat-completions server over any orchestra backend.

``orchestra serve`` runs it; ``make_server(backend)`` builds one in-process (tests, notebooks).
Endpoints: ``POST /v1/chat/completions`` (with usage), ``GET /v1/models``, ``POST /tokenize``
(vLLM's and llama.cpp's request shapes), ``GET /health``.
"""

from orchestra.server.app import make_server, serve_in_thread  # noqa: F401
