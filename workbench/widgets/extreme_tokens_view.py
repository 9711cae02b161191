"""Views of the extreme-token analysis: a head explorer and the heads x domains figures.

They take results of :mod:`workbench.analysis.extreme_tokens` (dataclasses and
DataFrames) and, to be live, a callable; they never see a model.

===========================  ==============================================================
view                         shows
===========================  ==============================================================
HeadExplorer                 one head on one prompt: attention map, ``||v W_O||`` per token,
                             residual norm per layer (sink against the median token); layer
                             and head pickers, a prompt box and a domain switch
ActiveDormantView            heads x domains heatmap of a chosen metric (a drop-down)
heads_domains_figure         the same heatmap as a static figure
sink_ablation_scatter        sink mass against ablation effect, one point per head and domain
residual_norms_figure        sink against median residual norm per layer (a scan)
residual_peak_figure         the sink's late-layer norm after zeroing each early block
checkpoint_figure            the metrics over training checkpoints
===========================  ==============================================================

Example:
    >>> view = HeadExplorer(compute=lambda p: prompt_profile(model, p),
    ...                     prompts={"code": "def f(x):\\n    return x", "prose": "The cat sat."})
    >>> view                                   # pick a layer and head; switch the domain
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.widgets.controls import (
    DEFAULT_WAIT_S,
    PromptBox,
    head_picker,
    layer_picker,
)
from workbench.widgets.layout import (
    COLORBAR_PX,
    DESIGN_WIDTH_PX,
    colorbar,
    log_axis,
    panel_domains,
    title_chars,
    token_axis,
    token_label,
    wrap,
)
from workbench.widgets.static import FigureFrames, OfflineFrames
from workbench.widgets.views import (
    TEMPLATE,
    View,
    ViewDataError,
    _array,
    _future_blank,
    _need,
)

__all__ = [
    "METRICS",
    "ActiveDormantView",
    "HeadExplorer",
    "checkpoint_figure",
    "heads_domains_figure",
    "interval_figure",
    "residual_norms_figure",
    "residual_peak_figure",
    "sink_ablation_scatter",
]

SINK, OTHER = "#d62728", "#1f77b4"
DOMAIN_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
# Column of an ActiveDormant table -> (label, colour scale, symmetric around 0).
METRICS = {
    "sink_mass": ("sink mass", "Viridis", False),
    "delta_zero": ("Δ loss, head zeroed (nats)", "RdBu_r", True),
    "delta_sink": ("Δ loss, attention moved to the sink (nats)", "RdBu_r", True),
    "sink_logit": ("sink logit", "Viridis", False),
}


def _label(tok: str) -> str:
    return token_label(tok, 12)


# HeadExplorer's panels at the design width: attention map, its colorbar and the bar chart's
# y labels in the first gap, the residual panel's y labels in the second.
_HE_MARGIN = (70, 20)
_HE_WIDTHS = (0.42, 0.33, 0.25)
_HE_GAPS = (COLORBAR_PX + 60, 70)
_HE_DOMAINS = panel_domains(_HE_WIDTHS, _HE_GAPS, margin_px=_HE_MARGIN)
_HE_PLOT_PX = DESIGN_WIDTH_PX - sum(_HE_MARGIN)
_CACHED_PROMPTS = 8  # HeadExplorer keeps this many prompts' profiles (domain switches)


# -- head explorer ---------------------------------------------------------------------------
class HeadExplorer(View):
    """One head on one prompt: attention map, value norms per token, residual norms per layer.

    Args:
        profile: a :class:`~workbench.analysis.extreme_tokens.PromptProfile` (or anything
            with ``tokens``, ``sink``, ``attn`` [layer, head, q, k], ``value_norms``
            [layer, head, seq] and ``resid_norms`` [layer, seq]).
        compute: ``compute(prompt) -> profile``; with it the view gets a prompt box and
            recomputes (debounced) as you type.
        prompts: ``{domain: prompt}``; a switch above the box loads each domain's prompt.

    Picking a layer or head re-slices the profile in memory; only a new prompt runs the
    model.
    """

    def __init__(
        self,
        profile: Any = None,
        *,
        compute: Callable[[str], Any] | None = None,
        prompts: Mapping[str, str] | None = None,
        domain: str | None = None,
        layer: int = 0,
        head: int = 0,
        height: int = 500,
        wait: float = DEFAULT_WAIT_S,
    ):
        fig = make_subplots(
            rows=1,
            cols=3,
            subplot_titles=("attention (query → key)", "‖v W_O‖ per token", "residual norm"),
        )
        for i, dom in enumerate(_HE_DOMAINS, start=1):
            fig.layout[f"xaxis{i if i > 1 else ''}"].domain = dom
            fig.layout.annotations[i - 1].x = (dom[0] + dom[1]) / 2  # the subplot titles
        fig.add_trace(
            go.Heatmap(
                colorscale="Viridis",
                zmin=0,
                zmax=1,
                colorbar=colorbar(_HE_DOMAINS[0][1], title="attention", margin_px=_HE_MARGIN),
                hovertemplate="%{customdata}<extra></extra>",
            ),
            1,
            1,
        )
        fig.add_trace(go.Bar(name="‖v W_O‖", hovertemplate="%{customdata}<extra></extra>"), 1, 2)
        fig.add_trace(go.Scatter(name="sink", mode="lines+markers", line_color=SINK), 1, 3)
        fig.add_trace(go.Scatter(name="median other", mode="lines+markers", line_color=OTHER), 1, 3)
        fig.add_trace(
            go.Scatter(name="this layer", mode="markers", marker={"size": 12, "color": "black"}),
            1,
            3,
        )
        fig.update_layout(
            template=TEMPLATE,
            height=height,
            margin={"l": _HE_MARGIN[0], "r": _HE_MARGIN[1], "t": 100, "b": 110},
            legend={
                "orientation": "h",
                "x": _HE_DOMAINS[2][0],
                "xanchor": "left",
                "y": -0.3,
                "yanchor": "top",
                "font": {"size": 11},
            },
            title={"font": {"size": 15}},
        )
        fig.update_yaxes(autorange="reversed", row=1, col=1)
        fig.update_yaxes(type="log", title_text="‖h‖", row=1, col=3)
        fig.update_xaxes(title_text="layer", row=1, col=3)
        self.layer = layer_picker(1, value=0)
        self.head = head_picker(1, value=0)
        self._syncing = False
        super().__init__(fig, [widgets.HBox([self.layer, self.head])])
        self.domains: dict[str, str] = dict(prompts or {})
        self.domain: widgets.ToggleButtons | None = None
        first = None
        if compute is not None:
            if not self.domains and profile is None:
                raise ViewDataError("HeadExplorer(compute=...) also needs prompts={domain: text}.")
            start = domain or (next(iter(self.domains)) if self.domains else None)
            if start is not None and start not in self.domains:
                raise ViewDataError(f"Unknown domain {start!r}; known: {list(self.domains)}.")
            box = PromptBox(self.domains.get(start, "") if start else "")
            self.prompt = box
            self._cache: dict[str, Any] = {}
            compute = self._cached(compute)
            self.follow(box, compute, wait=wait, embed=True)
            if self.domains:
                self.domain = widgets.ToggleButtons(
                    options=list(self.domains), value=start, description="domain"
                )
                self.domain.observe(self._switch_domain, names="value")
                # a prompt typed by hand belongs to no domain: the switch shows none picked
                box.observe(self._match_domain, names="value")
                self.controls.insert(0, self.domain)
                self.widget.children = (self.domain, *self.widget.children)
            if profile is None:
                first = compute(box.value)
            # Each domain's prompt is computed now (one short forward each), so switching
            # domain is a redraw, not a forward pass in a kernel that may be busy.
            for text in list(self.domains.values())[: _CACHED_PROMPTS - 1]:
                compute(text)
        profile = first if profile is None else profile
        if profile is None:
            raise ViewDataError("HeadExplorer needs a profile, or compute= and prompts=.")
        self.update(profile, layer=layer, head=head)
        self.layer.observe(lambda _: self._draw(), names="value")
        self.head.observe(lambda _: self._draw(), names="value")

    def _cached(self, compute: Callable[[str], Any]) -> Callable[[str], Any]:
        """``compute`` remembering the last few prompts, so switching back costs no pass."""

        def run(text: str) -> Any:
            if text not in self._cache:
                if len(self._cache) >= _CACHED_PROMPTS:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[text] = compute(text)
            return self._cache[text]

        return run

    def _switch_domain(self, change: dict[str, Any]) -> None:
        # Setting the box's value triggers its (debounced) recompute.
        if change["new"] is not None and self.prompt.value != self.domains[change["new"]]:
            self.prompt.value = self.domains[change["new"]]

    def _match_domain(self, change: dict[str, Any]) -> None:
        if self.domain is None:
            return
        match = next((d for d, text in self.domains.items() if text == change["new"]), None)
        if self.domain.value != match:
            self.domain.value = match

    def update(self, profile: Any, *, layer: int | None = None, head: int | None = None) -> None:
        """Show a new prompt profile (in place)."""
        for name in ("tokens", "sink", "attn", "value_norms", "resid_norms"):
            if not hasattr(profile, name):
                raise ViewDataError(f"HeadExplorer needs a profile with .{name}; got {profile!r}.")
        attn = _array(profile.attn)
        vn = _array(profile.value_norms)
        rn = _array(profile.resid_norms)
        n = len(profile.tokens)
        if attn.ndim != 4 or attn.shape[2:] != (n, n):
            raise ViewDataError(
                f"attn must be [layer, head, {n}, {n}] for {n} tokens; got {attn.shape}."
            )
        if vn.shape != attn.shape[:3] or rn.shape != (attn.shape[0], n):
            raise ViewDataError(
                f"value_norms must be {attn.shape[:3]} and resid_norms {(attn.shape[0], n)}; "
                f"got {vn.shape} and {rn.shape}."
            )
        self.profile, self.attn, self.value_norms, self.resid_norms = profile, attn, vn, rn
        layer = self.layer.value if layer is None else layer
        head = self.head.value if head is None else head
        if not 0 <= layer < attn.shape[0] or not 0 <= head < attn.shape[1]:
            raise ViewDataError(
                f"Layer {layer} / head {head} out of range: the profile has "
                f"{attn.shape[0]} layers and {attn.shape[1]} heads."
            )
        self._syncing = True
        try:
            self.layer.max = attn.shape[0] - 1
            self.layer.value = layer
            if len(self.head.options) != attn.shape[1]:
                self.head.options = [(f"head {h}", h) for h in range(attn.shape[1])]
            self.head.value = head
        finally:
            self._syncing = False
        self._draw()

    def _draw(self) -> None:
        if self._syncing:
            return
        layer, head = self.layer.value, self.head.value
        toks = [str(t) for t in self.profile.tokens]
        n, sink = len(toks), int(self.profile.sink)
        a = self.attn[layer, head]
        z = [[float(a[q, k]) if k <= q else None for k in range(n)] for q in range(n)]
        custom = [[f"{toks[q]!r} → {toks[k]!r}: {a[q, k]:.3f}" for k in range(n)] for q in range(n)]
        labels = [f"{j} {_label(t)}" for j, t in enumerate(toks)]
        d0, d1 = _HE_DOMAINS[0], _HE_DOMAINS[1]
        axis = token_axis(labels, span_px=(d0[1] - d0[0]) * _HE_PLOT_PX)
        height = float(self.figure.layout.height or 500)
        yaxis = token_axis(labels, span_px=height - 210, vertical=True)
        axis2 = token_axis(labels, span_px=(d1[1] - d1[0]) * _HE_PLOT_PX)
        vn = self.value_norms[layer, head]
        others = [j for j in range(n) if j != sink]
        norms = self.resid_norms  # [layer, seq]
        med = np.median(norms[:, others], axis=1) if others else np.full(norms.shape[0], np.nan)
        layers = list(range(norms.shape[0]))
        with self.figure.batch_update():
            hm, bar, s_line, m_line, mark = self.figure.data
            hm.z, hm.x, hm.y, hm.customdata = z, list(range(n)), list(range(n)), custom
            self.figure.layout.xaxis.update(axis)
            self.figure.layout.yaxis.update(yaxis)
            bar.x, bar.y = list(range(n)), vn.tolist()
            bar.marker.color = [SINK if j == sink else OTHER for j in range(n)]
            bar.customdata = [f"{toks[j]!r}: {vn[j]:.3g}" for j in range(n)]
            self.figure.layout.xaxis2.update(axis2)
            s_line.x, s_line.y = layers, norms[:, sink].tolist()
            m_line.x, m_line.y = layers, med.tolist()
            mark.x, mark.y = [layer], [float(norms[layer, sink])]
            self.figure.layout.title.text = self._title(layer, head)

    def _title(self, layer: int, head: int) -> str:
        toks = [str(t) for t in self.profile.tokens]
        sink, a, vn = int(self.profile.sink), self.attn[layer, head], self.value_norms[layer, head]
        others = [j for j in range(len(toks)) if j != sink]
        other_mean = float(vn[others].mean()) if others else float("nan")
        return wrap(
            f"Layer {layer} head {head}: the sink {_label(toks[sink])!r} (position {sink}) "
            f"gets {a[sink:, sink].mean():.2f} of the attention<br>"
            f"‖v W_O‖ of the sink {vn[sink]:.3g} against {other_mean:.3g} for the others",
            title_chars(DESIGN_WIDTH_PX, 15),
        )

    def static(self) -> go.Figure:
        """The figure now, with hover text read from the values (right in every frame)."""
        fig = super().static()
        fig.data[0].hovertemplate = "query %{y} → key %{x}: %{z:.3f}<extra></extra>"
        fig.data[1].hovertemplate = "position %{x}: %{y:.3g}<extra></extra>"
        return fig

    def offline(self) -> OfflineFrames:
        """Every layer and head of the prompt, so both pickers work in the static copy."""
        a = _future_blank(self.attn)  # [layer, head, query, key]
        n_layers, n_heads = a.shape[:2]
        sink = int(self.profile.sink)
        frames = [(lyr, h) for lyr in range(n_layers) for h in range(n_heads)]
        return OfflineFrames(
            controls=[
                ("layer", [str(x) for x in range(n_layers)]),
                ("head", [str(x) for x in range(n_heads)]),
            ],
            z=a,
            start=[int(self.layer.value), int(self.head.value)],
            titles=[self._title(lyr, h) for lyr, h in frames],
            updates=[
                {
                    1: {"y": self.value_norms[lyr, h].tolist()},
                    4: {"x": [lyr], "y": [float(self.resid_norms[lyr, sink])]},
                }
                for lyr, h in frames
            ],
            note="layer and head work offline (no kernel); the prompt and the domain need "
            "the notebook",
        )


# -- heads x domains -------------------------------------------------------------------------
def _grid(table: pd.DataFrame, domain: str, value: str) -> tuple[np.ndarray, list, list]:
    sub = table[table["domain"] == domain]
    g = sub.pivot(index="layer", columns="head", values=value)
    return g.to_numpy(dtype=np.float64), [int(x) for x in g.index], [int(x) for x in g.columns]


def heads_domains_figure(
    table: pd.DataFrame, value: str = "sink_mass", *, height: int | None = None
) -> go.Figure:
    """Heads x domains: one layer x head heatmap of ``value`` per domain (and their difference).

    Args:
        table: an :class:`~workbench.analysis.extreme_tokens.ActiveDormant` table (columns
            ``domain``, ``layer``, ``head`` and ``value``).
    """
    _need(table, ["domain", "layer", "head", value], "heads_domains_figure")
    domains = list(dict.fromkeys(table["domain"]))
    label, scale, symmetric = METRICS.get(value, (value, "Viridis", False))
    grids = [_grid(table, d, value) for d in domains]
    panels = [(d, g[0]) for d, g in zip(domains, grids, strict=True)]
    if len(domains) == 2:
        panels.append((f"{domains[0]} − {domains[1]}", grids[0][0] - grids[1][0]))
    layers, heads = grids[0][1], grids[0][2]
    fig = make_subplots(
        rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], shared_yaxes=True
    )
    # The domains share one colour scale, drawn once after the last domain panel; the
    # difference has its own in the right margin. Gaps leave room for the first.
    has_diff = len(panels) > len(domains)
    margin = (60, 30)
    gaps = [16.0] * (len(panels) - 1)
    if has_diff:
        gaps[-1] = COLORBAR_PX + 24
    doms = panel_domains([1.0] * len(panels), gaps, margin_px=margin)
    for i, dom in enumerate(doms, start=1):
        fig.layout[f"xaxis{i if i > 1 else ''}"].domain = dom
        fig.layout.annotations[i - 1].x = (dom[0] + dom[1]) / 2
    lim = max(float(np.nanmax(np.abs(g[0]))) for g in grids) or 1.0
    for i, (name, z) in enumerate(panels):
        diff = i == len(domains)
        sym = symmetric or diff
        dlim = (float(np.nanmax(np.abs(z))) or 1.0) if diff else lim
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=heads,
                y=layers,
                colorscale="RdBu_r" if diff else scale,
                zmid=0 if sym else None,
                zmin=-dlim if sym else None,
                zmax=dlim if sym else None,
                showscale=i == len(domains) - 1 or diff,
                colorbar=colorbar(
                    None if diff or not has_diff else doms[len(domains) - 1][1],
                    title="difference" if diff else wrap(label, 24),
                    margin_px=margin,
                ),
                hovertemplate=f"{name}<br>L%{{y}}H%{{x}}: %{{z:.4f}}<extra></extra>",
            ),
            1,
            i + 1,
        )
        fig.update_xaxes(title_text="head", row=1, col=i + 1)
    fig.update_yaxes(title_text="layer", autorange="reversed", row=1, col=1)
    fig.update_layout(
        template=TEMPLATE,
        height=height or max(340, 140 + 14 * len(layers)),
        title={"text": f"Heads × domains: {label}"},
        margin={"l": margin[0], "r": margin[1], "t": 80, "b": 50},
    )
    return fig


class ActiveDormantView(View):
    """Heads x domains heatmap with a drop-down to pick the metric (no recompute).

    Example:
        >>> ActiveDormantView(ad.table)                 # ad = active_dormant(model, domains)
    """

    def __init__(self, table: pd.DataFrame, value: str = "sink_mass"):
        options = [m for m in METRICS if m in table.columns]
        if value not in options:
            raise ViewDataError(f"Unknown metric {value!r}; the table has {options}.")
        self.table = table
        self.metric = widgets.Dropdown(
            options=[(METRICS[m][0], m) for m in options], value=value, description="metric"
        )
        super().__init__(heads_domains_figure(table, value), [self.metric])
        self.metric.observe(lambda ch: self.update(self.table, ch["new"]), names="value")

    def update(self, table: pd.DataFrame, value: str | None = None) -> None:
        """Redraw for ``table`` and ``value`` (in place)."""
        self.table = table
        fig = heads_domains_figure(table, value or self.metric.value)
        with self.figure.batch_update():
            for old, new in zip(self.figure.data, fig.data, strict=True):
                old.update(new.to_plotly_json())
                # to_plotly_json leaves out unset keys, so the previous metric's colour range
                # would stay; set every colour-range key, unset ones included.
                if old.type == "heatmap":
                    old.update(zmin=new.zmin, zmax=new.zmax, zmid=new.zmid)
                    old.zauto = new.zmin is None and new.zmax is None
            self.figure.layout.title = fig.layout.title

    def offline(self) -> FigureFrames:
        """The figure for every metric, so the metric picker works in the static copy."""
        metrics = [value for _, value in self.metric.options]
        return FigureFrames(
            control=("metric", [label for label, _ in self.metric.options]),
            figures=[heads_domains_figure(self.table, m) for m in metrics],
            start=metrics.index(self.metric.value),
            note="the metric works offline (no kernel)",
        )


def sink_ablation_scatter(
    table: pd.DataFrame, effect: str = "delta_zero", *, clip: float = 0.02, height: int = 440
) -> go.Figure:
    """Sink mass (x) against the loss change when the head is ablated (y), per domain.

    Dormant heads sit bottom right (much attention on the sink, little effect); active
    heads anywhere high. Hover shows the head and its state. The y range spans the
    ``clip`` to ``1 - clip`` quantiles (padded), so that one head with a huge effect does
    not flatten the rest: heads beyond it are drawn as triangles on the edge, and the
    hover gives their true value.
    """
    _need(table, ["domain", "layer", "head", "sink_mass", effect], "sink_ablation_scatter")
    y_all = table[effect].to_numpy(dtype=np.float64)
    lo, hi = np.quantile(y_all, [clip, 1 - clip]) if len(y_all) else (0.0, 0.0)
    pad = 0.15 * (hi - lo) or 0.01
    lo, hi = lo - pad, hi + pad
    fig = go.Figure()
    for i, (domain, sub) in enumerate(table.groupby("domain", sort=False)):
        state = sub["state"] if "state" in sub else pd.Series("", index=sub.index)
        y = sub[effect].to_numpy(dtype=np.float64)
        symbol = np.where(y > hi, "triangle-up", np.where(y < lo, "triangle-down", "circle"))
        fig.add_trace(
            go.Scatter(  # SVG, not WebGL: markers on the range's edge are drawn whole
                x=sub["sink_mass"],
                y=np.clip(y, lo, hi),
                error_x=_error_bars(sub, "sink_mass"),
                error_y=_error_bars(sub, effect),
                customdata=y,
                mode="markers",
                cliponaxis=False,
                name=str(domain),
                marker={
                    "color": DOMAIN_COLOURS[i % len(DOMAIN_COLOURS)],
                    "size": 7,
                    "opacity": 0.7,
                    "symbol": symbol.tolist(),
                },
                text=[
                    f"L{l}H{h} ({s})"
                    for l, h, s in zip(sub["layer"], sub["head"], state, strict=True)
                ],
                hovertemplate="%{text}<br>sink mass %{x:.3f}<br>Δloss %{customdata:.4f}"
                "<extra></extra>",
            )
        )
    n_out = int(((y_all > hi) | (y_all < lo)).sum())
    label = METRICS.get(effect, (effect,))[0]
    note = f"; {n_out} beyond the range drawn as ▲/▼ on its edge" if n_out else ""
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        title={"text": wrap(f"Sink mass against ablation effect ({label}){note}", title_chars())},
        margin={"t": 90},
        xaxis={"title": {"text": "sink mass"}, "range": [-0.03, 1.03]},
        yaxis={"title": {"text": "Δ loss (nats / token)"}, "range": [lo, hi]},
    )
    return fig


def residual_norms_figure(residual: pd.DataFrame, *, height: int = 380) -> go.Figure:
    """Sink against median (and max other) residual norm per layer, log scale.

    Args:
        residual: ``ExtremeTokenScan.residual`` (columns layer, sink_norm, median_norm, ...).
    """
    _need(residual, ["layer", "sink_norm", "median_norm"], "residual_norms_figure")
    fig = go.Figure()
    fig.add_scatter(x=residual["layer"], y=residual["sink_norm"], name="sink", line_color=SINK)
    fig.add_scatter(
        x=residual["layer"], y=residual["median_norm"], name="median token", line_color=OTHER
    )
    if "max_other_norm" in residual:
        fig.add_scatter(
            x=residual["layer"],
            y=residual["max_other_norm"],
            name="largest other token",
            line={"color": OTHER, "dash": "dot"},
        )
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        title={"text": "Residual-state peak: ‖h‖ after each layer"},
        xaxis={"title": {"text": "layer"}},
        yaxis={
            "title": {"text": "‖h‖"},
            **log_axis(
                np.concatenate(
                    [
                        residual[c].to_numpy(dtype=np.float64)
                        for c in ("sink_norm", "median_norm", "max_other_norm")
                        if c in residual
                    ]
                )
            ),
        },
    )
    return fig


def residual_peak_figure(table: pd.DataFrame, *, height: int = 380) -> go.Figure:
    """The sink's norm at the read-out layer after zeroing each block; the clean run dashed.

    Args:
        table: ``ResidualPeak.table`` (columns ablated, block, sink_norm, drop).
    """
    _need(table, ["ablated", "block", "sink_norm", "drop"], "residual_peak_figure")
    clean = table[table["ablated"] == "none"]
    runs = table[table["ablated"] != "none"]
    colours = {"attn": OTHER, "mlp": "#ff7f0e"}
    fig = go.Figure(
        go.Bar(
            x=runs["ablated"],
            y=runs["sink_norm"],
            marker_color=[colours.get(b, "#888") for b in runs["block"]],
            customdata=runs["drop"],
            hovertemplate="%{x} zeroed<br>sink norm %{y:.1f}<br>drop %{customdata:.1%}"
            "<extra></extra>",
        )
    )
    if len(clean):
        fig.add_hline(
            y=float(clean["sink_norm"].iloc[0]),
            line_dash="dash",
            annotation_text="no ablation",
        )
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        title={"text": "Which early block writes the sink's residual peak?"},
        xaxis={"title": {"text": "zeroed block"}},
        yaxis={"title": {"text": "sink ‖h‖ at the read-out layer"}},
    )
    return fig


def checkpoint_figure(dynamics: pd.DataFrame, *, height: int = 420) -> go.Figure:
    """The extreme-token metrics over training steps (``checkpoint_dynamics`` output).

    Top: the share of sink heads and the mean sink mass; bottom: the median value-norm
    ratio (sink / other) and the peak residual-norm ratio, on log scales.
    """
    _need(
        dynamics,
        [
            "step",
            "share_sink_heads",
            "mean_sink_mass",
            "median_value_norm_ratio",
            "peak_resid_ratio",
        ],
        "checkpoint_figure",
    )
    d = dynamics.sort_values("step")
    x = d["step"].clip(lower=1)  # step 0 on a log axis
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    fig.add_scatter(x=x, y=d["share_sink_heads"], name="share of sink heads", row=1, col=1)
    fig.add_scatter(x=x, y=d["mean_sink_mass"], name="mean sink mass", row=1, col=1)
    fig.add_scatter(x=x, y=d["median_value_norm_ratio"], name="‖v W_O‖ sink / other", row=2, col=1)
    fig.add_scatter(x=x, y=d["peak_resid_ratio"], name="residual peak ratio", row=2, col=1)
    fig.update_xaxes(log_axis(x), title_text="training step", row=2, col=1)
    fig.update_xaxes(log_axis(x), row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    ratios = np.concatenate(
        [d[c].to_numpy(dtype=np.float64) for c in ("median_value_norm_ratio", "peak_resid_ratio")]
    )
    fig.update_yaxes(log_axis(ratios), row=2, col=1)
    fig.update_layout(template=TEMPLATE, height=height, title={"text": "Over training"})
    return fig


def _error_bars(df: pd.DataFrame, value: str) -> dict | None:
    """Plotly error bars from ``<value>_low`` / ``<value>_high`` columns (None without them)."""
    lo, hi = f"{value}_low", f"{value}_high"
    if lo not in df or hi not in df:
        return None
    v = df[value].to_numpy(dtype=np.float64)
    up = np.nan_to_num(df[hi].to_numpy(dtype=np.float64) - v, nan=0.0, posinf=0.0)
    down = np.nan_to_num(v - df[lo].to_numpy(dtype=np.float64), nan=0.0, posinf=0.0)
    return {
        "type": "data",
        "symmetric": False,
        "array": up.clip(min=0),
        "arrayminus": down.clip(min=0),
        "thickness": 1,
        "width": 0,
    }


def interval_figure(
    table: pd.DataFrame,
    value: str = "delta_zero",
    *,
    heads: list[tuple[int, int]] | None = None,
    cut: float | None = None,
    height: int = 380,
) -> go.Figure:
    """``value`` per head and domain with its 95% interval (error bars), e.g. the ablation
    effect of the heads a notebook talks about; ``cut`` draws the cut-off (and its negative
    for effects).

    Example:
        >>> interval_figure(ad.table, "delta_zero", heads=[(15, 3)], cut=0.01)
    """
    _need(table, ["domain", "layer", "head", value], "interval_figure")
    t = table
    if heads is not None:
        keep = set(heads)
        t = t[[(int(l), int(h)) in keep for l, h in zip(t["layer"], t["head"], strict=True)]]
    fig = go.Figure()
    for i, (domain, sub) in enumerate(t.groupby("domain", sort=False)):
        names = [f"L{int(l)}H{int(h)}" for l, h in zip(sub["layer"], sub["head"], strict=True)]
        fig.add_trace(
            go.Scatter(
                x=names,
                y=sub[value],
                mode="markers",
                name=str(domain),
                marker={"color": DOMAIN_COLOURS[i % len(DOMAIN_COLOURS)], "size": 9},
                error_y=_error_bars(sub, value),
                text=sub["state"] if "state" in sub else None,
                hovertemplate="%{x}: %{y:.4f} (%{text})<extra></extra>",
            )
        )
    if cut is not None:
        for c in (cut, -cut) if value.startswith("delta") else (cut,):
            fig.add_hline(y=c, line={"dash": "dot", "color": "#888"})
    label = METRICS.get(value, (value,))[0]
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        title={
            "text": wrap(f"{label} per head, with 95% document-bootstrap intervals", title_chars())
        },
        scattermode="group",
        yaxis={"title": {"text": label}},
    )
    return fig
