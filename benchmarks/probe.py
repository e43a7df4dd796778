"""Issue 22's re-probe: replay every bad input and convention the issue lists and print a table.

Each probe runs the real thing: CLI rows are ``orchestra`` subprocesses (argv as bytes where
the issue's input is bytes), server rows go to a real uvicorn server this script starts in a
child process (``--serve-child``: orchestra's app over a scripted full_context pipeline, so no
model loads; its log is scanned for tracebacks), adapter rows call the LangChain and
LlamaIndex adapters in this process over the scripted backend, and packaging rows read the
installed distribution. Probes that need the embedded model run only with ``--model``.

A row passes when the outcome is the one the issue asks for (the exit status or HTTP status,
and the words of the one error line), no traceback appeared (output, server log, or an
exception in this process) and it finished within its time limit (else "hung").

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/probe.py [--model] [--only WORD]

Exit status: 0 when every row passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
ORCHESTRA = Path(sys.executable).with_name("orchestra")
SPEECH = REPO / "examples" / "data" / "gettysburg_address.txt"
KEY = "probe-key"
ALLOW = ["--allow-module", "orchestra.backends.scripted"]
SCRIPTED = ('backend: {type: "orchestra.backends.scripted:ScriptedBackend", '
            'replies: ["Alice is 30."], context_window: 512}\n')
FULL = SCRIPTED + "strategies:\n  full: {type: full_context}\n"
DATA_ROW = '{"context": "Alice is 30.", "question": "Age?", "answers": ["30"]}\n'
TUNE_DATA = "".join(json.dumps({"context": f"Alice is {n} years old. Bob likes tea.",
                                "question": "How old is Alice?", "answers": [str(n)]}) + "\n"
                    for n in range(30, 36))
NO_IDEA = ('backend: {type: "orchestra.backends.scripted:ScriptedBackend", context_window: 512, '
           f'replies: {json.dumps(["I do not know."] * 400)}}}\n'
           "strategies:\n  rag: {type: rag, retriever: bm25}\n")
TUNE_PIPE = SCRIPTED.replace('["Alice is 30."]', json.dumps(["Alice is 30."] * 400)) + (
    "strategies:\n  rag: {type: rag, retriever: bm25}\n")
DENSE = (SCRIPTED + "retrievers:\n  d: {type: dense, chunking: tokens, chunk_tokens: 256, "
         "overlap: 32}\nstrategies:\n  rag: {type: rag, retriever: d, top_k_tokens: 300}\n")
EVIL = {  # N-1: a folder whose config asks transformers to import code that leaves a file
    "model/config.json": json.dumps({"model_type": "llama", "auto_map": {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilModel"}}),
    "model/configuration_evil.py": "open('{tmp}/evil-ran', 'w')\n",
    "model/modeling_evil.py": "open('{tmp}/evil-ran', 'w')\n",
    "a.txt": "Alice is 30 years old.",
    "p.yaml": "backend: {type: transformers, model: '{tmp}/model'}\n"
              "strategies:\n  f: {type: full_context}\n",
}
LANGCHAIN = ("retrievers:\n  lc: {type: langchain,\n    factory: 'langchain_community.retrievers:"
             "TFIDFRetriever.from_documents'}\nstrategies:\n  r: {type: rag, retriever: lc}\n")


@dataclass
class Outcome:
    status: str  # exit status, HTTP status(es), or "-" for a check of files
    traceback: bool = False
    hung: bool = False
    ok: bool = False
    note: str = ""  # what did not hold, when something did not
    seconds: float = 0.0


@dataclass
class Probe:
    item: str  # the item
    what: str  # the input, in a few words
    run: Callable[[Path], Outcome]
    model: bool = False  # needs the embedded model (only with --model)


# -- command-line probes --------------------------------------------------------------------
def make(tmp: Path, files: dict) -> None:
    for name, content in files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content.replace("{tmp}", str(tmp)))


def orchestra(tmp: Path, argv: list, env: dict | None = None, stdin: bytes = b"",
              timeout: float = 60) -> tuple[int | None, str, str, float]:
    """(exit status or None when it ran past ``timeout``, stdout, stderr, seconds)."""
    t0 = time.monotonic()
    argv = [a if isinstance(a, bytes) else str(a).replace("{tmp}", str(tmp)) for a in argv]
    env = {**os.environ, "ORCHESTRA_QUIET": "1", "ORCHESTRA_CACHE": str(tmp / "cache"),
           **{k: v.replace("{tmp}", str(tmp)) for k, v in (env or {}).items()}}
    try:
        p = subprocess.run([str(ORCHESTRA), *argv], cwd=tmp, input=stdin, capture_output=True,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        return None, (e.stdout or b"").decode(errors="replace"), (
            e.stderr or b"").decode(errors="replace"), time.monotonic() - t0
    return (p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"),
            time.monotonic() - t0)


def judge(code, out: str, err: str, seconds: float, want_code: int, words: list[str],
          limit: float) -> Outcome:
    """A refusal (want_code != 0): one error line holding ``words``, nothing on stdout. A run
    (want_code 0): ``words`` somewhere in its output."""
    o = Outcome(str(code) if code is not None else "timeout", seconds=seconds)
    o.traceback = "Traceback" in out + err
    o.hung = code is None or seconds > limit
    problems = []
    if code != want_code:
        problems.append(f"exit {code}, wanted {want_code}")
    if want_code:
        lines = [ln for ln in err.splitlines() if "error:" in ln]
        if len(lines) != 1:
            problems.append(f"{len(lines)} error lines")
        problems += [f"no {w!r}" for w in words if not any(w in ln for ln in lines)]
        if out.strip():
            problems.append("stdout not empty")
    else:
        problems += [f"no {w!r}" for w in words if w not in out + err]
    if o.hung:
        problems.append(f"took {seconds:.0f} s (limit {limit:.0f})")
    o.note = "; ".join(problems + (["traceback"] if o.traceback else []))
    o.ok = not o.note
    return o


def cli(argv: list, files: dict | None = None, code: int = 2, words: list[str] = (),
        env: dict | None = None, stdin: bytes = b"", limit: float = 30,
        after: Callable[[Path, Outcome], None] | None = None) -> Callable[[Path], Outcome]:
    """A probe that runs ``orchestra argv`` in a fresh folder holding ``files``; ``limit``:
    seconds it may take (a refusal must come before any model loads)."""
    def run(tmp: Path) -> Outcome:
        make(tmp, files or {})
        rc, out, err, s = orchestra(tmp, argv, env, stdin, timeout=max(limit * 2, 60))
        o = judge(rc, out, err, s, code, list(words), limit)
        if after is not None:
            after(tmp, o)
        return o
    return run


def fail_if(cond: Callable[[Path], bool], why: str) -> Callable[[Path, Outcome], None]:
    def check(tmp: Path, o: Outcome) -> None:
        if cond(tmp):
            o.ok, o.note = False, "; ".join(filter(None, [o.note, why]))
    return check


def two_tunes(tmp: Path) -> Outcome:
    """N-10: a second tune on the same --out while the first runs: one line and exit 2 for
    the second, the first finishes cleanly."""
    make(tmp, {"p.yaml": TUNE_PIPE, "d.jsonl": TUNE_DATA})
    argv = [str(ORCHESTRA), "tune", "p.yaml", "--dataset", "d.jsonl", "--trials", "40",
            "--out", "out", "--no-progress", *ALLOW]
    env = {**os.environ, "ORCHESTRA_QUIET": "1", "ORCHESTRA_CACHE": str(tmp / "cache")}
    t0 = time.monotonic()
    first = subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lock = tmp / "out" / ".lock"
    while first.poll() is None and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.1)
    rc, out, err, s = orchestra(tmp, argv[1:], timeout=120)
    second = judge(rc, out, err, s, 2, ["is in use by another orchestra tune"], 30)
    try:
        out1, err1 = first.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        first.kill()
        out1, err1 = first.communicate()
    o = Outcome(f"{first.returncode}, {rc}", seconds=time.monotonic() - t0)
    o.traceback = second.traceback or "Traceback" in out1 + err1
    o.hung = second.hung or first.returncode is None
    notes = [f"second: {second.note}"] if second.note else []
    if first.returncode != 0:
        notes.append(f"first exit {first.returncode}")
    if "FAIL" in out1 + err1 or "UpdateFinishedTrialError" in err1:
        notes.append("first run's trial failed")
    o.note = "; ".join(notes + (["traceback"] if o.traceback else []))
    o.ok = not o.note
    return o


def full_disk(tmp: Path) -> Outcome:
    """N-2: ORCHESTRA_CACHE on a 2 MB tmpfs (needs root to mount; skipped otherwise)."""
    mount = tmp / "tmpfs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        return Outcome("-", ok=True, note="skipped: cannot mount a tmpfs here (needs root)")
    try:
        make(tmp, {"a.txt": "Alice is 30 years old."})
        rc, out, err, s = orchestra(tmp, ["ask", "--docs", "a.txt", "-q", "How old is Alice?"],
                                    {"ORCHESTRA_CACHE": str(mount)}, timeout=120)
        return judge(rc, out, err, s, 2, [f"{mount}/models: no room to convert the embedded "
                                          "model", "MB needed", "ORCHESTRA_CACHE"], 60)
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def null_seconds(tmp: Path) -> Outcome:
    """prefill_seconds/decode_seconds are null where they are not measured."""
    make(tmp, {"p.yaml": FULL})
    rc, out, err, s = orchestra(tmp, ["run", "p.yaml", "--text", "Alice is 30.", "-q", "Age?",
                                      "--json", *ALLOW])
    o = judge(rc, out, err, s, 0, [], 30)
    if rc == 0:
        cost = json.loads(out)["cost"]
        if cost["prefill_seconds"] is not None or cost["decode_seconds"] is not None:
            o.ok, o.note = False, f"prefill {cost['prefill_seconds']!r}, decode " \
                                  f"{cost['decode_seconds']!r}"
    return o


def quiet_faiss(tmp: Path) -> Outcome:
    """-v after the subcommand works; faiss's loader lines stay out of -v's output."""
    make(tmp, {"p.yaml": DENSE})
    rc, out, err, s = orchestra(tmp, ["run", "p.yaml", "--text", "Alice is 30 years old.",
                                      "-q", "How old is Alice?", *ALLOW, "-v"], timeout=180)
    o = judge(rc, out, err, s, 0, ["INFO "], 120)
    noise = [ln for ln in err.splitlines() if "faiss" in ln.lower()]
    if noise:
        o.ok, o.note = False, "; ".join(filter(None, [o.note, f"{len(noise)} faiss lines"]))
    return o


# -- the server: a real uvicorn in a child process ------------------------------------------
def serve_child() -> None:
    """The child: orchestra's app over a scripted full_context pipeline, logging to stderr
    (so a traceback anywhere in the server shows in its output), until stdin closes."""
    import logging

    from orchestra.backends.scripted import ScriptedBackend
    from orchestra.pipeline import Pipeline
    from orchestra.server import ServeSettings, serve_in_thread
    from orchestra.strategies.full_context import FullContext

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    b = ScriptedBackend(lambda r: "Four score and seven years ago", context_window=4096)
    server = serve_in_thread(pipeline=Pipeline(b, {"full_context": FullContext(b)}),
                             settings=ServeSettings(api_key=KEY))
    print(f"listening on {server.url}", file=sys.stderr, flush=True)
    sys.stdin.read()
    server.shutdown()


class Server:
    """The child server, its URL and every line it wrote."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-child"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.url = None
        started = threading.Event()

        def pump() -> None:
            for ln in self.proc.stdout:
                self.lines.append(ln)
                if "listening on " in ln and self.url is None:
                    self.url = ln.split("listening on ", 1)[1].strip()
                    started.set()
            started.set()

        threading.Thread(target=pump, daemon=True).start()
        if not started.wait(120) or self.url is None:
            raise RuntimeError("the probe server did not start:\n" + "".join(self.lines[-20:]))

    def tracebacks(self) -> int:
        return sum("Traceback" in ln for ln in self.lines)

    def stop(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


SERVER: list[Server] = []
AUTH = {"Authorization": f"Bearer {KEY}"}


def server() -> Server:
    if not SERVER:
        SERVER.append(Server())
    return SERVER[0]


def http(check: Callable[[Server], tuple[str, list[str]]]) -> Callable[[Path], Outcome]:
    """A server probe: ``check`` returns (the statuses seen, what did not hold); a traceback
    in the server's log during it, or in this process, fails it; a timeout is a hang."""
    import httpx

    def run(tmp: Path) -> Outcome:
        s = server()
        before, t0 = s.tracebacks(), time.monotonic()
        try:
            status, problems = check(s)
            o = Outcome(status)
        except (httpx.TimeoutException, socket.timeout) as e:
            o = Outcome("timeout", hung=True, note=f"timed out: {e}")
            problems = []
        time.sleep(0.2)  # let the log's last lines arrive
        o.seconds = time.monotonic() - t0
        o.traceback = s.tracebacks() > before
        o.note = "; ".join(filter(None, [o.note, *problems,
                                         "traceback in the server log" if o.traceback else ""]))
        o.ok = not o.note
        return o
    return run


def raw_pair(url: str, first: bytes) -> tuple[str, str]:
    """``first`` (a whole request), then GET /health on the same keep-alive connection."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    replies = []
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        for req in (first, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"):
            data = b""
            try:
                sock.sendall(req)
                while True:
                    head, _, body = data.partition(b"\r\n\r\n")
                    size = head.lower().split(b"content-length: ", 1)[-1].split(b"\r\n")[0]
                    if _ and size.isdigit() and len(body) >= int(size):
                        break
                    more = sock.recv(65536)
                    if not more:
                        break
                    data += more
            except OSError:
                pass
            replies.append(data.decode(errors="replace"))
    return replies[0], replies[1]


def body_400(body: bytes, word: str) -> Callable[[Server], tuple[str, list[str]]]:
    """N-4: 400 naming ``word``, and the same connection still answers."""
    def check(s: Server):
        req = (f"POST /v1/answer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
        first, second = raw_pair(s.url, req)
        status = f"{first[9:12] or '-'}, then {second[9:12] or 'dropped'}"
        problems = []
        if not first.startswith("HTTP/1.1 400"):
            problems.append("not 400")
        elif word not in first.split("\r\n\r\n", 1)[1]:
            problems.append(f"message lacks {word!r}")
        if not second.startswith("HTTP/1.1 200"):
            problems.append("keep-alive connection dropped")
        return status, problems
    return check


def stream_flags(s: Server):
    """N-5: "yes" and 1 are not booleans, on both endpoints."""
    import httpx

    seen, problems = [], []
    for value in ("yes", 1):
        for path, body in (("/v1/answer", {"question": "When?", "documents": ["A text."]}),
                           ("/v1/chat/completions", {"documents": ["A text."], "messages": [
                               {"role": "user", "content": "When?"}]})):
            r = httpx.post(s.url + path, headers=AUTH, json={**body, "stream": value},
                           timeout=60)
            seen.append(str(r.status_code))
            if r.status_code != 400 or "'stream'" not in r.text:
                problems.append(f"{path} stream={value!r}: {r.status_code}")
    return ",".join(seen), problems


def docs_behind_key(s: Server):
    import httpx

    seen, problems = [], []
    for path in ("/docs", "/openapi.json"):
        without = httpx.get(s.url + path, timeout=60).status_code
        with_key = httpx.get(s.url + path, headers=AUTH, timeout=60).status_code
        seen.append(f"{without}/{with_key}")
        if (without, with_key) != (401, 200):
            problems.append(f"{path}: {without} without the key, {with_key} with it")
    return ",".join(seen), problems


def metrics_open(s: Server):
    import httpx

    r = httpx.get(s.url + "/metrics", timeout=60)
    ok = r.status_code == 200 and "orchestra_requests_total" in r.text
    return str(r.status_code), [] if ok else ["/metrics not scrapable without the key"]


def error_codes(s: Server):
    import httpx

    replies = [httpx.post(s.url + "/v1/answer", headers=AUTH, json={"question": ""}, timeout=60),
               httpx.post(s.url + "/v1/chat/completions", headers=AUTH, timeout=60, json={
                   "model": "other", "messages": [{"role": "user", "content": "x"}]}),
               httpx.get(s.url + "/v1/models", timeout=60),
               httpx.get(s.url + "/v1/nothing", headers=AUTH, timeout=60)]
    problems = []
    for r in replies:
        code = r.json()["error"]["code"]
        if not (code is None or isinstance(code, str)):
            problems.append(f"{r.status_code}: code {code!r}")
    return ",".join(str(r.status_code) for r in replies), problems


def extra_body(s: Server):
    import httpx
    import openai

    client = openai.OpenAI(base_url=s.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    q = [{"role": "user", "content": "When?"}]
    inline = client.chat.completions.create(model="default", messages=q,
                                            extra_body={"documents": ["One short text."]})
    cid = httpx.post(s.url + "/v1/corpora", headers=AUTH, timeout=60,
                     json={"documents": ["A registered text."]}).json()["id"]
    by_id = client.chat.completions.create(model="default", messages=q,
                                           extra_body={"corpus_id": cid})
    problems = []
    if inline.choices[0].message.content != "Four score and seven years ago":
        problems.append("documents in extra_body not read")
    if by_id.model_extra["orchestra"]["corpus_id"] != cid:
        problems.append("corpus_id in extra_body not used")
    return "200,200", problems


# -- the adapters, in this process over the scripted backend --------------------------------
def inproc(check: Callable[[], list[str]]) -> Callable[[Path], Outcome]:
    """``check`` returns what did not hold; an exception it raises is a traceback."""
    def run(tmp: Path) -> Outcome:
        t0 = time.monotonic()
        try:
            problems = check()
            o = Outcome("ok" if not problems else "wrong")
        except Exception as e:  # noqa: BLE001  (any exception is what the probe reports)
            problems, o = [f"{type(e).__name__}: {e}"], Outcome("raised", traceback=True)
        o.seconds = time.monotonic() - t0
        o.note, o.ok = "; ".join(problems), not problems
        return o
    return run


def scripted_pipeline(kind: str = "full"):
    from orchestra.backends.scripted import ScriptedBackend
    from orchestra.pipeline import Pipeline
    from orchestra.retrievers.bm25 import BM25Retriever
    from orchestra.strategies.full_context import FullContext
    from orchestra.strategies.rag import RAG

    if kind == "full":
        b = ScriptedBackend(lambda r: "seen: " + r.messages[-1].content.split("Question: ")[-1])
        return Pipeline(b, {"full": FullContext(b)})
    b = ScriptedBackend(lambda r: "a portion of that field")
    return Pipeline(b, {"rag": RAG(b, retriever=BM25Retriever(), top_k_tokens=300)})


def lc_batch() -> list[str]:
    from orchestra.corpus import Document
    from orchestra.errors import InputError
    from orchestra.integrations.langchain import PipelineRunnable

    runnable = PipelineRunnable(scripted_pipeline(), documents=[Document(id="a", text="x y z")])
    out = runnable.batch(["a?", "   ", "c?"], return_exceptions=True)
    problems = [] if len(out) == 3 else [f"{len(out)} results for 3 inputs"]
    if out[0] != "seen: a?" or out[2] != "seen: c?":
        problems.append(f"good inputs failed: {out[0]!r}, {out[2]!r}")
    if not isinstance(out[1], InputError):
        problems.append(f"the empty question gave {out[1]!r}")
    return problems


def lc_schema() -> list[str]:
    from orchestra.integrations.langchain import PipelineRunnable

    props = PipelineRunnable(scripted_pipeline(), output="answer").get_output_jsonschema().get(
        "properties", {})
    missing = {"text", "route", "evidence", "cost"} - set(props)
    return [f"schema lacks {sorted(missing)}"] if missing else []


def lc_tokens() -> list[str]:
    from langchain_core.callbacks import BaseCallbackHandler

    from orchestra.integrations.langchain import PipelineRunnable

    class Tokens(BaseCallbackHandler):
        tokens: list = []

        def on_llm_new_token(self, token, **kw):
            self.tokens.append(token)

    handler = Tokens()
    runnable = PipelineRunnable(scripted_pipeline("rag"), documents=[SPEECH])
    text = runnable.invoke("What did they come to dedicate?", {"callbacks": [handler]})
    return [] if "".join(handler.tokens) == text else [f"tokens {handler.tokens!r}"]


def adapters_lines() -> list[str]:
    from orchestra.integrations.langchain import OrchestraRetriever
    from orchestra.integrations.llama_index import OrchestraLIRetriever, PipelineQueryEngine
    from orchestra.retrievers.bm25 import BM25Retriever

    q = "What did they come to dedicate?"
    pipe = scripted_pipeline("rag")
    corpus = pipe.corpus([SPEECH])
    lc = OrchestraRetriever(retriever=BM25Retriever(), corpus=corpus, k=2).invoke(q)
    li = OrchestraLIRetriever(BM25Retriever(), corpus, k=2).retrieve(q)
    problems = []
    for meta in [d.metadata for d in lc] + [n.node.metadata for n in li]:
        if meta.get("file_name") != SPEECH.name or "line_start" not in meta:
            problems.append(f"metadata {sorted(meta)}")
    response = PipelineQueryEngine(scripted_pipeline("rag"), [SPEECH]).query(q)
    ev = response.metadata["answer"].evidence[0]
    if f"{SPEECH.name}:{ev.line_start}-{ev.line_end}" not in response.get_formatted_sources():
        problems.append("formatted sources lack file:lines")
    return problems


# -- what the repository and the installed distribution say ---------------------------------
def packaging() -> list[str]:
    from importlib.metadata import requires

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    core = " ".join(meta["dependencies"]).lower()
    problems = ["a [llamacpp] extra"] if "llamacpp" in extras else []
    for lib in ("fastapi", "uvicorn", "prometheus", "optuna", "sqlalchemy", "alembic",
                "matplotlib", "networkx"):
        if lib in core:
            problems.append(f"{lib} is a core dependency")
    dev = " ".join(extras.get("dev", []))
    problems += [f"no [{x}] extra in [dev]" for x in ("server", "tune", "plot", "graph")
                 if x not in extras or x not in dev]
    installed = " ".join(requires("orchestra-longdoc") or [])
    if "fastapi" in installed and 'extra == "server"' not in installed:
        problems.append("the installed distribution requires fastapi unconditionally")
    return problems


def notebooks() -> list[str]:
    found = []
    for path in sorted((REPO / "examples").glob("*.ipynb")):
        text = path.read_text()
        if "TqdmWarning" in text or "IProgress not found" in text:
            found.append(path.name)
    return [f"TqdmWarning stored in {', '.join(found)}"] if found else []


def readme_torch() -> list[str]:
    text = (REPO / "README.md").read_text()
    problems = [] if "download.pytorch.org/whl/cpu" in text else ["no PyTorch CPU index"]
    return problems + ([] if "+cpu" in text else ["no note on which build the pin takes"])


def block(module: str) -> dict:
    """A PYTHONPATH folder whose sitecustomize makes ``module`` unimportable."""
    return {"block/sitecustomize.py": f"import sys\nsys.modules[{module!r}] = None\n"}


BLOCKED = {"PYTHONPATH": "{tmp}/block"}


def evil_ran(tmp: Path) -> bool:
    return (tmp / "evil-ran").exists()


def no_best(tmp: Path) -> bool:
    return not (tmp / "out" / "best.yaml").exists()


def input_probes() -> list[Probe]:
    """N-1 to N-8: a model folder with code, the locks, the disk, the bytes, the server's
    bodies, the YAML tags, ${VAR} values and empty questions."""
    q_bytes = b"How old is \xff\xfe Alice?"
    tag_map = "strategies:\n  full: !!python/name:os.system {type: full_context}\n"
    tag_seq = ("strategies:\n  full: {type: full_context}\n  rag: {type: rag}\n"
               "router: {type: self_route, first: rag,\n  fallback: !!python/tuple [full]}\n")
    env_mt = "strategies:\n  full:\n    type: full_context\n    max_tokens: ${ORCH_MT}\n"
    return [
        Probe("N-1", "echo y | orchestra run p.yaml (auto_map folder)", cli(
            ["run", "p.yaml", "--docs", "a.txt", "-q", "x"], EVIL, 2,
            ["asks to run its own code", "configuration_evil.py"], stdin=b"y\n",
            after=fail_if(evil_ran, "the folder's code ran"))),
        Probe("N-1", "orchestra validate p.yaml (auto_map folder)", cli(
            ["validate", "p.yaml"], EVIL, 2, ["asks to run its own code"],
            after=fail_if(evil_ran, "the folder's code ran"))),
        Probe("N-10", "two orchestra tune runs on one --out", two_tunes),
        Probe("N-2", "ORCHESTRA_CACHE on a 2 MB tmpfs", full_disk),
        Probe("N-3", "run -q $'How old is \\xff\\xfe Alice?'", cli(
            ["run", "p.yaml", "--text", "Alice is 30.", "-q", q_bytes, *ALLOW],
            {"p.yaml": FULL}, 2, ["not valid UTF-8"])),
        Probe("N-3", "ask -q $'How old is \\xff\\xfe Alice?'", cli(
            ["ask", "--text", "Alice is 30.", "-q", q_bytes], {}, 2, ["not valid UTF-8"])),
        Probe("N-4", "POST '['*100000 + ']'*100000", http(body_400(
            b"[" * 100000 + b"]" * 100000, "nested"))),
        Probe("N-4", "POST max_tokens of 5,000 digits", http(body_400(
            b'{"question": "When?", "documents": ["A text."], "max_tokens": ' + b"9" * 5000
            + b"}", "digits"))),
        Probe("N-5", '"stream": "yes" / 1 (answer, chat)', http(stream_flags)),
        Probe("N-6", "validate: !!python/name on a mapping", cli(
            ["validate", "p.yaml"], {"p.yaml": tag_map}, 2,
            ["p.yaml:2: the YAML tag !!python/name:os.system is not allowed"])),
        Probe("N-6", "validate: !!python/tuple on a sequence", cli(
            ["validate", "p.yaml"], {"p.yaml": tag_seq}, 2,
            ["p.yaml:5: the YAML tag !!python/tuple is not allowed"])),
        Probe("N-7", "validate: max_tokens ${ORCH_MT}, ORCH_MT=32", cli(
            ["validate", "p.yaml"], {"p.yaml": env_mt}, 0, ["ok"], env={"ORCH_MT": "32"})),
        Probe("N-7", "run: max_tokens ${ORCH_MT}, ORCH_MT=32", cli(
            ["run", "p.yaml", "--text", "Alice is 30.", "-q", "Age?", *ALLOW],
            {"p.yaml": SCRIPTED + env_mt}, 0, ["Alice is 30."], env={"ORCH_MT": "32"})),
        Probe("N-7", "validate: ORCH_MT=many", cli(
            ["validate", "p.yaml"], {"p.yaml": env_mt}, 2,
            ["the environment gave 'many'"], env={"ORCH_MT": "many"})),
        Probe("N-8", "run -q '\\u200b\\u2060\\ufeff'", cli(
            ["run", "p.yaml", "--text", "Alice is 30.", "-q", "\u200b\u2060\ufeff", *ALLOW],
            {"p.yaml": FULL}, 2, ["the question is empty"])),
    ]


def check_probes() -> list[Probe]:
    """N-9, validate = run and tune's all-zero trials: refused before any model loads."""
    data = {"d.jsonl": DATA_ROW}
    return [
        Probe("N-9", "eval --dataset jsonl:missing.jsonl", cli(
            ["eval", "--dataset", "jsonl:missing.jsonl", "--out", "out"], {}, 2,
            ["missing.jsonl: no such dataset file"])),
        Probe("N-9", "eval --strategies rag,nope", cli(
            ["eval", "--dataset", "jsonl:d.jsonl", "--strategies", "rag,nope", "--out", "out"],
            data, 2, ["unknown strategy 'nope' in --strategies"])),
        Probe("N-9", "eval --report-only on an empty folder", cli(
            ["eval", "--dataset", "jsonl:d.jsonl", "--report-only", "--out", "out"],
            {**data, "out/.keep": ""}, 2, ["no results to report yet"])),
        Probe("validate=run", "validate: langchain factory not allowed", cli(
            ["validate", "p.yaml"], {"p.yaml": LANGCHAIN}, 2,
            ["which the caller has not allowed"])),
        Probe("validate=run", "validate: vllm backend + kv_pages", cli(
            ["validate", "p.yaml"], {"p.yaml": "backend: {type: vllm}\nstrategies:\n"
                                               "  pages: {type: kv_pages}\n"}, 2,
            ["capability 'kv_pages'"])),
        Probe("tune", "every trial scores 0", cli(
            ["tune", "p.yaml", "--dataset", "d.jsonl", "--trials", "1", "--out", "out",
             "--no-progress", *ALLOW], {"p.yaml": NO_IDEA, "d.jsonl": TUNE_DATA}, 2,
            ["scored 0", "--allow-zero"], limit=60,
            after=fail_if(lambda t: not no_best(t), "best.yaml written"))),
        Probe("tune", "every trial scores 0, --allow-zero", cli(
            ["tune", "p.yaml", "--dataset", "d.jsonl", "--trials", "1", "--out", "out",
             "--no-progress", "--allow-zero", *ALLOW],
            {"p.yaml": NO_IDEA, "d.jsonl": TUNE_DATA}, 0, [], limit=60,
            after=fail_if(no_best, "no best.yaml"))),
    ]


def convention_probes() -> list[Probe]:
    """What LangChain, LlamaIndex, OpenAI-client and CLI users expect, packaging, and the
    map_reduce read (the one probe that loads the model)."""
    from orchestra.cache import cache_root  # the model probe reads the user's converted model

    return [
        Probe("LangChain", "batch(['a?', '   ', 'c?'], return_exceptions=True)",
              inproc(lc_batch)),
        Probe("LangChain", "output schema", inproc(lc_schema)),
        Probe("LangChain", "on_llm_new_token callbacks", inproc(lc_tokens)),
        Probe("adapters", "retriever metadata, get_formatted_sources()", inproc(adapters_lines)),
        Probe("server", "/docs, /openapi.json without/with the key", http(docs_behind_key)),
        Probe("server", "/metrics without the key", http(metrics_open)),
        Probe("server", "error code is a string or null", http(error_codes)),
        Probe("server", "documents / corpus_id in extra_body (openai)", http(extra_body)),
        Probe("CLI", "run ... -v (after the subcommand), faiss quiet", quiet_faiss),
        Probe("CLI", "run --json: prefill/decode seconds", null_seconds),
        Probe("CLI", "notebooks store no TqdmWarning", inproc(notebooks)),
        Probe("packaging", "extras, no [llamacpp]", inproc(packaging)),
        Probe("packaging", "serve without fastapi", cli(
            ["serve"], block("fastapi"), 2, ['pip install "orchestra-longdoc[server]"'],
            env=BLOCKED)),
        Probe("packaging", "tune without optuna", cli(
            ["tune", "p.yaml", "--dataset", "d.jsonl", "--trials", "1", "--out", "out", *ALLOW],
            {**block("optuna"), "p.yaml": TUNE_PIPE, "d.jsonl": TUNE_DATA}, 2,
            ['pip install "orchestra-longdoc[tune]"'], env=BLOCKED)),
        Probe("packaging", "graph retriever without networkx", cli(
            ["validate", "p.yaml"], {**block("networkx"), "p.yaml": "retrievers:\n  g: {type: "
             "graph}\nstrategies:\n  r: {type: rag, retriever: g}\n"}, 2,
            ['pip install "orchestra-longdoc[graph]"'], env=BLOCKED)),
        Probe("README", "torch line: CPU index and which build", inproc(readme_torch)),
        Probe("map_reduce", "ask --strategy map_reduce: who delivered it?", cli(
            ["ask", "--docs", str(SPEECH), "-q", "Who delivered the Gettysburg Address?",
             "--strategy", "map_reduce"], {}, 0, ["Lincoln"], limit=300,
            env={"ORCHESTRA_CACHE": str(cache_root())}), model=True),
    ]


def probes() -> list[Probe]:
    return input_probes() + check_probes() + convention_probes()


def table(rows: list[tuple[Probe, Outcome]]) -> str:
    out = ["| item | input | status | traceback | hung | seconds | result |",
           "|---|---|---|---|---|---|---|"]
    for p, o in rows:
        result = ("pass" if o.ok else "FAIL") + (f": {o.note}" if o.note else "")
        cells = [p.item, p.what, o.status, "yes" if o.traceback else "no",
                 "yes" if o.hung else "no", f"{o.seconds:.1f}", result]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="store_true",
                    help="also run the probes that load the embedded model")
    ap.add_argument("--only", help="run only the probes whose item or input holds this word")
    ap.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_child:
        serve_child()
        return 0
    chosen = [p for p in probes() if (args.model or not p.model) and (
        not args.only or args.only.lower() in (p.item + " " + p.what).lower())]
    rows = []
    try:
        for p in chosen:
            tmp = Path(tempfile.mkdtemp(prefix="orchestra-probe-"))
            try:
                rows.append((p, p.run(tmp)))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            print(f"{'pass' if rows[-1][1].ok else 'FAIL'}  {p.item}: {p.what}",
                  file=sys.stderr, flush=True)
    finally:
        for s in SERVER:
            s.stop()
    print(table(rows))
    failed = sum(not o.ok for _, o in rows)
    print(f"\n{len(rows) - failed} of {len(rows)} probes pass.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
