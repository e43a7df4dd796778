"""Bad input, one row per probe (issue 14): a clear refusal, never a traceback, a hang or an
invented answer.

``CLI_ROWS`` run the real ``orchestra`` command in a subprocess and check the exit status, that
exactly one line says what is wrong (naming the file, field or sizes) and that no traceback is
printed. Rows fail before any model loads: the ones that need a backend use the scripted one
through a pipeline file (``--allow-module orchestra.backends.scripted``). The next probe adds a
row. Defects that need a Python object are tests named after the defect: below the table (the
Python API, eval resume, environment values, tune), in tests/test_bad_servers.py (a stub HTTP
server) and tests/test_damaged_files.py (damaged caches and model folders, a full disk); the
subprocess runner and scripted pipeline they share are tests/cli_probe.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from cli_probe import ALLOW, SCRIPTED, pipeline, run_cli

from orchestra.backends.scripted import ScriptedBackend
from orchestra.corpus import Document
from orchestra.errors import InputError

LONG_QUESTION = "Why " + "really " * 700 + "?"
FIFO = object()  # a file entry: make a named pipe there

# Ten levels of nine aliases: a 618-byte file that expands to a billion values.
LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefghi", "bcdefghij"))


@dataclass
class Row:
    id: str  # the defect it guards, then what it tries
    argv: list[str]  # "{tmp}" is the row's folder (also the working directory)
    expect: list[str]  # all in the one error (or warning) line; "{tmp}" and "{pid}" expand
    files: dict = field(default_factory=dict)  # name -> str | bytes | FIFO
    env: dict = field(default_factory=dict)
    code: int = 2  # 0: it runs, with exactly one warning line holding `expect`
    hold: Callable | None = None  # (tmp) -> a context manager held while the command runs


# N-1: a folder whose config asks transformers to import its code; that code would leave a file.
EVIL_MODEL = {
    "model/config.json": json.dumps({"model_type": "llama", "auto_map": {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilModel"}}),
    "model/configuration_evil.py": "open('/tmp/orchestra-evil-ran', 'w')\n",
    "model/modeling_evil.py": "open('/tmp/orchestra-evil-ran', 'w')\n",
}
# A reader that never knows (enough replies for a few tune trials).
NO_IDEA = ('backend: {type: "orchestra.backends.scripted:ScriptedBackend", context_window: 512, '
           f'replies: {json.dumps(["I do not know."] * 60)}}}\n')
TUNE_DATA = "".join(json.dumps({"context": f"Alice is {n} years old. Bob likes tea.",
                                "question": "How old is Alice?", "answers": [str(n)]}) + "\n"
                    for n in range(30, 36))


def BLOCK(module: str) -> dict:  # noqa: N802  (reads as a constant in the table)
    """A PYTHONPATH folder whose sitecustomize makes ``module`` unimportable, as when its
    extra is not installed."""
    return {"block/sitecustomize.py": f"import sys\nsys.modules[{module!r}] = None\n"}


CLI_ROWS = [
    # D-1: a path that does not exist is an error, never the document's text.
    Row("D-1 ask: a file name with a space",
        ["ask", "--docs", "my report.txt", "-q", "What does the report conclude?",
         "--strategy", "full_context", "--json"], ["my report.txt: no such file or directory"]),
    Row("D-1 ask: a bare word", ["ask", "--docs", "notes", "-q", "What?"],
        ["notes: no such file or directory"]),
    Row("D-1 ask: another suffix", ["ask", "--docs", "report.pdf", "-q", "What?"],
        ["report.pdf: no such file or directory"]),
    Row("D-1 ask: a missing folder", ["ask", "--docs", "my notes/missing file.txt", "-q", "What?"],
        ["my notes/missing file.txt: no such file or directory"]),
    Row("D-1 run: a missing path", ["run", "p.yaml", "--docs", "my report.txt", "-q", "What?",
                                    *ALLOW],
        ["my report.txt: no such file or directory"],
        files={"p.yaml": pipeline("full: {type: full_context}")}),
    Row("D-1 ask: no documents at all", ["ask", "-q", "What?"], ["no documents", "--text"]),
    # H-1, P-8: only regular text files.
    Row("H-1 ask: a FIFO named x.txt", ["ask", "--docs", "x.txt", "-q", "What?"],
        ["x.txt: not a regular file"], files={"x.txt": FIFO}),
    Row("H-1 ask: a FIFO inside a folder", ["ask", "--docs", "notes", "-q", "What?"],
        ["notes/b.txt: not a regular file"], files={"notes/a.txt": "Alice is 30.",
                                                    "notes/b.txt": FIFO}),
    Row("H-1 validate: a FIFO pipeline file", ["validate", "p.yaml"],
        ["p.yaml: not a regular file"], files={"p.yaml": FIFO}),
    Row("H-1 eval: a FIFO dataset", ["eval", "--dataset", "d.jsonl", "--out", "out"],
        ["d.jsonl: not a regular file"], files={"d.jsonl": FIFO}),
    Row("H-1 train-router: a FIFO results file", ["train-router", "r.jsonl", "-o", "x.json"],
        ["r.jsonl: not a regular file"], files={"r.jsonl": FIFO}),
    Row("P-8 ask: a file of NUL bytes", ["ask", "--docs", "nul.txt", "-q", "What?"],
        ["nul.txt: a binary file", "NUL byte"], files={"nul.txt": b"\x00" * 64}),
    # C-1: max_tokens below 1 on the command line and in a file.
    Row("C-1 ask: --max-tokens 0", ["ask", "--text", "t", "-q", "q?", "--max-tokens", "0"],
        ["--max-tokens", "must be at least 1, got 0"]),
    Row("C-1 ask: --max-tokens -5", ["ask", "--text", "t", "-q", "q?", "--max-tokens", "-5"],
        ["--max-tokens", "must be at least 1, got -5"]),
    Row("C-1 validate: max_tokens 0", ["validate", "p.yaml", *ALLOW],
        ["p.yaml:4: field strategies.full.max_tokens", "positive integer, not 0"],
        files={"p.yaml": pipeline("full: {type: full_context,\n         max_tokens: 0}")}),
    Row("C-1 run: max_tokens 0", ["run", "p.yaml", "--text", "t", "-q", "q?", *ALLOW],
        ["p.yaml:4: field strategies.full.max_tokens", "positive integer, not 0"],
        files={"p.yaml": pipeline("full: {type: full_context,\n         max_tokens: 0}")}),
    # The reading options added for issue 12: an unknown choice, and a prompt never used.
    Row("decline: an unknown mode", ["validate", "p.yaml", *ALLOW],
        ["p.yaml:4: field strategies.rag.decline", "one of explicit, implicit, not 'maybe'"],
        files={"p.yaml": pipeline("rag: {type: rag, retriever: bm25,\n        decline: maybe}")}),
    Row("decline: implicit with a reader_may_decline prompt", ["run", "p.yaml", "--text", "t",
                                                               "-q", "q?", *ALLOW],
        ["field strategies.rag.prompts", "'reader_may_decline' prompt given would never be used"],
        files={"p.yaml": pipeline("rag: {type: rag, retriever: bm25, decline: implicit,\n"
                                  "        prompts: {reader_may_decline: '{context} {question}'}}")}),
    Row("align_notes: not a boolean", ["validate", "p.yaml", *ALLOW],
        ["field strategies.coa.align_notes", "must be true or false, not 'yes'"],
        files={"p.yaml": pipeline("coa: {type: chain_of_agents, align_notes: 'yes'}")}),
    # C-2, P-1: a question longer than the window is named as the problem, with both sizes.
    Row("C-2 run: a long question, full_context with truncation head",
        ["run", "p.yaml", "--text", "Alice is 30.", "-q", LONG_QUESTION, *ALLOW],
        ["the question is too long", "702 tokens", "window is 512 tokens"],
        files={"p.yaml": pipeline("full: {type: full_context, truncation: head}")}),
    Row("P-1 run: a long question, rag",
        ["run", "p.yaml", "--text", "Alice is 30.", "-q", LONG_QUESTION, *ALLOW],
        ["the question is too long", "702 tokens", "window is 512 tokens"],
        files={"p.yaml": pipeline("rag: {type: rag, retriever: bm25, top_k_tokens: 256}")}),
    # P-2: max_tokens over the window names max_tokens and the window.
    Row("P-2 run: max_tokens 100000 in chain_of_agents",
        ["run", "p.yaml", "--text", "Alice is 30.", "-q", "How old is Alice?", *ALLOW],
        ["max_tokens 100000", "8192-token window", "lower max_tokens"],
        files={"p.yaml": pipeline("agents: {type: chain_of_agents, max_tokens: 100000}",
                                  backend=SCRIPTED.replace("512", "8192"))}),
    # C-7, C-8, S-1: the pipeline-file loader.
    Row("C-7 validate: a Python tag on a scalar", ["validate", "p.yaml"],
        ["p.yaml:4: value '' cannot be read", "python/name:os.system"],
        files={"p.yaml": pipeline("full: {type: full_context,\n"
                                  "         truncation: !!python/name:os.system ''}")}),
    Row("C-8 validate: a directory", ["validate", "{tmp}"], ["{tmp}: a directory"]),
    Row("C-8 serve: --port 80000", ["serve", "--port", "80000"],
        ["--port", "80000 is outside the port range 0-65535"]),
    Row("S-1 validate: a billion laughs", ["validate", "p.yaml"],
        ["p.yaml:2: YAML aliases (*a) are not allowed"], files={"p.yaml": LAUGHS}),
    Row("S-1 validate: a 2 MiB file", ["validate", "p.yaml"],
        ["p.yaml: 2097152 bytes, more than a pipeline file may hold (1048576)"],
        files={"p.yaml": "#" * (2 << 20)}),
    Row("S-1 validate: nesting 100 levels deep", ["validate", "p.yaml"],
        ["p.yaml:1: values are nested more than 64 levels deep"],
        files={"p.yaml": "a: " + "[" * 100 + "]" * 100 + "\n"}),
    # P-3: what run refuses, validate refuses, with file, line and field.
    Row("P-3 validate: truncation sideways", ["validate", "p.yaml"],
        ["p.yaml:3: field strategies.full.truncation", "not 'sideways'"],
        files={"p.yaml": pipeline("full: {type: full_context,\n         truncation: sideways}",
                                  backend="")}),
    Row("P-3 validate: a negative top_k_tokens", ["validate", "p.yaml"],
        ["p.yaml:3: field strategies.rag.top_k_tokens", "positive integer, not -5"],
        files={"p.yaml": pipeline("rag: {type: rag,\n        top_k_tokens: -5}", backend="")}),
    Row("P-3 validate: a prompt without {context}", ["validate", "p.yaml"],
        ["p.yaml:3: field strategies.full.prompts", "lacks the field(s) {context}"],
        files={"p.yaml": pipeline("full: {type: full_context,\n"
                                  "         prompts: {reader: 'Answer {question}'}}",
                                  backend="")}),
    Row("P-3 validate: a file:// base_url", ["validate", "p.yaml"],
        ["p.yaml:1: field backend.base_url", "http(s) URL, not 'file:///etc/passwd'"],
        files={"p.yaml": pipeline("full: {type: full_context}",
                                  backend="backend: {type: openai, base_url: "
                                          "'file:///etc/passwd'}\n")}),
    Row("P-3 validate: agents' worker_max_tokens over note_tokens", ["validate", "p.yaml"],
        ["p.yaml:3: field strategies.a.worker_max_tokens", "must not exceed note_tokens (256)"],
        files={"p.yaml": pipeline("a: {type: chain_of_agents,\n      worker_max_tokens: 500}",
                                  backend="")}),
    Row("P-3 validate: kv_pages scorer avg", ["validate", "p.yaml"],
        ["p.yaml:3: field strategies.p.scorer", "not 'avg'"],
        files={"p.yaml": pipeline("p: {type: kv_pages,\n      scorer: avg}", backend="")}),
    Row("P-3 validate: a retriever's overlap over its chunk", ["validate", "p.yaml"],
        ["p.yaml:2: field retrievers.d.overlap", "overlap must be in [0, chunk_tokens=", "got 1500"],
        # over the SmolLM2 profile's 1000 (characters) too
        files={"p.yaml": "retrievers:\n  d: {type: dense, overlap: 1500}\n"
                         "strategies:\n  r: {type: rag, retriever: d}\n"}),
    Row("P-3 validate: transformers device gpu", ["validate", "p.yaml"],
        ["p.yaml:2: field backend.device", "not 'gpu'"],
        files={"p.yaml": pipeline("f: {type: full_context}",
                                  backend="backend: {type: transformers,\n  device: gpu}\n")}),
    Row("P-3 validate: rules router effective_fraction 2", ["validate", "p.yaml"],
        ["p.yaml:4: field router.effective_fraction", "in (0, 1], got 2"],
        files={"p.yaml": pipeline("f: {type: full_context}",
                                  "router: {type: rules,\n  effective_fraction: 2}\n",
                                  backend="")}),
    Row("P-3 validate: a learned router's missing model file", ["validate", "p.yaml"],
        ["p.yaml:4: field router.model", "nope.json: no such learned-router file"],
        files={"p.yaml": pipeline("f: {type: full_context}",
                                  "router: {type: learned,\n  model: nope.json}\n",
                                  backend="")}),
    Row("P-3 validate: a transformers model folder that does not exist", ["validate", "p.yaml"],
        ["p.yaml:2: field backend.model", "'./nope' is not 'embedded', a local Hugging Face"],
        files={"p.yaml": pipeline("f: {type: full_context}",
                                  backend="backend: {type: transformers,\n  model: ./nope}\n")}),
    Row("P-3 validate: an openai tokenizer folder that does not exist", ["validate", "p.yaml"],
        ["p.yaml:2: field backend.tokenizer", "tokenizer './nope' is not 'embedded'"],
        files={"p.yaml": pipeline("f: {type: full_context}",
                                  backend="backend: {type: openai,\n  tokenizer: ./nope}\n")}),
    # P-5: a number where a strategy's name belongs.
    Row("P-5 validate: a numeric strategy key", ["validate", "p.yaml"],
        ["p.yaml:4: field router.strategy", "got the int 1", 'quotes ("1")'],
        files={"p.yaml": pipeline("1: {type: full_context}",
                                  "router: {type: fixed,\n  strategy: 1}\n", backend="")}),
    # P-7: every question is checked before any is answered (nothing printed).
    Row("P-7 run: an empty second question",
        ["run", "p.yaml", "--text", "Alice is 30.", "-q", "How old is Alice?", "-q", "  ",
         *ALLOW], ["question 2 of 2: the question is empty"],
        files={"p.yaml": pipeline("full: {type: full_context}")}),
    # C-6, D-3: the eval runner's files.
    Row("C-6 eval: a non-UTF-8 dataset",
        ["eval", "--pipeline", "p.yaml", "--dataset", "jsonl:data.jsonl", "--out", "out",
         "--no-progress", *ALLOW], ["data.jsonl: no usable sample", "data.jsonl:1: not UTF-8"],
        files={"p.yaml": pipeline("full: {type: full_context}"),
               "data.jsonl": b'{"context": "caf\xe9", "question": "q?", "answers": ["a"]}\n'}),
    Row("C-6 eval: a results row without sample_id",
        ["eval", "--pipeline", "p.yaml", "--dataset", "jsonl:data.jsonl", "--out", "out",
         "--no-progress", *ALLOW], ["out/results.jsonl:1: a results row with no 'sample_id'"],
        files={"p.yaml": pipeline("full: {type: full_context}"),
               "data.jsonl": '{"context": "Alice is 30.", "question": "Age?", "answers": ["30"]}\n',
               "out/results.jsonl": '{"strategy": "full"}\n'}),
    Row("C-6 eval: a cut-short run.json is rewritten, the run goes on",
        ["eval", "--pipeline", "p.yaml", "--dataset", "jsonl:data.jsonl", "--out", "out",
         "--no-progress", "--strategies", "full", *ALLOW], ["out/run.json is unreadable"],
        files={"p.yaml": pipeline("full: {type: full_context}"),
               "data.jsonl": '{"context": "Alice is 30.", "question": "Age?", "answers": ["30"]}\n',
               "out/run.json": '{"dataset": "jso'}, code=0),
    Row("D-3 eval: a second run into a held --out",
        ["eval", "--pipeline", "p.yaml", "--dataset", "jsonl:data.jsonl", "--out", "out",
         "--no-progress", *ALLOW], ["out is in use by another orchestra eval (pid {pid}"],
        files={"p.yaml": pipeline("full: {type: full_context}"),
               "data.jsonl": '{"context": "Alice is 30.", "question": "Age?", "answers": ["30"]}\n'},
        hold=lambda tmp: __import__("orchestra.eval.runner", fromlist=["x"]).out_dir_lock(
            tmp / "out")),
    # C-4: a cache folder that cannot be written: the run goes on uncached, one warning.
    Row("C-4 run: ORCHESTRA_CACHE cannot be written",
        ["run", "p.yaml", "--text", "Alice is 30 years old. Bob is 20.", "-q", "How old is Alice?",
         *ALLOW], ["the cache folder {tmp}/file/cache cannot be written", "without a cache"],
        files={"p.yaml": pipeline("rag: {type: rag, retriever: bm25, top_k_tokens: 256}"),
               "file": "not a folder"},
        env={"ORCHESTRA_CACHE": "{tmp}/file/cache"}, code=0),
    # C-3: a model folder that cannot be loaded is named (transformers loads, no weights do).
    Row("C-3 run: a model folder with a broken config.json",
        ["run", "p.yaml", "--text", "t", "-q", "q?"],
        ["{tmp}/model: cannot be loaded as a Hugging Face model"],
        files={"p.yaml": pipeline("full: {type: full_context}",
                                  backend="backend: {type: transformers, model: '{tmp}/model'}\n"),
               "model/config.json": '{"model_type": "llama", "hidden_size": '}),
    Row("C-3 run: a model folder with custom code",
        ["run", "p.yaml", "--text", "t", "-q", "q?"],
        ["{tmp}/model: cannot be loaded as a Hugging Face model"],
        files={"p.yaml": pipeline("full: {type: full_context}",
                                  backend="backend: {type: transformers, model: '{tmp}/model'}\n"),
               "model/config.json": json.dumps({"model_type": "evil", "auto_map": {
                   "AutoModelForCausalLM": "modeling_evil.Evil"}}),
               "model/modeling_evil.py": "open('/tmp/orchestra-evil-ran', 'w')\n"}),
    # N-1: a folder asking to run its own code is refused by name, by validate too.
    Row("N-1 validate: a model folder with auto_map and its code", ["validate", "p.yaml"],
        ["p.yaml:2: field backend.model", "{tmp}/model: cannot be loaded as a Hugging Face "
         "model: the folder asks to run its own code", "configuration_evil.py",
         "never runs code from a model folder"],
        files={"p.yaml": pipeline("f: {type: full_context}", backend=(
            "backend: {type: transformers,\n  model: '{tmp}/model'}\n")), **EVIL_MODEL}),
    Row("N-1 run: the same folder", ["run", "p.yaml", "--text", "t", "-q", "q?"],
        ["{tmp}/model: cannot be loaded as a Hugging Face model: the folder asks to run its "
         "own code", "configuration_evil.py"],
        files={"p.yaml": pipeline("f: {type: full_context}", backend=(
            "backend: {type: transformers, model: '{tmp}/model'}\n")), **EVIL_MODEL}),
    Row("N-1 validate: an openai backend's tokenizer folder with auto_map",
        ["validate", "p.yaml"], ["field backend.tokenizer", "asks to run its own code"],
        files={"p.yaml": pipeline("f: {type: full_context}", backend=(
            "backend: {type: openai, tokenizer: '{tmp}/model'}\n")), **EVIL_MODEL,
               "model/tokenizer_config.json": "{}"}),
    # N-3: bytes that are not UTF-8 in a question (argv hands them over as surrogates).
    Row("N-3 run: \\xff\\xfe in -q", ["run", "p.yaml", "--text", "Alice is 30.", "-q",
                                    "How old is \udcff\udcfe Alice?", *ALLOW],
        ["the question is not valid UTF-8 text", "the byte 0xff at character 12"],
        files={"p.yaml": pipeline("full: {type: full_context}")}),
    Row("N-3 ask: \\xff in -q", ["ask", "--text", "Alice is 30.", "-q", "Age\udcff?"],
        ["the question is not valid UTF-8 text", "0xff"]),
    # N-8: a question of zero-width and format characters only is empty.
    Row("N-8 run: a question of U+200B U+2060 U+FEFF",
        ["run", "p.yaml", "--text", "Alice is 30.", "-q", "\u200b\u2060\ufeff", *ALLOW],
        ["the question is empty"], files={"p.yaml": pipeline("full: {type: full_context}")}),
    Row("N-8 ask: zero-width spaces", ["ask", "--text", "Alice is 30.", "-q", "\u200b \u200b"],
        ["the question is empty"]),
    # N-6: tags on mappings and sequences are refused like tags on scalars.
    Row("N-6 validate: a Python tag on a mapping", ["validate", "p.yaml"],
        ["p.yaml:2: the YAML tag !!python/name:os.system is not allowed"],
        files={"p.yaml": pipeline("full: !!python/name:os.system {type: full_context}",
                                  backend="")}),
    Row("N-6 validate: a Python tag on a sequence", ["validate", "p.yaml"],
        ["p.yaml:5: the YAML tag !!python/tuple is not allowed"],
        files={"p.yaml": pipeline("full: {type: full_context}\n  rag: {type: rag}",
                                  "router: {type: self_route, first: rag,\n"
                                  "  fallback: !!python/tuple [full]}\n", backend="")}),
    Row("N-6 validate: a !!set", ["validate", "p.yaml"],
        ["p.yaml:2: the YAML tag !!set is not allowed"],
        files={"p.yaml": pipeline("full: !!set {type: full_context}", backend="")}),
    # N-7: a ${VAR} value is parsed by the option's type; text that is not one is named.
    Row("N-7 validate: ${ORCH_MT} that is not a number", ["validate", "p.yaml"],
        ["field strategies.full.max_tokens", "the environment gave 'many', not a value of "
         "type int"],
        files={"p.yaml": pipeline("full:\n    type: full_context\n    max_tokens: ${ORCH_MT}",
                                  backend="")}, env={"ORCH_MT": "many"}),
    # N-9: eval's dataset, --strategies and --report-only are checked before a model loads
    # (no --pipeline: the embedded default, whose first load would take minutes here).
    Row("N-9 eval: a missing jsonl dataset", ["eval", "--dataset", "jsonl:missing.jsonl",
                                              "--out", "out"],
        ["missing.jsonl: no such dataset file"]),
    Row("N-9 eval: a missing .jsonl path", ["eval", "--dataset", "gone.jsonl", "--out", "out"],
        ["gone.jsonl: no such dataset file"]),
    Row("N-9 eval: an unknown strategy in --strategies",
        ["eval", "--dataset", "jsonl:d.jsonl", "--strategies", "rag,nope", "--out", "out"],
        ["unknown strategy 'nope' in --strategies", "rag, full_context"],
        files={"d.jsonl": '{"context": "Alice is 30.", "question": "Age?", "answers": ["30"]}\n'}),
    Row("N-9 eval: --report-only on an empty folder",
        ["eval", "--dataset", "jsonl:d.jsonl", "--report-only", "--out", "out"],
        ["out/results.jsonl: no results to report yet"],
        files={"d.jsonl": '{"context": "Alice is 30.", "question": "Age?", "answers": ["30"]}\n',
               "out/.keep": ""}),
    Row("N-9 eval: a pipeline file's unknown strategy",
        ["eval", "--pipeline", "p.yaml", "--dataset", "jsonl:d.jsonl", "--strategies", "rag",
         "--out", "out", *ALLOW], ["unknown strategy 'rag' in --strategies", "has full"],
        files={"p.yaml": pipeline("full: {type: full_context}"),
               "d.jsonl": '{"context": "Alice is 30.", "question": "Age?", "answers": ["30"]}\n'}),
    # N-10: a second tune into a held --out, as eval's D-3.
    Row("N-10 tune: a second run into a held --out",
        ["tune", "p.yaml", "--dataset", "d.jsonl", "--trials", "1", "--out", "out",
         "--no-progress", *ALLOW], ["out is in use by another orchestra tune (pid {pid}"],
        files={"p.yaml": pipeline("rag: {type: rag, retriever: bm25}"),
               "d.jsonl": TUNE_DATA},
        hold=lambda tmp: __import__("orchestra.eval.runner", fromlist=["x"]).out_dir_lock(
            tmp / "out", "tune")),
    # tune: every trial scored 0 is no winner.
    Row("tune: every trial scored 0",
        ["tune", "p.yaml", "--dataset", "d.jsonl", "--trials", "1", "--out", "out",
         "--no-progress", *ALLOW],
        ["every one of the 1 finished trials scored 0", "best.yaml was not written",
         "--allow-zero"],
        files={"p.yaml": pipeline("rag: {type: rag, retriever: bm25}", backend=NO_IDEA),
               "d.jsonl": TUNE_DATA}),
    # validate == run: a foreign retriever's factory module must be allowed.
    Row("validate: a langchain factory in a module not allowed", ["validate", "p.yaml"],
        ["p.yaml:3: field retrievers.lc.factory", "module 'langchain_community.retrievers', "
         "which the caller has not allowed"],
        files={"p.yaml": "retrievers:\n  lc: {type: langchain,\n"
                         "    factory: 'langchain_community.retrievers:TFIDFRetriever"
                         ".from_documents'}\nstrategies:\n  r: {type: rag, retriever: lc}\n"}),
    Row("run: the same, refused before the model loads",
        ["run", "p.yaml", "--text", "t", "-q", "q?"],
        ["field retrievers.lc.factory", "which the caller has not allowed"],
        files={"p.yaml": "retrievers:\n  lc: {type: langchain,\n"
                         "    factory: 'langchain_community.retrievers:TFIDFRetriever"
                         ".from_documents'}\nstrategies:\n  r: {type: rag, retriever: lc}\n"}),
    # Packaging: a missing extra is one line naming the pip install.
    Row("extras: serve without fastapi", ["serve"],
        ["orchestra serve needs fastapi", 'pip install "orchestra-longdoc[server]"'],
        files=BLOCK("fastapi"), env={"PYTHONPATH": "{tmp}/block"}),
    Row("extras: tune without optuna",
        ["tune", "p.yaml", "--dataset", "d.jsonl", "--trials", "1", "--out", "out", *ALLOW],
        ["orchestra tune needs optuna", 'pip install "orchestra-longdoc[tune]"'],
        files={**BLOCK("optuna"), "p.yaml": pipeline("rag: {type: rag, retriever: bm25}"),
               "d.jsonl": TUNE_DATA}, env={"PYTHONPATH": "{tmp}/block"}),
    Row("extras: a graph retriever without networkx", ["validate", "p.yaml"],
        ["the graph retriever needs networkx", 'pip install "orchestra-longdoc[graph]"'],
        files={**BLOCK("networkx"), "p.yaml": "retrievers:\n  g: {type: graph}\n"
                                              "strategies:\n  r: {type: rag, retriever: g}\n"},
        env={"PYTHONPATH": "{tmp}/block"}),
]


def _make(tmp: Path, files: dict) -> None:
    for name, content in files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is FIFO:
            os.mkfifo(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace("{tmp}", str(tmp)))


@pytest.mark.parametrize("row", CLI_ROWS, ids=[r.id for r in CLI_ROWS])
def test_cli_refuses_bad_input(row: Row, tmp_path: Path):
    _make(tmp_path, row.files)
    sub = lambda s: s.replace("{tmp}", str(tmp_path)).replace("{pid}", str(os.getpid()))  # noqa: E731
    held = row.hold(tmp_path) if row.hold else nullcontext()
    with held:
        t0 = time.monotonic()
        proc = run_cli([sub(a) for a in row.argv], tmp_path,
                       {k: sub(v) for k, v in row.env.items()})
        seconds = time.monotonic() - t0
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode == row.code, output
    assert seconds < 30, f"took {seconds:.0f} s"
    kind = "error:" if row.code else "orchestra: warning:"
    lines = [ln for ln in proc.stderr.splitlines() if kind in ln]
    assert len(lines) == 1, proc.stderr
    for want in row.expect:
        assert sub(want) in lines[0], lines[0]
    if row.code:
        assert proc.stdout == "", "nothing is answered when any input is refused"
    assert not Path("/tmp/orchestra-evil-ran").exists()


# -- the Python API -------------------------------------------------------------------------
def test_d1_api_never_reads_a_missing_path_as_text(tmp_path):
    from orchestra.api import ask
    from orchestra.corpus import load_documents

    backend = ScriptedBackend(["invented"])
    for missing in ("my report.txt", "notes", "report.pdf", str(tmp_path / "gone.txt")):
        with pytest.raises(InputError, match="no such file or directory"):
            ask("What does the report conclude?", [missing], strategy="full_context",
                backend=backend)
        with pytest.raises(InputError, match="no such file or directory"):
            load_documents(missing)
    assert backend.requests == []
    # Text is given explicitly: a Document or text=.
    assert ask("Who?", text="Alice spoke.", strategy="full_context",
               backend=ScriptedBackend(["Alice"])).text == "Alice"
    assert [d.text for d in load_documents([Document("d", "x")], text=["y"])] == ["x", "y"]


def test_p7_api_run_batch_checks_every_question_first():
    from orchestra.pipeline import Pipeline
    from orchestra.strategies.full_context import FullContext

    backend = ScriptedBackend(["30"])
    pipe = Pipeline(backend, {"full": FullContext(backend)})
    with pytest.raises(InputError, match="question 2 of 2: the question is empty"):
        pipe.run_batch(["How old is Alice?", "  "], [Document("d", "Alice is 30.")])
    assert backend.requests == []  # the first question was not answered and thrown away


# -- D-2: eval resume keys rows by content ---------------------------------------------------
def test_d2_eval_resume_answers_an_edited_sample_again(tmp_path):
    from orchestra.eval.datasets import Sample
    from orchestra.eval.runner import Runner, read_results
    from orchestra.pipeline import Pipeline
    from orchestra.routers.fixed import FixedRouter
    from orchestra.strategies.full_context import FullContext

    def samples(q2: str, a2: str):
        return [Sample(sample_id=f"jsonl:{i}", dataset="toy", question=q, task="qa", length=0,
                       documents=[Document("d", "Alice is 30. Bob is 20.")], answers=[a])
                for i, (q, a) in enumerate([("How old is Alice?", "30"), (q2, a2)], 1)]

    def run(s):
        backend = ScriptedBackend(lambda r: "30" if "Alice" in r.messages[-1].content[-40:]
                                  else "20")
        strategies = {"full": FullContext(backend)}
        pipe = Pipeline(backend, strategies, FixedRouter(strategies, strategy="full"))
        return Runner(pipe, tmp_path, ["full"], progress=False).run(s), backend

    rows, _ = run(samples("How old is Alice?", "30"))
    assert [r["answer"] for r in rows] == ["30", "30"]
    # Line 2 edited: a new question and answer under the same line number (the same id).
    rows, backend = run(samples("How old is Bob?", "20"))
    assert len(backend.requests) == 1  # line 1 is reused, line 2 is answered again
    assert [(r["question"], r["answer"], r["quality"]) for r in rows] == [
        ("How old is Alice?", "30", 1.0), ("How old is Bob?", "20", 1.0)]
    assert len(read_results(tmp_path / "results.jsonl")) == 3  # the stale row stays in the file
    # A strategy's settings changed: its rows are answered again too.
    backend = ScriptedBackend(["30", "20"])
    strategies = {"full": FullContext(backend, max_tokens=12)}
    pipe = Pipeline(backend, strategies, FixedRouter(strategies, strategy="full"))
    Runner(pipe, tmp_path, ["full"], progress=False).run(samples("How old is Bob?", "20"))
    assert len(backend.requests) == 2


def test_d3_eval_runner_refuses_a_held_output_folder(tmp_path):
    from orchestra.eval.runner import Runner, out_dir_lock

    backend = ScriptedBackend(["x"])
    from orchestra.pipeline import Pipeline
    from orchestra.strategies.full_context import FullContext

    pipe = Pipeline(backend, {"full": FullContext(backend)})
    code = ("import sys, time; from orchestra.eval.runner import out_dir_lock\n"
            "with out_dir_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=f"in use by another orchestra eval "
                                             f"\\(pid {holder.pid}"):
            Runner(pipe, tmp_path, ["full"], progress=False).run([])
    finally:
        holder.kill()
        holder.wait()
    # A killed holder leaves no stale lock.
    with out_dir_lock(tmp_path):
        pass


# -- N-7: ${VAR} values are parsed by the option's type ---------------------------------------
def test_n7_env_values_take_the_options_type(tmp_path, monkeypatch):
    from orchestra.config import check, load_config
    from orchestra.pipeline import Pipeline

    monkeypatch.setenv("ORCH_MT", "32")
    monkeypatch.setenv("ORCH_PEN", "1.1")
    monkeypatch.setenv("ORCH_ALIGN", "true")
    monkeypatch.setenv("ORCH_KEY", "123456")
    (tmp_path / "p.yaml").write_text(
        "backend:\n  type: openai\n  base_url: 'http://127.0.0.1:9/v1'\n"
        "  api_key: ${ORCH_KEY}\n  model: m\n  context_window: 512\n"
        "strategies:\n"
        "  full:\n    type: full_context\n    max_tokens: ${ORCH_MT}\n"
        "    repetition_penalty: ${ORCH_PEN}\n"
        "  coa:\n    type: chain_of_agents\n    align_notes: ${ORCH_ALIGN}\n"
        "    max_tokens: '${ORCH_MT}'\n")
    cfg, located = load_config(tmp_path / "p.yaml")
    check(cfg, located)
    full, coa = cfg.strategies["full"].options, cfg.strategies["coa"].options
    assert full["max_tokens"] == 32 and type(full["max_tokens"]) is int
    assert full["repetition_penalty"] == 1.1 and coa["align_notes"] is True
    assert coa["max_tokens"] == 32  # quoted or not: the type decides
    assert cfg.backend.options["api_key"] == "123456"  # a str option stays text
    proc = run_cli(["validate", "p.yaml"], tmp_path, {"ORCH_MT": "32", "ORCH_PEN": "1.1",
                                                      "ORCH_ALIGN": "true", "ORCH_KEY": "1"})
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr
    (tmp_path / "s.yaml").write_text(SCRIPTED + "strategies:\n  full:\n    type: full_context\n"
                                                "    max_tokens: ${ORCH_MT}\n")
    pipe = Pipeline.from_yaml(tmp_path / "s.yaml", allow_modules=ALLOW[1:])
    assert pipe.strategies["full"].max_tokens == 32
    assert "${ORCH_MT}" in pipe.to_yaml()  # written back unexpanded


# -- tune: every trial 0 ------------------------------------------------------------------
def test_tune_allow_zero_writes_best_yaml_anyway(tmp_path):
    (tmp_path / "p.yaml").write_text(pipeline("rag: {type: rag, retriever: bm25}",
                                              backend=NO_IDEA))
    (tmp_path / "d.jsonl").write_text(TUNE_DATA)
    argv = ["tune", "p.yaml", "--dataset", "d.jsonl", "--trials", "1", "--out", "out",
            "--no-progress", *ALLOW]
    proc = run_cli(argv, tmp_path)
    assert proc.returncode == 2 and not (tmp_path / "out" / "best.yaml").exists()
    assert (tmp_path / "out" / "report.md").is_file()
    proc = run_cli([*argv, "--allow-zero"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "best.yaml").is_file()


def test_tune_plot_axes_stay_at_or_above_0_with_whole_trial_numbers():
    import matplotlib.pyplot as plt

    from orchestra.tune.report import trials_figure
    from orchestra.tune.study import TuneResult, TrialResult

    trials = [TrialResult(number=i, state="COMPLETE", quality=0.0, prompt_tokens=100 + i,
                          seconds=1.0, n=3, params={}) for i in range(3)]
    fig = trials_figure(TuneResult(trials=trials, best=trials[0], best_data=None), "t")
    try:
        for ax in fig.axes:
            assert ax.get_ylim()[0] >= 0
        ticks = fig.axes[1].get_xticks()
        lo, hi = fig.axes[1].get_xlim()
        assert all(float(t).is_integer() for t in ticks if lo <= t <= hi)
    finally:
        plt.close(fig)
