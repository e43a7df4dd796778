"""The CLI: bad input gives one clear message and a non-zero exit, never a traceback."""


import pytest

from orchestra import __version__
from orchestra.cli.main import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out


@pytest.mark.parametrize("name, content, words", [
    ("missing.txt", None, "missing.txt: no such file or directory"),
    ("e.txt", b"", "e.txt: the document is empty"),
    ("a.docx", b"x", "a.docx: unsupported file type"),
    ("l.txt", b"\xff\xfe\x00x", "l.txt: not UTF-8"),
])
def test_bad_documents(capsys, tmp_path, name, content, words):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    code, out, err = run_cli(capsys, "ask", "--docs", str(tmp_path / name), "--question", "q?")
    assert code == 2 and words in err and "Traceback" not in err


def test_empty_question(capsys, tmp_path):
    (tmp_path / "a.txt").write_text("text")
    code, _, err = run_cli(capsys, "ask", "--docs", str(tmp_path / "a.txt"), "--question", " ")
    assert code == 2 and "question is empty" in err


def test_validate_reports_errors(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategies:\n  full: {type: full_context, truncate: head}\n")
    code, _, err = run_cli(capsys, "validate", str(bad))
    assert code == 2 and f"{bad}:2: field strategies.full.truncate: unknown option" in err


@pytest.mark.slow
def test_corpus_over_window_is_refused_without_traceback(tmp_path, essays_dir, embedded, capsys):
    # In process, on the session's model (`ask` finds the same cached backend): a second
    # process would load SmolLM2 again for one refusal.
    text = "\n\n".join(p.read_text() for p in sorted(essays_dir.glob("*.txt"))[:12])
    (tmp_path / "long.txt").write_text(text)
    code, _, err = run_cli(capsys, "ask", "--docs", str(tmp_path / "long.txt"),
                           "--question", "What is this about?", "--strategy", "full_context")
    assert code == 2
    assert "window is 8192 tokens" in err and "Traceback" not in err
    assert "truncation" in err


# -- issue 22: the command line ----------------------------------------------------------------
def _orchestra(argv, cwd, **env):
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("orchestra")
    return subprocess.run([str(exe), *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL,
                          env={**os.environ, "ORCHESTRA_QUIET": "1",
                               "ORCHESTRA_CACHE": str(cwd / "cache"), **env})


DENSE_SCRIPTED = (
    'backend: {type: "orchestra.backends.scripted:ScriptedBackend", replies: ["30"],'
    ' context_window: 512}\n'
    "retrievers:\n  d: {type: dense, chunking: tokens, chunk_tokens: 256, overlap: 32}\n"
    "strategies:\n  rag: {type: rag, retriever: d, top_k_tokens: 300}\n")


def test_verbose_works_after_the_subcommand_and_faiss_stays_quiet(tmp_path):
    """`-v` before or after the subcommand; with it, orchestra's own INFO lines show and
    faiss's loader (11 lines about AVX2 here) does not. The dense retriever brings faiss in."""
    (tmp_path / "p.yaml").write_text(DENSE_SCRIPTED)
    argv = ["run", "p.yaml", "--text", "Alice is 30 years old.", "-q", "How old is Alice?",
            "--allow-module", "orchestra.backends.scripted"]
    before = _orchestra(["-v", *argv], tmp_path)
    after = _orchestra([*argv, "-v"], tmp_path)
    for proc in (before, after):
        assert proc.returncode == 0, proc.stderr
        assert "INFO " in proc.stderr  # verbose is on
        assert "faiss" not in proc.stderr.lower(), proc.stderr
    assert _orchestra(["validate", "p.yaml", "-v", "--allow-module",
                       "orchestra.backends.scripted"], tmp_path).returncode == 0


def test_unmeasured_prefill_and_decode_seconds_are_null(tmp_path):
    import json

    (tmp_path / "p.yaml").write_text(
        'backend: {type: "orchestra.backends.scripted:ScriptedBackend", replies: ["30"],'
        ' context_window: 512}\nstrategies:\n  full: {type: full_context}\n')
    proc = _orchestra(["run", "p.yaml", "--text", "Alice is 30.", "-q", "Age?", "--json",
                       "--allow-module", "orchestra.backends.scripted"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    cost = json.loads(proc.stdout)["cost"]
    assert cost["prefill_seconds"] is None and cost["decode_seconds"] is None
    assert cost["wall_seconds"] > 0
