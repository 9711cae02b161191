"""Views of the function-token analysis: Zipf, degrees, coverage, losses, and two live views.

Everything here takes results of :mod:`workbench.analysis.function_tokens` (DataFrames and
:class:`~workbench.analysis.function_tokens.FeatureGraph`), and, for steering, a callable
that the notebook writes over the model. Nothing here touches a model.

=====================  ===================================================================
view                   shows
=====================  ===================================================================
TokenFeaturesView      pick a layer and a token: its features, by how often they fire
FeatureView            pick a feature: its top-activating contexts, and a steering-strength
                       slider that regenerates text through ``steer(layer, feature, s)``
FunctionTokensView     both, linked: clicking a token's feature bar opens it below
=====================  ===================================================================

Example:
    >>> FunctionTokensView(graphs, steer=lambda layer, f, s: generate_with(layer, f, s))
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from workbench.widgets.controls import DEFAULT_WAIT_S, Debouncer, show_token
from workbench.widgets.layout import (
    DESIGN_WIDTH_PX,
    LINE_PX,
    TICK_FONT_PX,
    log_axis,
    title_chars,
    token_axis,
    token_label,
    wrap,
)
from workbench.widgets.static import static_bundle, static_html
from workbench.widgets.views import TEMPLATE, View, ViewDataError

__all__ = [
    "FeatureView",
    "FunctionTokensView",
    "TokenFeaturesView",
    "contexts_html",
    "coverage_figure",
    "degree_figure",
    "document_coverage_figure",
    "loss_class_figure",
    "loss_curve_figure",
    "zipf_figure",
]

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _need(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ViewDataError(
            f"{what} needs columns {list(cols)}; missing {missing}, got {sorted(df.columns)}."
        )


def _label(tok: str) -> str:
    return token_label(tok, 16)


def _log_vline(fig: go.Figure, x: float, text: str | None = None) -> None:
    """A dashed vertical line at ``x`` on a log x axis, with an optional label at its top.

    plotly's ``add_vline`` places its annotation at ``x`` in axis units, which on a log axis
    are log10 units: a label for rank 40 lands at 10^40 and stretches the axis to it.
    """
    fig.add_shape(
        type="line", x0=x, x1=x, xref="x", y0=0, y1=1, yref="paper",
        line={"dash": "dash", "color": "#d62728", "width": 1.5},
    )  # fmt: skip
    if text:
        fig.add_annotation(
            x=float(np.log10(x)), xref="x", y=1, yref="paper", text=text, showarrow=False,
            xanchor="left", yanchor="top", xshift=4, font={"color": "#d62728", "size": 11},
            bgcolor="rgba(255,255,255,0.7)",
        )  # fmt: skip


# -- static figures -------------------------------------------------------------------------


def zipf_figure(zipf: pd.DataFrame, n_function: int | None = None) -> go.Figure:
    """Token share against frequency rank (log-log), with the function-token cut marked.

    ``zipf`` is :func:`~workbench.analysis.function_tokens.zipf_table`'s frame.
    """
    _need(zipf, ["rank", "share", "token"], "zipf_figure")
    fig = go.Figure(
        go.Scatter(
            x=zipf["rank"],
            y=zipf["share"],
            mode="markers+lines",
            marker_size=4,
            name="tokens",
            hovertext=[
                f"{_label(t)}: rank {r}" for t, r in zip(zipf["token"], zipf["rank"], strict=True)
            ],
            hoverinfo="text+y",
        )
    )
    s = zipf.attrs.get("zipf_s")
    if s is not None and len(zipf):
        r = np.asarray(zipf["rank"], dtype=float)
        c = float(zipf["share"].iloc[0])
        fig.add_trace(
            go.Scatter(x=r, y=c * r**-s, mode="lines", line_dash="dot", name=f"rank^-{s:.2f}")
        )
    if n_function:
        _log_vline(fig, n_function, f"{n_function} function tokens")
    fig.update_layout(
        template=TEMPLATE,
        height=380,
        title="Zipf's law: share of all tokens by frequency rank",
        xaxis={**log_axis(zipf["rank"]), "title": {"text": "frequency rank"}},
        yaxis={**log_axis(zipf["share"]), "title": {"text": "share of occurrences"}},
    )
    return fig


def document_coverage_figure(ranking: pd.DataFrame, top: int = 40) -> go.Figure:
    """The share of documents in which each of the ``top`` most frequent tokens appears."""
    _need(ranking, ["token", "doc_coverage"], "document_coverage_figure")
    df = ranking.head(top)
    labels = [token_label(t, 10) for t in df["token"]]
    fig = go.Figure(
        go.Bar(
            x=list(range(len(df))),
            y=df["doc_coverage"],
            marker_color=_COLOURS[0],
            hovertext=[f"{i + 1}. {t!r}" for i, t in enumerate(df["token"])],
            hoverinfo="text+y",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        height=360,
        title=f"Document coverage of the {len(df)} most frequent tokens",
        yaxis={"title": {"text": "share of documents"}, "range": [0, 1.02]},
        xaxis=token_axis(labels, span_px=DESIGN_WIDTH_PX - 160),
    )
    return fig


def degree_figure(degrees: pd.DataFrame, n_function: int | None = None) -> go.Figure:
    """Degree (features per token) against frequency rank, log-log, one trace per layer."""
    _need(degrees, ["rank", "token"], "degree_figure")
    cols = [c for c in degrees.columns if c.startswith("degree_L")]
    if not cols:
        raise ViewDataError("degree_figure needs degree_L<i> columns (see degree_table).")
    fig = go.Figure()
    for j, c in enumerate(cols):
        keep = degrees[c] > 0  # log axis: tokens with no feature cannot be drawn
        fig.add_trace(
            go.Scatter(
                x=degrees.loc[keep, "rank"],
                y=degrees.loc[keep, c],
                mode="markers",
                marker={"size": 4, "color": _COLOURS[j % len(_COLOURS)]},
                name=f"layer {c.removeprefix('degree_L')}",
                hovertext=[_label(t) for t in degrees.loc[keep, "token"]],
            )
        )
    if n_function:
        _log_vline(fig, n_function)
    ranks = degrees["rank"][(degrees[cols] > 0).any(axis=1)]
    values = degrees[cols].to_numpy(dtype=np.float64).ravel()
    fig.update_layout(
        template=TEMPLATE,
        height=400,
        title="Token degree in the token→feature graph against frequency rank",
        xaxis={**log_axis(ranks), "title": {"text": "frequency rank"}},
        yaxis={**log_axis(values), "title": {"text": "degree (number of features)"}},
    )
    return fig


def coverage_figure(curves: Mapping[int, pd.DataFrame], *, of: str = "pct_all") -> go.Figure:
    """C(k) per layer: % of features reached by the top-k tokens (``of`` = pct_all|pct_fired)."""
    fig = go.Figure()
    for j, (layer, df) in enumerate(curves.items()):
        _need(df, ["k", of, "token"], "coverage_figure")
        fig.add_trace(
            go.Scatter(
                x=df["k"],
                y=df[of],
                mode="lines+markers",
                marker_size=4,
                name=f"layer {layer}",
                line_color=_COLOURS[j % len(_COLOURS)],
                hovertext=[f"+{_label(t)}" for t in df["token"]],
                error_y=_error_bars(df, of),
            )
        )
    what = "all features" if of == "pct_all" else "features that fire"
    fig.update_layout(
        template=TEMPLATE,
        height=380,
        title=f"Cumulative coverage C(k), % of {what}",
        xaxis={
            **log_axis([k for df in curves.values() for k in df["k"]]),
            "title": {"text": "top-k tokens by frequency"},
        },
        yaxis={"title": {"text": "% of features reached"}, "range": [0, 101]},
    )
    return fig


def loss_curve_figure(losses: pd.DataFrame, *, x: str = "step") -> go.Figure:
    """The four class losses (and ``all``, dotted) against training ``step`` (or revision)."""
    _need(losses, [x, "class", "mean_loss"], "loss_curve_figure")
    fig = go.Figure()
    for j, (cls, df) in enumerate(losses.groupby("class", sort=True)):
        fig.add_trace(
            go.Scatter(
                x=df[x],
                y=df["mean_loss"],
                mode="lines+markers",
                name=str(cls),
                line={"dash": "dot" if cls == "all" else "solid"},
                marker_color=_COLOURS[j % len(_COLOURS)],
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        height=380,
        title="Mean next-token loss by (current → next) token class",
        xaxis={"title": {"text": x}},
        yaxis={"title": {"text": "mean loss (nats)"}},
    )
    return fig


def contexts_html(contexts: pd.DataFrame, *, title: str = "") -> str:
    """Top-activating contexts as an HTML table, the activating token highlighted."""
    _need(contexts, ["activation", "left", "token", "right"], "contexts_html")
    rows = []
    for r in contexts.itertuples(index=False):
        rows.append(
            "<tr>"
            f'<td style="text-align:right; padding-right:8px">{r.activation:.2f}</td>'
            '<td style="font-family:monospace; white-space:pre">'
            f"{html.escape(r.left)}"
            f'<b style="background:#ffd54f">{html.escape(show_token(r.token))}</b>'
            f"{html.escape(r.right)}</td></tr>"
        )
    body = "".join(rows) or '<tr><td colspan="2"><i>this feature never fired</i></td></tr>'
    head = f"<div><b>{html.escape(title)}</b></div>" if title else ""
    return (
        f'{head}<table class="wb-contexts"><tr><th>activation</th><th>context</th></tr>'
        f"{body}</table>"
    )


# -- live views -----------------------------------------------------------------------------


def _check_graphs(graphs: Mapping[int, Any]) -> list[int]:
    if not graphs:
        raise ViewDataError("The view needs at least one layer's FeatureGraph ({layer: graph}).")
    return sorted(graphs)


class TokenFeaturesView(View):
    """Pick a layer and a token: bars of its features, most frequently firing first.

    Args:
        graphs: ``{layer: FeatureGraph}`` from ``build_graph``.
        tokens: the token ids to offer (default: the 40 most frequent).
        top: how many features to draw.

    ``on_feature(fn)`` registers ``fn(layer, feature)``, called when a bar is clicked.
    """

    def __init__(
        self,
        graphs: Mapping[int, Any],
        *,
        tokens: Sequence[int] | None = None,
        top: int = 25,
        height: int | None = None,
    ):
        self.graphs, self.top = graphs, top
        # a text line per bar label (25 bars overprinted their labels at 420 px)
        height = height or int(130 + TICK_FONT_PX * LINE_PX * top)
        layers = _check_graphs(graphs)
        first = graphs[layers[0]]
        ids = list(tokens) if tokens is not None else first.frequency_order()[:40].tolist()
        if not ids:
            raise ViewDataError("No tokens to pick from: the graph streamed no tokens.")
        # Ordered by the count each option shows (its occurrences in the graph's stream), so
        # the list reads top down; ties keep the order given.
        counts = {int(t): int(first.token_counts[t]) for t in ids}
        ids = sorted(dict.fromkeys(int(t) for t in ids), key=lambda t: -counts[t])
        self.layer = widgets.Dropdown(options=layers, value=layers[0], description="layer")
        self.token = widgets.Dropdown(
            options=[(f"{_label(first.decode(t))} ({counts[t]}× in the stream)", t) for t in ids],
            value=ids[0],
            description="token",
            layout=widgets.Layout(width="320px"),
        )
        fig = go.Figure(
            go.Bar(orientation="h", marker_color=_COLOURS[0], hoverinfo="text"),
            layout={
                "template": TEMPLATE,
                "height": height,
                "margin": {"l": 90, "r": 20, "t": 60, "b": 40},
                "xaxis": {"title": {"text": "tokens it fires on (whole stream)"}},
            },
        )
        super().__init__(fig, [widgets.HBox([self.layer, self.token])])
        self._callbacks: list[Callable[[int, int], Any]] = []
        self.layer.observe(lambda _: self.update(), names="value")
        self.token.observe(lambda _: self.update(), names="value")
        self.figure.data[0].on_click(self._clicked)
        self.update()

    def on_feature(self, fn: Callable[[int, int], Any]) -> None:
        self._callbacks.append(fn)

    def _clicked(self, trace: Any, points: Any, state: Any) -> None:
        if points.point_inds:
            feature = int(self.table["feature"].iloc[points.point_inds[0]])
            for fn in self._callbacks:
                fn(self.layer.value, feature)

    def update(self, layer: int | None = None, token: int | None = None) -> None:
        """Show ``token``'s features at ``layer`` (default: the pickers' values)."""
        if layer is not None:
            self.layer.value = layer
        if token is not None:
            self.token.value = token
        g = self.graphs[self.layer.value]
        t = self.token.value
        df = g.token_features(t).head(self.top)
        self.table = df
        labels = [f"f{f}" for f in df["feature"]]
        with self.figure.batch_update():
            bar = self.figure.data[0]
            bar.x = df["fires"].to_numpy()
            bar.y = list(range(len(df)))
            bar.hovertext = [
                f"feature {f}: fires on {n} tokens, max activation {m:.2f}"
                for f, n, m in zip(df["feature"], df["fires"], df["max_activation"], strict=True)
            ]
            self.figure.layout.yaxis = {
                "tickmode": "array",
                "tickvals": list(range(len(df))),
                "ticktext": labels,
                "autorange": "reversed",
            }
            deg = g.degree(t)
            self.figure.layout.title.text = wrap(
                html.escape(
                    f"layer {g.layer}: {_label(g.decode(t))!r} connects to {deg} of {g.d_sae} "
                    f"features (top {len(df)} shown; click one)",
                    quote=False,
                ),
                title_chars(),
            )


class FeatureView(View):
    """Pick a feature: its top-activating contexts, and steering with a strength slider.

    Args:
        graphs: ``{layer: FeatureGraph}``.
        steer: ``steer(layer, feature, strength) -> str | DataFrame`` (the generation); the
            slider calls it, debounced. Without it the view only shows contexts.
        strengths: the slider's (min, max, step).
    """

    def __init__(
        self,
        graphs: Mapping[int, Any],
        *,
        steer: Callable[[int, int, float], Any] | None = None,
        layer: int | None = None,
        feature: int = 0,
        strength: float = 0.0,
        strengths: tuple[float, float, float] = (-20.0, 20.0, 1.0),
        wait: float = DEFAULT_WAIT_S,
    ):
        self.graphs, self.steer = graphs, steer
        layers = _check_graphs(graphs)
        self.layer = widgets.Dropdown(
            options=layers, value=layers[0] if layer is None else layer, description="layer"
        )
        self.feature = widgets.BoundedIntText(
            value=feature, min=0, max=graphs[self.layer.value].d_sae - 1, description="feature"
        )
        lo, hi, step = strengths
        self.strength = widgets.FloatSlider(
            value=strength,
            min=lo,
            max=hi,
            step=step,
            description="steer ×",
            continuous_update=False,
            layout=widgets.Layout(width="60%"),
        )
        self.contexts = widgets.HTML()
        self.generation = widgets.HTML()
        fig = go.Figure(
            go.Bar(orientation="h", marker_color=_COLOURS[1], hoverinfo="text"),
            layout={
                "template": TEMPLATE,
                "height": 300,
                "margin": {"l": 40, "r": 20, "t": 50, "b": 40},
                "xaxis": {"title": {"text": "activation"}},
            },
        )
        controls = [widgets.HBox([self.layer, self.feature])]
        if steer is not None:
            controls.append(self.strength)
        super().__init__(fig, controls)
        self.widget.children = (*self.widget.children, self.contexts, self.generation)
        self.layer.observe(lambda _: self._layer_changed(), names="value")
        self.feature.observe(lambda _: self.update(), names="value")
        self._regen = Debouncer(self._generate, wait, on_error=self.show_error)
        self.debouncers.append(self._regen)
        self.strength.observe(lambda _: self._regen(), names="value")
        self.update()

    def _layer_changed(self) -> None:
        self.feature.max = self.graphs[self.layer.value].d_sae - 1
        self.update()

    def show(self, layer: int, feature: int) -> None:
        """Switch to ``feature`` of ``layer`` (e.g. from a click in another view)."""
        self.layer.value = layer
        self.feature.value = feature
        self.update()

    def update(self) -> None:
        """Redraw the contexts of the picked feature, and regenerate if steering is on."""
        g = self.graphs[self.layer.value]
        f = int(self.feature.value)
        ctx = g.contexts(f)
        self.table = ctx
        n = int(g.feature_counts[f])
        title = f"layer {g.layer} feature {f}: fires on {n} of {g.n_tokens} tokens"
        self.contexts.value = contexts_html(ctx, title=title)
        labels = [
            f"{token_label(r.left[-14:], 14)}[{token_label(r.token, 10)}]"
            f"{token_label(r.right[:6], 6)}"
            for r in ctx.itertuples(index=False)
        ]
        with self.figure.batch_update():
            bar = self.figure.data[0]
            bar.x = ctx["activation"].to_numpy()
            bar.y = list(range(len(ctx)))
            # plotly knows &lt; &gt; &amp; but not &quot;: escape without quotes
            bar.hovertext = [html.escape(s, quote=False) for s in labels]
            self.figure.layout.yaxis = {
                "tickmode": "array",
                "tickvals": list(range(len(ctx))),
                "ticktext": [html.escape(s, quote=False) for s in labels],
                "autorange": "reversed",
                "automargin": True,
                "tickfont": {"family": "monospace", "size": 11},
            }
            self.figure.layout.title.text = html.escape(f"{title}: top contexts", quote=False)
        if self.steer is not None:
            self._regen()

    def _generate(self) -> None:
        self.status.value = '<span style="color:#888">generating…</span>'
        out = self.steer(self.layer.value, int(self.feature.value), float(self.strength.value))
        if isinstance(out, pd.DataFrame):
            body = out.to_html(index=False, escape=True)
        else:
            body = f'<pre style="white-space:pre-wrap">{html.escape(str(out))}</pre>'
        self.generation.value = (
            f"<b>steered ×{self.strength.value:g} at feature {self.feature.value}:</b>{body}"
        )
        self.status.value = ""


class FunctionTokensView:
    """:class:`TokenFeaturesView` above :class:`FeatureView`; clicking a bar opens the feature."""

    def __init__(
        self,
        graphs: Mapping[int, Any],
        *,
        steer: Callable[[int, int, float], Any] | None = None,
        tokens: Sequence[int] | None = None,
        strength: float = 0.0,
        strengths: tuple[float, float, float] = (-20.0, 20.0, 1.0),
        wait: float = DEFAULT_WAIT_S,
    ):
        self.tokens = TokenFeaturesView(graphs, tokens=tokens)
        first = self.tokens.table["feature"]
        self.features = FeatureView(
            graphs,
            steer=steer,
            layer=self.tokens.layer.value,
            feature=int(first.iloc[0]) if len(first) else 0,
            strength=strength,
            strengths=strengths,
            wait=wait,
        )
        self.tokens.on_feature(self.features.show)
        self.widget = widgets.VBox([self.tokens.widget, self.features.widget])

    def flush(self) -> None:
        self.tokens.flush()
        self.features.flush()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_())
        first = static_bundle(self.tokens.static())
        bundle.update(first)
        bundle["text/html"] = (
            first["text/html"]
            + static_html(self.features.static())
            + self.features.contexts.value
            + self.features.generation.value
        )
        bundle["text/plain"] = "FunctionTokensView (static copy; run the notebook to interact)"
        return bundle


def _error_bars(df: pd.DataFrame, value: str) -> dict | None:
    """Plotly error bars from ``<value>_low`` / ``<value>_high`` columns (None without them)."""
    lo, hi = f"{value}_low", f"{value}_high"
    if lo not in df or hi not in df:
        return None
    v = df[value].to_numpy(dtype=float)
    up = np.nan_to_num(df[hi].to_numpy(dtype=float) - v, nan=0.0, posinf=0.0)
    down = np.nan_to_num(v - df[lo].to_numpy(dtype=float), nan=0.0, posinf=0.0)
    return {"type": "data", "symmetric": False, "array": up.clip(min=0),
            "arrayminus": down.clip(min=0), "thickness": 1}  # fmt: skip


def loss_class_figure(intervals: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Mean loss per class with 95% document-bootstrap intervals (``LossDecomposition.intervals``).

    Example:
        >>> loss_class_figure(dec.intervals)
    """
    _need(intervals, ["class", "mean_loss", "low", "high"], "loss_class_figure")
    df = intervals.rename(columns={"low": "mean_loss_low", "high": "mean_loss_high"})
    fig = go.Figure(
        go.Bar(
            x=df["class"],
            y=df["mean_loss"],
            marker_color=[_COLOURS[i % len(_COLOURS)] for i in range(len(df))],
            error_y=_error_bars(df, "mean_loss"),
            hovertemplate="%{x}: %{y:.3f} nats<extra></extra>",
        )
    )
    fig.update_layout(
        template=TEMPLATE,
        height=340,
        title=title or "Mean loss by (current → next) class, 95% intervals over documents",
        yaxis={"title": {"text": "mean loss (nats)"}},
    )
    return fig
