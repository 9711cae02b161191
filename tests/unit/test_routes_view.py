"""Route views, tested as figures and text: what is drawn, what a click shows, the export."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

from tests.unit.routes_handbuilt import PROMPT, expected_route, two_layer_route_model
from workbench.analysis.routes import Node, trace_routes
from workbench.widgets.routes_view import (
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
    assert "Route graph" in html and "Layer 0, head 0" in html
    figs = view.static_figures()
    assert all(isinstance(f, go.Figure) for f in figs) and len(figs) == 2


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
