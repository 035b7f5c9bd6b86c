"""Every notebook in notebooks/ runs from top to bottom on a tiny budget.

The notebooks read their budget from a ``parameters`` cell (papermill
convention) whose values come from environment variables; here they get a
few steps, so that a real Jupyter kernel (nbclient) executes every cell,
including the asserts inside them, in seconds.
"""

import os
import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
TINY_BUDGET = {"SGAN_NOTEBOOK_STEPS": "3", "SGAN_NOTEBOOK_EPOCHS": "1",
               "SGAN_NOTEBOOK_TEST_IMAGES": "200"}
# What a notebook writes into SGAN_NOTEBOOK_OUTPUT_DIR (glob patterns). Given
# that directory, a notebook leaves nothing in the temporary directory.
OUTPUTS = {"quickstart.ipynb": ["sgan/metrics.csv", "sgan/samples/*.png", "sgan/*.png",
                                "export/**/saved_model.pb"],
           "variants.ipynb": []}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch, small_mnist_dir, tmp_path):
    monkeypatch.setenv("SGAN_MNIST_DIR", str(small_mnist_dir))
    output_dir = tmp_path / "outputs"
    output_dir.mkdir()
    monkeypatch.setenv("SGAN_NOTEBOOK_OUTPUT_DIR", str(output_dir))
    kernel_tmp = tmp_path / "tmp"
    kernel_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(kernel_tmp))
    # The kernel imports this checkout's sgan_keras, whichever copy is installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    for name, value in TINY_BUDGET.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors
    # Keras' warning on a validation set of unknown length says training was cut
    # short ("interrupting training"), which it was not.
    warned = [output["text"] for cell in notebook.cells for output in cell.get("outputs", [])
              if output.get("output_type") == "stream" and "ran out of data" in output["text"]]
    assert not warned
    images = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if "image/png" in output.get("data", {})]
    assert images, "the notebook drew no figure"
    for pattern in OUTPUTS[path.name]:
        assert list(output_dir.glob(pattern)), f"no {pattern} in SGAN_NOTEBOOK_OUTPUT_DIR"
    if not OUTPUTS[path.name]:
        assert not any(output_dir.iterdir())
    assert sorted(entry.name for entry in kernel_tmp.iterdir()) == []


def test_the_documented_notebooks_exist():
    assert {path.name for path in NOTEBOOKS} >= {"quickstart.ipynb", "variants.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped_and_parameterized(path):
    notebook = nbformat.read(path, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code_cells), \
        "commit notebooks with outputs stripped"
    tagged = [cell for cell in code_cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "one cell tagged 'parameters' (papermill convention)"
    assert "SGAN_NOTEBOOK_STEPS" in tagged[0].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_accuracies_a_notebook_quotes_are_its_cited_results(path):
    # The quickstart quoted 92% against 77% from mnist_gans_in_action_100.md
    # after that file came to hold the book's own procedure's 88% against 47%.
    text = " ".join(cell.source for cell in nbformat.read(path, as_version=4).cells
                    if cell.cell_type == "markdown")
    quoted = re.findall(r"about (\d+)%(?: test accuracy)? against (\d+)%[^(`]*"
                        r"\(`(experiments/results/[\w.]+\.md)`\)", text)
    for sgan, baseline, cited in quoted:
        results = (REPO_ROOT / cited).read_text(encoding="utf-8")
        finals = {kind: round(100 * float(value)) for kind, value in
                  re.findall(r"^(sgan|baseline), [^:]*: final ([0-9.]+)", results, re.MULTILINE)}
        assert finals == {"sgan": int(sgan), "baseline": int(baseline)}, (path.name, cited)
