"""Activations at intervention sites, and the gradient of a metric with respect to them.

Gradient-based attribution (attribution patching, AtP) needs, for every component, the
activation in a clean and a corrupted run and the gradient of a metric in the corrupted
run. Both come from the same trace body as every other capture: a :class:`SiteProbe` is
an ordinary intervention that records the value flowing through a site and, when
gradients are asked for, adds a zero tensor that requires grad. The gradient of the
metric with respect to that zero is the gradient with respect to the activation, and
the model computes exactly what it computes without the probe.

Sites are the intervention sites (``head_out``, ``attn_out``, ``mlp_hidden``,
``mlp_out``, ``resid_pre``, ``resid_post``) with their *raw* values, i.e. what an
:class:`ActivationPatch` at the same site writes: ``mlp_out`` is the MLP's output before
a post-MLP norm (Gemma-2, OLMo-2).

Example:
    >>> run = site_values(model, "The capital of France is", ["head_out", "mlp_out"],
    ...                   metric=lambda logits: logits[:, -1, paris].sum())
    >>> run.grads[(3, "head_out")].shape        # [batch, seq, heads, d_head]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from workbench.errors import InterventionError
from workbench.models.model import Prompts, Tokens, WorkbenchModel
from workbench.tracing.capture import Capture, capture, check_interventions, tokens_for
from workbench.tracing.interventions import Intervention
from workbench.tracing.provenance import Provenance

__all__ = ["PROBE_SITES", "SiteProbe", "SiteValues", "site_values"]

PROBE_SITES = ("resid_pre", "head_out", "attn_out", "mlp_hidden", "mlp_out", "resid_post")


@dataclass
class SiteProbe(Intervention):
    """Records the value at ``site_name`` of ``layer`` into ``store``; with ``grad``, also
    adds a zero that requires grad (its gradient is the activation's)."""

    site_name: str = "head_out"
    grad: bool = False
    store: dict[tuple[int, str], Any] = field(default_factory=dict, repr=False)

    @property
    def site(self) -> str:  # type: ignore[override]
        return self.site_name

    def _bind(self, model: Any, tokens: Any) -> None:
        super()._bind(model, tokens)
        if self.site_name not in PROBE_SITES:
            raise InterventionError(f"Cannot probe {self.site_name!r}; sites: {PROBE_SITES}.")

    def apply(self, value: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        if not self.grad:
            self.store[(self.layer, self.site_name)] = (value.detach().clone(), None)
            return value
        zero = torch.zeros_like(value, requires_grad=True)
        self.store[(self.layer, self.site_name)] = (value.detach().clone(), zero)
        return value + zero

    def spec(self) -> dict[str, Any]:
        return {"type": "SiteProbe", "layer": self.layer, "site": self.site_name}


@dataclass
class SiteValues:
    """Values (and gradients) at intervention sites of one run.

    Attributes:
        values: ``{(layer, site): tensor}`` raw values, shapes as in ``interventions.py``.
        grads: ``{(layer, site): tensor}`` gradient of the metric (zeros where the metric
            does not depend on the site); empty without a metric.
        metric: the metric's value (``None`` without one).
        logits: ``[batch, seq, vocab]`` (detached).
        captured: the capture of the run, with anything asked for in ``what``.
    """

    tokens: Tokens
    values: dict[tuple[int, str], torch.Tensor]
    grads: dict[tuple[int, str], torch.Tensor]
    metric: float | None
    logits: torch.Tensor
    provenance: Provenance
    captured: Capture | None = None
    final: torch.Tensor | None = None  # [batch, seq, d_model] with final=True


def site_values(
    model: WorkbenchModel,
    prompts: Prompts | Tokens,
    sites: Sequence[str],
    *,
    metric: Callable[[torch.Tensor], torch.Tensor] | None = None,
    layers: Sequence[int] | None = None,
    interventions: Sequence[Intervention] = (),
    what: Sequence[str] = (),
    final: bool = False,
) -> SiteValues:
    """One forward pass (and, with ``metric``, one backward pass) reading ``sites``.

    Args:
        sites: names from :data:`PROBE_SITES`, read at every layer of ``layers``.
        metric: ``fn(logits [batch, seq, vocab]) -> scalar tensor``; its gradient with
            respect to every probed value is returned in ``grads``.
        interventions: applied in the same run (probes come after them at a site).
        what: extra names to capture in the same run (e.g. ``"queries"``), detached.
        final: give ``metric`` the last layer's output ``[batch, seq, d_model]`` instead of
            the logits, and stop the forward there: the final norm and the unembedding
            run only where the metric applies them (e.g. at one position), in the forward
            and in the backward pass. ``logits`` is then empty.

    The model's parameters stop requiring gradients during the run (and get their flags
    back after it): the backward pass computes activation gradients only.
    """
    bad = [s for s in sites if s not in PROBE_SITES]
    if bad:
        raise InterventionError(f"Cannot probe {bad}; sites: {PROBE_SITES}.")
    tokens = tokens_for(model, prompts)
    layer_ids = model.check_layers(layers)
    store: dict[tuple[int, str], Any] = {}
    grad = metric is not None
    probes = [
        SiteProbe(layer=i, site_name=s, grad=grad, store=store) for i in layer_ids for s in sites
    ]
    ivs = [*check_interventions(interventions), *probes]
    flags = [(p, p.requires_grad) for p in model.hf.parameters()]
    try:
        if grad:
            for p, _ in flags:
                p.requires_grad_(False)
        if final:
            cap = capture(
                model,
                tokens,
                ["resid_post", *what],
                layers=[model.n_layers - 1] if not what else None,
                interventions=ivs,
                grad=grad,
            )
        else:
            cap = capture(model, tokens, ["logits", *what], interventions=ivs, grad=grad)
        result = _finish(cap, store, metric, tokens, final)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return result


def _finish(
    cap: Capture,
    store: dict[tuple[int, str], Any],
    metric: Callable[[torch.Tensor], torch.Tensor] | None,
    tokens: Tokens,
    final: bool = False,
) -> SiteValues:
    grad = metric is not None
    head = cap.resid_post[-1] if final else cap.logits  # [batch, seq, d_model | vocab]
    values = {k: v for k, (v, _) in store.items()}
    grads: dict[tuple[int, str], torch.Tensor] = {}
    value: float | None = None
    if grad:
        m = metric(head)
        if not isinstance(m, torch.Tensor) or m.numel() != 1:
            raise InterventionError(
                f"The metric must return a scalar tensor; got {type(m).__name__} "
                f"{getattr(m, 'shape', '')}."
            )
        keys = sorted(store)
        zeros = [store[k][1] for k in keys]
        if m.requires_grad:
            got = torch.autograd.grad(m, zeros, allow_unused=True)
        else:  # the metric does not depend on the model at all
            got = [None] * len(zeros)
        for k, g, z in zip(keys, got, zeros, strict=True):
            # a site the metric does not depend on has zero attribution, not NaN
            grads[k] = torch.zeros_like(z).detach() if g is None else g.detach()
        value = float(m.detach())
    for name, t in list(cap.tensors.items()):
        cap.tensors[name] = t.detach()
    logits = head.detach() if not final else torch.empty(0)
    result = SiteValues(tokens, values, grads, value, logits, cap.provenance, captured=cap)
    result.final = head.detach() if final else None
    return result
