"""What every browser test needs: a JupyterLab server, a watched page, Run All, layout checks.

- :func:`start_lab` runs JupyterLab on a free localhost port with a token, the project's
  ``workbench`` kernel pointed at this interpreter, every cell in the DOM and widget state
  saved with the notebook (so a saved copy exports its progress bars' final text).
- :class:`Watch` records what a page asks the network for and what it logs as an error.
- :func:`run_all` presses Run -> Run All Cells and waits for every cell to finish.
- :data:`LAYOUT_JS` reads a rendered plotly figure's SVG: colorbars over a plot area or
  over tick labels, tick labels over each other (rotated ones by their real outline, not
  their bounding box), and titles cut off by the figure's edge.
- :func:`check_offline_page` opens an exported HTML file with no kernel and no network.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
SERVER_START_TIMEOUT_S = 120
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
# With the file browser open, JupyterLab 4's output area is the window less 432 px: 968 px
# in a 1,400 px window (where the notebooks run), then 1,030 and 1,400 px for the checks.
NARROW_VIEWPORT = {"width": 1400, "height": 1000}
CHECK_VIEWPORTS = [{"width": 1462, "height": 1000}, {"width": 1832, "height": 1000}]
WIDE_VIEWPORT = CHECK_VIEWPORTS[-1]


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path

    def api(self, path: str, method: str = "GET") -> object:
        req = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def open_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@contextmanager
def start_lab(tmp_path: Path, fail) -> Iterator[Lab]:
    """A JupyterLab server rooted in ``tmp_path / "root"``; kernels and server always stop."""
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    # The notebooks name the project's kernel "workbench": make that this interpreter.
    _write_json(
        tmp_path / "data" / "kernels" / "workbench" / "kernel.json",
        {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "workbench (.venv)",
            "language": "python",
        },
    )
    settings = tmp_path / "settings"
    # every cell in the DOM (no virtual scrolling), no news or update toasts, and the
    # widget state saved with the notebook (progress bars export their last text)
    _write_json(
        settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
        {"windowingMode": "none"},
    )
    _write_json(
        settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
        {"fetchNews": "false", "checkForUpdates": False},
    )
    _write_json(
        settings / "@jupyter-widgets" / "jupyterlab-manager" / "plugin.jupyterlab-settings",
        {"saveState": True},
    )
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_PATH": str(tmp_path / "data"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    log_path = tmp_path / "jupyterlab.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
    ]
    if os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        server = Lab(f"http://127.0.0.1:{port}", token, root, log_path)
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    fail(f"JupyterLab exited early:\n{log_path.read_text()[-3000:]}")
                try:
                    server.api("/api/status")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        fail(f"JupyterLab did not start:\n{log_path.read_text()[-3000:]}")
                    time.sleep(0.5)
            yield server
        finally:
            try:  # kernels first, so none outlives the server
                for k in server.api("/api/kernels") or []:
                    server.api(f"/api/kernels/{k['id']}", method="DELETE")
            except OSError:
                pass
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def parameterised_copy(notebook: Path, folder: Path, params: dict) -> Path:
    """``notebook`` copied into ``folder`` with papermill's injected-parameters cell.

    The server autosaves, so the browser never opens the repository's copy.
    """
    dest = folder / notebook.name
    if not params:
        shutil.copy(notebook, dest)
        return dest
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(notebook)), params)
    nbformat.write(nb, dest)
    return dest


# -- what the page does --------------------------------------------------------------------


@dataclass
class Watch:
    """Requests that leave localhost (or, for a file page, leave the file) and console errors."""

    allow_file: str | None = None  # a file:// page: only this file may be fetched
    external: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0

    def attach(self, page) -> Watch:
        page.on("request", self._request)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        return self

    def outside(self, url: str) -> bool:
        """Whether ``url`` leaves localhost (or, for a file page, leaves the file)."""
        scheme = urlparse(url).scheme
        if scheme in ("data", "blob", "about"):
            return False
        if self.allow_file is not None:
            return url.split("#")[0] != self.allow_file
        local = scheme in ("ws", "wss", "http", "https") and urlparse(url).hostname in LOCAL_HOSTS
        return not local

    def _request(self, request) -> None:
        self.requests += 1
        if self.outside(request.url):
            self.external.append(request.url)

    def _console(self, msg) -> None:
        if msg.type == "error":
            self.errors.append(f"console: {msg.text}")


def block_outside(page, watch: Watch) -> None:
    """Abort every request that :class:`Watch` would report, so nothing leaves the machine."""

    def route(r):  # the "request" listener records it; this only stops it
        if watch.outside(r.request.url):
            r.abort()
        else:
            r.continue_()

    page.route("**/*", route)


# -- JupyterLab ------------------------------------------------------------------------------


def dismiss_dialogs(page) -> None:
    """Accept any dialog (kernel choice, build notice) that would block the menus."""
    for _ in range(5):
        dialog = page.locator(".jp-Dialog")
        if dialog.count() == 0:
            return
        accept = dialog.locator(".jp-Dialog-button.jp-mod-accept")
        (accept.first if accept.count() else dialog.locator("button").last).click()
        page.wait_for_timeout(300)


STARTED = """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
  .some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))"""

ALL_RUN = """() => {
  const p = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
    .map(e => e.textContent.trim());
  const err = document.querySelector(
    '.jp-OutputArea [data-mime-type="application/vnd.jupyter.error"]');
  return err !== null || (p.length > 0 && p.every(t => /\\[\\d+\\]/.test(t)));
}"""


def open_notebook(page, lab: Lab, name: str) -> None:
    page.goto(lab.open_url(name), timeout=120_000)
    page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=120_000)
    page.wait_for_timeout(1000)
    dismiss_dialogs(page)


def run_all(page, timeout_s: float, timeout_error) -> float:
    """Run -> Run All Cells; wait until every cell ran (or one failed). Returns seconds."""
    t0 = time.monotonic()
    # On a cold, busy machine the kernel may still be starting and the first request can
    # be dropped, so ask again until a cell starts.
    for _attempt in range(4):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            page.wait_for_function(STARTED, timeout=90_000, polling=1000)
            break
        except timeout_error:
            dismiss_dialogs(page)
    page.wait_for_function(ALL_RUN, timeout=timeout_s * 1000, polling=1000)
    errors = page.locator('.jp-OutputArea [data-mime-type="application/vnd.jupyter.error"]')
    if errors.count():
        raise AssertionError("a cell failed:\n" + errors.first.inner_text()[:3000])
    return time.monotonic() - t0


def save(page) -> None:
    """Ctrl+S, and wait until the panel no longer shows unsaved changes."""
    page.locator(".jp-NotebookPanel .jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Escape")
    page.keyboard.press("Control+s")
    page.wait_for_function(
        "() => !document.querySelector('.jp-NotebookPanel .jp-mod-dirty, "
        ".lm-TabBar-tab.jp-mod-current.jp-mod-dirty')",
        timeout=60_000,
    )
    page.wait_for_timeout(1000)


def code_cell(page, marker: str):
    """The code cell whose source contains ``marker`` (exactly one)."""
    cells = page.locator(".jp-CodeCell").filter(has=page.locator(".jp-InputArea", has_text=marker))
    n = cells.count()
    if n != 1:
        raise AssertionError(f"{n} code cells contain {marker!r}; the test needs exactly one")
    return cells.first


FINGERPRINT_JS = """root => JSON.stringify((root.matches && root.matches('.js-plotly-plot') ? [root]
  : [...root.querySelectorAll('.js-plotly-plot')]).map(gd =>
  [(gd.data || []).map(t => [t.x, t.y, t.z, t.text, t.visible, t.marker && t.marker.color]),
   gd.layout && gd.layout.title && gd.layout.title.text]))"""


def fingerprint(locator) -> str:
    """The figures' data and titles inside ``locator``: it changes when a figure redraws."""
    return locator.evaluate(FINGERPRINT_JS)


def wait_changed(page, locator, before: str, what: str, timeout_s: float = 120) -> float:
    """Wait until the figures in ``locator`` differ from ``before``; return the seconds taken."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if fingerprint(locator) != before:
            return time.monotonic() - t0
        page.wait_for_timeout(200)
    raise AssertionError(f"{what}: the figure did not change within {timeout_s:.0f} s")


def output_width(page) -> float:
    return page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('.jp-OutputArea-output')]"
        ".map(e => e.getBoundingClientRect().width), 0)"
    )


# -- layout, read off the rendered SVG -------------------------------------------------------

LAYOUT_JS = r"""
root => {
  root = root || document;
  const TOL = 1.5;
  const problems = [];
  const rect = el => el.getBoundingClientRect();
  const hit = (a, b) =>
    Math.min(a.right, b.right) - Math.max(a.left, b.left) > TOL &&
    Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > TOL;
  // a text's real outline: its local bbox through its screen transform (rotation included)
  const quad = t => {
    const b = t.getBBox(), m = t.getScreenCTM();
    if (!m || b.width === 0) return null;
    return [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height],
            [b.x, b.y + b.height]].map(([x, y]) => [m.a * x + m.c * y + m.e,
                                                    m.b * x + m.d * y + m.f]);
  };
  const sepAxis = (p, q) => {  // separating axis test for two convex quads
    for (const poly of [p, q]) {
      for (let i = 0; i < 4; i++) {
        const [x1, y1] = poly[i], [x2, y2] = poly[(i + 1) % 4];
        const nx = y2 - y1, ny = x1 - x2, len = Math.hypot(nx, ny) || 1;
        const pr = pts => pts.map(([x, y]) => (x * nx + y * ny) / len);
        const a = pr(p), c = pr(q);
        if (Math.max(...a) - TOL <= Math.min(...c) || Math.max(...c) - TOL <= Math.min(...a))
          return true;
      }
    }
    return false;
  };
  const label = t => JSON.stringify((t.textContent || '').slice(0, 30));
  const figs = [...root.querySelectorAll('.js-plotly-plot')];
  figs.forEach((gd, gi) => {
    const svg = gd.querySelector('.main-svg');
    if (!svg) { problems.push(`figure ${gi}: not drawn`); return; }
    const name = `figure ${gi} (${JSON.stringify(((gd.layout || {}).title || {}).text || '')
      .slice(0, 60)})`;
    const box = rect(gd);
    if (box.width < 50) return;  // hidden (a collapsed tab)
    // a figure stays inside its box and its output area (a flex row once left it 700 px)
    const host = gd.closest('.jp-OutputArea-output, .jp-Cell-outputArea') || document.body;
    if (box.width > rect(gd.parentElement).width + 2 || box.right > rect(host).right + 2)
      problems.push(`${name}: ${Math.round(box.width)} px wide, past its box or output area`);
    // a figure without a set width fills its box (a live widget once stayed at 700 px)
    const drawn = rect(svg).width;
    if (drawn > box.width + 2)
      problems.push(`${name}: drawn ${Math.round(drawn)} px wide in a ${Math.round(box.width)}` +
                    ' px box, so it is clipped');
    if (!(gd.layout || {}).width && drawn < box.width - 4)
      problems.push(`${name}: drawn ${Math.round(drawn)} px wide in a ${Math.round(box.width)}` +
                    ' px area');
    const areas = [...gd.querySelectorAll('.draglayer .nsewdrag')].map(rect)
      .filter(r => r.width > 0);
    const bars = [...gd.querySelectorAll('g.colorbar')].map(rect).filter(r => r.width > 0);
    const axes = [...gd.querySelectorAll('.xaxislayer-above, .yaxislayer-above')];
    const ticks = axes.map(ax => [...ax.querySelectorAll('.xtick text, .ytick text')]
      .filter(t => (t.textContent || '').trim() && getComputedStyle(t).display !== 'none'
              && t.getAttribute('opacity') !== '0'));
    bars.forEach((b, bi) => {
      areas.forEach((a, ai) => { if (hit(a, b)) problems.push(
        `${name}: colorbar ${bi} overlaps plot area ${ai}`); });
      ticks.flat().forEach(t => { if (hit(rect(t), b)) problems.push(
        `${name}: colorbar ${bi} overlaps tick label ${label(t)}`); });
    });
    ticks.forEach(ts => {
      const qs = ts.map(quad);
      for (let i = 0; i < ts.length; i++) for (let j = i + 1; j < ts.length; j++) {
        if (qs[i] && qs[j] && !sepAxis(qs[i], qs[j])) {
          problems.push(`${name}: tick labels ${label(ts[i])} and ${label(ts[j])} overlap`);
          return;  // one per axis is enough to read
        }
      }
    });
    const notes = [...gd.querySelectorAll('.annotation-text')].filter(t => rect(t).width > 0);
    gd.querySelectorAll('.gtitle').forEach(t => {
      const r = rect(t);
      const over = [...ticks.flat(), ...notes].find(x => hit(rect(x), r));
      if (over) problems.push(`${name}: the title overlaps ${label(over)}`);
    });
    const edge = rect(svg);
    gd.querySelectorAll('.gtitle, .g-gtitle text, .annotation-text').forEach(t => {
      const r = rect(t);
      if (r.width === 0) return;
      if (r.left < edge.left - TOL || r.right > edge.right + TOL || r.top < edge.top - TOL)
        problems.push(`${name}: title or annotation ${label(t)} is cut off`);
    });
  });
  return {figures: figs.length, problems};
}
"""


def layout_problems(locator) -> tuple[int, list[str]]:
    """``(figures seen, problems)`` for every plotly figure inside ``locator`` (or a page)."""
    out = locator.evaluate(LAYOUT_JS)
    return out["figures"], out["problems"]


# -- the shared copy ------------------------------------------------------------------------


def export_html(notebook: Path, dest: Path) -> Path:
    """The HTML a user shares: ``workbench export`` on the notebook JupyterLab saved."""
    subprocess.run(
        [sys.executable, "-m", "workbench.cli", "export", str(notebook), "--out", str(dest)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return dest


OFFLINE_CONTROLS_JS = """() => [...document.querySelectorAll('.wb-offline-controls')]
.map((bar, b) => {
  let el = bar.nextElementSibling;
  while (el && !el.classList.contains('wb-static-figure')) el = el.nextElementSibling;
  return {id: el ? el.id : null,
          inputs: [...bar.querySelectorAll('[data-control]')].map((i, k) =>
            ({key: (i.dataset.wbTest = b + '-' + k), name: i.getAttribute('data-control'),
              n: i.tagName === 'SELECT' ? i.options.length : Number(i.max) + 1,
              value: Number(i.value)}))};
})"""


def check_offline_page(browser, html: Path, artifacts: Path, viewports=None) -> dict:
    """Open ``html`` from disk with every outside request blocked; check what a reader sees.

    Returns ``{"figures", "controls", "external", "errors", "problems"}`` where
    ``controls`` counts offline controls that changed their figure.
    """
    viewports = viewports or [{"width": 1100, "height": 1000}, {"width": 1480, "height": 1000}]
    page = browser.new_page(viewport=viewports[0])
    url = html.resolve().as_uri()
    watch = Watch(allow_file=url).attach(page)
    block_outside(page, watch)
    try:
        page.goto(url, timeout=120_000)
        n_static = page.locator(".wb-static-figure").count()
        page.wait_for_function(
            "() => [...document.querySelectorAll('.wb-static-figure')]"
            ".every(d => d.querySelector('.main-svg'))",
            timeout=120_000,
        )
        page.wait_for_timeout(500)
        problems = []
        for vp in viewports:
            page.set_viewport_size(vp)
            page.wait_for_timeout(800)
            _, found = layout_problems(page)
            problems += [f"at {vp['width']} px: {p}" for p in found]
        changed, tried = 0, []
        for bar in page.evaluate(OFFLINE_CONTROLS_JS):
            fig = page.locator(f"#{bar['id']}")
            for inp in bar["inputs"]:
                if inp["n"] < 2:
                    continue
                before = fingerprint(fig)
                target = (inp["value"] + 1) % inp["n"] if inp["value"] != 0 else inp["n"] - 1
                control = page.locator(f"[data-wb-test='{inp['key']}']")
                control.evaluate(
                    "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); "
                    "el.dispatchEvent(new Event('change')); }",
                    target,
                )
                page.wait_for_timeout(300)
                tried.append(f"{bar['id']}:{inp['name']}")
                if fingerprint(fig) != before:
                    changed += 1
        if tried:  # the frames switched in must read as cleanly as the first ones
            page.set_viewport_size(viewports[0])
            page.wait_for_timeout(800)
            _, found = layout_problems(page)
            problems += [f"after switching, at {viewports[0]['width']} px: {p}" for p in found]
        page.screenshot(path=str(artifacts / f"{html.stem}_offline.png"), full_page=True)
        return {
            "figures": n_static,
            "controls": changed,
            "tried": tried,
            "external": list(watch.external),
            "errors": list(watch.errors),
            "problems": problems,
        }
    finally:
        page.close()
