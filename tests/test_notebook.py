"""docs/notebooks/quickstart.ipynb runs top to bottom on CPU, and is kept in git without outputs."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "notebooks" / "quickstart.ipynb"


def test_quickstart_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("DNALLM_QUICKSTART_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("DNALLM_QUICKSTART_STEPS", "10")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # confusion matrix, which bases made the answer, embeddings, coverage track
    assert (tmp_path / "work" / "run").is_dir() and (tmp_path / "work" / "coverage").is_dir()
