"""Every notebook in notebooks/ runs from top to bottom without error."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO_ROOT, SHARED_MNIST_DIR

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.skipif(not (SHARED_MNIST_DIR / "mnist.npz").exists(),
                    reason=f"real MNIST not found at {SHARED_MNIST_DIR}")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("SGAN_MNIST_DIR", str(SHARED_MNIST_DIR))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors


def test_there_is_a_notebook():
    assert NOTEBOOKS, "notebooks/ holds no notebook"
