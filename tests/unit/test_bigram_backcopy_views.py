"""Plotly views of the toy: built from a real (tiny) run's probes, checked as data."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch

from workbench.toy.bigram_backcopy import BBTask
from workbench.toy.probes import ablation_table, order_of_events
from workbench.toy.training import TrainConfig, train
from workbench.widgets.toy_views import (
    TrainingScrubber,
    ablation_figure,
    attention_map_figure,
    compare_runs_figure,
    dynamics_figure,
)
from workbench.widgets.views import ViewDataError


@pytest.fixture(scope="module")
def run():
    torch.set_num_threads(1)
    cfg = TrainConfig(
        d_model=16,
        d_mlp=32,
        seq_len=24,
        batch_size=8,
        steps=20,
        probe_every=5,
        probe_batch=4,
        snapshot_len=12,
        n_layers=2,
        no_attn_layers=(0,),
    )
    return train(cfg, task=BBTask.from_prose(), progress=False)


def _array(x):
    """A plotly JSON array: nested lists, or a base64 typed array {"dtype", "bdata", "shape"}."""
    if isinstance(x, dict):
        a = np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"])
        shape = x.get("shape")
        return a.reshape([int(n) for n in str(shape).split(",")]) if shape else a
    return np.asarray(x)


def _toks(run):
    toks = [run.task.decode([t]) for t in run.probe_tokens]
    trig = run.task.is_trigger()[run.probe_tokens].tolist()
    return toks, trig


def test_dynamics_figure_has_every_panel_and_event_lines(run):
    df = run.probes
    assert df["step"].tolist() == [0, 5, 10, 15, 20]
    events = {"backcopy learned": 5.0, "sink mass": float("nan"), "sink logit": 10.0}
    fig = dynamics_figure(df, layer=1, events=events)
    names = [t.name for t in fig.data]
    assert "backcopy excess" in names and "sink logit" in names and "BOS value" in names
    assert {"BOS resid 0", "BOS resid 1", "BOS resid 2"} <= set(names)
    labels = sorted({a.text for a in fig.layout.annotations if a.text[:1].isdigit()})
    assert labels == ["1. backcopy learned", "2. sink logit"]  # the NaN event is left out
    with pytest.raises(ViewDataError, match="attn_bos_L0"):
        dynamics_figure(df, layer=0)  # layer 0 has no attention in this run


def test_attention_map_figure_marks_triggers_and_summarises(run):
    toks, trig = _toks(run)
    pattern = run.snapshots[20][0]
    fig = attention_map_figure(pattern, toks, trig)
    heat = fig.data[0]
    bars = [t for t in fig.data if t.type == "bar"]
    np.testing.assert_allclose(np.asarray(heat.z), pattern.numpy(), rtol=1e-6)
    marks = next(t for t in fig.data if t.name == "trigger query")
    assert list(marks.y) == [i for i, t in enumerate(trig) if t]  # every trigger, even unlabelled
    assert sum("▶" in q[0] for q in heat.customdata) == sum(trig)
    assert [b.name for b in bars] == ["trigger queries", "non-trigger queries"]
    with pytest.raises(ViewDataError, match="pattern must be"):
        attention_map_figure(pattern[:5, :5], toks, trig)


def test_compare_runs_and_ablation_figures(run):
    fig = compare_runs_figure(
        {"a": run.probes, "b": run.probes}, metrics=["backcopy_excess", "attn_bos_L1"]
    )
    assert len(fig.data) == 4 and fig.layout.yaxis.type == "log"
    with pytest.raises(ViewDataError, match="lacks columns"):
        compare_runs_figure({"a": run.probes}, metrics=["nope"])
    fig = compare_runs_figure({"a": run.probes}, layer=1, stream=1)  # the default panels
    titles = [a.text for a in fig.layout.annotations]
    assert titles[2:] == ["attn_bos_L1", "sink_logit_L1", "bos_value_norm_L1", "bos_resid_norm_1"]
    np.testing.assert_allclose(fig.data[5].y, run.probes["bos_resid_norm_1"])
    with pytest.raises(ViewDataError, match="attn_bos_L0"):
        compare_runs_figure({"a": run.probes})  # layer 0 has no attention in this run
    table = ablation_table(run.model, run.task, run.task.sample(2, 24, seed=0))
    fig = ablation_figure(table)
    assert len(fig.data) == 2 * len(table) + 2


def test_scrubber_redraws_on_the_slider(run):
    toks, trig = _toks(run)
    view = TrainingScrubber(run.probes, run.snapshots, toks, trig, metric="attn_bos_L1")
    assert view.steps == [0, 5, 10, 15, 20]
    # it opens on the trained model (the last step), in the widget and its static copy
    assert view.slider.value == 20
    np.testing.assert_allclose(np.asarray(view.figure.data[0].z), run.snapshots[20][0].numpy())
    np.testing.assert_allclose(_array(view.static().data[0].z), run.snapshots[20][0].numpy())
    view.slider.value = 15
    np.testing.assert_allclose(np.asarray(view.figure.data[0].z), run.snapshots[15][0].numpy())
    assert list(view.figure.data[2].x) == [15]
    with pytest.raises(ViewDataError, match="No snapshot at step 3"):
        view.update(3)
    with pytest.raises(ViewDataError, match="snapshots must be"):
        TrainingScrubber(run.probes, run.snapshots, toks[:4], trig[:4], metric="loss")


def test_order_of_events_runs_on_real_probes(run):
    ev = order_of_events(run.probes, layer=1)
    assert set(ev) == {"backcopy learned", "sink mass", "sink logit", "value drain"}


def test_scrubber_static_copy_carries_every_step_for_its_offline_slider(run):
    import json

    toks, trig = _toks(run)
    view = TrainingScrubber(run.probes, run.snapshots, toks, trig, metric="attn_bos_L1")
    page = view._repr_mimebundle_()["text/html"]
    off = json.loads(page.split("var off = ", 1)[1].split(";\n", 1)[0].replace("<\\/", "</"))
    assert off["dims"] == [5] and off["start"] == [4]  # the last step, the trained model
    assert off["titles"] == [f"step {s}" for s in view.steps]
    assert [u["2"]["x"] for u in off["updates"]] == [[s] for s in view.steps]
    assert "the step slider works offline" in page
