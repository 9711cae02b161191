"""Head statistics over a data set, code vs prose specialisation, and the IOI check's plumbing."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from tests.models import tiny
from tests.unit.routes_handbuilt import two_layer_route_model
from workbench.analysis.routes import Node, RouteError, Routes, forward_pass
from workbench.analysis.routes.dataset import (
    HeadRouteStats,
    RouteHeadCounter,
    _count_graph,
    classify_heads,
    domain_specialisation,
    head_route_stats,
    prediction_positions,
    word_ids,
)
from workbench.analysis.routes.graph import RouteGraph
from workbench.analysis.routes.ioi import (
    circuit_heads,
    hub_reachable,
    ioi_prompts,
    ioi_route_check,
)


def test_word_ids():
    assert word_ids([" Par", "is", " is", " big", "."]) == [0, 0, 1, 2, 3]
    assert word_ids(["def", " f", "(", "x", "):"]) == [0, 1, 2, 3, 4]
    assert word_ids(list("ab cd")) == [0, 0, 1, 2, 2]
    assert word_ids([]) == []


def test_prediction_positions():
    assert prediction_positions(6, 2) == [1, 5]
    assert prediction_positions(6, 100) == [1, 2, 3, 4, 5]
    assert prediction_positions(1, 3) == [0]
    assert prediction_positions(50, 1) == [49]


def _graph(edges: list[tuple[Node, Node, int, int]], tokens: list[str]) -> RouteGraph:
    g = nx.MultiDiGraph()
    for u, v, layer, head in edges:
        g.add_edge(u, v, key=f"h{head}", kind="head", layer=layer, head=head,
                   importance=0.5, weight=0.5)  # fmt: skip
    return RouteGraph(g, len(tokens) - 1, 0.04, False, tokens, 2, 2)


def test_counting_previous_token_and_subword_edges():
    tokens = [" Par", "is", " is", " big"]
    words = word_ids(tokens)
    e = lambda j, i: (Node(-1, "emb", j), Node(0, "attn", i))  # noqa: E731
    g = _graph(
        [(*e(0, 1), 0, 0),  # previous token AND inside the word " Par|is"
         (*e(1, 2), 0, 0),  # previous token, across words
         (*e(2, 3), 0, 0),  # previous token, across words
         (*e(0, 3), 0, 1)],  # neither
        tokens,
    )  # fmt: skip
    acc = {k: np.zeros((2, 2)) for k in ("graphs", "edges", "mass", "prev", "subword")}
    _count_graph(g, words, acc)
    _count_graph(g, words, acc)
    assert acc["graphs"][0, 0] == 2 and acc["edges"][0, 0] == 6
    assert acc["prev"][0, 0] == 6 and acc["subword"][0, 0] == 2
    assert acc["prev"][0, 1] == 0 and acc["subword"][0, 1] == 0
    assert acc["mass"][0, 1] == pytest.approx(1.0)


def test_stream_reducer_matches_a_direct_loop(tmp_path):
    model = tiny("LlamaForCausalLM")
    docs = ["The cat sat on the mat.", "def f(x):\n    return x + 1", "Hello, world!"]
    stats = head_route_stats(model, docs, predictions_per_doc=3, max_length=64, batch_size=2,
                             cache_dir=tmp_path, progress=False, tau=0.02)  # fmt: skip
    direct = RouteHeadCounter(model, tau=0.02, predictions_per_doc=3)
    graphs = 0
    for doc in docs:
        routes = Routes(forward_pass(model, doc))
        words = word_ids(routes.tokens)
        for p in prediction_positions(routes.fp.seq_len, 3):
            _count_graph(routes.graph(p, 0.02), words, direct.acc)
            graphs += 1
    assert stats.n_graphs == graphs == 9 and stats.n_docs == 3
    want = direct.acc["graphs"].ravel()
    assert np.array_equal(stats.frame["graphs"].to_numpy(), want)
    assert stats.frame["frequency"].to_numpy() == pytest.approx(want / graphs)
    assert len(list(tmp_path.glob("*.pt"))) == 1  # resumable cache written
    again = head_route_stats(model, docs, predictions_per_doc=3, max_length=64, batch_size=2,
                             cache_dir=tmp_path, progress=False, tau=0.02)  # fmt: skip
    pd.testing.assert_frame_equal(again.frame, stats.frame)


def test_handbuilt_heads_are_found_in_routes():
    model = two_layer_route_model()
    stats = head_route_stats(model, ["xaxbxx", "xxaxbx"], predictions_per_doc=1,
                             use_cache=False, progress=False)  # fmt: skip
    top = stats.frame.set_index(["layer", "head"])
    assert top.loc[(0, 0), "frequency"] == 1.0 and top.loc[(1, 1), "frequency"] == 1.0
    assert top.loc[(0, 1), "graphs"] == 0 and top.loc[(1, 0), "graphs"] == 0
    # "xxaxbx" predicts at 5: layer-0 head 0 reads 'a' (2) from 3 and 5, layer-1 head 1
    # reads 'b' (4) from 5: one of the three head edges goes to the previous token.
    assert stats.frame["edges"].sum() == 3 + 3


def _stats(graphs, edges, prev, sub, n_graphs=10):
    frame = pd.DataFrame({
        "layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "graphs": graphs,
        "frequency": np.array(graphs) / n_graphs, "edges": edges,
        "mass": np.ones(4), "prev_share": prev, "subword_share": sub,
    })  # fmt: skip
    return HeadRouteStats(frame, n_graphs, 5, 0.04)


def test_classify_heads():
    s = _stats([5, 5, 5, 1], [20, 20, 20, 2], [0.9, 0.6, 0.1, 1.0], [0.1, 0.8, 0.0, 1.0])
    df = classify_heads(s, min_edges=5)
    assert df["previous_token"].tolist() == [True, False, False, False]
    assert df["subword_merging"].tolist() == [False, True, False, False]  # last: too few


def test_domain_specialisation():
    code = _stats([90, 50, 10, 0], [1] * 4, [0] * 4, [0] * 4, n_graphs=100)
    prose = _stats([10, 50, 90, 0], [1] * 4, [0] * 4, [0] * 4, n_graphs=100)
    df = domain_specialisation({"code": code, "prose": prose}).set_index(["layer", "head"])
    assert df.loc[(0, 0), "specialised"] == "code" and df.loc[(1, 0), "specialised"] == "prose"
    assert df.loc[(0, 1), "specialised"] == "shared" and df.loc[(1, 1), "specialised"] == "shared"
    assert df.loc[(0, 0), "diff"] == pytest.approx(0.8)
    p = 0.5  # pooled proportion of head (0, 0)
    assert df.loc[(0, 0), "z"] == pytest.approx(0.8 / np.sqrt(p * (1 - p) * 0.02))
    with pytest.raises(RouteError, match="two domains"):
        domain_specialisation({"code": code})


def test_empty_dataset_is_refused():
    with pytest.raises(RouteError, match="empty"):
        head_route_stats(tiny("LlamaForCausalLM"), [], progress=False)


# -- the IOI check (its real run needs a hub; here only its plumbing) ---------------------


def test_ioi_prompts_and_circuit():
    df = ioi_prompts(6, seed=1)
    assert len(df) == 6 and df["prompt"].is_unique
    for r in df.itertuples():
        assert r.prompt.count(r.io.strip()) == 1 and r.prompt.count(r.s.strip()) == 2
    heads = circuit_heads()
    assert {"name mover", "s-inhibition", "induction", "previous token"} <= set(heads["role"])
    assert ((heads["layer"] < 12) & (heads["head"] < 12)).all()
    assert heads.query("role == 'name mover'")[["layer", "head"]].values.tolist() == [
        [9, 6], [9, 9], [10, 0]
    ]  # fmt: skip


def test_ioi_uses_the_shared_hub_probe():
    from workbench.models import hub

    assert hub_reachable is hub.hub_reachable


def test_ioi_check_runs_on_a_model_without_the_circuit():
    check = ioi_route_check(tiny("GPT2LMHeadModel"), ioi_prompts(2))
    assert check.n_prompts == 2 and 0.0 <= check.accuracy <= 1.0
    assert (check.heads["frequency"] == 0).all() and not check.passed
    assert set(check.roles.columns) == {"role", "heads", "found"}


def _per_doc_stats(doc_graphs, graphs_per_doc=4):
    """Stats of one head (layer 0, head 0) from per-document graph counts."""
    docs = np.asarray(doc_graphs, dtype=float)[:, None]
    n = len(doc_graphs)
    frame = pd.DataFrame({"layer": [0], "head": [0], "graphs": [docs.sum()],
                          "frequency": [docs.sum() / (graphs_per_doc * n)]})  # fmt: skip
    per_doc = {"graphs": docs, "n_graphs": np.full(n, float(graphs_per_doc))}
    return HeadRouteStats(frame, graphs_per_doc * n, n, 0.04, per_doc)


def test_specialisation_is_named_only_where_the_interval_clears_the_margin():
    # head on every graph of every code document, on none of the prose ones: clear
    sure = domain_specialisation(
        {"code": _per_doc_stats([4] * 20), "prose": _per_doc_stats([0] * 20)}
    )
    assert sure.loc[0, "specialised"] == "code"
    assert sure.loc[0, "diff_low_c"] > 0.1
    # the same mean difference carried by two documents out of ten: not supported
    noisy = domain_specialisation(
        {"code": _per_doc_stats([4, 4] + [0] * 8), "prose": _per_doc_stats([0] * 10)}
    )
    assert noisy.loc[0, "diff"] == pytest.approx(0.2)
    assert noisy.loc[0, "diff_low_c"] < 0.1 < noisy.loc[0, "diff_high_c"]
    assert noisy.loc[0, "specialised"] == "uncertain"


def test_route_frequency_intervals_come_from_per_document_counts(tmp_path):
    model = tiny("LlamaForCausalLM")
    docs = ["The cat sat on the mat.", "def f(x):\n    return x + 1", "Hello, world!"]
    stats = head_route_stats(model, docs, predictions_per_doc=2, max_length=32,
                             cache_dir=tmp_path, progress=False)  # fmt: skip
    f = stats.frame
    assert stats.per_doc["graphs"].shape == (3, model.n_layers * model.n_heads)
    assert np.allclose(stats.per_doc["graphs"].sum(0), f["graphs"])
    ok = f["frequency_low"] <= f["frequency"] + 1e-12
    assert (ok & (f["frequency"] <= f["frequency_high"] + 1e-12)).all()
    assert "Only 3 documents" in stats.sample_warning()
    again = head_route_stats(model, docs, predictions_per_doc=2, max_length=32,
                             cache_dir=tmp_path, progress=False)  # fmt: skip
    pd.testing.assert_frame_equal(again.frame, f)  # read back from the cache, same intervals


def test_specialisation_figure_takes_a_table_with_intervals():
    from workbench.widgets.routes_view import specialisation_figure

    a, b = _per_doc_stats([4] * 10), _per_doc_stats([0] * 10)
    for st in (a, b):
        st.frame["frequency_low"] = st.frame["frequency"] - 0.05
        st.frame["frequency_high"] = st.frame["frequency"] + 0.05
    df = domain_specialisation({"wiki": a, "code": b})
    assert {"freq_wiki_low", "freq_code_high"} <= set(df.columns)
    fig = specialisation_figure(df)
    assert fig.layout.title.text == "Route frequency per head: wiki against code"
    assert list(fig.data[0].error_y.array) == pytest.approx([0.05])
