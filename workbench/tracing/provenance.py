"""Provenance records: enough to rerun a result and to tell two results apart."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

__all__ = ["Provenance", "provenance_for"]


@dataclass(frozen=True)
class Provenance:
    """Where a result came from.

    Example:
        >>> cap = wb.capture(model, "Hello")   # doctest: +SKIP
        >>> cap.provenance.weight_hash         # doctest: +SKIP
        'sha256:3b1f...'
    """

    model_id: str
    architecture: str
    weight_hash: str
    dtype: str
    device: str
    attn_implementation: str
    torch_version: str
    transformers_version: str
    nnsight_version: str
    python_version: str
    tokens: list[list[int]]
    interventions: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@cache  # importlib.metadata reads files; a capture should not pay that every time
def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def provenance_for(
    model: Any,
    tokens: Any = None,
    interventions: list[Any] | None = None,
    **settings: Any,
) -> Provenance:
    """A :class:`Provenance` for ``model`` run on ``tokens`` with ``interventions``."""
    return Provenance(
        model_id=model.model_id,
        architecture=model.adapter.architecture,
        weight_hash=model.weight_hash(),
        dtype=str(model.dtype).removeprefix("torch."),
        device=str(model.device),
        attn_implementation=model.attn_implementation,
        torch_version=_version("torch"),
        transformers_version=_version("transformers"),
        nnsight_version=_version("nnsight"),
        python_version=platform.python_version(),
        tokens=tokens.to_list() if tokens is not None else [],
        interventions=[iv.spec() for iv in interventions or []],
        settings=settings,
    )
