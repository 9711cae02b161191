"""The compressed plotly.js tag: its size, its payload, and that a browser unpacks it offline.

The browser tests need Debian's ``chromium`` and Playwright for Python (``bash
scripts/browser_deps.sh``); without them they are skipped.
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import re
import time
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs

from workbench.widgets.plotlyjs import PLOTLYJS_MARK, READY_EVENT, plotlyjs_tag

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]

_PAYLOAD = re.compile(r'atob\("([A-Za-z0-9+/=]+)"\)')


def _plain_tag() -> str:
    return (
        f'<script type="text/javascript" class="{PLOTLYJS_MARK}">'
        "window.PlotlyConfig = {MathJaxConfig: 'local'};\n"
        f"{get_plotlyjs()}</script>"
    )


def test_tag_is_under_45_percent_of_the_plain_bundle_and_deterministic():
    tag = plotlyjs_tag()
    plain, packed = len(_plain_tag().encode()), len(tag.encode())
    print(f"\nplotly.js tag: plain {plain:,} bytes, compressed {packed:,} ({packed / plain:.1%})")
    assert packed < 0.45 * plain, (plain, packed)
    assert tag.startswith(f'<script type="text/javascript" class="{PLOTLYJS_MARK}">')
    assert "window.PlotlyConfig = {MathJaxConfig: 'local'};" in tag
    plotlyjs_tag.cache_clear()  # recomputed from scratch, byte for byte the same
    assert plotlyjs_tag() == tag


def test_payload_decompresses_to_the_bundle():
    found = _PAYLOAD.findall(plotlyjs_tag())
    assert len(found) == 1, f"expected one atob(...) payload in the tag, found {len(found)}"
    assert gzip.decompress(base64.b64decode(found[0])).decode("utf-8") == get_plotlyjs()


def test_tag_fetches_nothing():
    from workbench.widgets.export import external_urls

    assert external_urls(f"<html><head>{plotlyjs_tag()}</head><body></body></html>") == []


# --- in headless Chromium, from file:// -------------------------------------------------

_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8">
<script>
window.wbTest = {t0: performance.now(), ms: null};
window.addEventListener("%(ready)s", function (e) { window.wbTest.ms = e.detail.ms; });
</script>
%(tag)s
</head><body>
<div id="fig" style="height: 300px; width: 400px"></div>
<script>
(function draw() {
  if (window.Plotly) {
    window.Plotly.newPlot("fig", [{type: "bar", x: ["a", "b", "c"], y: [1, 3, 2]}]);
  } else { setTimeout(draw, 20); }
})();
</script>
</body></html>
"""


@pytest.fixture
def chromium_page(tmp_path):
    """``(open, log)``: ``open(init_script)`` loads the test page from file:// in headless
    Chromium and returns the page; ``log`` collects its requests and console messages."""
    if not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None:
        pytest.skip("needs /usr/bin/chromium and Playwright: run scripts/browser_deps.sh")
    from playwright.sync_api import sync_playwright

    path = tmp_path / "plotly_page.html"
    path.write_text(_PAGE % {"tag": plotlyjs_tag(), "ready": READY_EVENT}, encoding="utf-8")
    log: dict[str, list[str]] = {"requests": [], "errors": [], "warnings": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:

            def open_page(init_script: str = ""):
                page = browser.new_page()
                if init_script:
                    page.add_init_script(init_script)
                page.on("request", lambda r: log["requests"].append(r.url))
                page.on("pageerror", lambda e: log["errors"].append(f"pageerror: {e}"))

                def on_console(msg):
                    if msg.type == "error":
                        log["errors"].append(msg.text)
                    elif msg.type == "warning":
                        log["warnings"].append(msg.text)

                page.on("console", on_console)
                page.goto(path.as_uri())
                return page

            yield open_page, log, path
        finally:
            browser.close()


@pytest.mark.browser
@pytest.mark.parametrize(
    "init_script",
    [
        "",
        # a module loader on the page (require.js, a bundler) must not capture plotly.js
        "window.define = function () {}; window.define.amd = {};"
        " window.module = {exports: {}}; window.exports = window.module.exports;",
    ],
    ids=["plain-page", "page-with-define-and-module"],
)
def test_chromium_unpacks_plotly_offline_and_draws_a_bar(chromium_page, init_script):
    open_page, log, path = chromium_page
    start = time.perf_counter()
    page = open_page(init_script)
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
    page.wait_for_function("window.wbTest.ms !== null", timeout=30_000)
    wall = time.perf_counter() - start
    unpack_ms = page.evaluate("window.wbTest.ms")
    bars = page.locator(".js-plotly-plot .barlayer .point path").count()
    print(
        f"\nChromium: unpacking plotly.js took {unpack_ms:.0f} ms (atob, gunzip, evaluate);"
        f" page open to bar drawn {wall * 1000:.0f} ms"
    )
    local = [u for u in log["requests"] if u.startswith(("data:", "blob:"))]
    if local:
        print(f"data:/blob: requests (allowed): {[u[:60] for u in local]}")
    others = [u for u in log["requests"] if u != path.as_uri() and u not in local]
    assert others == [], f"the page made network requests: {others}"
    assert log["errors"] == [], f"console errors: {log['errors']}"
    assert page.evaluate("typeof window.Plotly.newPlot") == "function"
    assert bars == 3, f"expected 3 bars drawn, found {bars}"
    assert page.locator(".wb-plotlyjs-error").count() == 0


@pytest.mark.browser
def test_chromium_without_decompressionstream_says_so_and_fetches_nothing(chromium_page):
    open_page, log, path = chromium_page
    page = open_page("delete window.DecompressionStream;")
    message = page.locator("body > .wb-plotlyjs-error:first-child")
    message.wait_for(timeout=10_000)
    assert "too old to unpack" in message.inner_text()
    assert any("too old to unpack" in w for w in log["warnings"]), log["warnings"]
    assert page.evaluate("typeof window.Plotly") == "undefined"
    others = [u for u in log["requests"] if u != path.as_uri()]
    assert others == [], f"the page made requests: {others}"
