"""Views of information-flow routes: the route graph, node logit lenses, head maps, head stats.

Figures are built from results of :mod:`workbench.analysis.routes` (a ``RouteGraph``, a
lens DataFrame, ``HeadMaps``, head-statistics DataFrames); :class:`RoutesView` makes them
live with three callables and never sees a model:

- ``graph_fn(prediction, tau, renormalize) -> RouteGraph``;
- ``lens_fn(node) -> DataFrame`` (columns kind, rank, token, value);
- ``maps_fn(layer, head) -> HeadMaps``.

In the route figure, x is the token position (only positions on the route are drawn) and
y the depth: embeddings at the bottom, then after each layer's attention and MLP. Each
head is its own edge, coloured by head number (sum them with the "sum heads" box); a
thicker line is a more important part. The small dot halfway along an edge is its handle:
click it to see that head's attention map and contribution map; click a node to see its
logit lens (top tokens, and the tokens its block promotes and suppresses).

Example:
    >>> routes = trace_routes(model, "When Mary and John went to the store, John gave a drink to")
    >>> RoutesView.for_routes(routes)                 # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from workbench.analysis.routes.graph import Node
from workbench.widgets.controls import DEFAULT_WAIT_S, link, threshold_slider
from workbench.widgets.layout import (
    COLORBAR_PX,
    DESIGN_WIDTH_PX,
    colorbar,
    thin_ticks,
    token_axis,
    token_label,
)
from workbench.widgets.sizing import fit
from workbench.widgets.static import PLOTLY_MIME, FigureFrames, static_bundle, static_html
from workbench.widgets.views import TEMPLATE, View, ViewDataError

__all__ = [
    "RoutesView",
    "head_frequency_figure",
    "head_maps_figure",
    "lens_figure",
    "route_figure",
    "specialisation_figure",
    "static_figure",
]

RESIDUAL, MLP = "#b0b0b0", "#8c564b"  # grey, brown: apart from the head palette
NODE_COLOURS = {"emb": "#2ca02c", "attn": "#1f77b4", "mlp": "#8c564b"}
# Importance bins -> line width (plotly draws one width per trace).
WIDTH_BINS = ((0.1, 1.2), (0.3, 2.5), (0.6, 4.0), (np.inf, 6.0))


def _tok(t: str, max_chars: int = 12) -> str:
    return token_label(t, max_chars)


# RoutesView puts the graph and the detail panel side by side, in these shares of the width.
GRAPH_SHARE, DETAIL_SHARE = 0.6, 0.4
MAX_GRAPH_HEIGHT = 720  # px: a 30-layer model's 61 levels fit, labels every other level
LEVEL_FONT_PX = 11
# The thresholds the static copy's τ picker offers (the view's own τ is added).
OFFLINE_TAUS = (0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3)
OFFLINE_NOTE = (
    "τ works offline for these thresholds (no kernel); the prediction, sum heads, "
    "renormalise and clicking a node or edge need the kernel"
)


def head_colours(n_heads: int) -> list[str]:
    """A distinct colour per head number."""
    if n_heads <= len(qualitative.Plotly):
        return list(qualitative.Plotly[:n_heads])
    return sample_colorscale("Turbo", [i / max(1, n_heads - 1) for i in range(n_heads)])


def _level_label(level: int) -> str:
    if level == 0:
        return "emb"
    return f"L{(level - 1) // 2} {'attn' if level % 2 else 'mlp'}"


def _width(weight: float) -> float:
    for upper, w in WIDTH_BINS:
        if weight <= upper:
            return w
    return WIDTH_BINS[-1][1]


def _curve(x0: float, y0: float, x1: float, y1: float, off: float, n: int = 9) -> tuple:
    """Points of a quadratic curve from (x0, y0) to (x1, y1) bent sideways by ``off``."""
    cx, cy = (x0 + x1) / 2 + off, (y0 + y1) / 2
    t = np.linspace(0, 1, n)
    xs = (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x1
    ys = (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y1
    return xs, ys


def _graph_edges(g: Any, summed: bool) -> list[dict[str, Any]]:
    """Edges of a RouteGraph as dicts (heads summed on request)."""
    out = []
    if summed:
        for u, v, d in g.summed().edges(data=True):
            heads = d["heads"]
            out.append(
                {"u": u, "v": v, "kind": d["kind"], "layer": d["layer"],
                 "head": heads[0] if heads else None, "heads": heads,
                 "importance": d["importance"], "weight": d["weight"]}
            )  # fmt: skip
    else:
        for u, v, d in g.graph.edges(data=True):
            out.append(
                {"u": u, "v": v, "kind": d["kind"], "layer": d["layer"], "head": d["head"],
                 "heads": [d["head"]] if d["head"] is not None else [],
                 "importance": d["importance"], "weight": d["weight"]}
            )  # fmt: skip
    return out


def route_figure(
    g: Any,
    *,
    sum_heads: bool = False,
    height: int | None = None,
    title: str | None = None,
) -> go.Figure:
    """A plotly figure of a route graph (see the module docstring for how to read it).

    Trace names tell the parts apart: ``"nodes"``, ``"edge handles"`` (one per head edge,
    halfway along it) and one trace per edge group (``"residual"``, ``"mlp"``, ``"head k"``
    or ``"attention"``) and width.
    """
    nodes = list(g.graph.nodes)
    if not nodes:
        raise ViewDataError("The route graph has no nodes.")
    positions = sorted({n.pos for n in nodes})
    col = {p: i for i, p in enumerate(positions)}
    top_level = 2 * g.n_layers
    colours = head_colours(g.n_heads)
    edges = _graph_edges(g, sum_heads)
    # Parallel edges between the same two nodes fan out sideways.
    pairs: dict[tuple, list[int]] = {}
    for k, e in enumerate(edges):
        pairs.setdefault((e["u"], e["v"]), []).append(k)
    groups: dict[tuple[str, float], dict[str, Any]] = {}
    mids_x, mids_y, mids_data, mids_text, mids_colour = [], [], [], [], []
    for ks in pairs.values():
        ks.sort(key=lambda k: (edges[k]["kind"] != "residual", edges[k]["head"] or -1))
        for rank, k in enumerate(ks):
            e = edges[k]
            off = 0.0 if len(ks) == 1 else 0.22 * (rank - (len(ks) - 1) / 2)
            x0, y0, x1, y1 = col[e["u"].pos], e["u"].level, col[e["v"].pos], e["v"].level
            xs, ys = _curve(x0, y0, x1, y1, off)
            if e["kind"] == "head":
                name, colour = f"head {e['head']}", colours[e["head"] % len(colours)]
            elif e["kind"] == "attention":
                name, colour = "attention (heads summed)", "#1f77b4"
            else:
                name, colour = e["kind"], RESIDUAL if e["kind"] == "residual" else MLP
            grp = groups.setdefault(
                (name, _width(e["weight"])), {"x": [], "y": [], "colour": colour}
            )
            grp["x"] += [*xs.tolist(), None]
            grp["y"] += [*ys.tolist(), None]
            if not e["heads"]:
                continue  # only head edges get a handle: a click shows that head's maps
            mids_x.append(float(xs[len(xs) // 2]))
            mids_y.append(float(ys[len(ys) // 2]))
            heads = ",".join(str(h) for h in e["heads"])
            mids_data.append([e["kind"], e["layer"], -1 if e["head"] is None else e["head"]])
            what = f"L{e['layer']} head {heads}" if e["heads"] else f"L{e['layer']} {e['kind']}"
            mids_text.append(
                f"{what}<br>{e['u'].label()} → {e['v'].label()}<br>"
                f"importance {e['importance']:.3f}, weight {e['weight']:.3f}"
            )
            mids_colour.append(colour)
    traces = []
    shown = set()
    for (name, width), grp in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        traces.append(
            go.Scatter(
                x=grp["x"], y=grp["y"], mode="lines", name=name, legendgroup=name,
                showlegend=name not in shown, hoverinfo="skip",
                line={"color": grp["colour"], "width": width},
            )
        )  # fmt: skip
        shown.add(name)
    traces.append(
        go.Scatter(
            x=mids_x, y=mids_y, mode="markers", name="edge handles", showlegend=False,
            marker={"size": 7, "color": mids_colour, "opacity": 0.55, "symbol": "diamond"},
            customdata=mids_data, hovertext=mids_text, hoverinfo="text",
        )
    )  # fmt: skip
    node_text = [
        f"{n.label()}<br>token {n.pos}: {html.escape(repr(g.tokens[n.pos]))}" for n in nodes
    ]
    traces.append(
        go.Scatter(
            x=[col[n.pos] for n in nodes], y=[n.level for n in nodes], mode="markers",
            name="nodes", showlegend=False, hovertext=node_text, hoverinfo="text",
            customdata=[[n.layer, n.stage, n.pos] for n in nodes],
            marker={"size": 10, "color": [NODE_COLOURS[n.stage] for n in nodes],
                    "line": {"width": 1, "color": "white"}},
        )
    )  # fmt: skip
    levels = list(range(top_level + 1))
    h = height or min(MAX_GRAPH_HEIGHT, max(460, 190 + 15 * (top_level + 1)))
    level_px = (h - 170) / max(1, top_level + 1.4)
    if level_px >= LEVEL_FONT_PX * 1.3:  # every level gets its label
        ticks = [(lv, _level_label(lv)) for lv in levels]
    else:  # the embedding and each layer's attention level ("L3"), thinned to fit
        ticks = [(0, "emb")] + [(2 * k + 1, f"L{k}") for k in range(g.n_layers)]
    vals, text = thin_ticks(
        [t[0] for t in ticks], [t[1] for t in ticks], span_px=h - 170,
        per_label_px=LEVEL_FONT_PX * 1.4,
    )  # fmt: skip
    # "emb" and "L0" are one level apart, the layers two: drop a label too close below
    kept = [0]
    for i in range(1, len(vals)):
        if (vals[i] - vals[kept[-1]]) * level_px >= LEVEL_FONT_PX * 1.3:
            kept.append(i)
    vals, text = [vals[i] for i in kept], [text[i] for i in kept]
    pred = g.prediction
    nxt = f" (prediction at {pred}: {_tok(g.tokens[pred])!r} → next)"
    graph_px = GRAPH_SHARE * DESIGN_WIDTH_PX - 80 - 110  # margin, legend
    xaxis = token_axis([f"{p}: {_tok(g.tokens[p])}" for p in positions], span_px=graph_px)
    fig = go.Figure(
        traces,
        layout={
            "template": TEMPLATE,
            "height": h,
            "title": {
                "text": title or f"Route graph, τ = {g.tau:.2f}<br>{nxt.strip(' ()')}",
                "font": {"size": 14},
            },
            "margin": {"l": 60, "r": 10, "t": 60, "b": 40},
            "xaxis": {**xaxis, "range": [-0.7, len(positions) - 0.3], "showgrid": False},
            "yaxis": {
                "tickmode": "array", "tickvals": vals, "ticktext": text,
                "range": [-0.7, top_level + 0.7], "tickfont": {"size": LEVEL_FONT_PX},
                "automargin": True,
            },
            "legend": {"font": {"size": 10}, "tracegroupgap": 2},
            "hovermode": "closest",
            "clickmode": "event",
        },
    )  # fmt: skip
    return fig


def lens_figure(df: pd.DataFrame, *, title: str = "Logit lens", stacked: bool = False) -> go.Figure:
    """Bars of a node's lens: top tokens (probability), promoted and suppressed (Δ log-prob).

    ``stacked`` puts the three panels one above the other (for a narrow side panel).
    """
    need = ["kind", "rank", "token", "value"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ViewDataError(f"lens_figure needs columns {need}; missing {missing}.")
    kinds = [k for k in ("top", "promoted", "suppressed") if (df["kind"] == k).any()]
    labels = {"top": "top tokens (p)", "promoted": "promoted (Δ log p)",
              "suppressed": "suppressed (Δ log p)"}  # fmt: skip
    colours = {"top": "#1f77b4", "promoted": "#2ca02c", "suppressed": "#d62728"}
    n = max(1, len(kinds))
    # Labels are cut to 10 characters (a run of spaces folds to ·×n), and the gaps leave
    # room for them, so a whitespace token never runs into the next panel.
    if stacked:
        fig = make_subplots(
            rows=n, cols=1, subplot_titles=[labels[k] for k in kinds], vertical_spacing=0.12
        )
    else:
        gap = (10 * 0.62 * 11 + 30) / (DESIGN_WIDTH_PX - 110)
        fig = make_subplots(
            rows=1, cols=n, subplot_titles=[labels[k] for k in kinds], horizontal_spacing=gap
        )
    for c, kind in enumerate(kinds, start=1):
        part = df[df["kind"] == kind].sort_values("rank")
        row, col = (c, 1) if stacked else (1, c)
        fig.add_trace(
            go.Bar(
                x=part["value"], y=list(range(len(part))), orientation="h",
                marker_color=colours[kind], name=kind, showlegend=False,
                customdata=[html.escape(repr(str(t)), quote=False) for t in part["token"]],
                hovertemplate="%{customdata}: %{x:.3f}<extra></extra>",
            ),
            row=row, col=col,
        )  # fmt: skip
        fig.update_yaxes(
            autorange="reversed", tickmode="array", tickvals=list(range(len(part))),
            ticktext=[html.escape(_tok(t, 10), quote=False) for t in part["token"]],
            tickfont={"size": 11}, automargin=True, row=row, col=col,
        )  # fmt: skip
    fig.update_layout(
        template=TEMPLATE, height=190 * n + 60 if stacked else 360,
        title={"text": title, "font": {"size": 14}},
        margin={"l": 90, "r": 20, "t": 70, "b": 40},
    )  # fmt: skip
    return fig


def head_maps_figure(
    maps: Any, *, stacked: bool = False, width_px: float = DESIGN_WIDTH_PX
) -> go.Figure:
    """A head's attention map and contribution map, side by side (query × key).

    Axes are token positions (numbers) with thinned token labels, so two equal tokens stay
    two rows and no label overprints another. ``stacked`` puts the maps one above the
    other, for a side panel ``width_px`` wide.
    """
    a, c = np.asarray(maps.attention, dtype=float), np.asarray(maps.contribution, dtype=float)
    if a.shape != c.shape or a.ndim != 2:
        raise ViewDataError(f"Attention {a.shape} and contribution {c.shape} maps must match.")
    n = a.shape[0]
    mask = np.triu(np.ones((n, n), dtype=bool), k=1)
    # None, not NaN: NaN is not JSON, and the widget's JSON must stay valid
    a = np.where(mask, None, a.astype(object)).tolist()
    c = np.where(mask, None, c.astype(object)).tolist()
    labels = [f"{i}: {_tok(t, 10)}" for i, t in enumerate(maps.tokens)]
    names = ["attention A[q, k]", "contribution: importance of z[q ← k]"]
    margin = (70, 30)
    if stacked:
        fig = make_subplots(rows=2, cols=1, vertical_spacing=0.14, subplot_titles=names)
        panel_w = width_px - sum(margin) - COLORBAR_PX
        height = int(2 * min(panel_w, 360) + 220)
        panel_h = (height - 170) / 2
    else:
        fig = make_subplots(rows=1, cols=2, subplot_titles=names)
        label_px = 10 * 0.62 * 11 + 20
        gap = (COLORBAR_PX + label_px + 20) / (width_px - sum(margin))
        fig.layout.xaxis.domain = [0.0, (1 - gap) / 2]
        fig.layout.xaxis2.domain = [(1 + gap) / 2, 1.0]
        doms = ((0, (1 - gap) / 2), ((1 + gap) / 2, 1))
        for ann, dom in zip(fig.layout.annotations, doms, strict=True):
            ann.x = (dom[0] + dom[1]) / 2
        panel_w = (width_px - sum(margin)) * (1 - gap) / 2
        height = max(400, 200 + 9 * n)
        panel_h = height - 190
    for k, (z, scale) in enumerate(((a, "Viridis"), (c, "Reds"))):
        row, col = (k + 1, 1) if stacked else (1, k + 1)
        xa = fig.layout[f"xaxis{k + 1 if k else ''}"]
        ya = fig.layout[f"yaxis{k + 1 if k else ''}"]
        cb = colorbar(
            None if (stacked or k == 1) else float(xa.domain[1]),
            y=tuple(ya.domain), margin_px=margin, width_px=width_px,
        )  # fmt: skip
        fig.add_trace(
            go.Heatmap(
                z=z, x=list(range(n)), y=list(range(n)), colorscale=scale, zmin=0,
                colorbar=cb, customdata=[[f"{labels[q]} ← {labels[j]}" for j in range(n)]
                                         for q in range(n)],
                hovertemplate="%{customdata}<br>%{z:.3f}<extra></extra>",
            ),
            row=row, col=col,
        )  # fmt: skip
        fig.update_xaxes(token_axis(labels, span_px=panel_w), row=row, col=col)
        fig.update_yaxes(
            token_axis(labels, span_px=panel_h, vertical=True), autorange="reversed",
            row=row, col=col,
        )  # fmt: skip
    fig.update_layout(
        template=TEMPLATE, height=height,
        title={"text": f"Layer {maps.layer}, head {maps.head}", "font": {"size": 14}},
        margin={"l": margin[0], "r": margin[1], "t": 70, "b": 90},
    )  # fmt: skip
    return fig


def head_frequency_figure(
    frame: pd.DataFrame, value: str = "frequency", *, title: str | None = None
) -> go.Figure:
    """Heatmap of a per-head column (layer × head) of a head-statistics frame."""
    for c in ("layer", "head", value):
        if c not in frame.columns:
            raise ViewDataError(f"head_frequency_figure needs column {c!r}; got {list(frame)}.")
    grid = frame.pivot(index="layer", columns="head", values=value)
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(dtype=float), x=[int(h) for h in grid.columns],
            y=[int(lv) for lv in grid.index], colorscale="Blues",
            colorbar={"title": {"text": value}},
            hovertemplate="layer %{y} head %{x}<br>" + value + " %{z:.3f}<extra></extra>",
        ),
        layout={
            "template": TEMPLATE, "height": max(320, 100 + 14 * len(grid)),
            "title": {"text": title or f"Heads in routes: {value}"},
            "xaxis": {"title": {"text": "head"}, "dtick": 1},
            "yaxis": {"title": {"text": "layer"}},
        },
    )  # fmt: skip
    return fig


def specialisation_figure(df: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Scatter of per-head route frequency in two domains, coloured by specialisation."""
    freq = [c for c in df.columns if c.startswith("freq_") and not c.endswith(("_low", "_high"))]
    if len(freq) != 2 or "specialised" not in df.columns:
        raise ViewDataError(
            "specialisation_figure needs two freq_<domain> columns and 'specialised' "
            "(from domain_specialisation)."
        )
    a, b = freq
    fig = go.Figure(layout={"template": TEMPLATE, "height": 480})
    palette = {a[5:]: "#d62728", b[5:]: "#1f77b4", "shared": "#9e9e9e", "uncertain": "#e0c060"}
    for label, part in df.groupby("specialised", sort=False):
        fig.add_trace(
            go.Scatter(
                x=part[b], y=part[a], mode="markers", name=str(label),
                error_x=_error_bars(part, b), error_y=_error_bars(part, a),
                marker={"color": palette.get(label, "#333"), "size": 8, "opacity": 0.8},
                hovertext=[f"L{r.layer} H{r.head}: z = {r.z:.1f}" for r in part.itertuples()],
                hoverinfo="text",
            )
        )  # fmt: skip
    top = float(np.nanmax(df[[a, b]].to_numpy())) if len(df) else 1.0
    fig.add_trace(
        go.Scatter(x=[0, top], y=[0, top], mode="lines", name="equal",
                   line={"dash": "dot", "color": "#bbb"}, hoverinfo="skip")
    )  # fmt: skip
    fig.update_layout(
        title={"text": title or f"Route frequency per head: {a[5:]} against {b[5:]}"},
        xaxis={"title": {"text": f"frequency in {b[5:]} routes"}},
        yaxis={"title": {"text": f"frequency in {a[5:]} routes"}},
    )  # fmt: skip
    return fig


class StaticFigure:
    """A plotly figure that displays with a static HTML copy, so HTML exports show it.

    A bare ``go.Figure`` in a headless kernel outputs only plotly's JSON mimetype, which
    nbconvert's HTML export cannot draw; this adds the ``text/html`` copy of
    :func:`workbench.widgets.static.static_bundle` (plotly.js inlined once per kernel).
    """

    def __init__(self, figure: go.Figure):
        self.figure = figure

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = static_bundle(self.figure)
        title = self.figure.layout.title.text or "figure"
        bundle["text/plain"] = f"{title} (plotly figure)"
        return bundle


def static_figure(figure: go.Figure) -> StaticFigure:
    """``figure``, wrapped to display with a static HTML copy (see :class:`StaticFigure`)."""
    return StaticFigure(figure)


def _replace(widget: go.FigureWidget, fig: go.Figure) -> None:
    """Swap a FigureWidget's traces and layout for those of ``fig``.

    The old traces go first and the new layout (its axes typed and ranged) comes before
    the new traces: a heatmap added onto the axes of the bar chart it replaces would be
    drawn once against the wrong axis type (the browser's ``<image> width "NaN"``).
    """
    old = widget.layout.to_plotly_json()
    widget.data = []
    widget.layout = fig.layout
    # What the new layout does not name stays in the browser: the lens's subplot titles
    # ("promoted (Δ log p)") printed over the placeholder's title. Hide or empty it.
    for key in set(old) - set(fig.layout.to_plotly_json()):
        if key[1:5] == "axis":
            widget.layout[key] = {"visible": False}
        elif isinstance(old[key], list | tuple):
            widget.layout[key] = []
    widget.layout.autosize = True  # the new layout lacks it: keep filling the pane
    widget.add_traces(list(fig.data))


def _placeholder() -> go.Figure:
    return go.Figure(
        layout={
            "template": TEMPLATE, "height": 160, "margin": {"l": 20, "r": 20, "t": 60, "b": 20},
            "title": {"text": "Click a node for its logit lens,<br>or an edge's dot for its "
                              "head's maps", "font": {"size": 13}},
            "xaxis": {"visible": False}, "yaxis": {"visible": False},
        }
    )  # fmt: skip


class RoutesView(View):
    """The interactive route graph: τ slider, prediction picker, clickable nodes and edges.

    Args:
        graph_fn: ``(prediction, tau, renormalize) -> RouteGraph``.
        lens_fn: ``node -> DataFrame`` of the node's logit lens.
        maps_fn: ``(layer, head) -> HeadMaps``.
        tokens: the prompt's token strings.
        predictions: ``[(label, position), ...]`` for the picker (default: every position).
        prediction, tau, renormalize: the first graph shown.

    Example:
        >>> view = RoutesView.for_routes(routes, tau=0.04)          # doctest: +SKIP
        >>> view.select_node(view.graph.top); view.select_edge(9, 6)  # what a click does
    """

    def __init__(
        self,
        graph_fn: Callable[[int, float, bool], Any],
        lens_fn: Callable[[Any], pd.DataFrame],
        maps_fn: Callable[[int, int], Any],
        tokens: Sequence[str],
        *,
        predictions: Sequence[tuple[str, int]] | None = None,
        prediction: int = -1,
        tau: float = 0.04,
        renormalize: bool = False,
        sum_heads: bool = False,
        wait: float = DEFAULT_WAIT_S,
    ):
        self.graph_fn, self.lens_fn, self.maps_fn = graph_fn, lens_fn, maps_fn
        self.tokens = list(tokens)
        n = len(self.tokens)
        if n == 0:
            raise ViewDataError("RoutesView needs the prompt's tokens; got none.")
        options = list(predictions or [(f"{i}: {_tok(t)}", i) for i, t in enumerate(self.tokens)])
        first = prediction + n if prediction < 0 else prediction
        if first not in [p for _, p in options]:
            raise ViewDataError(f"Prediction {prediction} is not among the picker's positions.")
        self.tau = threshold_slider(tau, min=0.01, max=0.5, step=0.01, description="τ")
        self.tau.layout = widgets.Layout(width="320px", min_width="240px")
        self.prediction = widgets.Dropdown(
            options=options, value=first, description="explain",
            layout=widgets.Layout(width="340px"),
        )  # fmt: skip
        self.sum_heads = widgets.Checkbox(value=sum_heads, description="sum heads", indent=False)
        self.renormalize = widgets.Checkbox(
            value=renormalize, description="renormalise", indent=False
        )
        controls = widgets.HBox(
            [self.prediction, self.tau, self.sum_heads, self.renormalize],
            layout=widgets.Layout(flex_flow="row wrap"),
        )
        self.graph = graph_fn(first, tau, renormalize)
        super().__init__(route_figure(self.graph, sum_heads=sum_heads), [controls])
        self.detail = fit(go.FigureWidget(_placeholder()))
        # The detail panel sits beside the graph, so a click near the top shows its result
        # in view; it is cleared whenever the graph changes.
        self.panes = widgets.HBox(
            [
                # columns, so each figure stretches to its pane (a row box left it 700 px)
                widgets.VBox([self.figure], layout=widgets.Layout(
                    flex=f"{GRAPH_SHARE * 10:g} 1 0%", min_width="0")),
                widgets.VBox([self.detail], layout=widgets.Layout(
                    flex=f"{DETAIL_SHARE * 10:g} 1 0%", min_width="0")),
            ],
            layout=widgets.Layout(width="100%", align_items="flex-start"),
        )  # fmt: skip
        self.widget.children = tuple(
            self.panes if c is self.figure else c for c in self.widget.children
        )
        self.selected: tuple[str, Any] | None = None
        self._wire_clicks()
        for control in (self.prediction, self.tau, self.renormalize):
            self.debouncers.append(
                link(control, lambda _: self.refresh(), wait=wait, on_error=self.show_error)
            )
        self.sum_heads.observe(lambda _: self._draw(), names="value")

    @classmethod
    def for_routes(cls, routes: Any, **kwargs: Any) -> RoutesView:
        """A view wired to a :class:`~workbench.analysis.routes.Routes` (lazy, cached)."""
        preds = routes.predictions()
        options = [
            (f"{r.position}: {_tok(r.token)} → {_tok(str(r.predicted))}", int(r.position))
            for r in preds.itertuples()
        ]

        def graph_fn(p: int, tau: float, renorm: bool) -> Any:
            return routes.graph(p, tau, renormalize=renorm)

        return cls(
            graph_fn, routes.node_lens, routes.head_maps, routes.tokens,
            predictions=options, **kwargs,
        )  # fmt: skip

    # -- drawing -----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rebuild the graph from the controls' values."""
        self.status.value = '<span style="color:#888">computing…</span>'
        self.update(self.graph_fn(self.prediction.value, self.tau.value, self.renormalize.value))
        self.status.value = ""

    def update(self, graph: Any) -> None:
        """Show a new route graph (in place); the detail panel is cleared."""
        self.graph = graph
        self._draw()
        self.clear_detail()

    def clear_detail(self) -> None:
        """Empty the detail panel (its node or edge may not be on the new graph)."""
        if self.selected is not None:
            _replace(self.detail, _placeholder())
            self.selected = None

    def _draw(self) -> None:
        _replace(self.figure, route_figure(self.graph, sum_heads=self.sum_heads.value))
        self._wire_clicks()

    def _wire_clicks(self) -> None:
        for trace in self.figure.data:
            if trace.name == "nodes":
                trace.on_click(self._on_node_click)
            elif trace.name == "edge handles":
                trace.on_click(self._on_edge_click)

    def _on_node_click(self, trace: Any, points: Any, _selector: Any = None) -> None:
        for i in points.point_inds:
            layer, stage, pos = trace.customdata[i]
            self._safe(self.select_node, Node(int(layer), str(stage), int(pos)))

    def _on_edge_click(self, trace: Any, points: Any, _selector: Any = None) -> None:
        for i in points.point_inds:
            kind, layer, head = trace.customdata[i]
            if int(head) >= 0:
                self._safe(self.select_edge, int(layer), int(head))
            else:
                self.status.value = f"{html.escape(str(kind))} edge: no head to show."

    def _safe(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # a click has no cell to raise in
            self.show_error(exc)

    # -- what a click does (callable from code and tests) -----------------------------------
    def select_node(self, node: Any) -> pd.DataFrame:
        """Show ``node``'s logit lens below the graph; returns the lens table."""
        df = self.lens_fn(node)
        label = node.label() if hasattr(node, "label") else str(node)
        _replace(self.detail, lens_figure(df, title=f"Logit lens at {label}", stacked=True))
        self.selected = ("node", node)
        return df

    def select_edge(self, layer: int, head: int) -> Any:
        """Show head ``(layer, head)``'s attention and contribution maps; returns them."""
        maps = self.maps_fn(layer, head)
        _replace(
            self.detail,
            head_maps_figure(maps, stacked=True, width_px=DETAIL_SHARE * DESIGN_WIDTH_PX),
        )
        self.selected = ("edge", (layer, head))
        return maps

    # -- display -----------------------------------------------------------------------------
    def static_figures(self) -> list[go.Figure]:
        """Plain ``go.Figure`` copies of the graph and of the detail panel."""
        figs = [go.Figure(self.figure.to_dict())]
        if self.selected is not None:
            figs.append(go.Figure(self.detail.to_dict()))
        return figs

    def offline(self) -> FigureFrames | None:
        """The graph at a few thresholds, so τ works in the static copy with no kernel.

        The thresholds are :data:`OFFLINE_TAUS` and the view's own τ (shown first); each
        frame is the figure the live view draws at that τ (same prediction, renormalisation
        and head summing). Past the size budget, about half the thresholds go (the view's
        own stays) until two are left; if even two do not fit, the copy stays fixed and its
        caption says so.
        """
        cur = float(self.tau.value)
        p, renorm = self.prediction.value, self.renormalize.value
        figures: dict[float, dict[str, Any]] = {}
        for t in sorted({t for t in OFFLINE_TAUS if abs(t - cur) > 1e-9} | {cur}):
            g = self.graph if t == cur else self.graph_fn(p, t, renorm)
            try:
                fig = route_figure(g, sum_heads=self.sum_heads.value)
            except ViewDataError:  # nothing left on the route at this τ
                continue
            figures[t] = json.loads(pio.to_json(fig, validate=False))
        if cur not in figures:
            return None
        taus = list(figures)
        while True:
            frames = FigureFrames(
                control=("τ", [f"{t:.3g}" for t in taus]),
                figures=[figures[t] for t in taus],
                start=taus.index(cur),
                note=OFFLINE_NOTE,
            )
            if len(taus) <= 2 or frames.payload() is not None:
                return frames
            taus = _fewer(taus, cur)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        figs = self.static_figures()
        bundle = dict(self.widget._repr_mimebundle_())
        frames = self.offline()
        caption = (
            ""
            if frames is not None
            else "static copy: run the notebook to move τ or click nodes and edges"
        )
        first = static_bundle(figs[0], offline=frames, caption=caption)
        bundle[PLOTLY_MIME] = first[PLOTLY_MIME]
        # graph and detail side by side, as in the live view (a copy keeps both panels);
        # fixed shares, not flex-grow: the graph draws itself before the detail column is
        # parsed, and would otherwise take the whole width and run under the detail
        detail = "".join(static_html(f) for f in figs[1:])
        col = "flex:0 0 calc((100% - 8px) * {:g}); min-width:0"
        bundle["text/html"] = (
            '<div class="wb-routes" style="display:flex; gap:8px; align-items:flex-start">'
            f'<div style="{col.format(GRAPH_SHARE)}">{first["text/html"]}</div>'
            f'<div style="{col.format(DETAIL_SHARE)}">{detail}</div></div>'
        )
        bundle["text/plain"] = "RoutesView (static copy; run the notebook to interact)"
        return bundle


def _fewer(taus: list[float], keep: float) -> list[float]:
    """About half of ``taus`` (at least two), spread evenly over them, ``keep`` among them."""
    others = [t for t in taus if t != keep]
    k = max(1, len(taus) // 2 - 1)
    picks = np.unique(np.linspace(0, len(others) - 1, k).round().astype(int))
    return sorted({others[i] for i in picks} | {keep})


def _error_bars(df: pd.DataFrame, value: str) -> dict | None:
    """Plotly error bars from ``<value>_low`` / ``<value>_high`` columns (None without them)."""
    lo, hi = f"{value}_low", f"{value}_high"
    if lo not in df or hi not in df:
        return None
    v = df[value].to_numpy(dtype=float)
    up = np.nan_to_num(df[hi].to_numpy(dtype=float) - v, nan=0.0, posinf=0.0)
    down = np.nan_to_num(v - df[lo].to_numpy(dtype=float), nan=0.0, posinf=0.0)
    return {"type": "data", "symmetric": False, "array": up.clip(min=0),
            "arrayminus": down.clip(min=0), "thickness": 1, "width": 0}  # fmt: skip
