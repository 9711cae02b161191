"""Checks that run on every freshly loaded model, registered by the layers above.

The load-time self-test needs the tracing core, which sits *above* ``models``; so instead
of ``models`` importing ``tracing``, ``workbench.tracing`` registers its self-test here
when it is imported (``import workbench`` always imports it). ``load_model`` runs every
registered check unless ``self_test=False``.

Example:
    >>> register_load_check(lambda model: None)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["load_checks", "register_load_check"]

_CHECKS: list[Callable[[Any], None]] = []


def register_load_check(check: Callable[[Any], None]) -> None:
    """Run ``check(model)`` on every model ``load_model`` returns (once per function)."""
    if check not in _CHECKS:
        _CHECKS.append(check)


def load_checks() -> list[Callable[[Any], None]]:
    """The registered checks, in registration order."""
    return list(_CHECKS)
