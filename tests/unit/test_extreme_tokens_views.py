"""Extreme-token views, tested as data: the figures hold what the results say."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from tests.models import tiny
from workbench.analysis.extreme_tokens import prompt_profile
from workbench.widgets.extreme_tokens_view import (
    ActiveDormantView,
    HeadExplorer,
    heads_domains_figure,
    residual_norms_figure,
    residual_peak_figure,
    sink_ablation_scatter,
)
from workbench.widgets.views import ViewDataError


def _profile(n_layers=2, n_heads=3, n=4, sink=0):
    attn = torch.zeros(n_layers, n_heads, n, n)
    attn[..., sink] = 1.0  # every head is a perfect sink
    attn[1, 2] = torch.eye(n)  # except layer 1 head 2: attends to itself
    vn = torch.ones(n_layers, n_heads, n)
    vn[..., sink] = 0.1
    rn = torch.arange(1.0, n + 1)[None].repeat(n_layers, 1)
    rn[:, sink] = 100.0
    return SimpleNamespace(
        tokens=["<s>", " a", " b", " c"][:n], sink=sink, attn=attn, value_norms=vn, resid_norms=rn
    )


def _table():
    rows = []
    for d, shift in (("code", 0.0), ("prose", 0.5)):
        for layer in range(2):
            for head in range(3):
                rows.append(
                    {
                        "domain": d,
                        "layer": layer,
                        "head": head,
                        "sink_mass": 0.1 * head + shift * (layer == 1),
                        "delta_zero": 0.01 * (head + 1) * (1 if d == "code" else -1),
                        "delta_sink": 0.0,
                        "state": "quiet",
                    }
                )
    return pd.DataFrame(rows)


def test_head_explorer_slices_the_profile():
    view = HeadExplorer(_profile(), layer=0, head=1)
    hm, bar, s_line, m_line, mark = view.figure.data
    assert hm.z[3][0] == 1.0 and hm.z[0][3] is None  # causal: later keys blank
    assert list(bar.y) == pytest.approx([0.1, 1, 1, 1])
    assert bar.marker.color[0] != bar.marker.color[1]  # the sink bar stands out
    assert list(s_line.y) == [100.0, 100.0]
    assert list(m_line.y) == [3.0, 3.0]  # median of 2, 3, 4
    assert "sink" in view.figure.layout.title.text and "1.00" in view.figure.layout.title.text
    view.layer.value, view.head.value = 1, 2
    hm = view.figure.data[0]
    assert hm.z[2][2] == 1.0 and hm.z[2][0] == 0.0
    assert list(view.figure.data[4].x) == [1]


def test_head_explorer_domain_switch_is_a_redraw():
    # every domain's prompt is computed once up front, so a switch runs no forward pass
    seen = []

    def compute(prompt):
        seen.append(prompt)
        return _profile(n=len(prompt) % 2 + 3)

    view = HeadExplorer(compute=compute, prompts={"code": "x = 1", "prose": "A cat."}, wait=0)
    assert seen == ["x = 1", "A cat."]
    view.domain.value = "prose"
    view.flush()
    assert seen == ["x = 1", "A cat."] and view.prompt.value == "A cat."
    assert len(view.profile.tokens) == 3  # the figure shows prose's profile
    view.prompt.value = "typed by hand"
    view.flush()
    assert seen[-1] == "typed by hand" and view.domain.value is None


def test_head_explorer_rejects_bad_profiles():
    bad = _profile()
    bad.value_norms = torch.ones(2, 3, 5)
    with pytest.raises(ViewDataError, match="value_norms must be"):
        HeadExplorer(bad)
    with pytest.raises(ViewDataError, match="needs prompts"):
        HeadExplorer(compute=lambda p: _profile())
    with pytest.raises(ViewDataError, match="out of range"):
        HeadExplorer(_profile(), head=5)


def test_head_explorer_on_a_real_profile():
    model = tiny("LlamaForCausalLM")
    prof = prompt_profile(model, "The cat sat.")
    view = HeadExplorer(prof, layer=2, head=3)
    n = len(prof.tokens)
    assert len(view.figure.data[0].z) == n
    assert list(view.figure.data[1].y) == pytest.approx(prof.value_norms[2, 3].tolist())


def test_heads_domains_heatmap_and_difference():
    t = _table()
    fig = heads_domains_figure(t, "sink_mass")
    assert len(fig.data) == 3  # code, prose, code - prose
    code, prose, diff = (np.asarray(d.z, dtype=float) for d in fig.data)
    assert code.shape == (2, 3)
    assert prose[1, 2] == pytest.approx(0.7)
    assert diff[1, 0] == pytest.approx(-0.5) and diff[0, 0] == 0.0
    view = ActiveDormantView(t)
    view.metric.value = "delta_zero"
    assert np.asarray(view.figure.data[0].z, dtype=float)[0, 2] == pytest.approx(0.03)
    assert "Δ loss" in view.figure.layout.title.text
    with pytest.raises(ViewDataError, match="needs columns"):
        heads_domains_figure(t.drop(columns=["head"]))


def test_scatter_and_residual_figures():
    t = _table()
    fig = sink_ablation_scatter(t)
    assert [d.name for d in fig.data] == ["code", "prose"]
    assert len(fig.data[0].x) == 6 and fig.data[0].text[5] == "L1H2 (quiet)"
    # one extreme head: clipped onto the edge as a triangle, its true value kept for hover
    t.loc[0, "delta_zero"] = 5.0
    fig = sink_ablation_scatter(t)
    lo, hi = fig.layout.yaxis.range
    assert hi < 5.0 and fig.data[0].y[0] == pytest.approx(hi)
    assert fig.data[0].customdata[0] == 5.0 and fig.data[0].marker.symbol[0] == "triangle-up"
    assert "1 beyond the range" in fig.layout.title.text
    res = pd.DataFrame(
        {
            "layer": [0, 1],
            "sink_norm": [5.0, 50.0],
            "median_norm": [1.0, 2.0],
            "max_other_norm": [2.0, 3.0],
        }
    )
    f2 = residual_norms_figure(res)
    assert list(f2.data[0].y) == [5.0, 50.0] and f2.layout.yaxis.type == "log"
    peak = pd.DataFrame(
        {
            "ablated": ["none", "attn 0", "mlp 0"],
            "block": ["none", "attn", "mlp"],
            "sink_norm": [100.0, 90.0, 5.0],
            "drop": [0.0, 0.1, 0.95],
        }
    )
    f3 = residual_peak_figure(peak)
    assert list(f3.data[0].x) == ["attn 0", "mlp 0"]
    assert f3.layout.shapes[0].y0 == 100.0


@pytest.mark.parametrize("first", ["delta_zero", "sink_logit"])
def test_metric_colour_range_does_not_depend_on_what_was_shown_before(first):
    """Regression: switching metric kept the previous metric's zmin/zmax."""
    t = _table()
    t["sink_logit"] = t["sink_mass"] * 7.0
    fresh = ActiveDormantView(t, value="sink_mass").figure
    view = ActiveDormantView(t, value=first)
    view.metric.value = "sink_mass"
    for got, want in zip(view.figure.data, fresh.data, strict=True):
        assert (got.zmin, got.zmax, got.zmid) == (want.zmin, want.zmax, want.zmid)
        assert bool(got.zauto) == (want.zmin is None and want.zmax is None)
        assert got.colorscale == want.colorscale


def test_interval_figure_and_scatter_draw_the_intervals():
    import pandas as pd

    from workbench.widgets.extreme_tokens_view import interval_figure, sink_ablation_scatter

    t = pd.DataFrame(
        {
            "domain": ["code", "wiki"],
            "layer": [15, 15],
            "head": [3, 3],
            "sink_mass": [0.6, 0.7],
            "sink_mass_low": [0.5, 0.6],
            "sink_mass_high": [0.7, 0.8],
            "delta_zero": [0.03, 0.01],
            "delta_zero_low": [0.01, -0.01],
            "delta_zero_high": [0.05, 0.04],
            "state": ["active", "uncertain"],
        }
    )
    fig = interval_figure(t, "delta_zero", heads=[(15, 3)], cut=0.01)
    assert [tr.name for tr in fig.data] == ["code", "wiki"]
    assert list(fig.data[0].error_y.array) == pytest.approx([0.02])
    assert list(fig.data[1].error_y.arrayminus) == pytest.approx([0.02])
    sc = sink_ablation_scatter(t)
    assert list(sc.data[0].error_x.array) == pytest.approx([0.1])


def test_static_copies_switch_layer_head_and_metric_offline():
    from workbench.widgets.static import FigureFrames, OfflineFrames

    view = HeadExplorer(_profile(), layer=1, head=2)
    frames = view.offline()
    assert isinstance(frames, OfflineFrames) and frames.start == [1, 2]
    payload = frames.payload()
    assert payload is not None and payload["dims"] == [2, 3]
    # frame (layer 1, head 2) carries what the live view draws there
    i = 1 * 3 + 2
    assert frames.titles[i] == view.figure.layout.title.text
    assert frames.updates[i][1]["y"] == list(view.figure.data[1].y)
    assert frames.updates[i][4] == {"x": [1], "y": [view.figure.data[4].y[0]]}
    z = np.asarray(frames.z)[1, 2]
    assert np.isnan(z[0, 1]) and z[1, 1] == pytest.approx(1.0)  # causal blank, self-attention
    view.head.value = 0
    assert frames.titles[1 * 3 + 0] == view.figure.layout.title.text
    html = view._repr_mimebundle_()["text/html"]
    assert "wb-offline-controls" in html or "controls(el)" in html
    assert "layer and head work offline" in html

    ad = ActiveDormantView(_table())
    ff = ad.offline()
    assert isinstance(ff, FigureFrames) and ff.payload() is not None
    assert ff.control[1] == [label for label, _ in ad.metric.options]
    ad.metric.value = ad.metric.options[1][1]
    spec = ff.figures[1].to_plotly_json()
    assert spec["layout"]["title"]["text"] == ad.figure.layout.title.text
