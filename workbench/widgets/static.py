"""Static copies of figures, so an exported or kernel-less notebook still shows them.

A live view displays one output whose mimebundle holds both the widget view and a static
copy of its figure: JupyterLab with a kernel renders the widget; nbconvert's HTML export
(no widget state), nbviewer-like viewers and JupyterLab without a kernel fall back to the
static copy. The copy is plain HTML plus the plotly JSON, and plotly.js is inlined once
per kernel (the first static copy carries it), so the HTML needs no network.

Example:
    >>> bundle = static_bundle(go.Figure(go.Bar(y=[1, 2])))   # doctest: +SKIP
    >>> sorted(bundle)                                          # doctest: +SKIP
    ['application/vnd.plotly.v1+json', 'text/html']
"""

from __future__ import annotations

import base64
import html
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

# plotly.js travels gzip-compressed (about 2.0 MB, not 4.8); see workbench.widgets.plotlyjs
from workbench.widgets.plotlyjs import PLOTLYJS_MARK, plotlyjs_tag

__all__ = [
    "OFFLINE_BUDGET_BYTES",
    "PLOTLY_MIME",
    "STATIC_CLASS",
    "FigureFrames",
    "OfflineFrames",
    "add_static_copies",
    "ensure_plotlyjs",
    "static_bundle",
    "static_html",
]

PLOTLY_MIME = "application/vnd.plotly.v1+json"
STATIC_CLASS = "wb-static-figure"  # marks our static copies in exported HTML

_state = {"plotlyjs_sent": False}

OFFLINE_BUDGET_BYTES = 2_000_000  # data a static copy may carry for its offline controls


@dataclass
class OfflineFrames:
    """Precomputed heatmaps that a static copy switches between in the browser, no kernel.

    Args:
        controls: ``[(name, option labels), ...]``, one drop-down (a slider past 12
            options) each; the frames are indexed by their choices, in this order.
        z: ``[*len(options) per control, rows, cols]`` values; NaN is drawn blank.
        trace: the heatmap trace the frames replace.
        start: the choice shown first, one index per control.
        titles: a title per frame (flattened over the controls, C order), optional.
        updates: per frame, ``{trace index: {"x": [...], "y": [...]}}`` for other traces.
        zrange: the value range (values are stored as 16- or 8-bit steps of it).
        note: a line beside the controls (say which controls work offline).

    The data goes into the page as base64 integers: 16-bit while that fits
    :data:`OFFLINE_BUDGET_BYTES`, else 8-bit; past the budget the static copy stays fixed
    and says so.
    """

    controls: Sequence[tuple[str, Sequence[str]]]
    z: Any
    trace: int = 0
    start: Sequence[int] = ()
    titles: Sequence[str] | None = None
    updates: Sequence[dict[int, dict[str, list]]] | None = None
    zrange: tuple[float, float] = (0.0, 1.0)
    note: str = ""

    def payload(self, budget: int = OFFLINE_BUDGET_BYTES) -> dict[str, Any] | None:
        """The JSON the page's script reads, or ``None`` when it would not fit ``budget``."""
        z = np.asarray(self.z, dtype=np.float64)
        dims = [len(opts) for _, opts in self.controls]
        if list(z.shape[: len(dims)]) != dims or z.ndim != len(dims) + 2:
            raise ValueError(f"OfflineFrames: z {z.shape} must be [{dims}, rows, cols].")
        lo, hi = self.zrange
        scaled = (np.clip(z, lo, hi) - lo) / ((hi - lo) or 1.0)
        extra = len(json.dumps([self.titles, self.updates]))
        for dtype, top in (("<u2", 65534), ("u1", 254)):
            q = np.where(np.isnan(z), top + 1, np.rint(np.nan_to_num(scaled) * top))
            data = base64.b64encode(q.astype(dtype).tobytes())
            if len(data) + extra <= budget:
                return {
                    "dims": dims, "rows": z.shape[-2], "cols": z.shape[-1],
                    "dtype": "u2" if dtype == "<u2" else "u1", "top": top, "lo": lo, "hi": hi,
                    "data": data.decode("ascii"), "trace": self.trace, "titles": self.titles,
                    "updates": self.updates, "start": list(self.start) or [0] * len(dims),
                    "names": [name for name, _ in self.controls],
                    "options": [[str(o) for o in opts] for _, opts in self.controls],
                }  # fmt: skip
        return None


@dataclass
class FigureFrames:
    """Precomputed whole figures that a static copy switches between in the browser.

    For a figure whose traces change with a control (a route graph keeps other nodes and
    edges at another threshold), so :class:`OfflineFrames`' fixed heatmap will not do.

    Args:
        control: ``(name, option labels)``, one drop-down (a slider past 12 options).
        figures: a figure (or its plotly JSON as a dict) per option, in the same order.
        start: the option shown first (the static copy's own figure should be that one).
        note: a line beside the control (say which controls work offline).

    A template the figures share is sent once. Past :data:`OFFLINE_BUDGET_BYTES` of JSON
    the static copy stays fixed and says so.
    """

    control: tuple[str, Sequence[str]]
    figures: Sequence[go.Figure | dict[str, Any]]
    start: int = 0
    note: str = ""

    def payload(self, budget: int | None = None) -> dict[str, Any] | None:
        """The JSON the page's script reads, or ``None`` when it would not fit ``budget``.

        ``budget`` defaults to :data:`OFFLINE_BUDGET_BYTES`, read when called.
        """
        budget = OFFLINE_BUDGET_BYTES if budget is None else budget
        name, options = self.control
        if len(options) != len(self.figures):
            raise ValueError(
                f"FigureFrames: {len(options)} options of {name!r} but {len(self.figures)} "
                "figures; give one figure per option."
            )
        if not 0 <= self.start < len(options):
            raise ValueError(f"FigureFrames: start {self.start} is not an option index.")
        specs = [_figure_json(f) for f in self.figures]
        frames = [
            {"data": s.get("data") or [], "layout": dict(s.get("layout") or {})} for s in specs
        ]
        templates = [f["layout"].get("template") for f in frames]
        template = templates[0] if templates and all(t == templates[0] for t in templates) else None
        if template is not None:
            for f in frames:
                del f["layout"]["template"]
        out = {
            "kind": "figures", "names": [name], "options": [[str(o) for o in options]],
            "dims": [len(options)], "start": [self.start], "template": template,
            "frames": frames,
        }  # fmt: skip
        return out if len(json.dumps(out)) <= budget else None


def _figure_json(fig: go.Figure | dict[str, Any]) -> dict[str, Any]:
    if isinstance(fig, dict):
        return fig
    return json.loads(pio.to_json(fig, validate=False))


# The controls bar both kinds of frames share: one input per control (a drop-down, a slider
# past 12 options), the note, then ``%(apply)s``, which defines ``apply()`` for the inputs.
_CONTROLS_JS = """  var off = %(payload)s;
  function controls(el) {
    var bar = document.createElement("div");
    bar.className = "wb-offline-controls";
    bar.style.cssText = "display:flex; gap:14px; align-items:center; flex-wrap:wrap;" +
      "font: 13px sans-serif; margin: 4px 0";
    var inputs = off.names.map(function (name, i) {
      var label = document.createElement("label");
      label.textContent = name + " ";
      var input, opts = off.options[i];
      if (opts.length > 12) {
        input = document.createElement("input");
        input.type = "range"; input.min = 0; input.max = opts.length - 1; input.step = 1;
        var shown = document.createElement("span");
        input.addEventListener("input", function () { shown.textContent = opts[input.value]; });
        label.appendChild(input); label.appendChild(shown);
        input.value = off.start[i]; shown.textContent = opts[off.start[i]];
      } else {
        input = document.createElement("select");
        opts.forEach(function (o, j) {
          var opt = document.createElement("option"); opt.value = j; opt.textContent = o;
          input.appendChild(opt);
        });
        input.value = off.start[i];
        label.appendChild(input);
      }
      input.setAttribute("data-control", name);
      input.addEventListener("input", apply);
      input.addEventListener("change", apply);
      bar.appendChild(label);
      return input;
    });
    var note = document.createElement("span");
    note.style.color = "#666";
    note.textContent = %(note)s;
    bar.appendChild(note);
    el.parentNode.insertBefore(bar, el);
    function frameIndex() {
      var idx = 0;
      inputs.forEach(function (inp, i) { idx = idx * off.dims[i] + Number(inp.value); });
      return idx;
    }
%(apply)s  }
"""

# OfflineFrames: decode the heatmap values once, restyle z (and the other traces) per frame.
_HEATMAP_APPLY = """    var raw = atob(off.data), n = raw.length, bytes = new Uint8Array(n);
    for (var b = 0; b < n; b++) { bytes[b] = raw.charCodeAt(b); }
    var vals = off.dtype === "u2" ? new Uint16Array(bytes.buffer) : bytes;
    function apply() {
      var idx = frameIndex();
      var size = off.rows * off.cols, base = idx * size, z = [];
      for (var r = 0; r < off.rows; r++) {
        var row = [];
        for (var c = 0; c < off.cols; c++) {
          var v = vals[base + r * off.cols + c];
          row.push(v > off.top ? null : off.lo + (off.hi - off.lo) * v / off.top);
        }
        z.push(row);
      }
      window.Plotly.restyle(el, {z: [z]}, [off.trace]);
      var ups = off.updates && off.updates[idx];
      if (ups) {
        Object.keys(ups).forEach(function (t) {
          var u = {};
          Object.keys(ups[t]).forEach(function (k) { u[k] = [ups[t][k]]; });
          window.Plotly.restyle(el, u, [Number(t)]);
        });
      }
      if (off.titles) { window.Plotly.relayout(el, {"title.text": off.titles[idx]}); }
      el.setAttribute("data-frame", idx);
    }
"""

# FigureFrames: draw the frame's whole figure (its traces may differ in number and kind).
_FIGURE_APPLY = """    function apply() {
      var idx = frameIndex(), f = off.frames[idx], layout = f.layout;
      if (off.template && !layout.template) {
        layout = Object.assign({}, layout, {template: off.template});
      }
      window.Plotly.react(el, f.data, layout, {responsive: true});
      el.setAttribute("data-frame", idx);
    }
"""


def static_html(
    fig: go.Figure | dict[str, Any],
    *,
    include_plotlyjs: bool = False,
    height: int | None = None,
    offline: OfflineFrames | FigureFrames | None = None,
    caption: str = "",
) -> str:
    """A self-drawing ``<div>`` of ``fig`` (a figure, or its plotly JSON as a dict).

    The script waits for ``window.Plotly`` instead of calling ``Plotly.newPlot`` at once,
    so the copy that carries plotly.js may come anywhere in the page, or be injected
    later (see :func:`ensure_plotlyjs`). With ``offline`` frames (:class:`OfflineFrames` or
    :class:`FigureFrames`), controls above the figure switch between them in the browser,
    with no kernel; ``caption`` is a line above the figure (which controls work offline,
    or why none do).
    """
    payload = offline.payload() if offline is not None else None
    if offline is not None and payload is None:
        caption = (caption + " " if caption else "") + (
            "(a fixed copy: its data is past the offline size budget; run the notebook "
            "to use the controls)"
        )
    if isinstance(fig, dict):
        spec = json.dumps(fig)
        h = height or (fig.get("layout") or {}).get("height") or 450
    else:
        spec = pio.to_json(fig, validate=False)
        h = height or fig.layout.height or 450
    spec = spec.replace("</", "<\\/")  # a literal "</script>" in a label must not end the tag
    div_id = f"wb-{uuid.uuid4().hex}"
    offline_js = ""
    then = ""
    if payload is not None:
        offline_js = _CONTROLS_JS % {
            "payload": json.dumps(payload).replace("</", "<\\/"),
            "note": json.dumps(offline.note if offline else ""),
            "apply": _FIGURE_APPLY if isinstance(offline, FigureFrames) else _HEATMAP_APPLY,
        }
        then = ".then(function () { controls(el); })"
    js = (
        "(function () {\n"
        f"  var spec = {spec};\n"
        f"{offline_js}"
        "  function draw() {\n"
        f'    var el = document.getElementById("{div_id}");\n'
        "    if (!el) { return; }\n"
        "    if (window.Plotly) {\n"
        f"      window.Plotly.newPlot(el, spec.data, spec.layout, {{responsive: true}}){then};\n"
        "    } else { setTimeout(draw, 50); }\n"
        "  }\n"
        "  draw();\n"
        "})();"
    )
    cap = (
        f'<div class="wb-static-caption" style="font: 12px sans-serif; color: #666">'
        f"{html.escape(caption)}</div>"
        if caption
        else ""
    )
    return (
        (plotlyjs_tag() if include_plotlyjs else "")
        + cap
        + f'<div id="{div_id}" class="{STATIC_CLASS}" style="height:{h}px; width:100%;"></div>'
        + f'<script type="text/javascript">{js}</script>'
    )


def static_bundle(
    fig: go.Figure,
    *,
    height: int | None = None,
    offline: OfflineFrames | FigureFrames | None = None,
    caption: str = "",
) -> dict[str, Any]:
    """``text/html`` and plotly JSON mimetypes of ``fig`` (plotly.js inlined the first time)."""
    first = not _state["plotlyjs_sent"]
    _state["plotlyjs_sent"] = True
    return {
        "text/html": static_html(
            fig, include_plotlyjs=first, height=height, offline=offline, caption=caption
        ),
        PLOTLY_MIME: json.loads(pio.to_json(fig, validate=False)),
    }


def add_static_copies(nb: Any) -> int:
    """Give every plotly-JSON-only output of a notebook a static HTML copy; return how many.

    A figure shown with ``fig.show()`` is stored as plotly JSON only, which nbconvert's
    HTML export cannot draw. This adds the ``text/html`` it needs (without plotly.js:
    :func:`ensure_plotlyjs` adds that once per page).
    """
    added = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data") or {}
            if PLOTLY_MIME in data and "text/html" not in data:
                data["text/html"] = static_html(dict(data[PLOTLY_MIME]))
                added += 1
    return added


def ensure_plotlyjs(page: str) -> str:
    """Inline plotly.js into an exported HTML ``page`` that has static figures but lacks it.

    This happens when the cell whose output carried plotly.js was cleared or re-run.
    """
    if STATIC_CLASS not in page or PLOTLYJS_MARK in page:
        return page
    head_end = page.find("</head>")
    if head_end < 0:
        return plotlyjs_tag() + page
    return page[:head_end] + plotlyjs_tag() + page[head_end:]
