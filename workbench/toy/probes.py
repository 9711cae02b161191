"""Probes of the extreme-token phenomena on a toy model, captured with nnsight.

One nnsight trace per call reads, at every layer, the residual stream, the head's q/k/v
and its attention pattern; optional zero-ablations of attention or MLP outputs ("No Attn",
"No MLP") go into the same trace. From those it computes (per attention layer ``l``):

- ``attn_bos_L{l}``: attention on BOS at non-trigger queries (the sink mass);
- ``attn_bos_trigger_L{l}`` and ``attn_prev_trigger_L{l}``: attention on BOS and on the
  token before the trigger, at trigger queries (the backcopy head when active);
- ``sink_logit_L{l}``: ``q.k_BOS/sqrt(d)`` minus the mean of ``q.k_j/sqrt(d)`` over the
  other visible keys ``j >= 1``, at non-trigger queries;
- ``bos_value_norm_L{l}`` / ``other_value_norm_L{l}``: ``||v W_O||`` at BOS / mean over the
  other positions (the value-state drain);

and for every residual stream ``k = 0..n_layers`` (``k`` = layers applied so far, 0 is the
embedding, ``n_layers`` the input of the final LayerNorm):

- ``bos_resid_norm_{k}`` / ``other_resid_norm_{k}``: ``||h||`` at BOS / mean elsewhere.

Plus the losses of :func:`workbench.toy.bigram_backcopy.oracle_risks`.

``style="authors"`` computes three of them as the authors' code does (same column names):

- ``attn_bos_L{l}``: the average includes the BOS query itself (whose whole attention is
  on BOS), i.e. over BOS and every non-trigger query;
- ``sink_logit_L{l}``: the other keys leave out the query's own key (``1 <= j < i``), and
  the result is averaged per token type first (one mean per query character), then over
  the types;
- ``bos_value_norm_L{l}`` / ``other_value_norm_L{l}``: ``||v||`` before ``W_O``.

Example:
    >>> row = probe(model, task, task.sample(16, 256, seed=1))
    >>> row["attn_bos_L0"], row["backcopy_excess"]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import nnsight
import numpy as np
import pandas as pd
import torch

from workbench.toy.bigram_backcopy import BBTask, oracle_risks
from workbench.toy.model import ToyConfigError, ToyTransformer

__all__ = [
    "PROBE_STYLES",
    "ProbeCapture",
    "ablation_table",
    "bos_excess_table",
    "capture",
    "growth",
    "growth_table",
    "order_of_events",
    "probe",
    "probes_from_capture",
]


PROBE_STYLES = ("project", "authors")


@dataclass
class ProbeCapture:
    """Tensors read from one forward pass. ``A`` = number of attention layers.

    Attributes:
        resid: ``n_layers + 1`` tensors ``[B, T, d]``; ``resid[k]`` is after ``k`` layers.
        q, k, v: ``{layer: [B, T, d]}`` for layers with attention.
        probs: ``{layer: [B, Tq, Tk]}`` attention patterns.
        value_out: ``{layer: [B, T, d]}``, ``v W_O`` per source position.
        logits: ``[B, T, vocab]``.
    """

    resid: list[torch.Tensor]
    q: dict[int, torch.Tensor] = field(default_factory=dict)
    k: dict[int, torch.Tensor] = field(default_factory=dict)
    v: dict[int, torch.Tensor] = field(default_factory=dict)
    probs: dict[int, torch.Tensor] = field(default_factory=dict)
    value_out: dict[int, torch.Tensor] = field(default_factory=dict)
    logits: torch.Tensor | None = None


def _wrap(model: ToyTransformer | nnsight.NNsight) -> tuple[ToyTransformer, nnsight.NNsight]:
    if isinstance(model, nnsight.NNsight):
        return model._module, model  # nnsight 0.8 keeps the wrapped module here
    return model, nnsight.NNsight(model)


def capture(
    model: ToyTransformer | nnsight.NNsight,
    tokens: torch.Tensor,
    *,
    ablate_attn: Iterable[int] = (),
    ablate_mlp: Iterable[int] = (),
) -> ProbeCapture:
    """Run ``tokens`` ``[B, T]`` through the model in one nnsight trace and keep what probes need.

    ``ablate_attn`` / ``ablate_mlp`` zero the attention / MLP output of those layers inside
    the same trace; the model itself is left unchanged afterwards.
    """
    raw, nm = _wrap(model)
    raw.check_tokens(tokens)
    ablate_attn, ablate_mlp = set(ablate_attn), set(ablate_mlp)
    n_layers = len(raw.blocks)
    for name, layers in (("ablate_attn", ablate_attn), ("ablate_mlp", ablate_mlp)):
        bad = sorted(i for i in layers if not 0 <= i < n_layers)
        if bad:
            raise ToyConfigError(f"{name} has layers {bad} outside 0..{n_layers - 1}.")
    has_attn = [b.attn is not None for b in raw.blocks]
    has_mlp = [b.mlp is not None for b in raw.blocks]
    for i in ablate_attn:
        if not has_attn[i]:
            raise ToyConfigError(f"Layer {i} has no attention to ablate.")
    for i in ablate_mlp:
        if not has_mlp[i]:
            raise ToyConfigError(f"Layer {i} has no MLP to ablate.")

    resid, q, k, v, probs = [], {}, {}, {}, {}
    # Modules are read in forward order: nnsight raises OutOfOrderError otherwise.
    with torch.no_grad(), nm.trace(tokens):
        for i in range(n_layers):
            block = nm.blocks[i]
            resid.append(block.input.save())
            if has_attn[i]:
                q[i] = block.attn.q_proj.output.save()
                k[i] = block.attn.k_proj.output.save()
                v[i] = block.attn.v_proj.output.save()
                probs[i] = block.attn.probs.output.save()
                if i in ablate_attn:
                    block.attn.output = torch.zeros_like(block.attn.output)
            if has_mlp[i] and i in ablate_mlp:
                block.mlp.output = torch.zeros_like(block.mlp.output)
        resid.append(nm.blocks[n_layers - 1].output.save())
        logits = nm.output.save()
    with torch.no_grad():
        value_out = {i: raw.blocks[i].attn.o_proj(v[i]).cpu() for i in v}

    def cpu(d: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        return {i: t.detach().cpu() for i, t in d.items()}

    # Probes are cheap reductions: do them on the CPU whatever device the model is on.
    return ProbeCapture(
        [h.detach().cpu() for h in resid],
        cpu(q),
        cpu(k),
        cpu(v),
        cpu(probs),
        value_out,
        logits.detach().cpu(),
    )


def probe(
    model: ToyTransformer | nnsight.NNsight,
    task: BBTask,
    tokens: torch.Tensor,
    *,
    ablate_attn: Iterable[int] = (),
    ablate_mlp: Iterable[int] = (),
    style: Literal["project", "authors"] = "project",
) -> dict[str, float]:
    """All probes on one batch ``tokens`` ``[B, T]``, as a flat dict of floats (one row)."""
    cap = capture(model, tokens, ablate_attn=ablate_attn, ablate_mlp=ablate_mlp)
    return probes_from_capture(cap, task, tokens.cpu(), style=style)


def probes_from_capture(
    cap: ProbeCapture,
    task: BBTask,
    tokens: torch.Tensor,
    *,
    style: Literal["project", "authors"] = "project",
) -> dict[str, float]:
    """The probe numbers from captured tensors; pure torch, no model needed.

    ``style`` picks this project's definitions or the authors' (see the module docstring).

    Example:
        >>> probes_from_capture(cap, task, tokens, style="authors")["sink_logit_L0"]
    """
    if style not in PROBE_STYLES:
        raise ToyConfigError(f"Unknown probe style {style!r}; choose one of {PROBE_STYLES}.")
    authors = style == "authors"
    risks = oracle_risks(task, tokens, cap.logits)
    row: dict[str, float] = {k: float(v) for k, v in asdict(risks).items()}
    trig = task.is_trigger()[tokens]  # [B, T]
    not_bos = tokens != task.bos
    not_bos[:, 0] = False  # a BOS query sees only itself: no information in its pattern
    nontrig_q = not_bos & ~trig  # [B, T]
    trig_q = not_bos & trig  # [B, T]
    t = tokens.shape[1]
    bos_q = torch.zeros_like(nontrig_q)
    bos_q[:, 0] = True
    for i, p in cap.probs.items():
        p = p.float()  # [B, Tq, Tk]
        bos_avg_q = nontrig_q | bos_q if authors else nontrig_q  # [B, T]
        row[f"attn_bos_L{i}"] = _masked_mean(p[:, :, 0], bos_avg_q)
        row[f"attn_bos_trigger_L{i}"] = _masked_mean(p[:, :, 0], trig_q)
        prev = torch.diagonal(p, offset=-1, dim1=1, dim2=2)  # [B, T-1]: p[:, j+1, j]
        row[f"attn_prev_trigger_L{i}"] = _masked_mean(prev, trig_q[:, 1:])
        d = cap.q[i].shape[-1]
        s = cap.q[i] @ cap.k[i].transpose(1, 2) / math.sqrt(d)  # [B, Tq, Tk]
        # The "other" keys exclude BOS, and for the authors the query's own key too.
        causal = torch.ones(t, t, dtype=torch.bool).tril(-1 if authors else 0)
        causal[:, 0] = False
        n_other = causal.sum(-1)  # [Tq]
        other_mean = (s * causal).sum(-1) / n_other.clamp_min(1)  # [B, Tq]
        gap = s[:, :, 0] - other_mean  # [B, Tq]
        if authors:
            row[f"sink_logit_L{i}"] = _per_type_mean(gap, tokens, nontrig_q & (n_other > 0))
        else:
            row[f"sink_logit_L{i}"] = _masked_mean(gap, nontrig_q)
        vo = (cap.v[i] if authors else cap.value_out[i]).norm(dim=-1)  # [B, T]
        row[f"bos_value_norm_L{i}"] = float(vo[:, 0].mean())
        row[f"other_value_norm_L{i}"] = float(vo[:, 1:].mean())
    for k, h in enumerate(cap.resid):
        n = h.norm(dim=-1)  # [B, T]
        row[f"bos_resid_norm_{k}"] = float(n[:, 0].mean())
        row[f"other_resid_norm_{k}"] = float(n[:, 1:].mean())
    return row


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float(x[mask].mean()) if mask.any() else float("nan")


def _per_type_mean(x: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of ``x`` ``[B, T]`` over ``mask`` per token id of ``tokens``, then over the ids."""
    ids, vals = tokens[mask], x[mask].double()  # [N] each
    if ids.numel() == 0:
        return float("nan")
    types, inverse = torch.unique(ids, return_inverse=True)
    sums = torch.zeros(len(types), dtype=torch.float64).index_add_(0, inverse, vals)
    counts = torch.bincount(inverse, minlength=len(types))
    return float((sums / counts).mean())


def ablation_table(
    model: ToyTransformer | nnsight.NNsight,
    task: BBTask,
    tokens: torch.Tensor,
    *,
    variants: Sequence[tuple[str, Sequence[int], Sequence[int]]] | None = None,
    style: Literal["project", "authors"] = "project",
) -> pd.DataFrame:
    """Probes with each attention or MLP block zeroed in turn ("No Attn Lk", "No MLP Lk").

    Args:
        variants: ``(name, attn_layers, mlp_layers)`` to run; by default "Original" and one
            row per existing block.

    Returns:
        One row per variant, indexed by name, with the columns of :func:`probe`.
    """
    raw, nm = _wrap(model)
    if variants is None:
        variants = [("Original", (), ())]
        for i, b in enumerate(raw.blocks):
            if b.attn is not None:
                variants.append((f"No Attn L{i}", (i,), ()))
            if b.mlp is not None:
                variants.append((f"No MLP L{i}", (), (i,)))
    rows = {
        name: probe(nm, task, tokens, ablate_attn=a, ablate_mlp=m, style=style)
        for name, a, m in variants
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def order_of_events(
    df: pd.DataFrame, *, layer: int = 0, fraction: float = 0.5, min_change: float = 0.05
) -> dict[str, float]:
    """The probe step at which each landmark of the paper's story is reached.

    Each landmark is the first step at which a curve has made ``fraction`` of its whole
    change over the run, so the order does not depend on how long the run was or on
    hand-picked thresholds:

    - "backcopy learned": the backcopy excess risk, on a log scale, from its first value
      down to its minimum;
    - "sink logit" and "sink mass": the sink logit and the attention on BOS at non-trigger
      queries, from their first value up to their maximum;
    - "value drain": the BOS value norm, from its peak down to its lowest value after it.

    The paper's order is backcopy first, then the sink logit and mass rising while the BOS
    value norm falls. A curve that changes by less than ``min_change`` of its scale (or
    never moves the right way) gives NaN.

    Args:
        df: probes with a ``step`` column, as returned by training.
        layer: the attention layer whose head is followed.
    """
    df = df.sort_values("step").reset_index(drop=True)
    steps = df["step"].to_numpy()
    l = layer

    def first(mask) -> float:
        idx = np.flatnonzero(np.asarray(mask))
        return float(steps[idx[0]]) if len(idx) else float("nan")

    def rise(y: np.ndarray, scale: float) -> float:
        top = np.nanmax(y)
        if not top - y[0] > min_change * scale:
            return float("nan")
        return first(y >= y[0] + fraction * (top - y[0]))

    out: dict[str, float] = {}
    bc = np.log(np.clip(df["backcopy_excess"].to_numpy(dtype=float), 1e-12, None))
    out["backcopy learned"] = rise(-bc, 1.0)  # log-nats: 0.05 is a 5% change
    sl = df[f"sink_logit_L{l}"].to_numpy(dtype=float)
    out["sink logit"] = rise(sl, max(1.0, float(np.nanmax(np.abs(sl)))))
    out["sink mass"] = rise(df[f"attn_bos_L{l}"].to_numpy(dtype=float), 1.0)
    vn = df[f"bos_value_norm_L{l}"].to_numpy(dtype=float)
    peak = int(np.nanargmax(vn))
    after = vn[peak:]
    drop = after[0] - np.nanmin(after)
    if drop > min_change * after[0]:
        idx = np.flatnonzero(after <= after[0] - fraction * drop)
        out["value drain"] = float(steps[peak + idx[0]])
    else:
        out["value drain"] = float("nan")
    return out


def growth(
    df: pd.DataFrame, column: str, *, since: int | None = None, until: int | None = None
) -> float:
    """How much a probe rose between two probe steps (default: the first and the last).

    Example:
        >>> growth(result.probes, "bos_resid_norm_1")  # rise of the BOS residual norm
        >>> growth(result.probes, "bos_resid_norm_1", since=1000)  # after the first phase
    """
    if column not in df.columns:
        raise KeyError(f"No probe column {column!r}; columns are {sorted(df.columns)}.")
    df = df.sort_values("step")
    if since is not None:
        df = df[df["step"] >= since]
    if until is not None:
        df = df[df["step"] <= until]
    if df.empty:
        raise KeyError(f"No probe rows between steps {since} and {until}.")
    return float(df[column].iloc[-1] - df[column].iloc[0])


def growth_table(
    runs: Mapping[str, pd.DataFrame],
    *,
    reference: str | None = None,
    prefix: str = "bos_resid_norm_",
    since: int | None = None,
) -> pd.DataFrame:
    """Growth of every ``prefix*`` probe per run, plus the reference run's growth over each.

    Args:
        runs: ``{run name: probes}``, e.g. AdamW, SGD and ReLU-attention runs of equal length.
        reference: the run the ratios are taken against (default: the first).
        since: measure from this probe step (e.g. half-way, past the first transient).

    Returns:
        Rows are runs; columns ``growth <col>`` and ``<reference> / this <col>`` (the ratio
        uses the absolute growth of the other run, so a falling norm counts as no growth).
    """
    if not runs:
        raise KeyError("No runs to tabulate.")
    reference = reference if reference is not None else next(iter(runs))
    if reference not in runs:
        raise KeyError(f"Reference run {reference!r} is not among {list(runs)}.")
    cols = sorted(c for c in runs[reference].columns if c.startswith(prefix))
    table = pd.DataFrame(
        {
            f"growth {c}": {name: growth(df, c, since=since) for name, df in runs.items()}
            for c in cols
        }
    )
    for c in cols:
        g = table[f"growth {c}"]
        table[f"{reference} / this {c}"] = g[reference] / g.abs()
    return table


def bos_excess_table(runs: Mapping[str, pd.DataFrame], *, stream: int = 1) -> pd.DataFrame:
    """BOS's residual norm against the other tokens' in ``stream``, at the first and last probe.

    The authors' appendix compares architectures by this excess after layer 0 (``stream=1``):
    large for 3xTF and 2xTF+MLP, small for MLP+TF+MLP.

    Args:
        runs: ``{run name: probes}``, e.g. one AdamW run per architecture.
        stream: the residual stream (layers applied so far).

    Returns:
        Rows are runs; columns ``bos_norm``, ``other_norm``, ``excess`` (their difference) at
        the last probe, ``excess_at_start`` at the first, and ``excess_growth``.

    Example:
        >>> bos_excess_table({"3xTF": a.probes, "MLP+TF+MLP": b.probes})
    """
    if not runs:
        raise KeyError("No runs to tabulate.")
    bos, other = f"bos_resid_norm_{stream}", f"other_resid_norm_{stream}"
    rows = {}
    for name, df in runs.items():
        for col in (bos, other):
            if col not in df.columns:
                raise KeyError(f"Run {name!r} has no probe column {col!r}; columns {sorted(df)}.")
        df = df.sort_values("step")
        first, last = df.iloc[0], df.iloc[-1]
        rows[name] = {
            "steps": int(last["step"]),
            "bos_norm": float(last[bos]),
            "other_norm": float(last[other]),
            "excess": float(last[bos] - last[other]),
            "excess_at_start": float(first[bos] - first[other]),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["excess_growth"] = table["excess"] - table["excess_at_start"]
    return table
