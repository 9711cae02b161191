"""Every view at notebook sizes, checked as figure JSON: nothing collides at 1,030 or 1,400 px.

:func:`workbench.widgets.layout.layout_problems` estimates where plotly draws colorbars,
tick labels and titles; these tests feed it each view at the sizes the notebooks use
(40-token prompts, 30 layers x 9 heads, 64-token toy snapshots) and pin the fixes for the
bugs seen in the browser (issue 16) one by one.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from plotly.subplots import make_subplots

import workbench.widgets as wbw
from workbench.analysis.routes.graph import HeadMaps, Node, RouteGraph
from workbench.widgets import extreme_tokens_view as etv
from workbench.widgets import function_tokens_view as ftv
from workbench.widgets import routes_view as rv
from workbench.widgets import toy_views as tv
from workbench.widgets.layout import layout_problems, log_axis, thin_ticks, token_label

WIDTHS = (950, 1030, 1400)  # 968 px: JupyterLab in a 1,400 px window, file browser open
N_TOK, N_LAYERS, N_HEADS = 40, 30, 9
RNG = np.random.default_rng(0)
TOKENS = ["<s>", "def", " f", "(x", "):", "\n", "    ", " return", "\xa0", " x"] * 4


def _clean(fig):
    fig = fig.static() if hasattr(fig, "static") else fig
    for w in WIDTHS:
        assert layout_problems(fig, w) == [], w


def _attn(n_layers=N_LAYERS, n_heads=N_HEADS, n=N_TOK):
    a = np.tril(RNG.random((n_layers, n_heads, n, n)))
    return a / a.sum(-1, keepdims=True)


# -- the checker fails on the layouts the browser showed -------------------------------------


def test_the_checker_finds_a_colorbar_over_the_next_panel():
    fig = make_subplots(rows=1, cols=3, column_widths=[0.42, 0.33, 0.25], horizontal_spacing=0.08)
    fig.add_trace(go.Heatmap(z=[[1, 2], [3, 4]], colorbar={"x": 0.36, "len": 0.9}), 1, 1)
    fig.add_trace(go.Bar(y=[1, 2]), 1, 2)
    assert any("colorbar" in p for p in layout_problems(fig))


def test_the_checker_finds_two_crowded_colorbars_and_overprinted_ticks():
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True)
    for i, x in ((1, 1.08), (3, 1.0)):
        fig.add_trace(go.Heatmap(z=[[1, 2]], colorbar={"x": x}), 1, i)
    fig.add_trace(go.Heatmap(z=[[1, 2]], showscale=False), 1, 2)
    labels = [f"token{i}" for i in range(40)]
    fig.update_xaxes(tickmode="array", tickvals=list(range(40)), ticktext=labels, row=1, col=1)
    problems = layout_problems(fig)
    assert any("overprint" in p for p in problems)
    fig.layout.title = "x" * 200
    assert any("title" in p for p in layout_problems(fig))


# -- every view, at notebook sizes ------------------------------------------------------------


def _profile():
    return SimpleNamespace(
        tokens=TOKENS,
        sink=0,
        attn=_attn(),
        value_norms=RNG.random((N_LAYERS, N_HEADS, N_TOK)),
        resid_norms=RNG.random((N_LAYERS, N_TOK)) * 100 + 1,
    )


def _ad_table():
    rows = [
        {"domain": d, "layer": layer, "head": h, "sink_mass": RNG.random(),
         "delta_zero": RNG.normal() * (5 if h == 0 else 0.1), "delta_sink": RNG.normal(),
         "sink_logit": RNG.random(), "state": "active"}
        for d in ("code", "prose") for layer in range(N_LAYERS) for h in range(N_HEADS)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_extreme_token_views_read_cleanly():
    explorer = etv.HeadExplorer(_profile(), layer=3, head=2)
    _clean(explorer)
    assert "<br>" in explorer.figure.layout.title.text  # two lines, not cut off
    table = _ad_table()
    for metric in ("sink_mass", "delta_zero"):
        _clean(etv.heads_domains_figure(table, metric))
    view = etv.ActiveDormantView(table)
    view.metric.value = "delta_zero"
    _clean(view)
    _clean(etv.sink_ablation_scatter(table))
    resid = pd.DataFrame(
        {"layer": range(N_LAYERS), "sink_norm": np.linspace(5, 900, N_LAYERS),
         "median_norm": np.linspace(2, 30, N_LAYERS)}
    )  # fmt: skip
    _clean(etv.residual_norms_figure(resid))


def test_heads_domains_colorbars_sit_apart_in_their_gutters():
    fig = etv.heads_domains_figure(_ad_table(), "sink_mass")
    shown = [t for t in fig.data if t.showscale is not False]
    assert len(shown) == 2  # one shared by the domains, one for the difference
    first, diff = shown
    assert fig.layout.xaxis2.domain[1] < first.colorbar.x < fig.layout.xaxis3.domain[0]
    assert diff.colorbar.x is None  # the right margin, which plotly grows to fit


def test_head_explorer_colorbar_is_between_the_map_and_the_bar_chart():
    fig = etv.HeadExplorer(_profile()).figure
    cb = fig.data[0].colorbar
    assert fig.layout.xaxis.domain[1] < cb.x < fig.layout.xaxis2.domain[0]
    assert cb.thickness <= 14


def test_core_views_read_cleanly():
    toks = TOKENS
    _clean(wbw.AttentionView(_attn(n_layers=2), toks))
    rows = [
        {"layer": layer, "position": p, "token": t, "rank": 0, "top_token": "\xa0", "prob": 0.5}
        for layer in range(N_LAYERS) for p, t in enumerate(toks)
    ]  # fmt: skip
    lens = wbw.LogitLensView(pd.DataFrame(rows), threshold=0.1)
    _clean(lens)
    cells = {c for row in lens.figure.data[0].text for c in row}
    assert cells == {"⍽"}  # a no-break space, not the escape "\xa0"
    table = pd.DataFrame({"token": [" Paris", "\xa0", "\n\n"], "prob": [0.6, 0.2, 0.1]})
    _clean(wbw.NextTokenView(table))


def test_ablation_toggles_are_cleared_when_the_layer_changes():
    calls = []

    def probs(text, layer, heads):
        calls.append((layer, list(heads)))
        p = np.ones(8)
        p[len(heads)] += 1
        return p / p.sum()

    view = wbw.AblationView(
        probs, str, prompt="x", n_layers=4, n_heads=3, layer=0, heads=[1, 2], wait=0
    )
    before = len(calls)
    view.layer.value = 2
    assert view.heads.value == []
    assert not [c for c in calls[before:] if c[1]]  # never layer 2 with layer 0's heads
    assert view.figure.layout.title.text.startswith("no heads ablated")
    assert "cleared" in view.status.value and "[1, 2]" in view.status.value
    view.heads.value = [0]
    assert "cleared" not in view.status.value


def test_prompt_box_keeps_newlines():
    box = wbw.PromptBox("def f(x):\n    return x")
    assert box.value == "def f(x):\n    return x" and box.rows == 2


def test_head_explorer_domain_switch_follows_the_prompt_and_caches():
    seen = []

    def compute(text):
        seen.append(text)
        return _profile()

    view = etv.HeadExplorer(compute=compute, prompts={"code": "a\nb", "prose": "c"}, wait=0)
    view.prompt.value = "my own prompt"
    assert view.domain.value is None  # no longer "code" or "prose"
    view.domain.value = "prose"
    assert view.prompt.value == "c"
    view.domain.value = "code"
    assert view.prompt.value == "a\nb"
    assert seen == ["a\nb", "c", "my own prompt"]  # domains up front; switches: no pass
    view.prompt.value = "c"
    assert view.domain.value == "prose"


def test_scatter_draws_edge_markers_whole():
    fig = etv.sink_ablation_scatter(_ad_table())
    assert all(t.type == "scatter" and t.cliponaxis is False for t in fig.data)


# -- function tokens ---------------------------------------------------------------------------


def test_zipf_axis_range_comes_from_the_data_and_the_label_sits_on_the_line():
    ranks = np.arange(1, 2001)
    zipf = pd.DataFrame({"rank": ranks, "share": 0.1 / ranks, "token": [f"t{r}" for r in ranks]})
    fig = ftv.zipf_figure(zipf, n_function=40)
    lo, hi = fig.layout.xaxis.range
    assert lo <= 0 and math.log10(2000) <= hi < math.log10(2000) + 0.5
    (ann,) = fig.layout.annotations
    assert ann.x == pytest.approx(math.log10(40))  # log units on a log axis, not 10^40
    assert fig.layout.xaxis.dtick == 1 and fig.layout.yaxis.dtick == 1  # decades only
    _clean(fig)


def test_log_axis_labels_decades_only_when_the_data_spans_them():
    assert log_axis([1, 10_000])["dtick"] == 1
    assert log_axis([3, 8])["dtick"] == "D2"
    assert log_axis([3, 8])["range"][1] < 1


def test_function_token_views_read_cleanly():
    from tests.unit.test_function_tokens_view import _graph

    graphs = {3: _graph(3)}
    view = ftv.TokenFeaturesView(graphs, tokens=[0, 1, 2, 3])
    counts = [int(label.split("(")[1].split("×")[0]) for label, _ in view.token.options]
    assert counts == sorted(counts, reverse=True)  # the order matches the counts shown
    _clean(view)
    fv = ftv.FeatureView(graphs, feature=1)
    ticks = list(fv.figure.layout.yaxis.ticktext)
    assert ticks and not any("&quot;" in t for t in ticks)
    assert fv.figure.layout.yaxis.automargin is True  # labels are never clipped on the left
    ranking = pd.DataFrame({"token": TOKENS * 2, "doc_coverage": RNG.random(80)})
    _clean(ftv.document_coverage_figure(ranking, top=60))


# -- routes -----------------------------------------------------------------------------------


def _route_graph(n_layers=N_LAYERS, n_pos=12):
    g = nx.MultiDiGraph()
    top = Node(n_layers - 1, "mlp", n_pos - 1)
    prev = top
    for level in range(2 * n_layers - 1, -1, -1):
        node = Node.at_level(level, n_pos - 1)
        g.add_edge(node, prev, kind="residual", layer=node.layer, head=None,
                   importance=0.5, weight=0.5)  # fmt: skip
        if level % 2 == 1:  # an attention level: a head edge from an earlier position
            src = Node.at_level(level - 1, level % n_pos)
            g.add_edge(src, node, kind="head",
                       layer=(level - 1) // 2, head=level % N_HEADS, importance=0.3,
                       weight=0.3)  # fmt: skip
        prev = node
    return RouteGraph(g, n_pos - 1, 0.04, False, TOKENS[:n_pos], n_layers, N_HEADS)


def test_route_graph_height_is_capped_with_readable_layer_labels():
    fig = rv.route_figure(_route_graph())
    assert fig.layout.height <= rv.MAX_GRAPH_HEIGHT
    assert fig.layout.yaxis.tickfont.size >= 11
    _clean(fig)


@pytest.mark.parametrize("n_layers", [8, 16, 20, 24, 30])
def test_route_graph_level_labels_never_crowd(n_layers):
    # the browser showed "emb" over "L0": one level apart where the layers are two
    fig = rv.route_figure(_route_graph(n_layers=n_layers))
    ya = fig.layout.yaxis
    plot_px = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    px_per_level = plot_px / (ya.range[1] - ya.range[0])
    gaps = [(b - a) * px_per_level for a, b in zip(ya.tickvals, ya.tickvals[1:], strict=False)]
    assert ya.ticktext[0] == "emb" and min(gaps) >= rv.LEVEL_FONT_PX * 1.3, min(gaps)


def test_token_feature_bars_get_a_text_line_each():
    # 25 bar labels overprinted each other in 320 px in the browser
    from workbench.analysis.function_tokens import GraphAccumulator

    n_feat = 40
    tokens = torch.zeros(n_feat, dtype=torch.long)  # token 0 fires every feature once
    acc = GraphAccumulator(2, n_feat, n_contexts=1, before=1, after=0)
    rows = feats = torch.arange(n_feat)
    ctx = torch.stack([tokens, tokens], 1)
    acc.update(tokens, rows, feats, torch.ones(n_feat), ctx)
    view = ftv.TokenFeaturesView({3: acc.result(3, decode=str)}, tokens=[0])
    assert len(view.figure.data[0].y) == 25
    _clean(view)


def test_lens_labels_of_whitespace_tokens_stay_short():
    df = pd.DataFrame(
        {"kind": ["top", "top", "promoted", "suppressed"], "rank": [0, 1, 0, 0],
         "token": [" " * 30, "\n" * 12, "\xa0", "ok"], "value": [0.5, 0.2, 1.0, -1.0]}
    )  # fmt: skip
    for stacked in (False, True):
        fig = rv.lens_figure(df, stacked=stacked)
        labels = [t for k in ("yaxis", "yaxis2", "yaxis3") for t in fig.layout[k].ticktext]
        assert labels[:2] == ["·×30", "⏎×12"] and max(map(len, labels)) <= 10
        _clean(fig)


def test_head_maps_use_numeric_axes_and_keep_colorbars_clear():
    a = np.tril(RNG.random((N_TOK, N_TOK)))
    maps = HeadMaps(3, 4, a, a / 2, TOKENS)
    for stacked in (False, True):
        fig = rv.head_maps_figure(maps, stacked=stacked)
        for hm in fig.data:
            assert list(hm.x) == list(range(N_TOK))  # numbers: no category axis (the NaN width)
        _clean(fig)


def test_routes_view_detail_sits_beside_the_graph_and_clears_on_a_new_graph():
    graph = _route_graph(n_layers=2, n_pos=4)
    maps = HeadMaps(0, 1, np.eye(4), np.eye(4), TOKENS[:4])
    lens = pd.DataFrame({"kind": ["top"], "rank": [0], "token": ["x"], "value": [0.5]})
    view = rv.RoutesView(
        lambda p, tau, r: graph, lambda node: lens, lambda layer, head: maps, TOKENS[:4], wait=0
    )
    assert view.figure in view.panes.children[0].children
    assert view.detail in view.panes.children[1].children
    assert view.tau.layout.width == "320px"
    view.select_edge(0, 1)
    assert view.selected is not None and len(view.detail.data) == 2
    view.tau.value = 0.1
    assert view.selected is None and len(view.detail.data) == 0


# -- the toy ----------------------------------------------------------------------------------


def test_toy_figures_read_cleanly_and_events_do_not_overprint():
    s = 64
    toks = [" ", "a", "b", "\n"] * 16
    trig = [i % 7 == 3 for i in range(s)]
    p = np.tril(RNG.random((s, s)))
    p /= p.sum(1, keepdims=True)
    _clean(tv.attention_map_figure(p, toks, trig))
    steps = np.arange(0, 3001, 100)
    df = pd.DataFrame({"step": steps, "backcopy_excess": 1 / (steps + 1),
                       "bigram_excess": 1 / (steps + 2), "attn_bos_L0": steps / 3000,
                       "sink_logit_L0": steps / 300})  # fmt: skip
    events = {"backcopy learned": 400, "sink mass 0.5": 420, "sink logit": 450}
    fig = tv.dynamics_figure(df, events=events)
    ys = [a.y for a in fig.layout.annotations if a.text[:2] in ("1.", "2.", "3.")]
    assert len(ys) == 3 and len(set(ys)) == 3  # staggered, one line each
    assert min(abs(a - b) for a in ys for b in ys if a != b) * (1100 - 180) >= 14
    snaps = {int(k): p[None] for k in (0, 1500, 3000)}
    _clean(tv.TrainingScrubber(df, snaps, toks, trig))


def test_thin_ticks_and_token_labels():
    vals, text = thin_ticks(list(range(40)), [str(i) for i in range(40)], span_px=300,
                            per_label_px=16)  # fmt: skip
    assert len(vals) <= 300 // 16 + 1 and vals[0] == 0 and vals[-1] == 39
    # the browser showed "62" and "63" of 64 overprinted: the last label only joins a full
    # label's room after the one before it
    for n, span in ((64, 512), (36, 290), (64, 700), (10, 400)):
        vals, _ = thin_ticks(list(range(n)), [str(i) for i in range(n)], span_px=span,
                             per_label_px=16)  # fmt: skip
        assert min(b - a for a, b in zip(vals, vals[1:], strict=False)) * span / n >= 16, n
    assert token_label("\xa0") == "⍽" and "\\" not in token_label("\u200b")
    assert token_label("a" * 40, 10) == "a" * 9 + "…"
