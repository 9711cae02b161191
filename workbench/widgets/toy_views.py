"""Plotly views of the Bigram-Backcopy toy: they take probe DataFrames and attention arrays.

Nothing here touches a model: results come from :mod:`workbench.toy.training` and
:mod:`workbench.toy.probes`, and every function returns a figure (or, for the scrubber,
an ipywidgets box) built from them.

Example:
    >>> fig = dynamics_figure(result.probes, events=order_of_events(result.probes))
    >>> fig.show()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from workbench.widgets.layout import (
    COLORBAR_PX,
    DESIGN_WIDTH_PX,
    colorbar,
    panel_domains,
    token_axis,
)
from workbench.widgets.static import OfflineFrames
from workbench.widgets.views import View, ViewDataError

__all__ = [
    "ablation_figure",
    "attention_map_figure",
    "compare_runs_figure",
    "dynamics_figure",
    "TrainingScrubber",
]

_EVENT_COLOURS = ("#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def _need(df: pd.DataFrame, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ViewDataError(
            f"Probe DataFrame lacks columns {missing}; it has {sorted(df.columns)}. "
            "Pass the probes of a run from workbench.toy.training.train."
        )


def _resid_streams(df: pd.DataFrame) -> list[int]:
    return sorted(int(c.rsplit("_", 1)[1]) for c in df.columns if c.startswith("bos_resid_norm_"))


def dynamics_figure(
    df: pd.DataFrame,
    *,
    layer: int = 0,
    events: Mapping[str, float] | None = None,
    title: str = "Training dynamics",
) -> go.Figure:
    """Five stacked panels over training steps, with the order of events marked.

    Panels: excess risks (log scale); attention on BOS at non-trigger queries and on the
    previous token at trigger queries; the sink logit; the BOS value norm against the other
    tokens'; the BOS residual norm per stream against the other tokens'.

    Args:
        df: probe rows with a ``step`` column.
        layer: the attention layer whose head is shown.
        events: ``{label: step}`` drawn as vertical lines (e.g. ``order_of_events(df)``).
    """
    l = layer
    _need(
        df,
        ["step", "backcopy_excess", "bigram_excess", f"attn_bos_L{l}", f"sink_logit_L{l}"],
    )
    x = df["step"]
    fig = make_subplots(
        rows=5,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.03,
        subplot_titles=(
            "Excess risk over the oracle (nats)",
            f"Attention of L{l} (sink mass)",
            f"Sink logit of L{l}: q·k_BOS/√d − mean over other keys",
            f"Value norm ‖v W_O‖ of L{l}",
            "Residual norm ‖h‖ (stream k = after k layers)",
        ),
    )
    for col, name in (("backcopy_excess", "backcopy"), ("bigram_excess", "bigram")):
        y = df[col].clip(lower=1e-7)  # log axis: an exact 0 would vanish
        fig.add_trace(go.Scatter(x=x, y=y, name=f"{name} excess"), row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.add_trace(
        go.Scatter(x=x, y=df[f"attn_bos_L{l}"], name="→BOS, non-trigger queries"), row=2, col=1
    )
    if f"attn_prev_trigger_L{l}" in df:
        fig.add_trace(
            go.Scatter(x=x, y=df[f"attn_prev_trigger_L{l}"], name="→previous, trigger queries"),
            row=2,
            col=1,
        )
    fig.update_yaxes(range=[0, 1.02], row=2, col=1)
    fig.add_trace(go.Scatter(x=x, y=df[f"sink_logit_L{l}"], name="sink logit"), row=3, col=1)
    if f"bos_value_norm_L{l}" in df:
        fig.add_trace(go.Scatter(x=x, y=df[f"bos_value_norm_L{l}"], name="BOS value"), row=4, col=1)
        fig.add_trace(
            go.Scatter(x=x, y=df[f"other_value_norm_L{l}"], name="other values", line_dash="dot"),
            row=4,
            col=1,
        )
    for k in _resid_streams(df):
        fig.add_trace(
            go.Scatter(x=x, y=df[f"bos_resid_norm_{k}"], name=f"BOS resid {k}"), row=5, col=1
        )
    last = _resid_streams(df)[-1:] or []
    for k in last:
        fig.add_trace(
            go.Scatter(
                x=x, y=df[f"other_resid_norm_{k}"], name=f"other resid {k}", line_dash="dot"
            ),
            row=5,
            col=1,
        )
    fig.update_xaxes(title_text="step", row=5, col=1)
    fig.update_layout(title=title, height=1100, hovermode="x unified")
    _add_events(fig, events)
    return fig


EVENT_LINE_PX = 17  # vertical distance between two event labels


def _add_events(fig: go.Figure, events: Mapping[str, float] | None) -> None:
    """Dashed lines through every panel at each event's step, labelled in the top panel.

    The labels are staggered, one line each, so that events a few steps apart (on the
    figure, a few pixels) do not overprint each other.
    """
    if not events:
        return
    reached = [(k, v) for k, v in events.items() if v is not None and np.isfinite(v)]
    margin = fig.layout.margin
    plot_h = (fig.layout.height or 450) - (margin.t or 100) - (margin.b or 80)
    top = fig.layout.yaxis.domain[1] if fig.layout.yaxis.domain else 1.0
    for i, (label, step) in enumerate(sorted(reached, key=lambda kv: kv[1])):
        colour = _EVENT_COLOURS[i % len(_EVENT_COLOURS)]
        fig.add_shape(
            type="line", x0=step, x1=step, xref="x", y0=0, y1=1, yref="paper",
            line={"dash": "dash", "color": colour, "width": 1.2},
        )  # fmt: skip
        fig.add_annotation(
            x=step, xref="x", y=top - i * EVENT_LINE_PX / plot_h, yref="paper",
            text=f"{i + 1}. {label}", showarrow=False, xanchor="left", yanchor="top",
            xshift=3, font={"size": 10, "color": colour}, bgcolor="rgba(255,255,255,0.75)",
        )  # fmt: skip


def attention_map_figure(
    pattern: torch.Tensor | np.ndarray,
    tokens: Sequence[str],
    is_trigger: Sequence[bool],
    *,
    title: str = "Attention pattern",
) -> go.Figure:
    """Heatmap of one head's pattern ``[S, S]`` with trigger queries marked.

    Next to it, the mean attention on BOS, on the previous token and elsewhere, at trigger
    and at non-trigger queries: the head is active (backcopy) at the former and dormant
    (on the sink) at the latter.

    Args:
        pattern: ``[S, S]`` attention probabilities (query rows, key columns).
        tokens: ``S`` token strings; BOS shown as given.
        is_trigger: ``S`` flags, True where the query token is a trigger.
    """
    p = np.asarray(pattern, dtype=np.float64)
    s = len(tokens)
    if p.shape != (s, s) or len(is_trigger) != s:
        raise ViewDataError(
            f"pattern must be [S, S] with S = len(tokens) = {s} and len(is_trigger) = S; got "
            f"pattern {p.shape}, {len(is_trigger)} trigger flags."
        )
    trig = np.asarray(is_trigger, dtype=bool)
    xlabels, ylabels = _labels(tokens, is_trigger)
    height = max(450, 12 * s + 150)
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("query ▶ = trigger", "mean attention by query type"),
    )
    # The colorbar and the bar chart's y labels sit in the gap between the two panels.
    margin = (80, 20)
    doms = panel_domains([0.72, 0.28], [COLORBAR_PX + 60], margin_px=margin)
    for i, dom in enumerate(doms):
        fig.layout[f"xaxis{i + 1 if i else ''}"].domain = dom
        fig.layout.annotations[i].x = (dom[0] + dom[1]) / 2
    fig.add_trace(
        go.Heatmap(
            z=p,
            x=list(range(s)),
            y=list(range(s)),
            colorscale="Viridis",
            zmin=0,
            zmax=1,
            colorbar=colorbar(doms[0][1], title="attention", margin_px=margin),
            customdata=[
                [f"query {ylabels[q]}<br>key {xlabels[k]}" for k in range(s)] for q in range(s)
            ],
            hovertemplate="%{customdata}<br>%{z:.3f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    # Trigger queries get a marker on the map's left edge: tick labels are thinned to fit,
    # so the ▶ in a label alone could be left out.
    fig.add_trace(
        go.Scatter(
            x=[-0.5] * int(trig.sum()),
            y=np.flatnonzero(trig).tolist(),
            mode="markers",
            marker={"symbol": "triangle-right", "size": 8, "color": "#d62728"},
            cliponaxis=False,
            name="trigger query",
            hovertemplate="trigger query %{y}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    panel_w = (doms[0][1] - doms[0][0]) * (DESIGN_WIDTH_PX - sum(margin))
    fig.update_xaxes(token_axis(xlabels, span_px=panel_w), range=[-0.5, s - 0.5], row=1, col=1)
    fig.update_yaxes(
        token_axis(ylabels, span_px=height - 180, vertical=True),
        autorange="reversed",
        row=1,
        col=1,
    )
    q = np.arange(s)
    prev = np.zeros(s)
    prev[1:] = p[q[1:], q[1:] - 1]
    bos = p[:, 0]
    rest = p.sum(1) - bos - prev
    valid = q >= 2  # at q=1 the previous token *is* BOS
    for name, mask in (("trigger", trig & valid), ("non-trigger", ~trig & valid)):
        vals = [float(a[mask].mean()) if mask.any() else np.nan for a in (bos, prev, rest)]
        fig.add_trace(
            go.Bar(x=["BOS", "previous", "other"], y=vals, name=f"{name} queries"), row=1, col=2
        )
    fig.update_layout(
        title=title,
        height=height,
        barmode="group",
        margin={"l": margin[0], "r": margin[1], "t": 80, "b": 80},
        legend={"orientation": "h", "x": doms[1][0], "y": -0.12, "yanchor": "top"},
    )
    return fig


def compare_runs_figure(
    runs: Mapping[str, pd.DataFrame],
    metrics: Sequence[str] | None = None,
    *,
    layer: int = 0,
    stream: int | None = None,
    title: str = "Runs side by side",
) -> go.Figure:
    """One panel per metric, one line per run (e.g. Adam, SGD, ReLU attention).

    Args:
        runs: ``{run name: probe DataFrame}``.
        metrics: probe columns; default the excess risks, the sink mass and logit and the BOS
            value norm of attention layer ``layer``, and the BOS norm of residual ``stream``
            (default the last).

    Example:
        >>> compare_runs_figure(probes, layer=1, stream=1)  # the minimal residual-peak model
    """
    if not runs:
        raise ViewDataError("No runs to compare.")
    first = next(iter(runs.values()))
    if metrics is None:
        stream = _resid_streams(first)[-1] if stream is None else stream
        metrics = [
            "backcopy_excess",
            "bigram_excess",
            f"attn_bos_L{layer}",
            f"sink_logit_L{layer}",
            f"bos_value_norm_L{layer}",
            f"bos_resid_norm_{stream}",
        ]
    for df in runs.values():
        _need(df, ["step", *metrics])
    cols = 2
    rows = (len(metrics) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(metrics))
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
    for j, (name, df) in enumerate(runs.items()):
        for i, m in enumerate(metrics):
            y = df[m].clip(lower=1e-7) if m.endswith("excess") else df[m]
            fig.add_trace(
                go.Scatter(
                    x=df["step"],
                    y=y,
                    name=name,
                    legendgroup=name,
                    showlegend=i == 0,
                    line_color=palette[j % len(palette)],
                ),
                row=i // cols + 1,
                col=i % cols + 1,
            )
            if m.endswith("excess"):
                fig.update_yaxes(type="log", row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(title=title, height=300 * rows)
    return fig


def ablation_figure(table: pd.DataFrame, *, title: str = "Zero-ablations") -> go.Figure:
    """BOS and other-token residual norms per stream, and losses, for each ablation.

    Args:
        table: rows indexed by variant name ("Original", "No MLP L0", ...), columns as
            from :func:`workbench.toy.probes.ablation_table`.
    """
    streams = _resid_streams(table)
    if not streams:
        raise ViewDataError("The table has no bos_resid_norm_* columns.")
    _need(table, ["backcopy_excess", "bigram_excess"])
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.65, 0.35],
        subplot_titles=("BOS residual norm (solid) vs others (hatched)", "excess risk (nats)"),
    )
    xs = [f"stream {k}" for k in streams]
    for name, row in table.iterrows():
        fig.add_trace(
            go.Bar(x=xs, y=[row[f"bos_resid_norm_{k}"] for k in streams], name=f"{name}: BOS"),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Bar(
                x=xs,
                y=[row[f"other_resid_norm_{k}"] for k in streams],
                name=f"{name}: others",
                marker_pattern_shape="/",
            ),
            row=1,
            col=1,
        )
    for col in ("backcopy_excess", "bigram_excess"):
        fig.add_trace(
            go.Bar(x=list(table.index), y=table[col].clip(lower=1e-7), name=col), row=1, col=2
        )
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(title=title, barmode="group", height=500)
    return fig


class TrainingScrubber(View):
    """A slider over probe steps: the attention map then, and where that step sits on a curve.

    Args:
        probes: the run's probe rows (``step`` and ``metric`` columns).
        snapshots: ``{step: [n_attn_layers, S, S]}`` as kept by training.
        tokens, is_trigger: the ``S`` query tokens and their trigger flags.
        layer_index: which attention layer of the snapshots to show.
        metric: the probe column drawn under the map.
        step: the step shown first (default: the last, the trained model).

    Moving the slider re-slices arrays in memory; no model runs. ``scrubber.update(step)``
    does the same from code.

    Example:
        >>> TrainingScrubber(result.probes, result.snapshots, toks, trig)  # doctest: +SKIP
    """

    def __init__(
        self,
        probes: pd.DataFrame,
        snapshots: Mapping[int, torch.Tensor | np.ndarray],
        tokens: Sequence[str],
        is_trigger: Sequence[bool],
        *,
        layer_index: int = 0,
        metric: str = "attn_bos_L0",
        step: int | None = None,
    ) -> None:
        _need(probes, ["step", metric])
        self.steps = sorted(int(s) for s in snapshots)
        if not self.steps:
            raise ViewDataError("No attention snapshots to scrub through.")
        s = len(tokens)
        first = np.asarray(snapshots[self.steps[0]])
        if first.ndim != 3 or first.shape[1:] != (s, s) or not 0 <= layer_index < first.shape[0]:
            raise ViewDataError(
                f"snapshots must be [n_attn_layers, {s}, {s}] with layer_index < "
                f"n_attn_layers; got {first.shape} and layer_index={layer_index}."
            )
        self._snapshots, self._probes = snapshots, probes
        self._layer, self._metric = layer_index, metric
        xlabels, ylabels = _labels(tokens, is_trigger)
        fig = make_subplots(
            rows=2,
            cols=1,
            row_heights=[0.75, 0.25],
            vertical_spacing=0.08,
            subplot_titles=("attention (query ▶ = trigger)", metric),
        )
        fig.add_trace(
            go.Heatmap(
                z=first[layer_index],
                x=list(range(s)),
                y=list(range(s)),
                zmin=0,
                zmax=1,
                colorscale="Viridis",
                colorbar=colorbar(title="attention", y=(0.3, 1.0)),
                customdata=[
                    [f"query {ylabels[q]}<br>key {xlabels[k]}" for k in range(s)] for q in range(s)
                ],
                hovertemplate="%{customdata}<br>%{z:.3f}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(go.Scatter(x=probes["step"], y=probes[metric], name=metric), row=2, col=1)
        fig.add_trace(
            go.Scatter(x=[], y=[], mode="markers", marker_size=12, name="now"), row=2, col=1
        )
        height = max(600, 10 * s + 350)
        fig.update_xaxes(token_axis(xlabels, span_px=DESIGN_WIDTH_PX - 160), row=1, col=1)
        fig.update_yaxes(
            token_axis(ylabels, span_px=(height - 180) * 0.7, vertical=True),
            autorange="reversed",
            row=1,
            col=1,
        )
        fig.update_xaxes(title_text="step", row=2, col=1)
        fig.update_layout(height=height, showlegend=False, margin={"t": 80, "r": 30})
        start = self.steps[-1] if step is None else int(step)
        if start not in self.steps:
            raise ViewDataError(f"No snapshot at step {start}; steps are {self.steps}.")
        self.slider = widgets.SelectionSlider(
            options=self.steps,
            value=start,
            description="step",
            continuous_update=False,
            layout=widgets.Layout(width="90%"),
        )
        super().__init__(fig, [self.slider])
        self.update(start)
        self.slider.observe(lambda change: self.update(change["new"]), names="value")

    def offline(self) -> OfflineFrames | None:
        """Every snapshot, so the step slider works in the static copy (no kernel)."""
        z = np.stack(
            [np.asarray(self._snapshots[s], dtype=np.float64)[self._layer] for s in self.steps]
        )
        return OfflineFrames(
            controls=[("step", [str(s) for s in self.steps])],
            z=z,
            start=[self.steps.index(int(self.slider.value))],
            titles=[f"step {s}" for s in self.steps],
            updates=[
                {2: {"x": [s], "y": [_at(self._probes, self._metric, s)]}} for s in self.steps
            ],
            note="the step slider works offline (no kernel)",
        )

    def update(self, step: int) -> None:
        """Show the snapshot of ``step`` (one of ``self.steps``)."""
        step = int(step)
        if step not in self._snapshots:
            raise ViewDataError(f"No snapshot at step {step}; steps are {self.steps}.")
        with self.figure.batch_update():
            self.figure.data[0].z = np.asarray(self._snapshots[step])[self._layer]
            self.figure.data[2].x = [step]
            self.figure.data[2].y = [_at(self._probes, self._metric, step)]
            self.figure.layout.title = f"step {step}"
        if self.slider.value != step:
            self.slider.value = step


def _labels(tokens: Sequence[str], is_trigger: Sequence[bool]) -> tuple[list[str], list[str]]:
    trig = np.asarray(is_trigger, dtype=bool)
    shown = [t if t != " " else "␣" for t in tokens]
    ylabels = [f"{i} {'▶' if trig[i] else ' '}{shown[i]}" for i in range(len(shown))]
    xlabels = [f"{i} {shown[i]}" for i in range(len(shown))]
    return xlabels, ylabels


def _at(df: pd.DataFrame, col: str, step: int) -> float:
    hit = df.loc[df["step"] == step, col]
    return float(hit.iloc[0]) if len(hit) else float("nan")
