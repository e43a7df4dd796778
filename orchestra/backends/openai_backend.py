"""The ``openai`` backend: any OpenAI-compatible chat-completions server over HTTP.

Works with ``vllm serve``, llama.cpp's server and ``orchestra serve``. A batch is sent as
concurrent requests (the server batches them). Token counts of generations come from the
server's ``usage``; counting text (for chunking and budgets) uses, in order of preference, a
local Hugging Face tokenizer directory (``tokenizer=``; ``"embedded"`` is the embedded model's),
or the server's ``/tokenize`` endpoint, and otherwise fails saying how to fix it.

Connection errors, timeouts, 429 and 5xx are retried ``max_retries`` times with exponential
backoff (honouring ``Retry-After``); then a BackendError names the URL, attempts and cause.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence
from urllib.parse import urlsplit

from orchestra.backends.base import (
    BATCHING,
    PREFIX_CACHE,
    Backend,
    GenerationRequest,
    GenerationResult,
    Message,
    Tokenizer,
    check_requests,
)
from orchestra.backends.openai_http import (
    RETRY_STATUS,
    Retryable,
    chat_body,
    error_message,
    retry_after,
    with_retries,
)
from orchestra.errors import BackendError, ConfigError, OptionError


class ServerTokenizer(Tokenizer):
    """Counts and offsets from the server's /tokenize (offsets need ``orchestra serve``)."""

    def __init__(self, backend: "OpenAIBackend"):
        self.backend = backend
        # Strategies count the same chunks again and again; each count is an HTTP call.
        self.count = functools.lru_cache(maxsize=8192)(self._count)  # type: ignore[method-assign]

    def _tokenize(self, text: str, offsets: bool) -> dict:
        body = {"prompt": text, "add_special_tokens": False}
        if self.backend.model:
            body["model"] = self.backend.model
        if offsets:
            body["return_offsets"] = True
        data = self.backend.call_json("POST", self.backend.root_url + "/tokenize", body)
        if not isinstance(data, dict):
            raise BackendError(f"openai backend: {self.backend.root_url}/tokenize replied with "
                               f"a JSON {type(data).__name__}, not an object")
        return data

    def count(self, text: str) -> int:  # replaced per instance by a cached _count
        return self._count(text)

    def _count(self, text: str) -> int:
        data = self._tokenize(text, False)
        return int(data["count"]) if "count" in data else len(data["tokens"])

    def offsets(self, text: str) -> list[tuple[int, int]]:
        data = self._tokenize(text, True)
        if "offsets" not in data:
            raise BackendError(
                f"the server at {self.backend.root_url} counts tokens but gives no character "
                "offsets, which chunking documents needs; give the openai backend "
                "tokenizer=<local Hugging Face tokenizer directory> (or 'embedded')"
            )
        return [(int(a), int(b)) for a, b in data["offsets"]]


class OpenAIBackend(Backend):
    name = "openai"
    spec_hidden = ("api_key",)  # a spec is written to files and reports: never the key

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str | None = None,
        api_key: str | None = None,
        tokenizer: str | None = None,
        context_window: int | None = None,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        concurrency: int = 8,
        prefix_cache: bool = False,
        trust_env: bool = True,
    ):
        import httpx

        parts = urlsplit(base_url)
        base = base_url.rstrip("/")
        if not parts.path.strip("/"):
            base += "/v1"
        self.base_url = base
        # vLLM and llama.cpp serve /tokenize beside /v1, not under it.
        self.root_url = base[: -len("/v1")] if base.endswith("/v1") else base
        if max_retries < 0 or concurrency < 1 or timeout <= 0:
            raise ConfigError("openai backend: max_retries >= 0, concurrency >= 1 and "
                              "timeout > 0 are required")
        self.model = model
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.timeout = float(timeout)
        self.concurrency = int(concurrency)
        self.prefix_cache = bool(prefix_cache)
        self._tokenizer_option = tokenizer
        self._window = context_window
        self._tok: Tokenizer | None = None
        self._hf = None  # a local HF tokenizer, when given
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout, connect=float(connect_timeout)),
            limits=httpx.Limits(max_connections=self.concurrency + 2),
            headers=headers, trust_env=trust_env,
        )
        if tokenizer is not None:
            self._load_local_tokenizer(tokenizer)

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Value checks shared with `orchestra validate` (orchestra.checks)."""
        from orchestra.checks import non_negative_int, positive_int, positive_number

        if "base_url" in options:
            url = options["base_url"]
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
                raise OptionError("base_url", f"openai backend: base_url must be an http(s) URL, "
                                              f"not {url!r}")
        for name in ("timeout", "connect_timeout"):
            positive_number(options, name, "openai backend")
        non_negative_int(options, "max_retries", "openai backend")
        positive_int(options, "concurrency", "openai backend")
        positive_int(options, "context_window", "openai backend")
        tok = options.get("tokenizer")
        if tok not in (None, "embedded"):  # a local tokenizer folder: found, not loaded
            from orchestra.backends.local import model_dir

            try:
                model_dir(str(tok), what="tokenizer", error=ConfigError,
                          needs=("tokenizer.json", "tokenizer_config.json"))
            except ConfigError as e:
                raise OptionError("tokenizer", f"openai backend: {e}") from None

    # -- HTTP -----------------------------------------------------------------------------
    @property
    def http(self):
        """The httpx client requests go through (its timeouts, connection limit, key)."""
        return self._client

    def _send(self, method: str, url: str, body: dict | None):
        """One request whose reply must arrive whole within ``timeout`` seconds.

        httpx's read timeout applies to each read, so a server sending a byte a second would
        hold a request forever; the body is streamed and the deadline checked between reads.
        """
        import httpx

        deadline = time.monotonic() + self.timeout
        with self._client.stream(method, url, json=body) as r:
            parts = []
            for part in r.iter_bytes():
                parts.append(part)
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the whole reply took longer than the timeout")
            return httpx.Response(r.status_code, headers=r.headers, content=b"".join(parts),
                                  request=r.request)

    def call_json(self, method: str, url: str, body: dict | None = None) -> Any:
        """The reply's JSON; a reply that is not JSON (a proxy's HTML page, a cut-short body)
        is a BackendError naming the URL, not a decoder traceback."""
        r = self._call(method, url, body)
        try:
            return r.json()
        except ValueError:
            start = r.content[:80].decode("utf-8", "replace")
            raise BackendError(f"openai backend: the reply to {method} {url} is not JSON "
                               f"(HTTP {r.status_code}, {len(r.content)} bytes, starting "
                               f"{start!r}); is base_url an OpenAI-compatible server?") from None

    def _call(self, method: str, url: str, body: dict | None = None):
        """The reply, retried as orchestra/backends/openai_http.py says; a refusal (4xx other
        than 408/429) at once, the last cause after the last attempt."""
        import httpx

        def attempt():
            try:
                r = self._send(method, url, body)
            except httpx.TimeoutException:
                raise Retryable(f"no reply within the {self.timeout:g} s timeout") from None
            except httpx.TransportError as e:
                raise Retryable(f"could not connect ({e or type(e).__name__}); is the server "
                                "running?") from None
            if r.status_code < 400:
                return r
            message = error_message(r)
            if r.status_code not in RETRY_STATUS:
                raise BackendError(f"openai backend: {method} {url} was refused with HTTP "
                                   f"{r.status_code}: {message}")
            raise Retryable(f"HTTP {r.status_code}: {message}", retry_after(r))

        try:
            return with_retries(attempt, self.max_retries, self.backoff, self.max_backoff)
        except Retryable as e:
            attempts = self.max_retries + 1
            raise BackendError(f"openai backend: {method} {url} failed after {attempts} "
                               f"attempt{'s' if attempts > 1 else ''} ({self.max_retries} "
                               f"retr{'ies' if self.max_retries != 1 else 'y'}): "
                               f"{e.cause}") from None

    def _models(self) -> list[dict]:
        reply = self.call_json("GET", self.base_url + "/models")
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
            raise BackendError(f"openai backend: {self.base_url}/models did not reply with "
                               f"{{\"data\": [model objects]}} (got {str(reply)[:120]})")
        if not data:
            raise BackendError(f"openai backend: the server at {self.base_url} lists no models")
        return data

    def _model_entry(self) -> dict:
        models = self._models()
        if self.model is None:
            return models[0]
        for m in models:
            if m.get("id") == self.model:
                return m
        raise BackendError(f"openai backend: model {self.model!r} is not served at "
                           f"{self.base_url}; it serves {', '.join(str(m.get('id')) for m in models)}")

    def model_name(self) -> str:
        """The served model's id (the first the server lists when none was given)."""
        if self.model is None:
            self.model = str(self._model_entry()["id"])
        return self.model

    # -- protocol -------------------------------------------------------------------------
    @property
    def context_window(self) -> int:
        if self._window is None:
            entry = self._model_entry()
            meta = entry.get("meta") or {}
            window = entry.get("max_model_len") or meta.get("n_ctx") or meta.get("n_ctx_train")
            if not window:
                raise ConfigError(f"openai backend: the server at {self.base_url} does not say "
                                  "its context window; give context_window=")
            try:
                self._window = int(window)
            except (TypeError, ValueError):
                raise BackendError(f"openai backend: the server at {self.base_url} gives a "
                                   f"context window that is not a number ({window!r}); give "
                                   "context_window=") from None
        return self._window

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({BATCHING, PREFIX_CACHE} if self.prefix_cache else {BATCHING})

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tok is None:
            self._tok = self._server_tokenizer()
        return self._tok

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        if self._hf is not None:
            return self._tok.count_chat(messages)
        msgs = [m.model_dump() if isinstance(m, Message) else dict(m) for m in messages]
        self.tokenizer  # fails clearly when the server cannot count
        body = {"model": self.model_name(), "messages": msgs, "add_generation_prompt": True}
        data = self.call_json("POST", self.root_url + "/tokenize", body)
        try:
            return int(data["count"]) if "count" in data else len(data["tokens"])
        except (KeyError, TypeError, ValueError):
            raise BackendError(f"openai backend: {self.root_url}/tokenize gave no token count "
                               f"(got {str(data)[:120]})") from None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        requests = check_requests(requests)
        self.model_name()
        if len(requests) == 1:
            return [self._generate_one(requests[0])]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency,
                                                thread_name_prefix="orchestra-openai")
        return list(self._pool.map(self._generate_one, requests))

    def stream(self, request: GenerationRequest):
        """Tokens as the server sends them (``stream: true``; orchestra/backends/openai_stream.py)."""
        from orchestra.backends.openai_stream import stream_chat

        return stream_chat(self, request)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        self._client.close()

    # -- implementation -------------------------------------------------------------------
    def _generate_one(self, req: GenerationRequest) -> GenerationResult:
        body = chat_body(self.model, req)
        t0 = time.perf_counter()
        data = self.call_json("POST", self.base_url + "/chat/completions", body)
        seconds = time.perf_counter() - t0
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise BackendError(f"openai backend: the server's reply has no choices[0].message: "
                               f"{str(data)[:200]}") from None
        usage = data.get("usage") or {}
        if not isinstance(usage, dict):
            usage = {}
        if "prompt_tokens" in usage and "completion_tokens" in usage:
            try:
                n_prompt, n_gen = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
                if n_prompt < 0 or n_gen < 0:
                    raise ValueError
            except (TypeError, ValueError):
                raise BackendError(f"openai backend: the server's usage counts are not token "
                                   f"counts: {str(usage)[:200]}") from None
        elif self._hf is not None:
            n_prompt = self.count_prompt_tokens(req.messages)
            n_gen = len(self._hf(text, add_special_tokens=False)["input_ids"])
        else:
            raise BackendError("openai backend: the server's reply has no usage token counts "
                               "and no local tokenizer= was given to count them")
        return GenerationResult(
            text=text.strip(), prompt_tokens=n_prompt, generated_tokens=n_gen, seconds=seconds,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        )

    def _load_local_tokenizer(self, option: str) -> None:
        from orchestra.backends.local import model_dir

        path = model_dir(option, what="tokenizer", error=ConfigError,
                         needs=("tokenizer.json", "tokenizer_config.json"))
        from transformers import AutoTokenizer

        from orchestra.backends.local import HFTokenizer

        self._hf = AutoTokenizer.from_pretrained(path, local_files_only=True,
                                                 trust_remote_code=False)
        self._tok = HFTokenizer(self._hf)

    def _server_tokenizer(self) -> Tokenizer:
        import httpx

        url = self.root_url + "/tokenize"
        body = {"prompt": "probe", "add_special_tokens": False}
        if self.model:
            body["model"] = self.model
        try:
            r = self._send("POST", url, body)
        except httpx.HTTPError:
            r = None
        if r is not None and r.status_code in (404, 405, 501):
            raise BackendError(
                f"openai backend: the server at {self.root_url} has no /tokenize endpoint, so "
                "tokens cannot be counted; give tokenizer=<local Hugging Face tokenizer "
                "directory> (or 'embedded' for the embedded model)"
            )
        if r is None or r.status_code >= 400:
            self._call("POST", url, body)  # retries, then raises with the cause
        return ServerTokenizer(self)
