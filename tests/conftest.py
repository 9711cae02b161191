"""Shared fixtures: seeded RNGs, one thread per test process, cached models."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    # Two cores on CI: more threads than cores only adds contention.
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded SmolLM2-135M-Instruct (skips only if the package is missing)."""
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("gguf is not installed")
    import workbench as wb
    from workbench.errors import EmbeddedModelMissingError

    try:
        return wb.load_model()
    except EmbeddedModelMissingError as exc:  # CI installs it; say loudly if not
        pytest.skip(str(exc))


def need_embedded_model() -> None:
    """Skip, as the ``embedded_model`` fixture does, where the embedded model is missing.

    For tests that start their own process (a notebook, a JupyterLab kernel) and need
    only the file, not the model loaded here.
    """
    from workbench.errors import EmbeddedModelMissingError
    from workbench.models.embedded import embedded_gguf_path

    if importlib.util.find_spec("gguf") is None:
        pytest.skip("gguf is not installed")
    try:
        embedded_gguf_path()
    except EmbeddedModelMissingError as exc:  # CI installs it; say loudly if not
        pytest.skip(str(exc))
