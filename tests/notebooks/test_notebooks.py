"""Every notebook in ``notebooks/`` runs headless with its default (small, CPU) parameters.

Notebooks are found by glob, so a new notebook is tested without editing this file. Each
runs in a fresh kernel through :func:`workbench.runner.run_notebook` (papermill), exactly
as ``workbench run`` runs it, and the HTML export is built too. The executed copies go to
``$WORKBENCH_NOTEBOOK_OUT`` when set (CI keeps them as artifacts), else to a temp dir;
the kernel runs in a temp dir, so what a notebook writes never lands in the repo. A cell
running past ``$WORKBENCH_NOTEBOOK_CELL_TIMEOUT`` seconds (default 600) fails its test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import need_embedded_model
from workbench.runner import run_notebook

# A cell that runs longer than this fails the test instead of stalling CI.
CELL_TIMEOUT_S = float(os.environ.get("WORKBENCH_NOTEBOOK_CELL_TIMEOUT", "600"))
NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def _loads_a_model(notebook: Path) -> bool:
    """Whether the notebook loads a language model (the Bigram-Backcopy toy trains its own)."""
    return "load_model(" in notebook.read_text()


def test_there_are_notebooks_to_run():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean_and_parameterised(notebook):
    """No outputs in git, a ``parameters`` cell with model and device, the shared kernel."""
    import nbformat

    from workbench.runner import declared_parameters

    nb = nbformat.read(notebook, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("outputs")]
    assert not dirty, f"{notebook.name}: cells {dirty} have outputs; clear them before committing"
    declared = declared_parameters(notebook)
    missing = {"model", "device"} - set(declared)
    assert not missing, (
        f"{notebook.name}: its cell tagged 'parameters' lacks {sorted(missing)} "
        f"(it has {sorted(declared)})"
    )
    assert nb.metadata.get("kernelspec", {}).get("name") == "workbench", (
        f"{notebook.name}: set the kernel to 'workbench' (registered by scripts/setup.sh) so "
        "that JupyterLab, CI and `workbench run` use the project's environment"
    )


@pytest.mark.slow
@pytest.mark.embedded
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_headless(notebook, tmp_path, record_property):
    if _loads_a_model(notebook):
        need_embedded_model()
    out = Path(os.environ.get("WORKBENCH_NOTEBOOK_OUT") or tmp_path)
    work = tmp_path / "cwd"  # files a notebook writes (caches, checkpoints) stay out of the repo
    work.mkdir()
    result = run_notebook(
        notebook,
        {},
        out_dir=out,
        html=True,
        progress_bar=False,
        timeout=CELL_TIMEOUT_S,
        cwd=work,
    )
    record_property("wall_s", round(result.wall_s, 1))
    print(f"\n{notebook.name}: {result.wall_s:.1f} s")
    assert result.ok, result.summary()
    assert result.html_path is not None and result.html_path.stat().st_size > 0
