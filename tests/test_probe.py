"""benchmarks/probe.py, issue 22's re-probe: its rows run and its verdicts can fail.

The whole table takes about two minutes (benchmarks/README.md, "Issue 22 re-probe"); here a
two-row slice runs as a subprocess, and the verdict rule is checked on outputs it must refuse.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import probe

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "probe.py"


def test_a_slice_of_the_probe_runs_and_prints_its_table():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--only", "N-6"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| N-6 |")]
    assert len(rows) == 2 and all(r.endswith("| pass |") for r in rows), proc.stdout
    assert "2 of 2 probes pass." in proc.stdout


def test_the_verdict_fails_tracebacks_hangs_and_wrong_refusals():
    line = "orchestra: error: p.yaml:2: the YAML tag !!set is not allowed"
    assert probe.judge(2, "", line, 1.0, 2, ["!!set"], 30).ok
    assert not probe.judge(2, "", line + "\nTraceback (most recent call last):", 1.0, 2,
                           ["!!set"], 30).ok
    hung = probe.judge(None, "", "", 61.0, 2, [], 30)
    assert hung.hung and not hung.ok
    assert not probe.judge(0, "answer", "", 1.0, 2, ["!!set"], 30).ok  # accepted bad input
    assert not probe.judge(2, "", line + "\n" + line, 1.0, 2, ["!!set"], 30).ok  # two lines
    assert not probe.judge(2, "", line, 45.0, 2, ["!!set"], 30).ok  # after a model load's time
