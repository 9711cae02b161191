"""Figures for attribution: AtP against exact patching, and per-head heatmaps (AtP, DLA).

They take arrays and tables (results of :mod:`workbench.analysis.attribution`), never a
model.

Example:
    >>> atp_vs_exact_figure(atp.per_head(), exact.heads, atp.per_mlp(), exact.mlps)
    >>> head_heatmap(dla.heads, title="direct logit attribution", extra=dla.mlps)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from workbench.widgets.views import TEMPLATE, ViewDataError, _array

__all__ = ["atp_vs_exact_figure", "head_heatmap"]


def atp_vs_exact_figure(
    atp_heads: Any, exact_heads: Any, atp_mlps: Any, exact_mlps: Any, *, height: int = 460
) -> go.Figure:
    """Scatter of AtP estimates against exact patching, one point per head and per MLP,
    with the diagonal (a perfect estimate) and the correlation in the title."""
    ah, eh = _array(atp_heads), _array(exact_heads)
    am, em = _array(atp_mlps), _array(exact_mlps)
    if ah.shape != eh.shape or am.shape != em.shape or ah.ndim != 2:
        raise ViewDataError(
            f"AtP and exact results must match: heads {ah.shape} vs {eh.shape}, MLPs "
            f"{am.shape} vs {em.shape} (heads as [layers, heads])."
        )
    L, H = ah.shape
    a = np.concatenate([ah.ravel(), am.ravel()])
    e = np.concatenate([eh.ravel(), em.ravel()])
    corr = float(np.corrcoef(a, e)[0, 1]) if a.std() > 0 and e.std() > 0 else float("nan")
    lo, hi = float(min(a.min(), e.min())), float(max(a.max(), e.max()))
    pad = 0.05 * (hi - lo or 1.0)
    fig = go.Figure(
        [
            go.Scatter(
                x=eh.ravel(),
                y=ah.ravel(),
                mode="markers",
                name="heads",
                text=[f"L{l}H{h}" for l in range(L) for h in range(H)],
                hovertemplate="%{text}<br>exact %{x:.4f}<br>AtP %{y:.4f}<extra></extra>",
                marker={"size": 6, "opacity": 0.75},
                cliponaxis=False,
            ),
            go.Scatter(
                x=em.ravel(),
                y=am.ravel(),
                mode="markers",
                name="MLPs",
                text=[f"MLP{l}" for l in range(L)],
                hovertemplate="%{text}<br>exact %{x:.4f}<br>AtP %{y:.4f}<extra></extra>",
                marker={"size": 8, "symbol": "square", "opacity": 0.8},
                cliponaxis=False,
            ),
            go.Scatter(
                x=[lo - pad, hi + pad],
                y=[lo - pad, hi + pad],
                mode="lines",
                name="AtP = exact",
                line={"dash": "dot", "color": "#888"},
                hoverinfo="skip",
            ),
        ]
    )
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        title={"text": f"AtP against exact patching (r = {corr:.3f}, {a.size} components)"},
        xaxis={"title": {"text": "exact patching effect"}, "range": [lo - pad, hi + pad]},
        yaxis={"title": {"text": "AtP estimate"}, "range": [lo - pad, hi + pad]},
        margin={"l": 70, "r": 20, "t": 60, "b": 50},
        legend={"orientation": "h", "y": -0.18},
    )
    return fig


def head_heatmap(
    values: Any,
    *,
    title: str,
    extra: Any = None,
    extra_name: str = "MLP",
    colorbar_title: str = "",
    height: int | None = None,
) -> go.Figure:
    """A layers x heads heatmap (diverging, centred on 0), with an optional extra column
    per layer (e.g. the MLP), so heads and MLPs share one colour scale."""
    v = _array(values)
    if v.ndim != 2:
        raise ViewDataError(f"head_heatmap needs [layers, heads]; got shape {v.shape}.")
    L, H = v.shape
    cols = [f"H{h}" for h in range(H)]
    if extra is not None:
        x = _array(extra)
        if x.shape != (L,):
            raise ViewDataError(f"extra must be [layers] = [{L}]; got {x.shape}.")
        v = np.concatenate([v, x[:, None]], axis=1)
        cols.append(extra_name)
    lim = float(np.abs(v).max()) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=v,
            x=cols,
            y=[f"L{l}" for l in range(L)],
            colorscale="RdBu",
            zmid=0,
            zmin=-lim,
            zmax=lim,
            colorbar={"title": {"text": colorbar_title}, "thickness": 12, "x": 1.02},
            hovertemplate="%{y} %{x}: %{z:.4f}<extra></extra>",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        height=height or max(300, 60 + 16 * L),
        title={"text": title},
        yaxis={"autorange": "reversed", "dtick": max(1, L // 15)},
        margin={"l": 60, "r": 80, "t": 60, "b": 40},
    )
    return fig
