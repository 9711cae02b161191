"""Attribution patching (AtP, with AtP*'s attention fix) and the exact patching it estimates.

Patching component ``c`` from a clean run into a corrupted run changes a metric ``M`` by
about ``(a_clean(c) - a_corrupt(c)) . dM/da(c)``, the gradient taken in the corrupted run
(Nanda 2023; Kramár et al. 2024). Every component's estimate comes from two forward
passes and one backward pass:

- each attention head's output at each position (``head_out``, before the
  out-projection), ``heads`` ``[layers, seq, heads]``;
- each MLP's output at each position (before a post-MLP norm), ``mlps`` ``[layers, seq]``;
- optionally each MLP neuron, ``neurons`` ``[layers, seq, d_mlp]``.

AtP*'s fix for saturated attention (``qk_fix=True``): patching a head's query or key
moves its attention through a softmax, which a gradient underestimates when the softmax
is saturated. The fix recomputes the softmax exactly for the patched query (or key),
and only then goes linear: ``queries`` ``[layers, seq, heads]`` and ``keys``
``[layers, seq, kv_heads]`` attribute patching one head's query (one key head's key) at
one position, through that head's attention pattern.

:func:`exact_patching` is the reference: one patched run per component (batched per
layer through :func:`workbench.tracing.run_from`, so layers before the patch are not
recomputed).

Example:
    >>> m = LogitDiff(" Mary", " John", tokenizer=model.tokenizer)
    >>> atp = attribution_patching(model, clean, corrupt, m)
    >>> exact = exact_patching(model, clean, corrupt, m)
    >>> compare(atp, exact).head()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench.analysis.attribution.metrics import AttributionError, Metric, as_metric
from workbench.models.model import Tokens, WorkbenchModel
from workbench.tracing import ActivationPatch, capture, run_from, site_values

__all__ = ["AtPResult", "ExactPatching", "attribution_patching", "compare", "exact_patching"]


def _one(model: WorkbenchModel, prompt: str | Tokens, which: str) -> Tokens:
    tokens = prompt if isinstance(prompt, Tokens) else model.tokenize(prompt)
    if tokens.shape[0] != 1:
        raise AttributionError(f"The {which} run must be one prompt; got {tokens.shape[0]}.")
    return tokens


def _positions(
    n_clean: int, n_corrupt: int, position_map: Mapping[int, int] | None
) -> tuple[list[int], list[int]]:
    """(corrupted positions, clean positions) patched, one to one."""
    if position_map is None:
        if n_clean != n_corrupt:
            raise AttributionError(
                f"The clean prompt has {n_clean} tokens and the corrupted one {n_corrupt}: "
                "say which clean position feeds which corrupted one with "
                "position_map={corrupted_position: clean_position, ...} (negative positions "
                "count from each prompt's end)."
            )
        return list(range(n_corrupt)), list(range(n_clean))
    tgt, src = [], []
    for t, s in position_map.items():
        tt, ss = (t + n_corrupt if t < 0 else t), (s + n_clean if s < 0 else s)
        if not (0 <= tt < n_corrupt and 0 <= ss < n_clean):
            raise AttributionError(
                f"position_map entry {t} -> {s} is outside the prompts ({n_corrupt} corrupted, "
                f"{n_clean} clean tokens)."
            )
        tgt.append(tt)
        src.append(ss)
    return tgt, src


@dataclass
class AtPResult:
    """Attribution-patching estimates of the metric change per component.

    Attributes:
        heads: ``[layers, seq, heads]`` per head output and corrupted position.
        mlps: ``[layers, seq]`` per MLP output and position.
        neurons: ``[layers, seq, d_mlp]`` or ``None``.
        queries, keys: AtP* estimates (``[layers, seq, heads]`` / ``[layers, seq, kv]``) or
            ``None`` without ``qk_fix``.
        metric_clean, metric_corrupt: the metric in each run; patching everything moves
            it from corrupt to clean.
        positions: the corrupted positions that were patched (others are 0).
    """

    heads: torch.Tensor
    mlps: torch.Tensor
    neurons: torch.Tensor | None
    queries: torch.Tensor | None
    keys: torch.Tensor | None
    metric_clean: float
    metric_corrupt: float
    tokens: list[str]
    positions: list[int]
    metric_name: str
    notes: list[str] = field(default_factory=list)

    def per_head(self) -> torch.Tensor:
        """``[layers, heads]``: patching each head at every position (sum over positions)."""
        return self.heads.sum(1)

    def per_mlp(self) -> torch.Tensor:
        """``[layers]``: patching each MLP at every position."""
        return self.mlps.sum(1)

    def table(self) -> pd.DataFrame:
        """One row per (component, position): layer, head (-1 for an MLP), position, token,
        attribution; largest magnitude first."""
        L, S, H = self.heads.shape
        rows = []
        for layer in range(L):
            for pos in range(S):
                for h in range(H):
                    rows.append(("head", layer, h, pos, float(self.heads[layer, pos, h])))
                rows.append(("mlp", layer, -1, pos, float(self.mlps[layer, pos])))
        df = pd.DataFrame(rows, columns=["component", "layer", "head", "position", "attribution"])
        df["token"] = [self.tokens[p] for p in df["position"]]
        return df.reindex(df["attribution"].abs().sort_values(ascending=False).index).reset_index(
            drop=True
        )


def _qk_fix(
    model: WorkbenchModel,
    layer: int,
    clean_cap: Any,
    corrupt_cap: Any,
    g_head: torch.Tensor,
    tgt: list[int],
    src: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """AtP* query and key attributions of one layer: ``[seq, heads]`` and ``[seq, kv]``."""
    if model.adapter.attn_softcap:
        raise AttributionError(
            f"AtP*'s attention fix recomputes softmax(scale * q.k); {model.model_id} soft-caps "
            f"its attention logits at {model.adapter.attn_softcap}, which the fix does not "
            "model. Use qk_fix=False here."
        )
    j = corrupt_cap.layer_index(layer)
    q_x = corrupt_cap.queries[j, 0].float()  # [H, s, dh]
    k_x = corrupt_cap.keys[j, 0].float()  # [kv, s, dh]
    v_x = corrupt_cap.values[j, 0].float()  # [kv, s, dh]
    a_x = corrupt_cap.attn_probs[j, 0].float()  # [H, s, s]
    jc = clean_cap.layer_index(layer)
    q_c = clean_cap.queries[jc, 0].float()
    k_c = clean_cap.keys[jc, 0].float()
    H, s, _ = q_x.shape
    group = model.adapter.kv_group
    kv_of = torch.arange(H, device=q_x.device) // group
    scale = model.attention_scale(layer)
    causal = torch.ones(s, s, dtype=torch.bool, device=q_x.device).tril()
    scores = scale * q_x @ k_x[kv_of].transpose(-1, -2)  # [H, s, s]
    ref = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1)
    err = float((ref - a_x).abs().max())
    if err > 1e-3:
        raise AttributionError(
            f"AtP*'s attention fix recomputes the softmax of scale * q.k under a causal mask, "
            f"but layer {layer} of {model.model_id} attends differently (max difference "
            f"{err:.1e}: a logit soft-cap or a sliding window?). Use qk_fix=False here."
        )
    # dM/dA[h, i, j] = dM/d head_out[i, h] . v[kv(h), j]
    g_a = torch.einsum("ihd,hjd->hij", g_head.float(), v_x[kv_of])  # [H, s, s]
    g_a = g_a * causal
    t = torch.as_tensor(tgt, device=q_x.device)
    sc = torch.as_tensor(src, device=q_x.device)
    # queries: the patched query's whole attention row, recomputed exactly
    q_new = q_x.clone()
    q_new[:, t] = q_c[:, sc]
    s_q = scale * q_new @ k_x[kv_of].transpose(-1, -2)
    a_q = torch.softmax(s_q.masked_fill(~causal, float("-inf")), -1)
    q_attr = ((a_q - a_x) * g_a).sum(-1)  # [H, s] (rows not patched give 0)
    # keys: replacing key j changes one logit of every row i >= j; closed form of the
    # new softmax row: r = exp(s'_ij - s_ij), D = 1 + A_ij (r - 1)
    k_new = k_x.clone()
    k_new[:, t] = k_c[:, sc]
    s_k = scale * q_x @ k_new[kv_of].transpose(-1, -2)  # [H, s, s], column j patched
    r = torch.exp((s_k - scores).clamp(max=80.0)) * causal
    d = 1.0 + a_x * (r - 1.0)
    g_row = (g_a * a_x).sum(-1, keepdim=True)  # [H, s, 1]
    contrib = (1.0 / d - 1.0) * g_row + g_a * a_x * (r - 1.0) / d  # [H, i, j]
    contrib = contrib * causal
    per_head_key = contrib.sum(1)  # [H, s] summed over queries i
    k_attr = torch.zeros(model.n_kv_heads, s, device=q_x.device)
    k_attr.index_add_(0, kv_of, per_head_key)
    keep = torch.zeros(s, dtype=torch.bool, device=q_x.device)
    keep[t] = True
    return (q_attr * keep).T.cpu(), (k_attr * keep).T.cpu()


def attribution_patching(
    model: WorkbenchModel,
    clean: str | Tokens,
    corrupted: str | Tokens,
    metric: Metric | Callable[[torch.Tensor], torch.Tensor],
    *,
    neurons: bool = False,
    qk_fix: bool = False,
    position_map: Mapping[int, int] | None = None,
) -> AtPResult:
    """AtP estimates for every head output, MLP output (and neuron) at every position.

    Args:
        metric: a :class:`LogitDiff`, :class:`LogProb` or ``fn(logits) -> [rows]``.
        neurons: also attribute every MLP neuron (``mlp_hidden``).
        qk_fix: add AtP*'s query/key attributions with the softmax recomputed.
        position_map: ``{corrupted_position: clean_position}`` when the prompts differ in
            length (required then); only mapped positions are patched.

    Raises:
        AttributionError: prompts of different lengths without a map, a bad metric.
    """
    m = as_metric(metric)
    tc, tx = _one(model, clean, "clean"), _one(model, corrupted, "corrupted")
    tgt, src = _positions(tc.lengths[0], tx.lengths[0], position_map)
    if qk_fix:
        model.ensure_eager("AtP*'s attention fix")
    sites = ["head_out", "mlp_out", *(["mlp_hidden"] if neurons else [])]
    extra = ["queries", "keys", "values", "attn_probs"] if qk_fix else []
    # final=True: the forward stops at the last layer, and the model's head runs only at
    # the metric's position (a full unembedding, forward and backward, is a fifth of the
    # cost of a small model).
    c_run = site_values(model, tc, sites, what=extra[:2], final=True)
    x_run = site_values(
        model, tx, sites, metric=lambda h: m.from_final(model, h).sum(), what=extra, final=True
    )
    L, S = model.n_layers, tx.lengths[0]
    heads = torch.zeros(L, S, model.n_heads)
    mlps = torch.zeros(L, S)
    neur = None
    qs = torch.zeros(L, S, model.n_heads) if qk_fix else None
    ks = torch.zeros(L, S, model.n_kv_heads) if qk_fix else None
    t = torch.as_tensor(tgt)
    sc = torch.as_tensor(src)
    for layer in range(L):
        for site in sites:
            g = x_run.grads[(layer, site)][0].float()  # [s, ...]
            delta = torch.zeros_like(g)
            clean_v = c_run.values[(layer, site)][0].float()
            corrupt_v = x_run.values[(layer, site)][0].float()
            delta[t] = clean_v[sc].to(g.device) - corrupt_v[t].to(g.device)
            prod = (delta * g).cpu()
            if site == "head_out":
                heads[layer] = prod.sum(-1)  # [s, H]
            elif site == "mlp_out":
                mlps[layer] = prod.sum(-1)
            else:
                if neur is None:
                    neur = torch.zeros(L, S, prod.shape[-1])
                neur[layer] = prod
        if qk_fix:
            q_attr, k_attr = _qk_fix(
                model,
                layer,
                c_run.captured,
                x_run.captured,
                x_run.grads[(layer, "head_out")][0],
                tgt,
                src,
            )
            qs[layer], ks[layer] = q_attr, k_attr  # type: ignore[index]
    with torch.no_grad():
        m_clean = float(m.from_final(model, c_run.final)[0])
    notes = []
    if m_clean == x_run.metric:
        notes.append("The metric is the same in both runs: every attribution is 0.")
    return AtPResult(
        heads=heads,
        mlps=mlps,
        neurons=neur,
        queries=qs,
        keys=ks,
        metric_clean=m_clean,
        metric_corrupt=float(x_run.metric or 0.0),
        tokens=list(tx.strings[0]),
        positions=tgt,
        metric_name=m.name,
        notes=notes,
    )


@dataclass
class ExactPatching:
    """Metric change from patching each component from clean into corrupted, run for real.

    Attributes:
        heads: ``[layers, heads]`` (all patched positions at once) or ``[layers, seq, heads]``
            with ``per_position``.
        mlps: ``[layers]`` or ``[layers, seq]``.
    """

    heads: torch.Tensor
    mlps: torch.Tensor
    metric_clean: float
    metric_corrupt: float
    per_position: bool
    forwards: int


def exact_patching(
    model: WorkbenchModel,
    clean: str | Tokens,
    corrupted: str | Tokens,
    metric: Metric | Callable[[torch.Tensor], torch.Tensor],
    *,
    per_position: bool = False,
    position_map: Mapping[int, int] | None = None,
    progress: bool = True,
) -> ExactPatching:
    """Patch each head output and MLP output from clean into corrupted, one run each.

    The runs of one layer share a batched pass that starts at that layer (earlier layers
    are not recomputed). ``per_position`` patches one position at a time (``seq`` times
    more runs).
    """
    m = as_metric(metric)
    tc, tx = _one(model, clean, "clean"), _one(model, corrupted, "corrupted")
    tgt, src = _positions(tc.lengths[0], tx.lengths[0], position_map)
    c_run = site_values(model, tc, ["head_out", "mlp_out"])
    base = capture(model, tx, ["logits"], layer_inputs=range(model.n_layers))
    with torch.no_grad():
        m_x = float(m(base.logits)[0])
        m_c = float(m(c_run.logits)[0])
    L, H, S = model.n_layers, model.n_heads, tx.lengths[0]
    heads = torch.zeros(L, S, H) if per_position else torch.zeros(L, H)
    mlps = torch.zeros(L, S) if per_position else torch.zeros(L)
    groups = (
        [[(t, s)] for t, s in zip(tgt, src, strict=True)]
        if per_position
        else [list(zip(tgt, src, strict=True))]
    )
    forwards = 0
    bar = tqdm(total=L, desc="exact patching", disable=not progress)
    for layer in range(L):
        variants, keys = [], []
        for grp in groups:
            pos, spos = [p for p, _ in grp], [q for _, q in grp]
            for h in range(H):
                variants.append(
                    [
                        ActivationPatch(
                            layer=layer,
                            site_name="head_out",
                            value=c_run.values[(layer, "head_out")],
                            heads=[h],
                            positions=pos,
                            source_positions=spos,
                        )
                    ]
                )
                keys.append(("head", pos[0], h))
            variants.append(
                [
                    ActivationPatch(
                        layer=layer,
                        site_name="mlp_out",
                        value=c_run.values[(layer, "mlp_out")],
                        positions=pos,
                        source_positions=spos,
                    )
                ]
            )
            keys.append(("mlp", pos[0], -1))
        out = run_from(model, base, layer, variants, head=lambda x: m.from_final(model, x))
        forwards += len(variants)
        for (kind, pos, h), v in zip(keys, (out.float() - m_x).tolist(), strict=True):
            if kind == "head":
                if per_position:
                    heads[layer, pos, h] = v
                else:
                    heads[layer, h] = v
            elif per_position:
                mlps[layer, pos] = v
            else:
                mlps[layer] = v
        bar.update(1)
    bar.close()
    return ExactPatching(heads, mlps, m_c, m_x, per_position, forwards)


def compare(atp: AtPResult, exact: ExactPatching, n: int = 10) -> pd.DataFrame:
    """AtP against exact patching per component: a table of the ``n`` largest misses, with
    the Pearson correlation over all components in ``.attrs["correlation"]``."""
    if exact.per_position:
        a_heads, a_mlps = atp.heads, atp.mlps
        e_heads, e_mlps = exact.heads, exact.mlps
    else:
        a_heads, a_mlps = atp.per_head(), atp.per_mlp()
        e_heads, e_mlps = exact.heads, exact.mlps
    a = torch.cat([a_heads.reshape(-1), a_mlps.reshape(-1)]).numpy()
    e = torch.cat([e_heads.reshape(-1), e_mlps.reshape(-1)]).numpy()
    names = []
    L, H = atp.heads.shape[0], atp.heads.shape[2]
    if exact.per_position:
        S = atp.heads.shape[1]
        names += [f"L{l}H{h}@{p}" for l in range(L) for p in range(S) for h in range(H)]
        names += [f"MLP{l}@{p}" for l in range(L) for p in range(S)]
    else:
        names += [f"L{l}H{h}" for l in range(L) for h in range(H)]
        names += [f"MLP{l}" for l in range(L)]
    corr = float(np.corrcoef(a, e)[0, 1]) if a.std() > 0 and e.std() > 0 else float("nan")
    df = pd.DataFrame({"component": names, "atp": a, "exact": e})
    df["miss"] = df["atp"] - df["exact"]
    out = df.reindex(df["miss"].abs().sort_values(ascending=False).index).head(n)
    out = out.reset_index(drop=True)
    out.attrs["correlation"] = corr
    out.attrs["n_components"] = len(df)
    return out
