"""The quickstart in a real browser: JupyterLab on localhost, driven in headless Chromium.

Needs Debian's ``chromium`` and Playwright for Python (``bash scripts/browser_deps.sh``
installs both; Playwright's own browser download is not used). The test runs every cell,
checks that the live widgets rendered (not their static copies), and that changing a
control changes the figure: a head picker (re-slices in the browser's kernel), the
ablation toggles (a debounced forward pass) and typing a prompt.

Screenshots go to ``$WORKBENCH_BROWSER_ARTIFACTS`` when set, else to the test's tmp dir.
"""

from __future__ import annotations

import ast
import time

import pytest

from tests.browser import kit
from tests.browser.conftest import _pw
from tests.conftest import need_embedded_model

pytestmark = pytest.mark.browser

QUICKSTART = kit.NOTEBOOKS / "00_quickstart.ipynb"
RUN_ALL_TIMEOUT_S = 420  # model load plus every cell, on 2 shared cores


def _plot(cell):
    return cell.locator(".js-plotly-plot").first


def _title(cell) -> str:
    return _plot(cell).evaluate("gd => gd.layout.title.text || ''")


def _trace(cell, key: str, i: int = 0) -> str:
    return _plot(cell).evaluate(f"gd => JSON.stringify(gd.data[{i}].{key})")


def _wait_title(page, cell, changed_from: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = _title(cell)
        if now != changed_from:
            return now
        page.wait_for_timeout(250)
    raise AssertionError(f"the figure title stayed {changed_from!r} for {timeout_s} s")


def test_quickstart_runs_and_its_widgets_respond(lab, browser, artifacts):
    need_embedded_model()
    kit.parameterised_copy(QUICKSTART, lab.root, {})
    page = browser.new_page(viewport=kit.NARROW_VIEWPORT)
    page.on("dialog", lambda d: d.accept())  # window.alert/confirm, if any
    watch = kit.Watch().attach(page)
    try:
        _exercise(page, lab, watch, browser, artifacts)
    except Exception:
        page.screenshot(path=str(artifacts / "quickstart_failure.png"), full_page=True)
        print(lab.log.read_text()[-3000:])
        raise
    finally:
        page.close()


def _exercise(page, lab, watch, browser, artifacts) -> None:
    kit.open_notebook(page, lab, QUICKSTART.name)
    run_all_s = kit.run_all(page, RUN_ALL_TIMEOUT_S, _pw.TimeoutError)

    # the live widgets rendered, not their static copies
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-OutputArea .js-plotly-plot').length >= 4",
        timeout=60_000,
    )
    assert page.locator(".jp-OutputArea .wb-static-figure").count() == 0
    page.wait_for_timeout(1000)
    width = kit.output_width(page)
    assert 950 <= width <= 1100, f"the output area is {width:.0f} px, not about 1,030"
    notebook = page.locator(".jp-Notebook").first
    n, problems = kit.layout_problems(notebook)
    assert n >= 4 and not problems, problems
    page.screenshot(path=str(artifacts / "quickstart_after_run.png"), full_page=True)

    # 1. a head picker re-slices the attention figure
    attn = kit.code_cell(page, "wbw.AttentionView(")
    before_title, before_z = _title(attn), _trace(attn, "z")
    assert before_title == "Attention, layer 3 head 0"
    attn.locator(".widget-dropdown select").select_option(label="head 2")
    assert _wait_title(page, attn, before_title) == "Attention, layer 3 head 2"
    assert _trace(attn, "z") != before_z

    # 2. an ablation toggle reruns the model (debounced) and updates the bars
    abl = kit.code_cell(page, "wbw.AblationView(")
    before_title, before_x = _title(abl), _trace(abl, "x", 1)
    assert "heads [4] ablated" in before_title
    abl.locator(".widget-toggle-button", has_text="1").first.click()
    now = _wait_title(page, abl, before_title)
    assert "heads [1, 4] ablated" in now, now
    assert _trace(abl, "x", 1) != before_x

    # 3. typing a prompt recomputes the next-token bars once typing stops
    nxt = kit.code_cell(page, "wbw.NextTokenView(")
    box = nxt.locator(".widget-textarea textarea").first  # PromptBox keeps newlines
    before_x = _trace(nxt, "x")
    box.click()
    box.press("End")
    box.press_sequentially(" not", delay=40)
    deadline = time.monotonic() + 120
    while _trace(nxt, "x") == before_x and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert _trace(nxt, "x") != before_x, "the next-token bars did not follow the prompt"

    # 4. the lens's text threshold hides the text of low-probability cells
    lens = kit.code_cell(page, "wbw.LogitLensView(")
    before = kit.fingerprint(lens)
    handle = lens.locator(".widget-slider .noUi-handle").first
    handle.focus()
    for _ in range(30):
        handle.press("ArrowRight")
    kit.wait_changed(page, lens, before, "logit lens threshold", timeout_s=60)
    for name, cell in [("next", nxt), ("attention", attn), ("ablation", abl), ("lens", lens)]:
        cell.screenshot(path=str(artifacts / f"quickstart_{name}.png"))

    # 5. four keystrokes cost one recompute, not four: ask the kernel
    page.locator(".jp-Notebook .jp-Cell").last.click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # a new cell below the last one
    page.keyboard.press("Enter")
    page.keyboard.type(
        'print("recomputes:", [v.debouncers[0].calls for v in Out.values() '
        'if type(v).__name__ == "NextTokenView"])'
    )
    page.keyboard.press("Shift+Enter")
    out = page.locator(".jp-OutputArea-output", has_text="recomputes:")
    out.wait_for(timeout=60_000)
    calls = ast.literal_eval(out.inner_text().split("recomputes:", 1)[1].strip())
    assert len(calls) == 1 and 1 <= calls[0] < 4, f"typing ' not' ran {calls} recomputes"

    # 6. the same figures read cleanly in a wider window
    for viewport in kit.CHECK_VIEWPORTS:  # output areas of 1,030 and 1,400 px
        page.set_viewport_size(viewport)
        page.wait_for_timeout(1500)
        _, problems = kit.layout_problems(notebook)
        assert not problems, f"at {kit.output_width(page):.0f} px: {problems}"
    page.set_viewport_size(kit.NARROW_VIEWPORT)
    assert not watch.external, f"requests outside localhost: {watch.external[:5]}"
    assert not watch.errors, f"console errors: {watch.errors[:5]}"

    # 7. the shared copy: no kernel, no network; the attention view's pickers work offline
    kit.save(page)
    html = kit.export_html(lab.root / QUICKSTART.name, artifacts / "00_quickstart.html")
    offline = kit.check_offline_page(browser, html, artifacts)
    assert not offline["external"] and not offline["errors"], offline
    assert offline["figures"] >= 4 and not offline["problems"], offline
    assert offline["controls"] >= 2 and offline["controls"] == len(offline["tried"]), offline
    mb = html.stat().st_size / 1e6
    print(f"\nrun all cells in the browser: {run_all_s:.1f} s; shared page {mb:.1f} MB")
