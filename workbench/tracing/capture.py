"""Capture activations (and apply interventions) in one nnsight trace.

What can be captured, per layer, stacked over the captured layers:

============  =====================================================  ===========================
name          meaning                                                shape
============  =====================================================  ===========================
resid_pre     residual stream entering the layer                     [L, batch, seq, d_model]
resid_mid     residual stream between attention and MLP blocks       [L, batch, seq, d_model]
resid_post    residual stream leaving the layer (HF hidden_states)   [L, batch, seq, d_model]
attn_probs    attention probabilities per query head                 [L, batch, heads, q, k]
values        value vectors per key/value head                       [L, batch, kv, seq, d_head]
head_out      each head's output before the out-projection sums them [L, batch, seq, heads, d_head]
attn_out      what the attention block adds to the residual          [L, batch, seq, d_model]
mlp_out       what the MLP block adds to the residual                [L, batch, seq, d_model]
queries       queries as the attention function gets them           [L, batch, heads, seq, d_head]
keys          keys (per key/value head, after rotary/q-k norms)      [L, batch, kv, seq, d_head]
attn_scores   pre-softmax scores ``scale * q.k`` (before masking     [L, batch, heads, q, k]
              and any attention-logit soft-cap)
mlp_hidden    the MLP's hidden activations (out-projection input)    [L, batch, seq, d_mlp]
logits        final logits (with the family's soft-cap)              [batch, seq, vocab]
============  =====================================================  ===========================

``attn_out`` and ``mlp_out`` include the post-block norms of families that have them
(Gemma-2/3, OLMo-2), so that ``resid_post = resid_pre + attn_out + mlp_out`` always
holds. ``resid_mid`` is ``resid_pre + attn_out`` (for GPT-NeoX's parallel residual too).
Padded positions (``attention_mask == 0``) hold whatever the model computed there;
analyses must mask them.

This module is the one road into nnsight for a language model: every analysis traces
through :func:`capture` (or :func:`workbench.tracing.tail.run_from` for re-running the
tail of a model). What it offers beyond keeping tensors:

- ``transforms``: per name, reduce a tensor inside the trace before it is kept;
- ``reduce``: per layer, fold *several* of that layer's tensors into one small result
  inside the trace (``cap.reduced[layer]``), e.g. a sink logit from queries and keys;
- early stop: when no logits are asked for, the forward pass stops after the last layer
  that is read or edited, so later layers and the unembedding never run;
- ``layer_inputs``: keep what the chosen decoder layers received (hidden states, mask,
  rotary tables), so the model can be run again from any of them (``run_from``).

Example:
    >>> cap = capture(model, ["The capital of France is"], what=["attn_probs", "logits"])
    >>> cap.attn_probs.shape          # [layers, batch, heads, q, k]
    torch.Size([30, 1, 9, 5, 5])
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nnsight
import torch

from workbench.errors import InterventionError, WorkbenchError
from workbench.models.model import Prompts, Tokens, WorkbenchModel
from workbench.tracing.interventions import SITES, Intervention
from workbench.tracing.provenance import Provenance, provenance_for

__all__ = ["CAPTURABLE", "Capture", "LayerReduce", "capture", "run_with", "tokens_for"]

CAPTURABLE = (
    "resid_pre",
    "resid_mid",
    "resid_post",
    "queries",
    "keys",
    "attn_scores",
    "attn_probs",
    "values",
    "head_out",
    "attn_out",
    "mlp_hidden",
    "mlp_out",
    "logits",
)
_FROM_ATTN_OP = {"queries", "keys", "attn_scores", "values"}

Transform = Callable[[torch.Tensor, int], torch.Tensor]
# fn(tensors of one layer by name, layer) -> anything small (tensors, tuples of tensors)
LayerReduce = Callable[[dict[str, torch.Tensor], int], Any]


@dataclass
class Capture:
    """Captured tensors of one run, with the tokens and a provenance record.

    ``reduced[layer]`` holds what ``reduce`` returned for each captured layer;
    ``layer_inputs`` what the chosen decoder layers received (see :func:`capture`).
    """

    tokens: Tokens
    layers: list[int]
    tensors: dict[str, torch.Tensor]
    provenance: Provenance
    extras: dict[str, Any] = field(default_factory=dict)
    reduced: dict[int, Any] = field(default_factory=dict)
    layer_inputs: dict[int, tuple[tuple, dict]] = field(default_factory=dict)

    def __getattr__(self, name: str) -> torch.Tensor:
        tensors = self.__dict__.get("tensors", {})
        if name in tensors:
            return tensors[name]
        if name in CAPTURABLE:
            raise AttributeError(
                f"{name!r} was not captured; pass what=[..., {name!r}] to capture(). "
                f"Captured: {sorted(tensors)}."
            )
        raise AttributeError(name)

    def layer_index(self, layer: int) -> int:
        """Row of ``layer`` in the stacked per-layer tensors."""
        try:
            return self.layers.index(layer)
        except ValueError:
            raise WorkbenchError(
                f"Layer {layer} was not captured; captured layers: {self.layers}."
            ) from None


def tokens_for(model: WorkbenchModel, prompts: Prompts | Tokens) -> Tokens:
    return prompts if isinstance(prompts, Tokens) else model.tokenize(prompts)


def _check_what(what: Sequence[str]) -> set[str]:
    if isinstance(what, str):
        what = [what]
    unknown = [w for w in what if w not in CAPTURABLE]
    if unknown:
        raise WorkbenchError(f"Cannot capture {unknown}; capturable: {list(CAPTURABLE)}.")
    return set(what)


def check_interventions(interventions: Any) -> list[Intervention]:
    """``interventions`` as a list, or :class:`InterventionError` naming what arrived."""
    if isinstance(interventions, Intervention):
        name = type(interventions).__name__
        raise InterventionError(
            f"interventions must be a list of interventions, got a single {name}; "
            f"wrap it in a list: interventions=[{name}(...)]."
        )
    if isinstance(interventions, str | bytes) or not isinstance(interventions, Sequence):
        raise InterventionError(
            "interventions must be a list of Intervention objects (HeadAblation, Steering, ...), "
            f"got {type(interventions).__name__}."
        )
    for i, iv in enumerate(interventions):
        if not isinstance(iv, Intervention):
            raise InterventionError(
                f"interventions[{i}] is a {type(iv).__name__}, not an Intervention; use "
                "HeadAblation, AttentionKnockout, ActivationPatch, Steering, NeuronClamp or "
                "BlockAblation from workbench.tracing."
            )
    return list(interventions)


def _apply(ivs: list[Intervention], value: Any, ctx: dict[str, Any]) -> Any:
    for iv in ivs:
        value = iv.apply(value, ctx)
    return value


def _visit(envoy: Any, attr: str, ivs: list[Intervention], ctx: dict[str, Any]) -> Any:
    """Read ``envoy.<attr>`` (``input`` or ``output``); with edits, write the edited value
    back so the model computes on it. Returns the value the model goes on with."""
    value = getattr(envoy, attr)
    if ivs:
        new = _apply(ivs, value, ctx)
        if new is not value:  # a read-only probe returns its input: nothing to write
            setattr(envoy, attr, new)
        value = new
    return value


def _repeat_kv(x: torch.Tensor, group: int) -> torch.Tensor:
    """[b, kv, s, d] -> [b, kv * group, s, d]: query head h reads kv head h // group."""
    return x if group == 1 else x.repeat_interleave(group, dim=1)


@dataclass
class _Plan:
    """What one trace body does: which layers to read, what to keep, which edits to make."""

    want: set[str]
    layers: set[int]
    by_site: dict[tuple[int, str], list[Intervention]]
    transforms: dict[str, Transform]
    reduce: LayerReduce | None = None
    layer_inputs: set[int] = field(default_factory=set)
    start: int = 0

    @property
    def last(self) -> int:
        return max(
            [*self.layers, *(lay for lay, _ in self.by_site), *self.layer_inputs], default=-1
        )


def _body(model: WorkbenchModel, plan: _Plan, saved: dict[str, dict[int, Any]]) -> None:
    """The trace body: visit every site in forward order, edit, then keep or reduce."""
    a = model.adapter
    want, transforms = plan.want, plan.transforms

    for i in range(plan.start, plan.last + 1):
        cap = i in plan.layers
        ivs = {s: plan.by_site.get((i, s), []) for s in SITES}
        layer = model.layer(i)
        here: dict[str, Any] = {}

        def keep(name: str, value: Any, i: int = i, here: dict[str, Any] = here) -> None:
            fn = transforms.get(name)
            value = fn(value, i) if fn else value
            if plan.reduce is not None:
                here[name] = value
            else:
                saved.setdefault(name, {})[i] = nnsight.save(value)

        if i in plan.layer_inputs:
            saved.setdefault("layer_inputs", {})[i] = nnsight.save(layer.inputs)
        if ivs["resid_pre"] or (cap and want & {"resid_pre", "resid_mid"}):
            x = _visit(layer, "input", ivs["resid_pre"], {})
            if cap and want & {"resid_pre", "resid_mid"}:
                keep("resid_pre", x)
        ctx: dict[str, Any] = {}
        from_op = want & _FROM_ATTN_OP if cap else set()
        need_values = "values" in from_op or any(
            getattr(iv, "needs_values", False) for iv in ivs["head_out"]
        )
        if ivs["attn_inputs"] or need_values or from_op:
            op = model.attention_op(i)
            if ivs["attn_inputs"]:
                op.inputs = _apply(ivs["attn_inputs"], op.inputs, ctx)
            args = op.inputs[0]  # (module, query, key, value, mask, ...) in head layout
            if need_values:
                ctx["values"] = args[3]  # [batch, kv_heads, seq, d_head]
            if "queries" in from_op:
                keep("queries", args[1])
            if "keys" in from_op:
                keep("keys", args[2])
            if "attn_scores" in from_op:
                k = _repeat_kv(args[2], a.kv_group)
                keep("attn_scores", (args[1] @ k.transpose(-1, -2)) * model.attention_scale(i))
            if "values" in from_op:
                keep("values", ctx["values"])
        if ivs["head_out"] or (cap and "head_out" in want):
            o_proj = model.o_proj(i)
            h = o_proj.input
            b, s = h.shape[0], h.shape[1]
            h = h.reshape(b, s, a.n_heads, a.head_dim)
            if ivs["head_out"]:
                new = _apply(ivs["head_out"], h, ctx)
                if new is not h:  # a read-only probe returns its input: nothing to write
                    o_proj.input = new.reshape(b, s, a.n_heads * a.head_dim)
                h = new
            if cap and "head_out" in want:
                keep("head_out", h)
        need_attn_out = cap and want & {"attn_out", "resid_mid"}
        if ivs["attn_out"] or need_attn_out or (cap and "attn_probs" in want):
            attn = model.attn(i)
            out = attn.output
            if cap and "attn_probs" in want:
                keep("attn_probs", out[1])
            if ivs["attn_out"]:
                new = _apply(ivs["attn_out"], out[0], ctx)
                if new is not out[0]:
                    attn.output = (new, *out[1:])
            if need_attn_out:
                contrib = model.post_attn_norm(i).output if a.post_attn_norm else attn.output[0]
                keep("attn_out", contrib)
        if ivs["mlp_hidden"] or (cap and "mlp_hidden" in want):
            hidden = _visit(model.mlp_out_proj(i), "input", ivs["mlp_hidden"], ctx)
            if cap and "mlp_hidden" in want:
                keep("mlp_hidden", hidden)
        if ivs["mlp_out"] or (cap and "mlp_out" in want):
            raw = _visit(model.mlp(i), "output", ivs["mlp_out"], ctx)
            if cap and "mlp_out" in want:
                keep("mlp_out", model.post_mlp_norm(i).output if a.post_mlp_norm else raw)
        if ivs["resid_post"] or (cap and "resid_post" in want):
            y = _visit(layer, "output", ivs["resid_post"], ctx)
            if cap and "resid_post" in want:
                keep("resid_post", y)
        if cap and plan.reduce is not None:
            saved.setdefault("reduced", {})[i] = nnsight.save(plan.reduce(here, i))
    if "logits" in want:
        logits = a.softcap_logits(model.envoy(a.unembed).output)
        fn = transforms.get("logits")
        saved.setdefault("logits", {})[-1] = nnsight.save(fn(logits, -1) if fn else logits)


def _bind_all(
    model: WorkbenchModel, tokens: Tokens, interventions: Sequence[Intervention]
) -> dict[tuple[int, str], list[Intervention]]:
    by_site: dict[tuple[int, str], list[Intervention]] = {}
    for iv in interventions:
        bound = iv.bind(model, tokens)  # a bound copy: the user's object is never changed
        by_site.setdefault((bound.layer, bound.site), []).append(bound)
    return by_site


def _open_trace(model: WorkbenchModel, *args: Any, **kwargs: Any) -> Any:
    """``model.nn.trace`` with the settings every workbench trace shares."""
    # use_cache=False: one forward pass needs no key/value cache, and a cache kept alive by
    # a trace that stops early only costs memory.
    if getattr(model, "remote", False):
        kwargs["remote"] = True
    if "fn" not in kwargs:
        kwargs["use_cache"] = False
    return model.nn.trace(*args, **kwargs)


def capture(
    model: WorkbenchModel,
    prompts: Prompts | Tokens,
    what: Sequence[str] = ("resid_post", "logits"),
    *,
    layers: Sequence[int] | None = None,
    interventions: Sequence[Intervention] = (),
    transforms: dict[str, Transform] | None = None,
    reduce: LayerReduce | None = None,
    layer_inputs: Sequence[int] = (),
    grad: bool = False,
    provenance: bool = True,
) -> Capture:
    """Run ``prompts`` through ``model`` once and keep only ``what`` was asked for.

    Args:
        what: names from :data:`CAPTURABLE`.
        layers: which layers to keep (default all); negative indices count from the end.
        interventions: edits applied in the same trace (see ``interventions.py``). They
            are bound to copies; the objects you pass are never changed.
        transforms: per name, ``fn(tensor, layer) -> tensor`` run *inside* the trace
            before saving, e.g. a norm or a mean, so big tensors never leave the trace.
        reduce: ``fn({name: tensor}, layer) -> result`` run inside the trace once per
            captured layer, after its last site; ``cap.reduced[layer]`` holds the results
            and the per-layer tensors themselves are not kept.
        layer_inputs: layers whose inputs (args and keyword args of the decoder layer)
            are kept in ``cap.layer_inputs``, for :func:`workbench.tracing.run_from`.
        grad: keep the autograd graph (off by default: traces run under no_grad).

    Without ``"logits"`` in ``what``, the forward pass stops after the last layer it
    reads or edits.

    Example:
        >>> cap = capture(model, "Hello world", ["queries", "keys"], layers=[0],
        ...               reduce=lambda t, i: (t["queries"] @ t["keys"].mT).amax())
        >>> cap.reduced[0]
    """
    want = _check_what(what)
    interventions = check_interventions(interventions)
    tokens = tokens_for(model, prompts)
    layer_list = model.check_layers(layers)
    if want & {"attn_probs"} or any(iv.site == "attn_inputs" for iv in interventions):
        model.ensure_eager()
    per_layer = want - {"logits"}
    if reduce is not None and not per_layer:
        raise WorkbenchError("reduce= needs at least one per-layer name in what=.")
    plan = _Plan(
        want=want,
        layers=set(layer_list) if per_layer else set(),
        by_site=_bind_all(model, tokens, interventions),
        transforms=transforms or {},
        reduce=reduce,
        layer_inputs=set(model.check_layers(layer_inputs)),
    )
    saved: dict[str, dict[int, Any]] = {}
    stop = "logits" not in want
    ctx = torch.enable_grad() if grad else torch.no_grad()
    with ctx, _open_trace(model, tokens.input_ids, attention_mask=tokens.attention_mask) as tracer:
        _body(model, plan, saved)
        if stop:  # nothing is read after the last layer: skip the rest of the forward
            tracer.stop()
    if stop:
        gc.collect(1)  # the stop's exception holds the forward's frames in a cycle
    tensors: dict[str, torch.Tensor] = {}
    for name, per in saved.items():
        if name in ("reduced", "layer_inputs"):
            continue
        if name == "logits":
            tensors[name] = per[-1]
        elif reduce is None:
            tensors[name] = torch.stack([per[i] for i in layer_list])
    if "resid_mid" in want and reduce is None:
        tensors["resid_mid"] = tensors["resid_pre"] + tensors["attn_out"]
    for name in list(tensors):
        if name not in want:
            del tensors[name]
    prov = (
        provenance_for(model, tokens, interventions, what=sorted(want), layers=layer_list)
        if provenance
        else None
    )
    return Capture(
        tokens,
        layer_list,
        tensors,
        prov,  # type: ignore[arg-type]
        reduced=dict(saved.get("reduced", {})),
        layer_inputs=dict(saved.get("layer_inputs", {})),
    )


def run_with(
    model: WorkbenchModel,
    prompts: Prompts | Tokens,
    interventions: Sequence[Intervention] = (),
) -> torch.Tensor:
    """Logits [batch, seq, vocab] of one run with ``interventions`` applied."""
    return capture(model, prompts, ["logits"], interventions=interventions).logits
