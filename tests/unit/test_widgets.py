"""Controls and views, tested as data: figures update in place and export statically."""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import workbench.widgets as wbw
from workbench.widgets import static as static_mod
from workbench.widgets.controls import Debouncer, token_strip_html

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(autouse=True)
def _fresh_static_state():
    static_mod._state["plotlyjs_sent"] = False
    yield
    static_mod._state["plotlyjs_sent"] = False


def _decode(x):
    """A plotly JSON array: a list, or a base64 typed array {"dtype", "bdata"}."""
    if isinstance(x, dict):
        return np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]).tolist()
    return list(x)


def _table(tokens, probs):
    return pd.DataFrame({"token": tokens, "prob": probs})


def _lens_table(n_layers=3, tokens=("The", " cat", " sat")):
    rows = []
    for layer in range(n_layers):
        for pos, tok in enumerate(tokens):
            rows.append(
                {
                    "layer": layer,
                    "position": pos,
                    "token": tok,
                    "rank": 0,
                    "top_token": f"t{layer}{pos}",
                    "prob": (layer + 1) * (pos + 1) / (n_layers * len(tokens)),
                }
            )
            rows.append({**rows[-1], "rank": 1, "top_token": "x", "prob": 0.0})
    return pd.DataFrame(rows)


def _attn(n_layers=2, n_heads=3, n=4, seed=0):
    g = np.random.default_rng(seed)
    a = np.tril(g.random((n_layers, n_heads, n, n))) + np.eye(n) * 1e-3
    return a / a.sum(-1, keepdims=True)  # [layer, head, query, key], causal rows sum to 1


# -- debouncing -----------------------------------------------------------------------------


def _until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return cond()


def test_debouncer_collapses_a_burst_into_one_call_with_the_last_arguments():
    seen = []
    d = Debouncer(seen.append, wait=1.0)  # long, so a stalled CI thread cannot split the burst
    for i in range(20):
        d(i)
    assert seen == [] and d.pending
    assert _until(lambda: seen)
    time.sleep(0.1)
    assert seen == [19] and d.calls == 1 and not d.pending


def test_debouncer_in_a_running_event_loop_uses_the_loop():
    seen = []

    async def main():
        d = Debouncer(lambda x: seen.append((x, threading.current_thread().name)), wait=0.05)
        for i in range(5):  # a burst without yielding: nothing can run in between
            d(i)
        assert seen == [] and d.pending
        for _ in range(500):
            if seen:
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert seen == [(4, threading.main_thread().name)]  # on the loop's thread, not a timer's


def test_debouncer_wait_zero_flush_cancel_and_errors():
    seen, errors = [], []
    d = Debouncer(seen.append, wait=0)
    d(1)
    assert seen == [1]
    slow = Debouncer(seen.append, wait=10)
    slow(2)
    slow.flush()
    assert seen == [1, 2]
    slow(3)
    slow.cancel()
    slow.flush()
    assert seen == [1, 2] and not slow.pending

    def boom(_):
        raise ValueError("nope")

    Debouncer(boom, wait=0, on_error=errors.append)(0)
    assert isinstance(errors[0], ValueError)


def test_debouncer_runs_never_overlap():
    active, overlaps = [0], []
    started = threading.Event()

    def work(_):
        active[0] += 1
        overlaps.append(active[0])
        started.set()
        time.sleep(0.1)
        active[0] -= 1

    d = Debouncer(work, wait=0.01)
    d(1)
    assert started.wait(10)  # the first run is in progress...
    d(2)  # ...when the second call comes
    assert _until(lambda: d.calls == 2 and not d.pending and active[0] == 0)
    assert max(overlaps) == 1


def test_link_debounces_control_changes():
    box = wbw.PromptBox("a")
    seen = []
    d = wbw.link(box, seen.append, wait=5)
    for text in ["ab", "abc", "abcd"]:
        box.value = text
    assert seen == []
    d.flush()
    assert seen == ["abcd"]


# -- controls -------------------------------------------------------------------------------


def test_pickers_and_threshold_ranges():
    assert (wbw.layer_picker(30, value=3).max, wbw.layer_picker(30, value=3).value) == (29, 3)
    head = wbw.head_picker(9, value=2)
    assert [v for _, v in head.options] == list(range(9)) and head.value == 2
    th = wbw.threshold_slider(0.3)
    assert (th.min, th.max, th.value) == (0.0, 1.0, 0.3)
    assert wbw.PromptBox("x").continuous_update


def test_head_toggles_sync_both_ways():
    t = wbw.HeadToggles(4, value=[2])
    assert [b.value for b in t.buttons] == [False, False, True, False]
    t.buttons[0].value = True
    assert t.value == [0, 2]
    t.value = [3]
    assert [b.value for b in t.buttons] == [False, False, False, True]


def test_token_strip_shows_values_on_hover_and_escapes():
    strip = wbw.TokenStrip(["<b>", " cat"], [0.25, 0.75], label="attention")
    assert 'title="position 0: &#x27;&lt;b&gt;&#x27;\nattention = 0.250"' in strip.value
    assert "&lt;b&gt;" in strip.value and "<b>" not in strip.value.replace('"<b>"', "")
    assert "·cat" in strip.value  # the leading space is made visible
    strip.update(["a"], [1.0])
    assert strip.value.count('wb-token"') == 1
    with pytest.raises(ValueError, match="2 tokens but 1 values"):
        strip.update(["a", "b"], [1.0])
    assert "rgba(31,119,180,0.000)" in token_strip_html(["a"], None)


# -- results --------------------------------------------------------------------------------


def test_top_tokens_orders_and_clips_k():
    t = wbw.top_tokens(np.array([0.1, 0.6, 0.3]), decode=lambda i: f"tok{i}", k=5)
    assert t["token"].tolist() == ["tok1", "tok2", "tok0"]
    assert t["prob"].tolist() == pytest.approx([0.6, 0.3, 0.1])
    with pytest.raises(wbw.ViewDataError, match="probability vector"):
        wbw.top_tokens(np.ones((2, 2)), str)


# -- views: in-place updates ----------------------------------------------------------------


def test_next_token_view_updates_in_place():
    view = wbw.NextTokenView(_table([" Paris", " the"], [0.7, 0.1]))
    fig, bar = view.figure, view.figure.data[0]
    assert isinstance(fig, go.FigureWidget)
    assert list(bar.x) == pytest.approx([0.7, 0.1])
    view.update(_table([" Rome", " a", " Rome"], [0.5, 0.2, 0.1]))
    assert view.figure is fig and view.figure.data[0] is bar  # same objects, new data
    assert list(bar.x) == pytest.approx([0.5, 0.2, 0.1])
    # two tokens that decode alike stay two bars
    assert list(fig.layout.yaxis.tickvals) == [0, 1, 2]
    assert list(fig.layout.yaxis.ticktext) == ["·Rome", "·a", "·Rome"]
    assert "Rome" in fig.layout.title.text
    with pytest.raises(wbw.ViewDataError, match="missing \\['prob'\\]"):
        view.update(pd.DataFrame({"token": ["a"]}))


def test_view_follows_a_prompt_with_debounced_recompute():
    calls = []

    def compute(text):
        calls.append(text)
        return _table([text[-1]], [len(text) / 10])

    view = wbw.NextTokenView(compute=compute, prompt="abc", wait=5)
    assert calls == ["abc"] and view.prompt in view.widget.children
    bar = view.figure.data[0]
    for text in ["abcd", "abcde", "abcdef"]:
        view.prompt.value = text
    assert calls == ["abc"]  # nothing ran yet: typing is debounced
    view.flush()
    assert calls == ["abc", "abcdef"]
    assert view.figure.data[0] is bar and list(bar.x) == pytest.approx([0.6])


def test_failed_recompute_is_reported_under_the_figure():
    def compute(text):
        if not text:
            raise ValueError("empty prompt")
        return _table([text], [0.5])

    view = wbw.NextTokenView(compute=compute, prompt="a", wait=0)
    view.prompt.value = ""
    assert "ValueError: empty prompt" in view.status.value
    assert list(view.figure.data[0].x) == pytest.approx([0.5])  # the last good figure stays
    view.prompt.value = "b"
    assert view.status.value == ""


def test_logit_lens_view_grid_threshold_and_update():
    table = _lens_table()
    view = wbw.LogitLensView(table, threshold=0.5)
    hm = view.figure.data[0]
    z = np.array(hm.z)
    assert z.shape == (3, 3)  # [layer, position], rank 0 only
    assert z[2, 1] == pytest.approx(3 * 2 / 9)
    text = [list(r) for r in hm.text]
    assert text[2][2] == "t22" and text[0][0] == ""  # p = 1/9 is under the threshold
    view.threshold.value = 0.0
    assert view.figure.data[0] is hm and list(hm.text[0]) == ["t00", "t01", "t02"]
    view.update(_lens_table(n_layers=2, tokens=("A", "B")))
    assert view.figure.data[0] is hm and np.array(hm.z).shape == (2, 2)
    assert list(view.figure.layout.xaxis.ticktext) == ["0: A", "1: B"]
    with pytest.raises(wbw.ViewDataError, match="top_token"):
        view.update(table.drop(columns="top_token"))


def test_attention_view_pickers_reslice_in_place():
    attn = _attn()
    tokens = ["The", " cat", " sat", "."]
    view = wbw.AttentionView(attn, tokens, layer=1, head=2)
    hm = view.figure.data[0]

    def shown():
        return np.array([[np.nan if v is None else v for v in row] for row in hm.z], dtype=float)

    expect = np.where(np.tril(np.ones((4, 4))) > 0, attn[1, 2], np.nan)
    np.testing.assert_allclose(shown(), expect)
    assert view.figure.layout.title.text == "Attention, layer 1 head 2"
    assert view.strip.values == pytest.approx(attn[1, 2, -1].tolist())
    view.head.value = 0
    view.layer.value = 0
    assert view.figure.data[0] is hm
    np.testing.assert_allclose(shown(), np.where(np.tril(np.ones((4, 4))) > 0, attn[0, 0], np.nan))
    assert view.figure.layout.title.text == "Attention, layer 0 head 0"
    # a new prompt: new shape, same figure
    view.update(_attn(n=2, seed=1), ["a", "b"])
    assert view.figure.data[0] is hm and shown().shape == (2, 2)
    assert list(view.figure.layout.xaxis.ticktext) == ["0 a", "1 b"]


def test_attention_view_layer_labels_and_bad_shapes():
    view = wbw.AttentionView(_attn(n_layers=2), list("abcd"), layers=[5, 9], layer=9, head=1)
    assert view.layer.value == 1 and view.figure.layout.title.text == "Attention, layer 9 head 1"
    with pytest.raises(wbw.ViewDataError, match="was not captured"):
        wbw.AttentionView(_attn(n_layers=2), list("abcd"), layers=[5, 9], layer=3)
    with pytest.raises(wbw.ViewDataError, match=r"\[layer, head, query, key\]"):
        wbw.AttentionView(np.ones((2, 3, 4)), list("abcd"))
    with pytest.raises(wbw.ViewDataError, match="3 tokens for 4"):
        wbw.AttentionView(_attn(), list("abc"))


def test_ablation_view_toggles_recompute_and_clean_run_is_cached():
    calls = []

    def compute(text, layer, heads):
        calls.append((text, layer, tuple(heads)))
        p = np.full(5, 0.05)
        p[0] = 0.8 - 0.2 * len(heads)  # each ablated head moves mass to token 4
        p[4] = 0.05 + 0.2 * len(heads)
        return p / p.sum()

    view = wbw.AblationView(
        compute, lambda i: f"t{i}", prompt="hi", n_layers=4, n_heads=3, layer=2, heads=[1], k=3
    )
    clean, ablated = view.figure.data
    assert calls == [("hi", 2, ()), ("hi", 2, (1,))]
    assert list(clean.x)[0] == pytest.approx(0.8) and list(ablated.x)[0] == pytest.approx(0.6)
    assert "layer 2 heads [1] ablated" in view.figure.layout.title.text
    view.heads.buttons[2].value = True
    view.heads.buttons[0].value = True
    view.flush()
    assert calls[-1] == ("hi", 2, (0, 1, 2)) and len(calls) == 3  # one debounced recompute
    assert view.figure.data[1] is ablated and list(ablated.x)[0] == pytest.approx(0.2)
    assert "now top 't4'" in view.figure.layout.title.text
    view.heads.value = []
    view.flush()
    assert len(calls) == 3  # no heads: the cached clean run is reused
    assert list(ablated.x) == pytest.approx(list(clean.x))
    view.prompt.value = "other"
    view.flush()
    assert calls[-1] == ("other", 2, ())


def test_live_figures_fill_their_output_area():
    # plotly's widget never gets lumino resize messages as an anywidget: without autosize,
    # responsive and a FitWidth in the box it drew at 700 px in any output area
    from workbench.widgets.sizing import FitWidth

    view = wbw.NextTokenView(pd.DataFrame({"token": ["a"], "prob": [1.0], "rank": [0]}))
    assert view.figure.layout.autosize is True
    assert view.figure._config.get("responsive") is True
    assert sum(isinstance(c, FitWidth) for c in view.widget.children) == 1
    assert "ResizeObserver" in FitWidth._esm and "resize" in FitWidth._esm


# -- static copies ---------------------------------------------------------------------------


def test_views_display_as_widget_plus_static_figure():
    v1 = wbw.NextTokenView(_table([" Paris", "</script><b>"], [0.7, 0.1]))
    v2 = wbw.AttentionView(_attn(), list("abcd"))
    b1, b2 = v1._repr_mimebundle_(), v2._repr_mimebundle_()
    for b, view in [(b1, v1), (b2, v2)]:
        assert b[WIDGET_MIME]["model_id"] == view.widget.model_id
        assert "wb-static-figure" in b["text/html"] and "Plotly.newPlot" in b["text/html"]
        static = go.Figure(b["application/vnd.plotly.v1+json"])
        assert static.data[0].type == view.figure.data[0].type
        assert view.static().to_dict()["data"][0].get("z") == view.figure.to_dict()["data"][0].get(
            "z"
        )
    # plotly.js travels once per kernel, in the first static copy
    assert "wb-plotlyjs" in b1["text/html"] and "wb-plotlyjs" not in b2["text/html"]
    # the spec is embedded as JSON a script tag cannot be closed by
    spec_html = b1["text/html"].split("var spec = ", 1)[1]
    assert "</script><b>" not in spec_html.split("</script>", 1)[0]
    # the static copy shows what the widget showed
    spec = json.loads(spec_html.split(";\n", 1)[0].replace("<\\/", "</"))
    assert _decode(spec["data"][0]["x"]) == pytest.approx([0.7, 0.1])


def test_ensure_plotlyjs_injects_only_when_missing():
    page = "<html><head></head><body><div class='wb-static-figure'></div></body></html>"
    out = static_mod.ensure_plotlyjs(page)
    assert out.index("wb-plotlyjs") < out.index("</head>")
    assert static_mod.ensure_plotlyjs(out) == out
    assert static_mod.ensure_plotlyjs("<html>no figures</html>") == "<html>no figures</html>"


def test_logit_lens_view_takes_the_foundation_table():
    import workbench as wb
    from tests.models import tiny
    from workbench.tracing import logit_lens_table

    model = tiny("LlamaForCausalLM")
    cap = wb.capture(model, "hello", what=["resid_post"])
    table = logit_lens_table(model, cap, k=2)
    view = wbw.LogitLensView(table, threshold=0.0)
    z = np.array(view.figure.data[0].z)
    assert z.shape == (model.n_layers, cap.tokens.lengths[0])
    top = table[table["rank"] == 0].pivot(index="layer", columns="position", values="prob")
    np.testing.assert_allclose(z, top.to_numpy())


def test_widget_modules_never_import_models_or_nnsight():
    folder = Path(wbw.__file__).parent
    for name in ["__init__.py", "controls.py", "views.py", "static.py"]:
        tree = ast.parse((folder / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                mods.append(getattr(node, "module", None) or "")
                for m in mods:
                    assert not m.startswith(("nnsight", "workbench.models", "workbench.tracing")), (
                        f"{name} imports {m}"
                    )


def _payload(page):
    return json.loads(page.split("var off = ", 1)[1].split(";\n", 1)[0].replace("<\\/", "</"))


def test_attention_static_copy_switches_layer_and_head_offline():
    a = _attn(n_layers=2, n_heads=3, n=4)
    view = wbw.AttentionView(a, list("abcd"), layer=1, head=2)
    page = view._repr_mimebundle_()["text/html"]
    off = _payload(page)
    assert off["dims"] == [2, 3] and off["start"] == [1, 2] and off["names"] == ["layer", "head"]
    assert "layer and head work offline" in page and "controls(el)" in page
    q = np.frombuffer(base64.b64decode(off["data"]), dtype="<u2").reshape(2, 3, 4, 4)
    got = np.where(q > off["top"], np.nan, q / off["top"])
    np.testing.assert_allclose(got, np.where(np.triu(np.ones((4, 4)), 1) > 0, np.nan, a), atol=1e-4)
    assert off["titles"][5] == "Attention, layer 1 head 2"


def test_offline_data_past_the_budget_leaves_a_fixed_copy_that_says_so():
    frames = static_mod.OfflineFrames([("step", ["0", "1"])], np.zeros((2, 3, 3)))
    assert frames.payload(budget=10) is None
    assert frames.payload(budget=100)["dtype"] == "u2"
    assert frames.payload(budget=40)["dtype"] == "u1"  # 8-bit when 16-bit will not fit
    page = static_mod.static_html(go.Figure(go.Heatmap(z=[[1]])), offline=frames)
    assert "var off" in page
    big = static_mod.OfflineFrames([("step", ["0"])], np.zeros((1, 1300, 1300)))
    page = static_mod.static_html(go.Figure(go.Heatmap(z=[[1]])), offline=big)
    assert "var off" not in page and "past the offline size budget" in page


# A stub DOM for a static copy's script in node: the plot div records the controls bar
# inserted before it; every <select>/<input> created lands in `inputs`.
_STUB_DOM = """
var calls = [], inputs = [];
function fake(tag) { return { tag: tag, style: {}, children: [], value: 0,
  appendChild: function (c) { this.children.push(c); },
  setAttribute: function (k, v) { this[k] = v; },
  addEventListener: function (ev, fn) { (this.ls = this.ls || {})[ev] = fn; } }; }
var el = fake("div"); el.parentNode = { insertBefore: function (bar) { el.bar = bar; } };
global.document = { getElementById: function () { return el; }, createElement: function (t) {
  var f = fake(t); if (t === "select" || t === "input") { inputs.push(f); } return f; } };
global.atob = function (s) { return Buffer.from(s, "base64").toString("binary"); };
"""

_NODE_HARNESS = (
    _STUB_DOM
    + """
global.window = { Plotly: {
  newPlot: function () { return Promise.resolve(); },
  restyle: function (e, u, t) { calls.push(["restyle", u, t]); },
  relayout: function (e, u) { calls.push(["relayout", u]); } } };
SCRIPT
setTimeout(function () {
  inputs[0].value = 1; inputs[1].value = 2; inputs[1].ls.change();
  var r = calls.filter(function (c) { return c[0] === "restyle"; })[0];
  var t = calls.filter(function (c) { return c[0] === "relayout"; })[0];
  console.log(JSON.stringify({n: inputs.length, z: r[1].z[0], title: t[1]["title.text"]}));
}, 10);
"""
)


def test_offline_pickers_redraw_the_map_in_javascript(tmp_path):
    """The static copy's script, run in node with a stub DOM and Plotly: picking layer 1
    head 2 restyles the heatmap with that head's pattern and retitles it."""
    a = _attn(n_layers=2, n_heads=3, n=4)
    page = wbw.AttentionView(a, list("abcd"))._repr_mimebundle_()["text/html"]
    got = _run_in_node(page, _NODE_HARNESS, tmp_path)
    assert got["n"] == 2 and got["title"] == "Attention, layer 1 head 2"
    z = np.array([[np.nan if v is None else v for v in row] for row in got["z"]])
    want = np.where(np.triu(np.ones((4, 4)), 1) > 0, np.nan, a[1, 2])
    np.testing.assert_allclose(z, want, atol=1e-4)


def _two_figures():
    a = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], name="a"), layout={"template": "plotly_white"})
    b = go.Figure(
        [go.Scatter(x=[0], y=[2], name="b"), go.Bar(y=[3, 4], name="c")],
        layout={"template": "plotly_white", "title": {"text": "second"}},
    )
    return a, b


def test_figure_frames_send_whole_figures_and_their_template_once():
    a, b = _two_figures()
    frames = static_mod.FigureFrames(("τ", ["0.1", "0.2"]), [a, b], start=1, note="τ offline")
    off = frames.payload()
    assert off["names"] == ["τ"] and off["options"] == [["0.1", "0.2"]]
    assert off["dims"] == [2] and off["start"] == [1] and off["kind"] == "figures"
    assert [len(f["data"]) for f in off["frames"]] == [1, 2]
    assert off["frames"][1]["layout"]["title"]["text"] == "second"
    assert "template" not in off["frames"][0]["layout"] and off["template"]["layout"]
    page = static_mod.static_html(b, offline=frames)
    assert _payload(page) == off
    assert "Plotly.react" in page and json.dumps("τ offline") in page and "controls(el)" in page
    assert "wb-offline-controls" in page and "data-control" in page
    with pytest.raises(ValueError, match="one figure per option"):
        static_mod.FigureFrames(("τ", ["0.1"]), [a, b]).payload()


def test_figure_frames_past_the_budget_leave_a_fixed_copy_that_says_so(monkeypatch):
    a, b = _two_figures()
    frames = static_mod.FigureFrames(("τ", ["0.1", "0.2"]), [a, b])
    size = len(json.dumps(frames.payload()))
    assert frames.payload(budget=size) is not None and frames.payload(budget=size - 1) is None
    monkeypatch.setattr(static_mod, "OFFLINE_BUDGET_BYTES", size - 1)
    page = static_mod.static_html(a, offline=frames, caption="static copy")
    assert "var off" not in page and "static copy (a fixed copy" in page
    assert "past the offline size budget" in page


_REACT_HARNESS = (
    _STUB_DOM
    + """
global.window = { Plotly: {
  newPlot: function () { return Promise.resolve(); },
  react: function (e, d, l, c) { calls.push({data: d, layout: l, config: c}); } } };
SCRIPT
setTimeout(function () {
  var sel = inputs[0], before = el["data-frame"];
  sel.value = 1; sel.ls.change();
  console.log(JSON.stringify({n: inputs.length, tag: sel.tag, control: sel["data-control"],
    start: before === undefined ? null : before, options: sel.children.length,
    bar: el.bar.className, frame: el["data-frame"], calls: calls}));
}, 10);
"""
)


def _run_in_node(page, harness, tmp_path):
    """The last static script of ``page`` run in node inside ``harness`` (its JSON output)."""
    import re
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = re.findall(r'<script type="text/javascript">(.*?)</script>', page, re.S)[-1]
    (tmp_path / "harness.js").write_text(harness.replace("SCRIPT", script))
    out = subprocess.run(
        [node, str(tmp_path / "harness.js")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def run_frames_in_node(page, tmp_path):
    """The last static script of ``page``, run in node with a stub DOM and a Plotly that
    records ``react``; the first control is switched to option 1."""
    return _run_in_node(page, _REACT_HARNESS, tmp_path)


def test_figure_frames_switch_the_whole_figure_in_javascript(tmp_path):
    """Picking the second option redraws with its traces and layout (template put back)
    and marks the plot with the frame shown."""
    a, b = _two_figures()
    frames = static_mod.FigureFrames(("τ", ["0.1", "0.2"]), [a, b], note="τ offline")
    off = frames.payload()
    got = run_frames_in_node(static_mod.static_html(a, offline=frames), tmp_path)
    assert got["n"] == 1 and got["tag"] == "select" and got["control"] == "τ"
    assert got["options"] == 2 and got["bar"] == "wb-offline-controls"
    assert got["start"] is None and got["frame"] == 1 and len(got["calls"]) == 1
    call = got["calls"][0]
    assert call["data"] == off["frames"][1]["data"]
    assert call["layout"]["title"]["text"] == "second"
    assert call["layout"]["template"] == off["template"]
