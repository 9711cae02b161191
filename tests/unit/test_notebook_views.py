"""Notebooks open on the project's kernel, and their shared HTML copies work offline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

import workbench.widgets as wbw
from workbench.widgets import static as static_mod
from workbench.widgets.export import (
    external_urls,
    latex_to_html,
    notebook_page,
    progress_outputs,
    render_math,
)

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
KERNEL = {"name": "workbench", "display_name": "workbench (.venv)", "language": "python"}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
STATE = "application/vnd.jupyter.widget-state+json"


@pytest.fixture(autouse=True)
def _fresh_static_state():
    static_mod._state["plotlyjs_sent"] = False
    yield
    static_mod._state["plotlyjs_sent"] = False


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_open_on_the_project_kernel(notebook):
    spec = json.loads(notebook.read_text())["metadata"]["kernelspec"]
    assert {k: spec.get(k) for k in KERNEL} == KERNEL, (
        f"{notebook.name}: kernelspec should be {KERNEL} (scripts/setup.sh registers it)"
    )


def test_markdown_math_renders_without_mathjax():
    assert latex_to_html(r"\lVert v_j W_O^h\rVert") == "‖v<sub>j</sub>W<sub>O</sub><sup>h</sup>‖"
    assert latex_to_html(r"\max(\lVert y\rVert_1 - \lVert y - z\rVert_1, 0)").startswith("max(‖y‖")
    assert latex_to_html(r"z^h_{i\leftarrow j}") == "z<sup>h</sup><sub>i←j</sub>"
    text = render_math("costs $5 and `$x$` stay; $\\tau$ = 0.04; $$A_{ij}$$")
    assert "costs $5" in text and "`$x$`" in text and "τ" in text and "A<sub>ij</sub>" in text


def _tqdm_state(n, total, style, ids=("box", "left", "bar", "right")):
    box, left, bar, right = ids
    state = {
        box: {
            "model_name": "HBoxModel",
            "state": {"children": [f"IPY_MODEL_{i}" for i in ids[1:]]},
        },
        left: {"model_name": "HTMLModel", "state": {"value": f"{100 * n // total}%"}},
        bar: {"model_name": "FloatProgressModel",
              "state": {"value": n, "max": total, "bar_style": style}},
        right: {"model_name": "HTMLModel",
                "state": {"value": f"\u2007{n}/{total}\u2007[00:52&lt;00:00,\u2007loss=0.0123]"}},
    }  # fmt: skip
    return state


def _executed_notebook():
    """A notebook as papermill saves it: a tqdm bar (widget + its first text), a live view,
    a plotly-JSON-only figure and markdown math."""
    nb = nbformat.v4.new_notebook()
    md = nbformat.v4.new_markdown_cell(r"The sink logit $q\cdot k_{\text{sink}}/\sqrt d$.")
    bar = nbformat.v4.new_code_cell("train()")
    bar.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={
                WIDGET_VIEW: {"model_id": "box", "version_major": 2, "version_minor": 0},
                "text/plain": "  0%|          | 0/3001 [00:00<?, ?it/s]",
            },
        )  # fmt: skip
    ]
    view = nbformat.v4.new_code_cell("view")
    a = np.tril(np.ones((2, 3, 5, 5)))
    bundle = wbw.AttentionView(a / a.sum(-1, keepdims=True), list("abcde"))._repr_mimebundle_()
    view.outputs = [nbformat.v4.new_output("display_data", data=bundle)]
    nb.cells = [md, bar, view]
    nb.metadata["widgets"] = {STATE: {"state": _tqdm_state(3001, 3001, "success")}}
    return nb


def test_progress_bars_show_their_final_state():
    nb = _executed_notebook()
    assert progress_outputs(nb) == 1
    data = nb.cells[1].outputs[0]["data"]
    assert data["text/plain"] == "100% 3001/3001 [00:52<00:00, loss=0.0123]"
    assert "width:100.0%" in data["text/html"] and "#5cb85c" in data["text/html"]


def test_exported_page_makes_no_requests_and_keeps_every_figure(tmp_path):
    page = notebook_page(_executed_notebook(), name="small")
    assert external_urls(page) == []
    assert not re.search(r"<(script|link)[^>]*(src|href)=[\"']?https?://", page)
    assert "cdnjs" not in page and "text/x-mathjax-config" not in page
    assert page.count('class="wb-plotlyjs"') == 1  # inlined once
    assert page.count('class="wb-static-figure"') >= 1
    assert "3001/3001" in page and "0/3001" not in page
    assert "q·k<sub>sink</sub>/√d" in page and "\\cdot" not in page
    assert "application/vnd.jupyter.widget-view+json" not in page


@pytest.mark.slow
def test_a_really_executed_notebook_exports_offline(tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(r"Routes: $z^h_{i\leftarrow j}$"),
        nbformat.v4.new_code_cell(
            "from tqdm.auto import tqdm\nfor _ in tqdm(range(5), desc='steps'):\n    pass"
        ),
        nbformat.v4.new_code_cell(
            "import numpy as np, workbench.widgets as wbw\n"
            "a = np.tril(np.ones((2, 3, 4, 4))); a /= a.sum(-1, keepdims=True)\n"
            "wbw.AttentionView(a, ['a', 'b', 'c', 'd'])"
        ),
    ]
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    page = notebook_page(nb, name="executed")
    (tmp_path / "executed.html").write_text(page)
    assert external_urls(page) == []
    assert "steps: 100%" in page and "5/5" in page
    assert page.count('class="wb-static-figure"') == 1
