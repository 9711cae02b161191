"""Function-token views, tested as data and text on a hand-made graph (no model)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from workbench.analysis.function_tokens import GraphAccumulator, counts_from_ids, zipf_table
from workbench.widgets.function_tokens_view import (
    FeatureView,
    FunctionTokensView,
    TokenFeaturesView,
    contexts_html,
    coverage_figure,
    degree_figure,
    loss_curve_figure,
    zipf_figure,
)
from workbench.widgets.views import ViewDataError

NAMES = ["the", ",", " cat", "<b>", "dog"]


def _graph(layer: int = 3):
    tokens = torch.tensor([0, 1, 0, 2, 0, 1, 3, 0])
    acts = torch.zeros(8, 10)
    acts[0, [1, 2]] = torch.tensor([0.5, 1.0])
    acts[1, 2] = 2.0
    acts[2, 3] = 0.2
    acts[3, [4, 5]] = 1.0
    acts[4, 1] = 3.0
    acts[5, [2, 6]] = 0.7
    acts[6, 7] = 0.1
    acts[7, [1, 2]] = 0.4
    acc = GraphAccumulator(5, 10, n_contexts=3, before=2, after=1)
    rows, feats = acts.nonzero(as_tuple=True)
    ctx = torch.stack([tokens.roll(2), tokens.roll(1), tokens, tokens.roll(-1)], 1)
    acc.update(tokens, rows, feats, acts[rows, feats], ctx)
    return acc.result(layer, decode=lambda i: NAMES[i])


def test_token_features_view_shows_the_picked_tokens_features():
    view = TokenFeaturesView({3: _graph()})
    assert view.token.value == 0  # the most frequent token first
    assert list(view.figure.data[0].x) == [4, 3, 1]  # features 2 (4x), 1 (3x), 3 (1x)
    assert view.table["feature"].tolist() == [2, 1, 3]
    assert "connects to 3 of 10" in view.figure.layout.title.text
    view.update(token=2)
    assert view.table["feature"].tolist() == [4, 5]
    seen = []
    view.on_feature(lambda layer, f: seen.append((layer, f)))

    class Points:
        point_inds = [1]

    view._clicked(None, Points(), None)
    assert seen == [(3, 5)]


def test_feature_view_contexts_and_steering_slider():
    calls = []

    def steer(layer, feature, strength):
        calls.append((layer, feature, strength))
        return f"generated at {strength}"

    view = FeatureView({3: _graph()}, steer=steer, feature=2, wait=0)
    assert view.table["activation"].tolist() == pytest.approx([2.0, 1.0, 0.7])
    assert "fires on 4 of 8 tokens" in view.contexts.value
    assert "<b style" in view.contexts.value  # the activating token is highlighted
    assert calls == [(3, 2, 0.0)]
    view.strength.value = 5.0
    assert calls[-1] == (3, 2, 5.0) and "generated at 5.0" in view.generation.value
    view.show(3, 7)
    assert view.table["token"].tolist() == ["<b>"]
    assert "&lt;b&gt;" in view.contexts.value  # token text is escaped
    view.show(3, 0)
    assert "never fired" in view.contexts.value


def test_combined_view_links_clicks_and_has_a_static_copy():
    view = FunctionTokensView({3: _graph()}, steer=lambda l, f, s: pd.DataFrame({"t": [s]}), wait=0)
    assert view.features.feature.value == 2  # the token's top feature is opened

    class Points:
        point_inds = [2]

    view.tokens._clicked(None, Points(), None)
    assert view.features.feature.value == 3
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "wb-static-figure" in bundle["text/html"] and "wb-contexts" in bundle["text/html"]
    # every panel in the static copy: both charts, the contexts and the steered text
    assert bundle["text/html"].count('class="wb-static-figure"') == 2
    assert "steered ×" in bundle["text/html"]


def test_figures_take_results_and_reject_bad_frames():
    freq = counts_from_ids([[0, 0, 0, 1, 1, 2], [0, 1, 3]], 5)
    z = zipf_table(freq)
    fig = zipf_figure(z, n_function=2)
    assert list(fig.data[0].x) == [1, 2, 3, 4]
    degrees = pd.DataFrame(
        {
            "rank": [1, 2, 3],
            "token": ["a", "b", "c"],
            "degree_L3": [5, 0, 2],
            "degree_L9": [7, 1, 1],
        }
    )
    fig = degree_figure(degrees)
    assert list(fig.data[0].x) == [1, 3]  # zero degree cannot sit on a log axis
    assert [t.name for t in fig.data] == ["layer 3", "layer 9"]
    cov = {3: _graph().coverage(4)}
    assert list(coverage_figure(cov).data[0].y) == pytest.approx([30.0, 40.0, 60.0, 70.0])
    losses = pd.DataFrame(
        {"step": [0, 0, 5, 5], "class": ["F→C", "all", "F→C", "all"], "mean_loss": [5, 4, 3, 2]}
    )
    fig = loss_curve_figure(losses)
    assert [t.name for t in fig.data] == ["F→C", "all"]
    with pytest.raises(ViewDataError, match="missing"):
        loss_curve_figure(pd.DataFrame({"step": [0]}))
    with pytest.raises(ViewDataError, match="missing"):
        contexts_html(pd.DataFrame({"activation": [1.0]}))


def test_loss_class_and_coverage_figures_draw_intervals():
    import pandas as pd

    from workbench.widgets.function_tokens_view import coverage_figure, loss_class_figure

    iv = pd.DataFrame(
        {"class": ["F→F", "F→C", "C→F", "C→C"], "mean_loss": [1.0, 4.0, 2.0, 3.0],
         "low": [0.9, 3.5, 1.8, 2.9], "high": [1.2, 4.4, 2.1, 3.1]}
    )  # fmt: skip
    fig = loss_class_figure(iv)
    assert list(fig.data[0].error_y.array) == pytest.approx([0.2, 0.4, 0.1, 0.1])
    cov = pd.DataFrame({"k": [1, 2], "token": [".", ","], "pct_all": [10.0, 20.0],
                        "pct_all_low": [8.0, 15.0], "pct_all_high": [12.0, 21.0]})  # fmt: skip
    fig = coverage_figure({6: cov})
    assert list(fig.data[0].error_y.arrayminus) == pytest.approx([2.0, 5.0])
