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
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

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
QUICKSTART = Path(__file__).resolve().parents[2] / "notebooks" / "00_quickstart.ipynb"
RUN_ALL_TIMEOUT_S = 420  # model load plus every cell, on 2 shared cores
SERVER_START_TIMEOUT_S = 120

_pw = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is missing: run scripts/browser_deps.sh"
)
sync_playwright = _pw.sync_playwright
PlaywrightTimeoutError = _pw.TimeoutError
if not CHROMIUM.exists():
    pytest.skip(
        "Debian's chromium is missing: run scripts/browser_deps.sh", allow_module_level=True
    )


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free localhost port, with a token; always shut down."""
    import secrets

    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(QUICKSTART, root / QUICKSTART.name)  # the server autosaves: never the repo copy
    # The notebook names the project's kernel "workbench": make that this interpreter.
    _write_json(
        tmp_path / "data" / "kernels" / "workbench" / "kernel.json",
        {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "workbench (.venv)",
            "language": "python",
        },
    )
    settings = tmp_path / "settings" / "@jupyterlab"
    # every cell in the DOM (no virtual scrolling), and no news or update toasts
    _write_json(
        settings / "notebook-extension" / "tracker.jupyterlab-settings", {"windowingMode": "none"}
    )
    _write_json(
        settings / "apputils-extension" / "notification.jupyterlab-settings",
        {"fetchNews": "false", "checkForUpdates": False},
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
        f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
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
                    pytest.fail(f"JupyterLab exited early:\n{log_path.read_text()[-3000:]}")
                try:
                    server.api("/api/status")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"JupyterLab did not start:\n{log_path.read_text()[-3000:]}")
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


def _dismiss_dialogs(page) -> None:
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
  return p.length > 0 && p.every(t => /\\[\\d+\\]/.test(t));
}"""


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


def test_quickstart_runs_and_its_widgets_respond(lab, tmp_path):
    artifacts = Path(os.environ.get("WORKBENCH_BROWSER_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("dialog", lambda d: d.accept())  # window.alert/confirm, if any
        try:
            page.goto(f"{lab.url}/lab/tree/{QUICKSTART.name}?token={lab.token}", timeout=120_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=120_000)
            page.wait_for_timeout(1000)
            _dismiss_dialogs(page)

            # Run -> Run All Cells. On a cold, busy machine the kernel may still be starting
            # and the first request can be dropped, so ask again until a cell starts.
            t0 = time.monotonic()
            for _attempt in range(4):
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
                try:
                    page.wait_for_function(STARTED, timeout=90_000, polling=1000)
                    break
                except PlaywrightTimeoutError:
                    _dismiss_dialogs(page)
            page.wait_for_function(ALL_RUN, timeout=RUN_ALL_TIMEOUT_S * 1000, polling=1000)
            run_all_s = time.monotonic() - t0
            errors = page.locator('[data-mime-type="application/vnd.jupyter.error"]')
            assert errors.count() == 0, errors.first.inner_text()[:2000]

            # the live widgets rendered, not their static copies
            page.wait_for_function(
                "() => document.querySelectorAll('.jp-OutputArea .js-plotly-plot').length >= 4",
                timeout=60_000,
            )
            assert page.locator(".jp-OutputArea .wb-static-figure").count() == 0
            page.screenshot(path=str(artifacts / "quickstart_after_run.png"), full_page=True)

            # 1. a head picker re-slices the attention figure
            attn = page.locator(".jp-CodeCell", has_text="wbw.AttentionView(")
            before_title, before_z = _title(attn), _trace(attn, "z")
            assert before_title == "Attention, layer 3 head 0"
            attn.locator(".widget-dropdown select").select_option(label="head 2")
            assert _wait_title(page, attn, before_title) == "Attention, layer 3 head 2"
            assert _trace(attn, "z") != before_z

            # 2. an ablation toggle reruns the model (debounced) and updates the bars
            abl = page.locator(".jp-CodeCell", has_text="wbw.AblationView(")
            before_title, before_x = _title(abl), _trace(abl, "x", 1)
            assert "heads [4] ablated" in before_title
            abl.locator(".widget-toggle-button", has_text="1").first.click()
            now = _wait_title(page, abl, before_title)
            assert "heads [1, 4] ablated" in now, now
            assert _trace(abl, "x", 1) != before_x

            # 3. typing a prompt recomputes the next-token bars once typing stops
            nxt = page.locator(".jp-CodeCell", has_text="wbw.NextTokenView(")
            box = nxt.locator(".widget-textarea textarea").first  # PromptBox keeps newlines
            before_x = _trace(nxt, "x")
            box.click()
            box.press("End")
            box.press_sequentially(" not", delay=40)
            deadline = time.monotonic() + 120
            while _trace(nxt, "x") == before_x and time.monotonic() < deadline:
                page.wait_for_timeout(250)
            assert _trace(nxt, "x") != before_x, "the next-token bars did not follow the prompt"
            for name, cell in [("next", nxt), ("attention", attn), ("ablation", abl)]:
                cell.screenshot(path=str(artifacts / f"quickstart_{name}.png"))

            # 4. four keystrokes cost one recompute, not four: ask the kernel
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
            page.screenshot(path=str(artifacts / "quickstart_after_edits.png"), full_page=True)
            print(f"\nrun all cells in the browser: {run_all_s:.1f} s")
        except Exception:
            page.screenshot(path=str(artifacts / "quickstart_failure.png"), full_page=True)
            print(lab.log.read_text()[-3000:])
            raise
        finally:
            browser.close()
