"""Every notebook in a real browser, then its shared copy with no kernel and no network.

For each notebook (small parameters, so the tier fits CI's budget) the test opens
JupyterLab in headless Chromium with the file browser open (an output area about 1,030 px
wide) and:

1. runs all cells;
2. checks the rendered SVG of every figure: no colorbar over a plot area or tick labels,
   no tick labels over each other, no title cut off or over tick labels, every figure as
   wide as its box and inside it (at 968 px, then 1,030 and 1,400 px once the window is
   widened);
3. moves at least one control of every live view and asserts that its figure changed;
4. asserts no console error and no request outside localhost;
5. saves the notebook, exports it with ``workbench export`` and opens the page from disk
   with every outside request blocked: zero requests, every figure drawn, every offline
   control changes its figure, and the same layout checks.

The quickstart has its own file (it also checks debouncing); a new notebook fails
:func:`test_every_notebook_has_a_browser_spec` until it gets a spec here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.browser import kit
from tests.browser.conftest import _pw
from tests.conftest import need_embedded_model

pytestmark = [pytest.mark.browser, pytest.mark.slow]


# -- moving a control, as a user would ------------------------------------------------------


def select(nth: int, index: int) -> Callable:
    """Pick option ``index`` of the cell's ``nth`` drop-down."""
    return lambda page, cell: (
        cell.locator(".widget-dropdown select").nth(nth).select_option(index=index)
    )


def click_toggle(text: str) -> Callable:
    return lambda page, cell: cell.locator(".widget-toggle-button", has_text=text).first.click()


def click_button(text: str) -> Callable:
    return lambda page, cell: cell.locator("button.jupyter-button", has_text=text).first.click()


def slide(label: str, key: str, times: int) -> Callable:
    """Press ``key`` ``times`` on the handle of the slider labelled ``label``."""

    def act(page, cell):
        slider = cell.locator(".widget-slider", has=page.locator(".widget-label", has_text=label))
        handle = slider.first.locator(".noUi-handle").first
        handle.focus()
        for _ in range(times):
            handle.press(key)
            page.wait_for_timeout(60)
        handle.evaluate("h => h.blur()")

    return act


def step_int(label: str) -> Callable:
    """Add one to the number box labelled ``label`` (and press Enter)."""

    def act(page, cell):
        row = cell.locator(".widget-inline-hbox", has=page.locator(".widget-label", has_text=label))
        box = row.locator("input").first
        box.fill(str(int(box.input_value()) + 1))
        box.press("Enter")

    return act


@dataclass
class Move:
    marker: str  # text in the view's cell source
    what: str
    act: Callable
    max_s: float = 120  # the figure must change within this


@dataclass
class Spec:
    params: dict = field(default_factory=dict)
    run_s: float = 600  # Run All on 2 shared cores
    moves: list[Move] = field(default_factory=list)
    loads_model: bool = True


SPECS: dict[str, Spec] = {
    "01_function_tokens": Spec(
        params={"graph_tokens": 1000, "sae_tokens": 2000, "loss_tokens": 500, "lm_steps": 10},
        moves=[
            Move("ftv.FunctionTokensView(", "token drop-down", select(1, 1)),
            Move("ftv.FunctionTokensView(", "feature number", step_int("feature")),
        ],
    ),
    "02_active_dormant_heads": Spec(
        params={"scan_docs": 3, "sweep_docs": 3, "sweep_layer_step": 10},
        moves=[
            Move("ActiveDormantView(ad.table", "metric drop-down", select(0, 1)),
            # every domain's prompt is computed up front: a switch is a redraw
            Move("explorer = HeadExplorer(", "domain switch", click_toggle("code"), max_s=10),
            Move("explorer = HeadExplorer(", "head drop-down", select(0, 1)),
        ],
    ),
    "03_bigram_backcopy": Spec(
        params={"steps": 300, "compare_steps": 60},
        loads_model=False,
        moves=[Move("TrainingScrubber(", "step slider", slide("step", "ArrowLeft", 2))],
    ),
    "04_information_flow_routes": Spec(
        params={"dataset_docs": 3, "dataset_tokens": 16, "predictions_per_doc": 1},
        moves=[
            Move("RoutesView.for_routes(", "τ slider", slide("τ", "ArrowRight", 4)),
            Move("RoutesView.for_routes(", "prediction drop-down", select(0, 1)),
        ],
    ),
    "05_attribution_and_interventions": Spec(
        moves=[Move("wbw.InterventionLab(", "add an intervention", click_button("add"))],
    ),
}


def test_every_notebook_has_a_browser_spec():
    names = {p.stem for p in kit.NOTEBOOKS.glob("*.ipynb")} - {"00_quickstart"}
    assert names <= set(SPECS), f"give these notebooks a spec: {sorted(names - set(SPECS))}"


# -- the check itself -----------------------------------------------------------------------


def check_layout(page, where: str) -> list[str]:
    n, problems = kit.layout_problems(page.locator(".jp-NotebookPanel .jp-Notebook").first)
    assert n > 0, f"{where}: no figure was drawn"
    return [f"{where}: {p}" for p in problems]


def exercise_notebook(page, lab, name: str, spec: Spec, artifacts, browser) -> dict:
    """Everything the module docstring lists, for one notebook; returns timings."""
    watch = kit.Watch().attach(page)
    kit.open_notebook(page, lab, name)
    run_s = kit.run_all(page, spec.run_s, _pw.TimeoutError)
    stem = name.removesuffix(".ipynb")
    page.wait_for_timeout(1500)  # late widget renders
    width = kit.output_width(page)
    assert 950 <= width <= 1100, f"the output area is {width:.0f} px wide, not about 1,030"
    problems = check_layout(page, f"{stem} at {width:.0f} px")
    page.screenshot(path=str(artifacts / f"{stem}_after_run.png"), full_page=True)
    # live views drew themselves (JupyterLab shows the widget, not its static copy)
    assert page.locator(".jp-OutputArea .wb-static-figure").count() == 0

    timings = {"run_all_s": round(run_s, 1)}
    for move in spec.moves:
        cell = kit.code_cell(page, move.marker)
        cell.scroll_into_view_if_needed()
        before = kit.fingerprint(cell)
        move.act(page, cell)
        took = kit.wait_changed(page, cell, before, f"{stem}: {move.what}", move.max_s)
        timings[move.what] = round(took, 2)
        cell.screenshot(path=str(artifacts / f"{stem}_{move.what.replace(' ', '_')}.png"))

    for viewport in kit.CHECK_VIEWPORTS:  # output areas of 1,030 and 1,400 px
        page.set_viewport_size(viewport)
        page.wait_for_timeout(1500)
        wide = kit.output_width(page)
        problems += check_layout(page, f"{stem} at {wide:.0f} px")
    page.set_viewport_size(kit.NARROW_VIEWPORT)

    kit.save(page)
    html = kit.export_html(lab.root / name, artifacts / f"{stem}.html")
    offline = kit.check_offline_page(browser, html, artifacts)
    assert not watch.external, f"{stem}: requests outside localhost: {watch.external[:5]}"
    assert not watch.errors, f"{stem}: console errors: {watch.errors[:5]}"
    assert not offline["external"], f"{stem}.html asked the network: {offline['external'][:5]}"
    assert not offline["errors"], f"{stem}.html logged errors: {offline['errors'][:5]}"
    assert offline["figures"] > 0, f"{stem}.html has no figure"
    assert offline["controls"] == len(offline["tried"]), (
        f"{stem}.html: only {offline['controls']} of the offline controls {offline['tried']} "
        "changed their figure"
    )
    problems += [f"{stem}.html {p}" for p in offline["problems"]]
    assert not problems, "layout problems:\n" + "\n".join(problems)
    timings["html_mb"] = round(html.stat().st_size / 1e6, 2)
    timings["offline_controls"] = offline["controls"]
    return timings


@pytest.mark.parametrize("stem", sorted(SPECS))
def test_notebook_in_the_browser(stem, lab, browser, artifacts):
    spec = SPECS[stem]
    if spec.loads_model:
        need_embedded_model()
    nb = kit.NOTEBOOKS / f"{stem}.ipynb"
    kit.parameterised_copy(nb, lab.root, spec.params)
    page = browser.new_page(viewport=kit.NARROW_VIEWPORT)
    page.on("dialog", lambda d: d.accept())
    t0 = time.monotonic()
    try:
        timings = exercise_notebook(page, lab, nb.name, spec, artifacts, browser)
    except Exception:
        page.screenshot(path=str(artifacts / f"{stem}_failure.png"), full_page=True)
        print(lab.log.read_text()[-3000:])
        raise
    finally:
        page.close()
    print(f"\n{stem}: {timings} (whole test {time.monotonic() - t0:.0f} s)")
