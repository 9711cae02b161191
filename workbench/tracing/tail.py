"""Run the tail of a model again from a layer's cached input, many variants in one batch.

A sweep that edits layer ``l`` (ablating each head in turn, say) does not need to
recompute layers ``0 .. l-1`` for every edit: one clean :func:`capture` with
``layer_inputs=`` keeps what each decoder layer received (hidden states, mask, rotary
tables, positions), and :func:`run_from` runs layers ``l .. L-1`` on it. Each variant is
one copy of the batch with its own interventions, so all the heads of a layer share
one batched pass.

nnsight cannot start a model's own forward in the middle, so the trace drives the model
with a small function (``trace(..., fn=...)``) that calls the same HF decoder layers in
order; the interventions are ordinary edits inside that trace, made by the same trace
body as :func:`capture`. What the function returns is ``head(final hidden states)``,
for example loss sums through :meth:`WorkbenchModel.logits_of` in chunks, so that the
``[copies * batch, seq, vocab]`` logits never exist at once.

Example:
    >>> clean = capture(model, tokens, ["logits"], layer_inputs=range(model.n_layers))
    >>> variants = [[HeadAblation(layer=3, heads=[h])] for h in range(model.n_heads)]
    >>> out = run_from(model, clean, 3, variants, head=lambda x: x[:, -1].norm(dim=-1))
    >>> out.shape          # [variants * batch]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from workbench.errors import InterventionError, WorkbenchError
from workbench.models.model import WorkbenchModel
from workbench.tracing.capture import (
    Capture,
    _bind_all,
    _body,
    _open_trace,
    _Plan,
    check_interventions,
)
from workbench.tracing.interventions import Intervention

__all__ = ["run_from"]


def _is_cache(x: Any) -> bool:
    from transformers.cache_utils import Cache

    return isinstance(x, Cache)


def _repeat(obj: Any, b: int, n: int) -> Any:
    """Repeat every batch-shaped tensor in ``obj`` ``n`` times along the batch (copy-major).

    Batch-shaped means at least 2-D with ``b`` rows (masks, rotary tables, position ids);
    1-D tensors such as ``cache_position`` stay. KV caches become ``None``.
    """
    if isinstance(obj, torch.Tensor):
        if obj.dim() >= 2 and obj.shape[0] == b and n > 1:
            return obj.repeat(n, *([1] * (obj.dim() - 1)))
        return obj
    if _is_cache(obj):
        return None
    if isinstance(obj, tuple):
        return tuple(_repeat(x, b, n) for x in obj)
    if isinstance(obj, list):
        return [_repeat(x, b, n) for x in obj]
    if isinstance(obj, dict):
        out = {k: _repeat(v, b, n) for k, v in obj.items()}
        if "use_cache" in out:
            out["use_cache"] = False
        return out
    return obj


class _PerCopy(Intervention):
    """Applies each copy's own interventions to its slice of a ``copies * batch`` value."""

    def __init__(self, layer: int, site: str, per_copy: list[list[Intervention]], b: int):
        self.layer = layer
        self._site = site
        self._per_copy = per_copy
        self._b = b

    @property
    def site(self) -> str:  # type: ignore[override]
        return self._site

    @property
    def needs_values(self) -> bool:
        return any(getattr(iv, "needs_values", False) for ivs in self._per_copy for iv in ivs)

    def apply(self, value: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        b = self._b
        parts = []
        for c, ivs in enumerate(self._per_copy):
            part = value[c * b : (c + 1) * b]
            if ivs:
                sub = {
                    k: v[c * b : (c + 1) * b] if isinstance(v, torch.Tensor) else v
                    for k, v in ctx.items()
                }
                for iv in ivs:
                    part = iv.apply(part, sub)
            parts.append(part)
        return torch.cat(parts)


def run_from(
    model: WorkbenchModel,
    clean: Capture,
    layer: int,
    variants: Sequence[Sequence[Intervention]],
    *,
    head: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Run layers ``layer .. L-1`` once per variant on ``clean``'s cached layer inputs.

    Args:
        clean: a :func:`capture` made with ``layer_inputs`` covering ``layer .. L-1``.
        variants: per copy of the batch, the interventions to apply (at ``layer`` or
            later; the attention-function site ``attn_inputs`` is not supported here).
        head: ``fn(hidden [copies * batch, seq, d_model]) -> tensor`` applied to the last
            layer's output, inside the trace.

    Returns:
        ``head``'s result, rows in copy-major order (copy ``c`` holds rows
        ``c * batch .. (c + 1) * batch - 1``).
    """
    layer = model.check_layer(layer)
    n_layers = model.n_layers
    missing = [i for i in range(layer, n_layers) if i not in clean.layer_inputs]
    if missing:
        raise WorkbenchError(
            f"run_from(layer={layer}) needs the inputs of layers {layer}..{n_layers - 1}, but "
            f"{missing} were not kept; capture with layer_inputs=range({layer}, {n_layers})."
        )
    if not variants:
        raise InterventionError("run_from needs at least one variant (a list of interventions).")
    tokens = clean.tokens
    b = tokens.shape[0]
    n = len(variants)
    bound: list[dict[tuple[int, str], list[Intervention]]] = []
    for ivs in variants:
        by_site = _bind_all(model, tokens, check_interventions(ivs))
        early = sorted({lay for lay, s in by_site if lay < layer or s == "attn_inputs"})
        if early:
            raise InterventionError(
                f"run_from(layer={layer}) can only apply tensor edits at layers >= {layer}; "
                f"got edits at layers {early} (or at the attention-function inputs)."
            )
        bound.append(by_site)
    keys = sorted({k for by_site in bound for k in by_site})
    plan_sites = {
        (lay, s): [_PerCopy(lay, s, [by_site.get((lay, s), []) for by_site in bound], b)]
        for lay, s in keys
    }
    memo: dict[int, Any] = {}

    def rep(obj: Any) -> Any:  # repeat each shared tensor (the mask, rotary tables) once
        key = id(obj)
        if key not in memo:
            memo[key] = _repeat(obj, b, n)
        return memo[key]

    calls = []
    for i in range(layer, n_layers):
        args, kwargs = clean.layer_inputs[i]
        calls.append((tuple(rep(x) for x in args[1:]), {k: rep(v) for k, v in kwargs.items()}))
    blocks = model.hf_module(model.adapter.layers)
    result: dict[str, torch.Tensor] = {}

    def tail(hidden: torch.Tensor) -> torch.Tensor:
        # Layers layer..L-1, then the head: the model's own forward from the middle.
        x = hidden
        for i, (args, kwargs) in zip(range(layer, n_layers), calls, strict=True):
            out = blocks[i](x, *args, **kwargs)
            x = out[0] if isinstance(out, tuple) else out
        result["out"] = head(x)
        return x

    x0 = clean.layer_inputs[layer][0][0]
    x0 = x0.repeat(n, *([1] * (x0.dim() - 1))) if n > 1 else x0  # [copies * batch, seq, d]
    plan = _Plan(want=set(), layers=set(), by_site=plan_sites, transforms={}, start=layer)
    with torch.no_grad(), _open_trace(model, x0, fn=tail):
        _body(model, plan, {})
    return result["out"]
