"""The four extreme-token metrics of Guo et al. (2024), per layer and head, on real text.

For every layer ``l`` and query head ``h`` (head ``h`` reads key/value head
``h // kv_group``), over the real tokens of a batch of prompts and a sink position ``p``
per prompt (see :mod:`.sink`):

- **attention-sink mass** on key ``k``: the attention ``A[q, k]`` averaged over the
  queries that can see ``k`` (real queries ``q >= k``), pooled over prompts. The sink
  mass is that average at ``k = p``. The two keys with the largest average are the
  top-1 and top-2 keys.
- **sink logit**: ``s(q, p) - mean_{j <= q, j != p} s(q, j)`` with ``s(q, j) = scale * q.k_j``,
  averaged over the queries ``q >= max(p, 1)``. ``scale`` is the attention module's own
  scaling, ``1/sqrt(d_head)`` in most families (Gemma-2/3: ``query_pre_attn_scalar^-1/2``);
  logit soft-capping (Gemma-2) is not applied.
- **value-state drain**: ``||v_j W_O^h||`` at the sink against the mean over the other real
  tokens, with ``v_j`` the value vector (after its projection, before the attention
  weights) and ``W_O^h`` head ``h``'s slice of the out-projection (no bias).
- **residual-state peak**: ``||h_p||`` of each layer's output residual stream against the
  median over the prompt's other real tokens (``torch.median``: the lower middle value for
  an even count), averaged over prompts.

Everything is reduced inside one nnsight trace per batch: the attention maps, queries and
keys never leave it, and the running sums are ``[layers, heads, positions]`` at most, so
memory does not grow with the number of prompts.

Example:
    >>> scan = scan_extreme_tokens(model, load_corpus("prose", max_docs=8), max_length=64)
    >>> scan.heads.query("layer == 3")[["head", "sink_mass", "sink_logit"]]
    >>> scan.sink_share(0.5)        # share of heads putting > 0.5 of their attention on the sink
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench.analysis.extreme_tokens.errors import ExtremeTokenError
from workbench.analysis.extreme_tokens.sink import Sink, describe_sink, resolve_sink
from workbench.analysis.uncertainty import (
    Bootstrap,
    label,
    percentile_interval,
    ratio_draws,
    too_few_documents,
)
from workbench.documents import as_documents
from workbench.errors import EmptyPromptError
from workbench.models.model import Tokens, WorkbenchModel
from workbench.storage import content_key
from workbench.tracing.capture import capture
from workbench.tracing.provenance import Provenance, provenance_for

__all__ = [
    "ExtremeTokenScan",
    "PromptProfile",
    "attention_scale",
    "batches_of",
    "key_mass_sums",
    "out_proj_gram",
    "out_proj_per_head",
    "prompt_profile",
    "norm_stat_sums",
    "PER_DOC",
    "resid_norm_sums",
    "scan_intervals",
    "resid_table",
    "scan_extreme_tokens",
    "sink_logit_sums",
    "value_norm_sums",
    "value_norms",
]


# -- weights ---------------------------------------------------------------------------------
def out_proj_per_head(model: WorkbenchModel, layer: int) -> torch.Tensor:
    """``W_O`` of layer ``layer`` split per head: ``[heads, d_head, d_model]``, float32.

    ``head_out[h] @ W_O[h]`` summed over heads is the out-projection (without its bias).
    """
    a = model.adapter
    layer = model.check_layer(layer)
    mod = model.hf_module(f"{a.layers}.{layer}.{a.attn}.{a.o_proj}")
    w = mod.weight.detach().float()
    if isinstance(mod, torch.nn.Linear):
        w = w.T  # Linear stores [out, in]; Conv1D (GPT-2) already stores [in, out]
    return w.reshape(a.n_heads, a.head_dim, w.shape[-1])


def out_proj_gram(model: WorkbenchModel, layer: int) -> torch.Tensor:
    """``W_O^h W_O^h^T`` per head, ``[heads, d_head, d_head]``: ``||v W_O^h||^2 = v G_h v``.

    The Gram form costs ``d_head^2`` per token and head instead of ``d_head * d_model``
    and never builds the ``[batch, heads, seq, d_model]`` tensor.
    """
    w = out_proj_per_head(model, layer)
    return w @ w.transpose(1, 2)


def attention_scale(model: WorkbenchModel, layer: int) -> float:
    """The factor the model multiplies ``q.k`` by before the softmax."""
    return model.attention_scale(layer)


# -- per-batch reductions (pure tensor functions, also run inside the trace) -----------------
def _at(x: torch.Tensor, sink: torch.Tensor) -> torch.Tensor:
    """``x[b, ..., sink[b]]`` for ``x`` [b, h, s] -> [b, h]."""
    idx = sink.to(x.device)[:, None, None].expand(x.shape[0], x.shape[1], 1)
    return x.gather(2, idx).squeeze(2)


def key_mass_sums(
    probs: torch.Tensor, mask: torch.Tensor, sink: torch.Tensor, *, per_prompt: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention mass summed over the real queries, per key.

    Args:
        probs: ``[batch, heads, q, k]`` attention probabilities.
        mask: ``[batch, seq]`` 1 for real tokens.
        sink: ``[batch]`` sink position per prompt.

    Returns:
        ``per_key`` ``[heads, seq]``: summed over prompts and real queries, and
        ``at_sink`` ``[heads]``: the same at each prompt's own sink position
        (``[batch, heads]``, one row per prompt, with ``per_prompt``).
    """
    m = mask.to(probs.device, torch.float32)
    per_key = torch.einsum("bhqk,bq->bhk", probs.float(), m) * m[:, None, :]  # [b, h, k]
    at_sink = _at(per_key, sink)  # [b, h]
    return per_key.sum(0), at_sink if per_prompt else at_sink.sum(0)


def sink_logit_sums(
    q: torch.Tensor,
    k: torch.Tensor,
    mask: torch.Tensor,
    sink: torch.Tensor,
    scale: float,
    *,
    per_prompt: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sink logit summed over the queries that see the sink and at least one other key.

    Args:
        q: ``[batch, heads, seq, d_head]`` queries as the attention function gets them.
        k: ``[batch, kv_heads, seq, d_head]`` keys (grouped-query: not repeated).
        mask, sink: as in :func:`key_mass_sums`.

    Returns:
        ``sums`` ``[heads]`` and ``count`` (a scalar tensor: queries counted); with
        ``per_prompt``, ``[batch, heads]`` and ``[batch]``.

    The mean over the other keys uses a running sum of the keys, so the cost is linear in
    the sequence length: ``mean_{j<=q, j!=p} q.k_j = q.(K_q - [q>=p] k_p) / (q + 1 - [q>=p])``
    with ``K_q = sum_{j<=q} k_j``. Right padding keeps every key ``j <= q`` real.
    """
    b, h, s, d = q.shape
    kv = k.shape[1]
    sink = sink.to(q.device)
    qf = q.float().reshape(b, kv, h // kv, s, d)
    kf = k.float()
    k_sink = kf[torch.arange(b, device=q.device), :, sink]  # [b, kv, d]
    s_sink = scale * torch.einsum("bkgsd,bkd->bkgs", qf, k_sink).reshape(b, h, s)
    s_all = scale * torch.einsum("bkgsd,bksd->bkgs", qf, kf.cumsum(2)).reshape(b, h, s)
    pos = torch.arange(s, device=q.device)
    sees = pos[None, :] >= sink[:, None]  # [b, s]
    n_other = (pos + 1)[None, :] - sees.long()
    valid = mask.to(q.device).bool() & sees & (n_other > 0)
    other_mean = (s_all - s_sink * sees[:, None]) / n_other.clamp(min=1)[:, None]
    diff = (s_sink - other_mean) * valid[:, None]
    if per_prompt:
        return diff.sum(2), valid.sum(1)
    return diff.sum((0, 2)), valid.sum()


def value_norms(v: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """``||v_j W_O^h||`` per head and token: ``[batch, heads, seq]``.

    Args:
        v: ``[batch, kv_heads, seq, d_head]`` value vectors.
        gram: ``[heads, d_head, d_head]`` from :func:`out_proj_gram`.
    """
    b, kv, s, d = v.shape
    h = gram.shape[0]
    vf = v.float()
    g = gram.to(vf.device).reshape(kv, h // kv, d, d)
    u = torch.einsum("bksd,kgde->bkgse", vf, g)
    sq = torch.einsum("bkgse,bkse->bkgs", u, vf)
    return sq.clamp_min(0).sqrt().reshape(b, h, s)


def value_norm_sums(
    v: torch.Tensor,
    gram: torch.Tensor,
    mask: torch.Tensor,
    sink: torch.Tensor,
    *,
    per_prompt: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``||v W_O^h||`` summed at the sink (``[heads]``) and over the other real tokens
    (``[batch, heads]`` each with ``per_prompt``)."""
    norms = value_norms(v, gram)  # [b, h, s]
    other = _others(mask, sink).to(norms.device)
    at, rest = _at(norms, sink), (norms * other[:, None]).sum(2)  # [b, h] each
    return (at, rest) if per_prompt else (at.sum(0), rest.sum(0))


def _others(mask: torch.Tensor, sink: torch.Tensor) -> torch.Tensor:
    """``[batch, seq]`` bool: real tokens other than the sink."""
    other = mask.bool().clone()
    other[torch.arange(other.shape[0], device=other.device), sink.to(other.device)] = False
    return other


def resid_norm_sums(
    resid: torch.Tensor, mask: torch.Tensor, sink: torch.Tensor, *, per_prompt: bool = False
) -> torch.Tensor:
    """Residual norms of one layer (``resid`` ``[batch, seq, d_model]``), summed over prompts.

    See :func:`norm_stat_sums` for the five columns.
    """
    return norm_stat_sums(resid.float().norm(dim=-1), mask, sink, per_prompt=per_prompt)


def norm_stat_sums(
    norms: torch.Tensor, mask: torch.Tensor, sink: torch.Tensor, *, per_prompt: bool = False
) -> torch.Tensor:
    """From per-token norms ``[batch, seq]``, sums over prompts ``[5]`` of: the sink norm,
    the median, mean and max norm of the prompt's other real tokens, and the number of
    prompts that have other tokens.

    Prompts whose only real token is the sink add to the sink norm but to no other column.
    With ``per_prompt`` the result is ``[batch, 5]``, one row per prompt.
    """
    sink = sink.to(norms.device)
    other = _others(mask, sink).to(norms.device)
    has = other.any(1)
    sink_n = norms[torch.arange(norms.shape[0], device=norms.device), sink]
    med = torch.nanmedian(norms.masked_fill(~other, float("nan")), dim=1).values
    mean = (norms * other).sum(1) / other.sum(1).clamp(min=1)
    top = norms.masked_fill(~other, float("-inf")).max(1).values
    z = torch.zeros_like(sink_n)
    rows = torch.stack(
        [
            sink_n,
            torch.where(has, med, z),
            torch.where(has, mean, z),
            torch.where(has, top, z),
            has.to(norms.dtype),
        ],
        1,
    )  # [b, 5]
    return rows if per_prompt else rows.sum(0)


# -- the scan --------------------------------------------------------------------------------
@dataclass
class ExtremeTokenScan:
    """The four metrics for every layer and head, reduced over a set of prompts.

    Attributes:
        heads: one row per (layer, head): ``sink_mass``, ``top1_key``, ``top1_mass``,
            ``top2_key``, ``top2_mass``, ``sink_logit``, ``sink_value_norm``,
            ``other_value_norm``, ``value_norm_ratio`` (sink / other).
        residual: one row per layer (output of that layer): ``sink_norm``, ``median_norm``,
            ``mean_norm``, ``max_other_norm`` and ``ratio`` = sink / median.
        key_mass: ``[layers, heads, positions]`` mean attention on each key position over
            the queries that see it (NaN where none does).
        key_queries: ``[positions]`` how many queries saw each key position.
        sink: the sink rule in words.
        per_doc: the per-prompt sums behind every number (see :data:`PER_DOC`), which
            the document bootstrap resamples.

    Intervals (document bootstrap, see :mod:`workbench.analysis.uncertainty`): ``heads``
    has ``<metric>_low`` / ``<metric>_high`` (95% percentile) for ``sink_mass``,
    ``sink_logit`` and ``value_norm_ratio``, and ``sink_head``: ``"sink"`` where the sink
    mass's Bonferroni-corrected interval (over all heads) lies above ``sink_threshold``,
    ``"not sink"`` where it lies below, else ``"uncertain"``. ``residual`` has
    ``ratio_low`` / ``ratio_high``.
    """

    heads: pd.DataFrame
    residual: pd.DataFrame
    key_mass: torch.Tensor
    key_queries: torch.Tensor
    sink: str
    n_prompts: int
    n_tokens: int
    provenance: Provenance
    per_doc: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    sink_threshold: float = 0.5

    def sink_share(self, threshold: float = 0.5) -> float:
        """Share of heads whose sink mass exceeds ``threshold``."""
        return float((self.heads["sink_mass"] > threshold).mean())

    def peak_layer(self) -> int:
        """The layer whose output has the largest sink / median residual-norm ratio."""
        return int(self.residual.loc[self.residual["ratio"].idxmax(), "layer"])

    def summary(self) -> dict[str, Any]:
        """Headline numbers: sink-head share, residual peak, value drain."""
        r = self.residual
        peak = self.peak_layer()
        return {
            "sink": self.sink,
            "prompts": self.n_prompts,
            "tokens": self.n_tokens,
            "share_heads_sink_mass_gt_0.5": self.sink_share(0.5),
            "mean_sink_mass": float(self.heads["sink_mass"].mean()),
            "share_heads_top1_is_sink": float((self.heads["top1_is_sink"]).mean()),
            "median_sink_logit": float(self.heads["sink_logit"].median()),
            "median_value_norm_ratio": float(self.heads["value_norm_ratio"].median()),
            "peak_layer": peak,
            "peak_resid_ratio": float(r.loc[r["layer"] == peak, "ratio"].iloc[0]),
            "last_layer_resid_ratio": float(r["ratio"].iloc[-1]),
            **self.interval_summary(),
        }

    def findings(self) -> str:
        """What the intervals support, in sentences computed from this scan.

        Example:
            >>> print(scan.findings())
        """
        summ = self.interval_summary()
        if not summ:
            return "No intervals: this scan kept no per-document sums."
        t = self.sink_threshold
        text = (
            f"{summ[f'sink heads (interval > {t})']} of {len(self.heads)} heads are sink heads "
            f"(corrected interval of the sink mass above {t}), "
            f"{summ[f'not sink heads (interval < {t})']} surely are not, "
            f"{summ['uncertain heads']} are uncertain; the sink's residual norm peaks at "
            f"{self.summary_ratio():.0f}x the median token after layer {self.peak_layer()} "
            f"(95% interval {summ['peak_resid_ratio 95% interval']}x; {self.n_prompts} documents)."
        )
        if summ["sample warning"] != "none":
            text += " " + summ["sample warning"]
        return text

    def summary_ratio(self) -> float:
        """The sink / median residual-norm ratio at the peak layer."""
        r = self.residual
        return float(r.loc[r["layer"] == self.peak_layer(), "ratio"].iloc[0])

    def interval_summary(self) -> dict[str, Any]:
        """Sink-head counts the corrected intervals support, the peak's interval, a warning."""
        if "sink_head" not in self.heads:
            return {}
        r = self.residual
        peak = r.loc[r["layer"] == self.peak_layer()].iloc[0]
        counts = self.heads["sink_head"].value_counts()
        return {
            f"sink heads (interval > {self.sink_threshold})": int(counts.get("sink", 0)),
            f"not sink heads (interval < {self.sink_threshold})": int(counts.get("not sink", 0)),
            "uncertain heads": int(counts.get("uncertain", 0)),
            "peak_resid_ratio 95% interval": f"{peak['ratio_low']:.0f}-{peak['ratio_high']:.0f}",
            "sample warning": too_few_documents(self.n_prompts, "this scan") or "none",
        }


# Per-document sums a scan keeps, with their shapes (n = prompts, L = layers, H = heads).
PER_DOC = {
    "sink_mass": "[n, L, H] attention on the sink summed over the prompt's queries",
    "sink_queries": "[n] queries that see the sink",
    "logit": "[n, L, H] sink logit summed over the counted queries",
    "logit_queries": "[n, L] queries counted for the sink logit",
    "v_sink": "[n, L, H] ||v W_O|| at the sink",
    "v_other": "[n, L, H] ||v W_O|| summed over the other real tokens",
    "n_other": "[n] real tokens other than the sink",
    "resid": "[n, L, 5] sink, median, mean, max norm of the others, has-others flag",
}


@dataclass
class _Sums:
    """Running sums over batches; every field is independent of the number of prompts."""

    n_layers: int
    n_heads: int
    key_mass: torch.Tensor = field(init=False)  # [L, H, S]
    key_queries: torch.Tensor = field(init=False)  # [S]
    sink_mass: torch.Tensor = field(init=False)  # [L, H]
    sink_queries: int = 0
    logit: torch.Tensor = field(init=False)  # [L, H]
    logit_queries: torch.Tensor = field(init=False)  # [L]
    v_sink: torch.Tensor = field(init=False)  # [L, H]
    v_other: torch.Tensor = field(init=False)  # [L, H]
    n_other: int = 0
    resid: torch.Tensor = field(init=False)  # [L, 5]
    n_prompts: int = 0
    n_tokens: int = 0
    # per-prompt sums for the document bootstrap (each list grows by [b, ...] per batch)
    per_doc: dict[str, list[torch.Tensor]] = field(init=False)

    def __post_init__(self) -> None:
        L, H = self.n_layers, self.n_heads
        self.key_mass = torch.zeros(L, H, 0, dtype=torch.float64)
        self.key_queries = torch.zeros(0, dtype=torch.float64)
        for name in ("sink_mass", "logit", "v_sink", "v_other"):
            setattr(self, name, torch.zeros(L, H, dtype=torch.float64))
        self.logit_queries = torch.zeros(L, dtype=torch.float64)
        self.resid = torch.zeros(L, 5, dtype=torch.float64)
        self.per_doc = {k: [] for k in PER_DOC}

    def _grow(self, s: int) -> None:
        have = self.key_queries.shape[0]
        if s > have:
            pad = s - have
            self.key_mass = torch.cat(
                [self.key_mass, self.key_mass.new_zeros(self.n_layers, self.n_heads, pad)], 2
            )
            self.key_queries = torch.cat([self.key_queries, self.key_queries.new_zeros(pad)])

    def add(self, per_layer: list[tuple[torch.Tensor, ...]], tokens: Tokens, sink: torch.Tensor):
        """Fold one batch: ``per_layer[l]`` holds layer ``l``'s per-prompt reductions."""
        lengths = torch.tensor(tokens.lengths, dtype=torch.float64)
        s = tokens.shape[1]
        self._grow(s)
        pos = torch.arange(s, dtype=torch.float64)
        self.key_queries[:s] += (lengths[:, None] - pos[None, :]).clamp(min=0).sum(0)
        sink_q = lengths - sink.cpu().double()  # [b]
        self.sink_queries += int(sink_q.sum())
        self.n_other += int(lengths.sum()) - len(lengths)
        self.n_prompts += len(lengths)
        self.n_tokens += int(lengths.sum())
        cols = list(zip(*per_layer, strict=True))  # 7 tuples of L tensors
        mass = cols[0]
        at_sink, logit, n_logit, v_sink, v_other, resid = (
            torch.stack([t.cpu().double() for t in c], 1) for c in cols[1:]
        )  # [b, L, H] (n_logit: [b, L]; resid: [b, L, 5])
        for i, m in enumerate(mass):
            self.key_mass[i, :, :s] += m.cpu().double()
        self.sink_mass += at_sink.sum(0)
        self.logit += logit.sum(0)
        self.logit_queries += n_logit.sum(0)
        self.v_sink += v_sink.sum(0)
        self.v_other += v_other.sum(0)
        self.resid += resid.sum(0)
        new = {
            "sink_mass": at_sink,
            "sink_queries": sink_q,
            "logit": logit,
            "logit_queries": n_logit,
            "v_sink": v_sink,
            "v_other": v_other,
            "n_other": lengths - 1,
            "resid": resid,
        }
        for k, v in new.items():
            self.per_doc[k].append(v)

    def documents(self) -> dict[str, np.ndarray]:
        """The per-prompt sums, one row per prompt (see :data:`PER_DOC`)."""
        return {k: torch.cat(v).numpy() for k, v in self.per_doc.items()}


def _head_table(acc: _Sums, sink_positions: set[int], min_queries: int) -> pd.DataFrame:
    mean_mass = acc.key_mass / acc.key_queries.clamp(min=1)  # [L, H, S]
    eligible = acc.key_queries >= min_queries
    ranked = mean_mass.masked_fill(~eligible, float("-inf"))
    k = min(2, ranked.shape[-1])
    top_mass, top_key = ranked.topk(k, dim=-1)
    sink_mass = acc.sink_mass / max(acc.sink_queries, 1)
    logit = acc.logit / acc.logit_queries.clamp(min=1)[:, None]
    v_sink = acc.v_sink / max(acc.n_prompts, 1)
    v_other = acc.v_other / max(acc.n_other, 1)
    rows = []
    for layer in range(acc.n_layers):
        for head in range(acc.n_heads):
            t1 = int(top_key[layer, head, 0])
            t2 = int(top_key[layer, head, 1]) if k > 1 else -1
            rows.append(
                {
                    "layer": layer,
                    "head": head,
                    "sink_mass": float(sink_mass[layer, head]),
                    "top1_key": t1,
                    "top1_mass": float(top_mass[layer, head, 0]),
                    "top2_key": t2,
                    "top2_mass": float(top_mass[layer, head, 1]) if k > 1 else float("nan"),
                    "top1_is_sink": t1 in sink_positions,
                    "sink_logit": float(logit[layer, head]),
                    "sink_value_norm": float(v_sink[layer, head]),
                    "other_value_norm": float(v_other[layer, head]),
                    "value_norm_ratio": float(v_sink[layer, head] / v_other[layer, head])
                    if v_other[layer, head] > 0
                    else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def scan_intervals(
    docs: dict[str, np.ndarray],
    boot: Bootstrap,
    *,
    sink_threshold: float = 0.5,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Document-bootstrap intervals of the head metrics and the residual ratio.

    Args:
        docs: per-prompt sums (:data:`PER_DOC`), ``n`` prompts.
        boot: resamples, level, family-wise alpha and seed.
        sink_threshold: the sink-mass cut-off of the ``sink_head`` label.

    Returns:
        ``heads`` (one row per (layer, head), layer-major, as in ``scan.heads``) and
        ``residual`` (one row per layer) frames of interval columns.
    """
    n, L, H = docs["sink_mass"].shape
    w = boot.weights(n)
    mass, mass_draws, iv = boot.ratio(docs["sink_mass"], docs["sink_queries"], m=L * H)
    _, logit_draws, _ = boot.ratio(docs["logit"], docs["logit_queries"])
    v_draws = ratio_draws(docs["v_sink"], np.ones(n), w) / ratio_draws(
        docs["v_other"], docs["n_other"], w
    )
    heads = {
        "sink_mass_low": iv["low"],
        "sink_mass_high": iv["high"],
        "sink_mass_low_c": iv["low_c"],
        "sink_mass_high_c": iv["high_c"],
    }
    for name, draws in (("sink_logit", logit_draws), ("value_norm_ratio", v_draws)):
        lo, hi = percentile_interval(draws, boot.level)
        heads[f"{name}_low"], heads[f"{name}_high"] = lo, hi
    frame = pd.DataFrame({k: np.asarray(v).reshape(-1) for k, v in heads.items()})
    frame["sink_head"] = label(
        frame["sink_mass_low_c"],
        frame["sink_mass_high_c"],
        sink_threshold,
        above="sink",
        below="not sink",
    )
    res = docs["resid"]  # [n, L, 5]
    r_draws = ratio_draws(res[..., 0], np.ones(n), w) / ratio_draws(res[..., 1], res[..., 4], w)
    lo, hi = percentile_interval(r_draws, boot.level)
    return frame, pd.DataFrame({"ratio_low": lo, "ratio_high": hi})


def resid_table(sums: torch.Tensor, n_prompts: int) -> pd.DataFrame:
    """One row per layer from :func:`norm_stat_sums` summed over batches (``[layers, 5]``)."""
    n_with = sums[:, 4].clamp(min=1)
    df = pd.DataFrame(
        {
            "layer": range(sums.shape[0]),
            "sink_norm": (sums[:, 0] / max(n_prompts, 1)).tolist(),
            "median_norm": (sums[:, 1] / n_with).tolist(),
            "mean_norm": (sums[:, 2] / n_with).tolist(),
            "max_other_norm": (sums[:, 3] / n_with).tolist(),
        }
    )
    df["ratio"] = df["sink_norm"] / df["median_norm"]
    return df


def batches_of(
    model: WorkbenchModel, prompts: Sequence[str] | Tokens, batch_size: int, max_length: int
) -> list[Tokens]:
    """Tokenized batches (prompts cut to ``max_length`` tokens); a ``Tokens`` is split by rows."""
    if batch_size < 1:
        raise ExtremeTokenError(f"batch_size must be at least 1, got {batch_size}.")
    if isinstance(prompts, Tokens):
        out = []
        for i in range(0, prompts.shape[0], batch_size):
            ids = prompts.input_ids[i : i + batch_size]
            m = prompts.attention_mask[i : i + batch_size]
            width = int(m.sum(1).max())
            out.append(Tokens(ids[:, :width], m[:, :width], prompts.strings[i : i + batch_size]))
        return out
    prompts = [prompts] if isinstance(prompts, str) else as_documents(prompts, "the scan")
    if not prompts:
        raise ExtremeTokenError("No prompts were given; pass at least one string.")
    for i, p in enumerate(prompts):  # name the document by its place in the corpus, not batch
        if not p.strip():
            raise EmptyPromptError(
                f"Document {i} of {len(prompts)} is empty{' (whitespace only)' if p else ''}. "
                "Drop it (load_corpus drops empty documents) or give it some text."
            )
    return [
        model.tokenize(list(prompts[i : i + batch_size]), max_length=max_length, truncate=True)
        for i in range(0, len(prompts), batch_size)
    ]


def _scan_batch(
    model: WorkbenchModel, tokens: Tokens, sink: torch.Tensor, grams: list[torch.Tensor]
) -> list[tuple[torch.Tensor, ...]]:
    """One capture: every layer's reductions, computed inside the trace where the tensors
    are produced (nothing of size ``[batch, heads, seq, seq]`` leaves it)."""
    mask = tokens.attention_mask
    dev = model.device
    grams = [g.to(dev) for g in grams]
    scales = [model.attention_scale(i) for i in range(model.n_layers)]

    def reduce(t: dict[str, torch.Tensor], i: int) -> tuple[torch.Tensor, ...]:
        logit, n_logit = sink_logit_sums(
            t["queries"], t["keys"], mask, sink, scales[i], per_prompt=True
        )
        v_sink, v_other = value_norm_sums(t["values"], grams[i], mask, sink, per_prompt=True)
        mass, at_sink = key_mass_sums(t["attn_probs"], mask, sink, per_prompt=True)
        resid = resid_norm_sums(t["resid_post"], mask, sink, per_prompt=True)
        return mass, at_sink, logit, n_logit, v_sink, v_other, resid

    cap = capture(
        model,
        tokens,
        ["queries", "keys", "values", "attn_probs", "resid_post"],
        reduce=reduce,
        provenance=False,
    )
    return [cap.reduced[i] for i in range(model.n_layers)]


def _texts_hash(prompts: Sequence[str] | Tokens) -> str:
    if isinstance(prompts, Tokens):
        return content_key(prompts.input_ids, n=16)
    return content_key([prompts] if isinstance(prompts, str) else list(prompts), n=16)


def scan_extreme_tokens(
    model: WorkbenchModel,
    prompts: Sequence[str] | Tokens,
    *,
    sink: Sink = "auto",
    batch_size: int = 8,
    max_length: int = 128,
    min_queries: int = 1,
    bootstrap: Bootstrap | None = None,
    sink_threshold: float = 0.5,
    progress: bool = True,
) -> ExtremeTokenScan:
    """Scan every layer and head for the extreme-token metrics over ``prompts``.

    Args:
        prompts: texts (cut to ``max_length`` tokens) or an already tokenized batch.
        sink: the sink rule or position (see :mod:`.sink`); default BOS if the tokenizer
            adds one, else position 0.
        batch_size: prompts per trace; memory grows with it, not with ``len(prompts)``.
        min_queries: key positions seen by fewer queries are not ranked as top keys
            (the last positions of a batch are seen by few queries, so their average is
            noisy).
        bootstrap: document resampling for the intervals (default: 1000 resamples, 95%,
            seed 0); the model runs once whatever its size.
        sink_threshold: the sink-mass cut-off of the ``sink_head`` label.

    Raises:
        SinkPositionError: the sink lies beyond a prompt.
    """
    model.ensure_eager("the attention-sink scan")
    batches = batches_of(model, prompts, batch_size, max_length)
    grams = [out_proj_gram(model, i) for i in range(model.n_layers)]
    acc = _Sums(model.n_layers, model.n_heads)
    sink_seen: set[int] = set()
    for tokens in tqdm(batches, desc="scan", disable=not progress):
        pos = resolve_sink(model, tokens, sink)
        sink_seen.update(pos.tolist())
        acc.add(_scan_batch(model, tokens, pos, grams), tokens, pos)
    prov = provenance_for(
        model,
        None,
        [],
        analysis="extreme_tokens.scan",
        sink=str(sink),
        batch_size=batch_size,
        max_length=max_length,
        n_prompts=acc.n_prompts,
        prompts_sha256=_texts_hash(prompts),
    )
    key_mass = (acc.key_mass / acc.key_queries.clamp(min=1)).float()
    key_mass[:, :, acc.key_queries == 0] = float("nan")
    docs = acc.documents()
    head_iv, resid_iv = scan_intervals(
        docs, bootstrap or Bootstrap(), sink_threshold=sink_threshold
    )
    heads = pd.concat([_head_table(acc, sink_seen, min_queries), head_iv], axis=1)
    residual = pd.concat([resid_table(acc.resid, acc.n_prompts), resid_iv], axis=1)
    return ExtremeTokenScan(
        heads=heads,
        residual=residual,
        key_mass=key_mass,
        key_queries=acc.key_queries.float(),
        sink=describe_sink(model, sink),
        n_prompts=acc.n_prompts,
        n_tokens=acc.n_tokens,
        provenance=prov,
        per_doc=docs,
        sink_threshold=sink_threshold,
    )


# -- one prompt, for the head explorer -------------------------------------------------------
@dataclass
class PromptProfile:
    """Everything the head explorer shows for one prompt.

    Attributes:
        tokens: the prompt's token strings.
        sink: the sink position.
        attn: ``[layers, heads, seq, seq]`` attention probabilities.
        value_norms: ``[layers, heads, seq]`` ``||v_j W_O^h||``.
        resid_norms: ``[layers, seq]`` norm of each layer's output residual stream.
    """

    tokens: list[str]
    sink: int
    attn: torch.Tensor
    value_norms: torch.Tensor
    resid_norms: torch.Tensor
    provenance: Provenance


def prompt_profile(
    model: WorkbenchModel, prompt: str, *, sink: Sink = "auto", max_length: int = 64
) -> PromptProfile:
    """Attention maps, value norms and residual norms of one prompt (cut to ``max_length``).

    Example:
        >>> prof = prompt_profile(model, "def f(x):\\n    return x + 1")
        >>> prof.attn.shape      # [layers, heads, seq, seq]
    """
    tokens = model.tokenize([prompt], max_length=max_length, truncate=True)
    pos = resolve_sink(model, tokens, sink)
    grams = [out_proj_gram(model, i).to(model.device) for i in range(model.n_layers)]
    cap = capture(
        model,
        tokens,
        ["attn_probs", "values", "resid_post"],
        transforms={
            "values": lambda v, layer: value_norms(v, grams[layer]),
            "resid_post": lambda r, layer: r.float().norm(dim=-1),
            "attn_probs": lambda p, layer: p.float(),
        },
    )
    return PromptProfile(
        tokens=tokens.strings[0],
        sink=int(pos[0]),
        attn=cap.attn_probs[:, 0].cpu(),
        value_norms=cap.values[:, 0].cpu(),
        resid_norms=cap.resid_post[:, 0].cpu(),
        provenance=cap.provenance,
    )
