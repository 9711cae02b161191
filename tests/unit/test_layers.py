"""The architecture, enforced: layers import downwards only, widgets never touch models
or nnsight, private names stay inside their package, and only workbench/tracing traces a
language model (the Bigram-Backcopy toy, a model of our own, keeps its own probes)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "workbench"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _package_of(path: Path) -> str:
    """Top-level package of a module file: ``workbench/tracing/tail.py`` -> ``tracing``."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if rel.parts else ""


def test_import_contracts_hold():
    pytest.importorskip("importlinter")
    # a subprocess: import-linter configures logging, which would leak into later tests
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            str(ROOT / "pyproject.toml"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, (
        "An import breaks a layer contract in pyproject.toml (`lint-imports` shows which):\n"
        + run.stdout[-3000:]
        + run.stderr[-2000:]
    )


def _private_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    own = _package_of(path)
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("workbench"):
            parts = node.module.split(".")
            other = parts[1] if len(parts) > 1 else ""
            if other == own:
                continue
            private_module = any(p.startswith("_") for p in parts[1:])
            names = [a.name for a in node.names if a.name.startswith("_")]
            if private_module or names:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module} {names}")
    return bad


def test_no_private_name_is_imported_across_packages():
    bad = [b for p in SOURCES for b in _private_imports(p)]
    assert not bad, "private names imported from another package:\n" + "\n".join(bad)


def _trace_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "trace"
    ]


def test_only_the_tracing_core_traces_a_language_model():
    outside = [
        call
        for p in SOURCES
        if _package_of(p) not in ("tracing", "toy")
        for call in _trace_calls(p)
    ]
    assert not outside, "nnsight traces outside workbench/tracing:\n" + "\n".join(outside)


def test_family_behaviour_is_read_from_the_config_only_in_models():
    """Soft-caps, post-norms, parallel residual: the adapter's, not each analysis's copy."""
    offenders = []
    for p in SOURCES:
        if _package_of(p) in ("models", "toy"):
            continue
        text = p.read_text()
        for needle in ("final_logit_softcapping", "use_parallel_residual", ".config."):
            if needle in text:
                offenders.append(f"{p.relative_to(ROOT)}: {needle}")
    assert not offenders, "family behaviour read outside workbench/models:\n" + "\n".join(offenders)
