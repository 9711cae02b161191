"""Route views, tested as figures and text: what is drawn, what a click shows, the export."""

from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import pytest

from tests.unit.routes_handbuilt import PROMPT, expected_route, two_layer_route_model
from workbench.analysis.routes import Node, trace_routes
from workbench.widgets import static as static_mod
from workbench.widgets.layout import layout_problems
from workbench.widgets.routes_view import (
    OFFLINE_NOTE,
    OFFLINE_TAUS,
    RoutesView,
    head_frequency_figure,
    head_maps_figure,
    lens_figure,
    route_figure,
    specialisation_figure,
)
from workbench.widgets.views import ViewDataError


@pytest.fixture(scope="module")
def routes():
    return trace_routes(two_layer_route_model(), PROMPT)


class Points:
    def __init__(self, *inds):
        self.point_inds = list(inds)


def trace_named(fig, name):
    return next(t for t in fig.data if t.name == name)


def test_route_figure_draws_every_node_and_edge(routes):
    g = routes.graph(-1)
    fig = route_figure(g)
    nodes = trace_named(fig, "nodes")
    handles = trace_named(fig, "edge handles")
    assert len(nodes.x) == g.graph.number_of_nodes() == 9
    heads = [k for k in expected_route() if k[2].startswith("h")]
    assert len(handles.x) == len(heads) == 3  # one handle per head edge
    assert {t.name for t in fig.data} == {"nodes", "edge handles", "residual", "head 0", "head 1"}
    # only positions on the route are columns, labelled with their tokens
    assert list(fig.layout.xaxis.ticktext) == ["1: a", "3: b", "5: x"]
    assert "L1 head 1" in " ".join(handles.hovertext)
    html = fig.to_html(include_plotlyjs=False, full_html=False)
    assert "Route graph" in html and "edge handles" in html


def test_summed_heads_merge_parallel_edges():
    class G:  # two heads between the same two nodes
        import networkx as nx

        graph = nx.MultiDiGraph()
        u, v = Node(-1, "emb", 0), Node(0, "attn", 1)
        for h in (0, 1):
            graph.add_edge(u, v, key=f"h{h}", kind="head", layer=0, head=h,
                           importance=0.3, weight=0.3)  # fmt: skip
        tokens, tau, prediction, n_layers, n_heads = ["a", "b"], 0.04, 1, 1, 2

        def summed(self):
            from workbench.analysis.routes import sum_heads

            return sum_heads(self.graph)

    apart = route_figure(G())
    together = route_figure(G(), sum_heads=True)
    assert len(trace_named(apart, "edge handles").x) == 2
    assert len(trace_named(together, "edge handles").x) == 1
    assert "importance 0.600" in trace_named(together, "edge handles").hovertext[0]


def test_view_clicks_show_the_lens_and_the_head_maps(routes):
    view = RoutesView.for_routes(routes, wait=0)
    assert view.graph.prediction == 5 and view.detail.data == ()
    nodes = trace_named(view.figure, "nodes")
    i = [tuple(c) for c in nodes.customdata].index((1, "mlp", 5))
    view._on_node_click(nodes, Points(i))
    assert view.selected == ("node", Node(1, "mlp", 5))
    assert [t.type for t in view.detail.data] == ["bar", "bar", "bar"]
    assert "Logit lens at L1.mlp@5" in view.detail.layout.title.text
    handles = trace_named(view.figure, "edge handles")
    k = [tuple(c) for c in handles.customdata].index(("head", 1, 1))
    view._on_edge_click(handles, Points(k))
    assert view.selected == ("edge", (1, 1))
    assert [t.type for t in view.detail.data] == ["heatmap", "heatmap"]
    attn, contrib = view.detail.data
    assert attn.z[5][3] == pytest.approx(1.0, abs=1e-6)  # L1H1 looks from 5 at 'b'
    assert contrib.z[5][3] == pytest.approx(expected_route()[("L0.mlp@3", "L1.attn@5", "h1")],
                                            abs=1e-5)  # fmt: skip
    assert all(c[0] == "head" for c in handles.customdata)  # residual edges have no handle


def test_view_controls_recompute_the_graph(routes):
    view = RoutesView.for_routes(routes, wait=0)
    view.tau.value = 0.45
    assert view.graph.tau == 0.45 and view.graph.heads() == {(0, 0)}
    assert len(trace_named(view.figure, "edge handles").x) == 1  # layer-0 head 0 into 5
    view.prediction.value = 2
    assert view.graph.prediction == 2
    view.renormalize.value = True
    assert view.graph.renormalized
    labels = [label for label, _ in view.prediction.options]
    assert labels[5].startswith("5: x →")


def test_view_errors_show_under_the_figure(routes):
    def broken(node):
        raise RuntimeError("no lens today")

    view = RoutesView(routes.graph, broken, routes.head_maps, routes.tokens, wait=0)
    nodes = trace_named(view.figure, "nodes")
    view._on_node_click(nodes, Points(0))
    assert "no lens today" in view.status.value


def test_export_has_static_copies_of_both_figures(routes):
    view = RoutesView.for_routes(routes, wait=0)
    view.select_edge(0, 0)
    bundle = view._repr_mimebundle_()
    assert {"text/html", "application/vnd.plotly.v1+json", "text/plain"} <= set(bundle)
    html = bundle["text/html"]
    assert html.count('class="wb-static-figure"') == 2
    assert 'class="wb-routes" style="display:flex' in html  # the detail beside the graph
    # fixed shares: the graph draws before the detail column exists, and must not take
    # the whole width then
    assert "flex:0 0 calc((100% - 8px) * 0.6)" in html and "* 0.4)" in html
    assert "Route graph" in html and "Layer 0, head 0" in html
    figs = view.static_figures()
    assert all(isinstance(f, go.Figure) for f in figs) and len(figs) == 2
    # τ works offline, and the copy says which controls do
    assert html.count("var off = ") == 1 and "Plotly.react" in html
    assert "wb-offline-controls" in html and json.dumps(OFFLINE_NOTE) in html
    assert "past the offline size budget" not in html


def test_view_refuses_bad_input(routes):
    with pytest.raises(ViewDataError, match="tokens"):
        RoutesView(routes.graph, routes.node_lens, routes.head_maps, [])
    with pytest.raises(ViewDataError, match="not among"):
        RoutesView(routes.graph, routes.node_lens, routes.head_maps, routes.tokens,
                   predictions=[("first", 0)], prediction=-1)  # fmt: skip
    with pytest.raises(ViewDataError, match="missing"):
        lens_figure(pd.DataFrame({"token": ["a"]}))


def test_head_maps_and_stats_figures(routes):
    fig = head_maps_figure(routes.head_maps(1, 1))
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
    frame = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1],
                          "frequency": [0.1, 0.2, 0.3, 0.4]})  # fmt: skip
    hm = head_frequency_figure(frame)
    assert hm.data[0].z.tolist() == [[0.1, 0.2], [0.3, 0.4]]
    spec = pd.DataFrame({"layer": [0, 1], "head": [0, 0], "freq_code": [0.9, 0.1],
                         "freq_prose": [0.1, 0.1], "z": [5.0, 0.0],
                         "specialised": ["code", "shared"]})  # fmt: skip
    sf = specialisation_figure(spec)
    assert {t.name for t in sf.data} == {"code", "shared", "equal"}
    with pytest.raises(ViewDataError):
        specialisation_figure(frame)


def test_static_figure_exports_html():
    from workbench.widgets.routes_view import static_figure

    fig = go.Figure(go.Bar(y=[1, 2]), layout={"title": {"text": "bars"}})
    bundle = static_figure(fig)._repr_mimebundle_()
    assert 'class="wb-static-figure"' in bundle["text/html"]
    assert bundle["application/vnd.plotly.v1+json"]["data"][0]["type"] == "bar"
    assert bundle["text/plain"] == "bars (plotly figure)"


def _plain(spec):
    """A figure's JSON without what differs between a FigureWidget and a plain figure
    (trace uids, the live widget's autosize) or what the frames send once (the template)."""
    spec = json.loads(json.dumps(spec if isinstance(spec, dict) else spec.to_plotly_json(),
                                 default=lambda a: a.tolist()))  # fmt: skip
    for t in spec["data"]:
        t.pop("uid", None)
    spec["layout"].pop("template", None)
    spec["layout"].pop("autosize", None)
    return spec


def test_offline_frames_are_the_live_graph_at_each_threshold(routes):
    view = RoutesView.for_routes(routes, tau=0.05, wait=0)
    frames = view.offline()
    taus = sorted({*OFFLINE_TAUS, 0.05})
    name, options = frames.control
    assert name == "τ" and options == [f"{t:.3g}" for t in taus]
    assert options[frames.start] == "0.05" and "sum heads" in frames.note
    assert _plain(frames.figures[frames.start]) == _plain(view.static_figures()[0])
    sizes = {len(trace_named(go.Figure(f), "nodes").x) for f in frames.figures}
    assert sizes == {9, 7}  # the graph changes shape with τ (fewer nodes at 0.3)
    live = RoutesView.for_routes(routes, wait=0)
    for t, spec in zip(taus, frames.figures, strict=True):
        g = routes.graph(-1, t)
        fig = go.Figure(spec)
        heads = [e for *_, e in g.graph.edges(data=True) if e["kind"] == "head"]
        assert len(trace_named(fig, "nodes").x) == g.graph.number_of_nodes()
        assert len(trace_named(fig, "edge handles").x) == len(heads)
        live.tau.value = t
        assert _plain(spec) == _plain(live.static_figures()[0]), t
        for width in (950, 1030, 1400):
            assert layout_problems(spec, width) == [], (t, width)
    assert frames.payload() is not None


def test_offline_frames_follow_prediction_renormalise_and_sum_heads(routes):
    view = RoutesView.for_routes(routes, prediction=4, renormalize=True, sum_heads=True, wait=0)
    frames = view.offline()
    spec = frames.figures[frames.control[1].index("0.1")]
    g = routes.graph(4, 0.1, renormalize=True)
    want = route_figure(g, sum_heads=True)
    assert _plain(spec) == _plain(want)


def test_offline_frames_past_the_budget_thin_then_give_up(routes, monkeypatch):
    view = RoutesView.for_routes(routes, tau=0.04, wait=0)
    full = len(json.dumps(view.offline().payload()))
    monkeypatch.setattr(static_mod, "OFFLINE_BUDGET_BYTES", full - 1)
    fewer = view.offline()
    options = fewer.control[1]
    assert 2 <= len(options) < len(OFFLINE_TAUS) and options[fewer.start] == "0.04"
    assert fewer.payload() is not None and options == sorted(options, key=float)
    monkeypatch.setattr(static_mod, "OFFLINE_BUDGET_BYTES", 100)
    fixed = view.offline()
    assert len(fixed.control[1]) == 2 and "0.04" in fixed.control[1]
    assert fixed.payload() is None
    view.select_node(Node(1, "mlp", 5))
    html = view._repr_mimebundle_()["text/html"]
    assert "var off" not in html and "past the offline size budget" in html
    assert html.count('class="wb-static-figure"') == 2  # the detail panel stays


def test_offline_tau_picker_redraws_the_graph_in_javascript(routes, tmp_path):
    """The exported page's script, run in node: picking the second threshold draws that
    frame's traces with Plotly.react and marks the plot with the frame."""
    from tests.unit.test_widgets import run_frames_in_node

    view = RoutesView.for_routes(routes, tau=0.3, wait=0)
    page = view._repr_mimebundle_()["text/html"]
    off = json.loads(page.split("var off = ", 1)[1].split(";\n", 1)[0].replace("<\\/", "</"))
    got = run_frames_in_node(page, tmp_path)
    assert got["control"] == "τ" and got["options"] == len(off["frames"]) == 10
    assert got["frame"] == 1 and len(got["calls"]) == 1
    call = got["calls"][0]
    assert call["data"] == off["frames"][1]["data"]
    assert call["layout"]["title"]["text"].startswith("Route graph, τ = 0.02")
    assert call["layout"]["template"] == off["template"]


def test_replaced_figures_keep_filling_their_pane(routes):
    # a new layout without autosize drew the detail panel at 700 px in a ~390 px pane
    view = RoutesView.for_routes(routes, tau=0.05, wait=0)
    view.select_node(view.graph.top)
    assert view.detail.layout.autosize is True and view.figure.layout.autosize is True
    view.tau.value = 0.3
    view.flush()
    assert view.detail.layout.autosize is True and view.figure.layout.autosize is True


def test_clearing_the_detail_hides_the_lens_axes_and_titles(routes):
    # the lens's subplot titles stayed in the browser over the placeholder's title
    view = RoutesView.for_routes(routes, tau=0.05, wait=0)
    view.select_node(view.graph.top)
    extra = [k for k in view.detail.layout.to_plotly_json() if k[1:5] == "axis" and k[5:]]
    assert extra  # the lens has stacked panels
    view.tau.value = 0.3
    view.flush()
    for key in extra:
        assert view.detail.layout[key].visible is False, key
    assert len(view.detail.layout.annotations) == 0  # the lens's subplot titles
