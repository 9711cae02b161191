"""Fixtures of the browser tier: a JupyterLab server, headless Chromium, an artifacts folder.

Needs Debian's ``chromium`` and Playwright for Python (``bash scripts/browser_deps.sh``
installs both; Playwright's own browser download is not used). Screenshots go to
``$WORKBENCH_BROWSER_ARTIFACTS`` when set, else to the test's tmp dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser import kit

_pw = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is missing: run scripts/browser_deps.sh"
)
if not kit.CHROMIUM.exists():
    pytest.skip(
        "Debian's chromium is missing: run scripts/browser_deps.sh", allow_module_level=True
    )


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free localhost port, with a token; always shut down."""
    with kit.start_lab(tmp_path, pytest.fail) as server:
        yield server


@pytest.fixture
def browser():
    with _pw.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(kit.CHROMIUM), args=kit.CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("WORKBENCH_BROWSER_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
