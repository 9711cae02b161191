"""The SVG layout check must be able to fail: figures with known faults, and a clean one."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from tests.browser import kit

pytestmark = pytest.mark.browser


def _faults(fig: go.Figure, tmp_path, browser) -> list[str]:
    page_path = tmp_path / "fig.html"
    page_path.write_text(fig.to_html(include_plotlyjs=True, full_html=True))
    page = browser.new_page(viewport={"width": 900, "height": 700})
    try:
        page.goto(page_path.as_uri())
        page.wait_for_selector(".js-plotly-plot .main-svg")
        n, problems = kit.layout_problems(page)
    finally:
        page.close()
    assert n == 1
    return problems


def _heatmap(**colorbar) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=[[1, 2], [3, 4]], colorbar=colorbar or None))
    return fig.update_layout(width=800, height=500)


def test_a_colorbar_over_the_plot_is_caught(tmp_path, browser):
    problems = _faults(_heatmap(x=0.5), tmp_path, browser)
    assert any("colorbar 0 overlaps plot area" in p for p in problems), problems


def test_a_colorbar_over_tick_labels_is_caught(tmp_path, browser):
    fig = _heatmap(x=-0.02, xanchor="right")  # on the y axis's labels
    fig.update_yaxes(tickvals=[0, 1], ticktext=["a long label", "another long one"])
    problems = _faults(fig, tmp_path, browser)
    assert any("overlaps tick label" in p for p in problems), problems


def test_crowded_tick_labels_are_caught_and_spaced_rotated_ones_pass(tmp_path, browser):
    labels = [f"token number {i}" for i in range(40)]
    fig = go.Figure(go.Bar(x=labels, y=list(range(40))))
    fig.update_layout(width=800, height=500)
    fig.update_xaxes(tickangle=0)
    problems = _faults(fig, tmp_path, browser)
    assert any("tick labels" in p and "overlap" in p for p in problems), problems
    # the same labels at 45 degrees, every fourth shown: bounding boxes overlap, text does not
    fig.update_xaxes(tickangle=-45, tickvals=labels[::4])
    assert _faults(fig, tmp_path, browser) == []


def test_a_title_past_the_edge_is_caught(tmp_path, browser):
    fig = _heatmap()
    fig.update_layout(title={"text": "a title far too long to fit " * 6, "x": 0.5})
    problems = _faults(fig, tmp_path, browser)
    assert any("cut off" in p for p in problems), problems


def test_a_clean_figure_has_no_problems(tmp_path, browser):
    assert _faults(_heatmap(), tmp_path, browser) == []


def test_a_figure_narrower_than_its_box_is_caught(tmp_path, browser):
    page_path = tmp_path / "narrow.html"
    fig = _heatmap().update_layout(width=None, autosize=False)  # plotly's default 700 px
    page_path.write_text(fig.to_html(include_plotlyjs=True, full_html=True, default_width="100%"))
    page = browser.new_page(viewport={"width": 1200, "height": 700})
    try:
        page.goto(page_path.as_uri())
        page.wait_for_selector(".js-plotly-plot .main-svg")
        page.evaluate("() => Plotly.relayout(document.querySelector('.js-plotly-plot'), "
                      "{autosize: false, width: 700})")  # fmt: skip
        page.evaluate("() => { const gd = document.querySelector('.js-plotly-plot');"
                      " delete gd.layout.width; }")  # fmt: skip
        _, problems = kit.layout_problems(page)
    finally:
        page.close()
    assert any("drawn 700 px wide" in p for p in problems), problems


def test_a_title_over_an_annotation_is_caught(tmp_path, browser):
    fig = _heatmap()
    fig.update_layout(title={"text": "the title", "x": 0.1, "y": 0.95, "xanchor": "left"})
    fig.add_annotation(text="a leftover subplot title", x=0.0, y=1.235, xref="paper",
                       yref="paper", showarrow=False, xanchor="left")  # fmt: skip
    problems = _faults(fig, tmp_path, browser)
    assert any("the title overlaps" in p for p in problems), problems
