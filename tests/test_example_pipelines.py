"""Every example pipeline file builds and answers on the embedded default (vllm.yaml on the real
engine: tests/test_vllm_engine.py)."""

from pathlib import Path

import pytest

from orchestra.cli.main import main

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (REPO / "examples" / "pipelines").glob("*.yaml")
                  if p.name != "vllm.yaml")
DOC = REPO / "examples" / "data" / "gettysburg_address.txt"


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_pipeline_runs(path, embedded, capsys):
    code = main(["run", str(path), "--docs", str(DOC), "-q", "In what year was the address given?",
                 "--json"])
    out = capsys.readouterr().out
    from orchestra.types import Answer

    answer = Answer.model_validate_json(out)
    assert code == 0
    assert answer.route is not None and answer.route.strategy in path.read_text()
    assert answer.cost.model_calls >= 1 and answer.text


def test_vllm_example_needs_vllm(capsys):
    try:
        import vllm  # noqa: F401
    except ImportError:
        code = main(["run", str(REPO / "examples" / "pipelines" / "vllm.yaml"), "--docs", str(DOC),
                     "-q", "Who spoke?"])
        err = capsys.readouterr().err
        assert code == 2 and "pip install" in err and "vllm" in err
    else:
        pytest.skip("vLLM is installed; tests/test_vllm_engine.py runs it")
