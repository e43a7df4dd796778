"""The example notebooks: stored with their outputs (so they show results when opened without
running), refreshed by one command (``python examples/refresh_notebooks.py``), and each runs
top to bottom on the embedded default (nbclient)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def _outputs_text(cell) -> str:
    parts = []
    for o in cell.outputs:
        parts.append(o.get("text", "") if o.output_type == "stream"
                     else o.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def test_notebooks_are_stored_with_outputs():
    import nbformat

    assert [p.name for p in NOTEBOOKS][:4] == [
        "01_quickstart.ipynb", "02_strategies.ipynb", "03_yaml_and_routers.ipynb",
        "04_langchain_llamaindex.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        # Run top to bottom in one go (execution counts 1..n), every cell with an output, no
        # errors and no stderr noise stored (python examples/refresh_notebooks.py).
        assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), (
            f"{path.name}: not stored as one top-to-bottom run; refresh it")
        for i, cell in enumerate(code, 1):
            kinds = {o.output_type for o in cell.outputs}
            assert "error" not in kinds, f"{path.name} cell {i} stored an error"
            if "print(" in cell.source or "plt.show()" in cell.source:
                assert cell.outputs, f"{path.name} cell {i} has no output; refresh the notebook"
            assert not any(o.get("name") == "stderr" for o in cell.outputs), (
                f"{path.name} cell {i} stored stderr: {_outputs_text(cell)[:200]}")


def test_quickstart_reads_the_shipped_document_and_labels_what_ran():
    import nbformat

    nb = nbformat.read(EXAMPLES / "01_quickstart.ipynb", as_version=4)
    source = "\n".join(c.source for c in nb.cells)
    assert "data/gettysburg_address.txt" in source and "PaulGraham" not in source
    out = "\n".join(_outputs_text(c) for c in nb.cells if c.cell_type == "code")
    # The strategy named as the reader is the one the route says read.
    read_by = [line.split()[2] for line in out.splitlines() if line.startswith("read by: ")]
    assert read_by and all(r in {"rag", "full_context", "kv_pages", "chain_of_agents",
                                 "map_reduce"} for r in read_by)
    assert "data/gettysburg_address.txt:" in out  # evidence as file:line-line


def test_strategies_notebook_stores_a_quality_versus_cost_plot():
    import nbformat

    nb = nbformat.read(EXAMPLES / "02_strategies.ipynb", as_version=4)
    plots = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if "image/png" in o.get("data", {})]
    assert len(plots) == 1
    src = "\n".join(c.source for c in nb.cells)
    assert "quality versus cost" in src and "prompt tokens per question" in src


def test_refresh_command_refuses_an_unknown_notebook(capsys):
    sys.path.insert(0, str(EXAMPLES))
    try:
        import refresh_notebooks
    finally:
        sys.path.remove(str(EXAMPLES))
    assert refresh_notebooks.main(["no_such.ipynb"]) == 2
    assert "no such notebook" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")

    # The same run the refresh command makes (its kernel environment), without writing.
    sys.path.insert(0, str(EXAMPLES))
    try:
        import refresh_notebooks
    finally:
        sys.path.remove(str(EXAMPLES))
    nb = refresh_notebooks.execute(path)  # raises CellExecutionError, naming the cell
    code = [c for c in nb.cells if c.cell_type == "code"]
    shows = [c for c in code if "print(" in c.source or "plt.show()" in c.source]
    assert shows and all(c.outputs for c in shows)  # what a cell prints, it printed


def test_a_kernel_sees_no_tqdm_warning(tmp_path):
    """orchestra's progress bars in a Jupyter kernel: no "TqdmWarning: IProgress not found"
    (tqdm.auto printed it for every bar; refresh_notebooks hid it). orchestra's own bars are
    plain tqdm, but transformers imports tqdm.auto when it is imported, which warns in a kernel
    without ipywidgets: the notebooks stored that warning (issue 22's re-probe), so ipywidgets
    is in the [dev] extra the notebooks run with."""
    import nbclient
    import nbformat

    cell = ("import warnings\nwarnings.simplefilter('always')\n"
            "import transformers\n"
            "from orchestra.backends.scripted import ScriptedBackend\n"
            "from orchestra.corpus import Corpus\n"
            "from orchestra.strategies.agents import ChainOfAgents\n"
            "b = ScriptedBackend(lambda r: 'Alice is 30.')\n"
            "c = Corpus.from_texts(['Alice is 30. ' * 60], b.tokenizer)\n"
            "print(ChainOfAgents(b, chunk_tokens=64, overlap=0).answer('Age?', c).text)\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    out = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert "Alice is 30." in out and "IProgress" not in out and "TqdmWarning" not in out, out
