"""plotly.js for a page that needs no network: embedded gzip-compressed, unpacked by the browser.

An exported notebook page carries plotly.js once. Inlined as plain text it is most of the
page (plotly.js 4.1.1: a 4,815,922-byte tag); embedded as base64 of its gzip (level 9)
the tag is 1,960,613 bytes, 41% of that. The browser unpacks it with its built-in
``DecompressionStream('gzip')`` (Chromium 80+, Firefox 113+, Safari 16.4+), which makes
no request, so the page still works from ``file://`` offline. Decoding and gunzip add
about 0.1 s to the 1.5 s that evaluating plotly.js takes either way (headless Chromium,
2 cores). Unpacking is asynchronous;
the static figures (:func:`workbench.widgets.static.static_html`) already wait for
``window.Plotly``. When it is defined, ``window`` gets a ``wb-plotly-ready`` event whose
``detail.ms`` is the time spent unpacking. A browser without ``DecompressionStream`` gets
a one-line message at the top of the page and a console warning, and no figures.

Example:
    >>> tag = plotlyjs_tag()  # computed once per process
    >>> tag.startswith('<script type="text/javascript" class="wb-plotlyjs">')
    True
    >>> page = f"<html><head>{tag}</head><body>...</body></html>"  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import functools
import gzip
import json

__all__ = ["PLOTLYJS_MARK", "READY_EVENT", "plotlyjs_tag"]

PLOTLYJS_MARK = "wb-plotlyjs"  # the class on the tag; static.ensure_plotlyjs looks for it
READY_EVENT = "wb-plotly-ready"  # dispatched on window once window.Plotly is defined

_TOO_OLD = (
    "This browser is too old to unpack the plotly.js embedded in this page, so its figures "
    "are not drawn: open the file in a current Chrome, Edge, Firefox or Safari."
)

# %(b64)s is the gzip of plotly.js in base64 (no quotes, "<" or "\\" in its alphabet).
# The bundle runs in a <script> element at global scope (no eval), wrapped so that a
# `define` or `module` on the page (require.js, a bundler) cannot capture it: a UMD header
# would export to them (plotly.js 4.1 also sets window.Plotly itself; other builds may not).
_LOADER = """\
window.PlotlyConfig = {MathJaxConfig: 'local'};
(function () {
  if (window.Plotly || window.wbPlotlyjsPending) { return; }
  var t0 = performance.now();
  function say(text) {
    function add() {
      var d = document.createElement("div");
      d.className = "wb-plotlyjs-error";
      d.style.cssText = "font: 14px sans-serif; padding: 6px 10px; background: #fff3cd; "
        + "color: #664d03; border-bottom: 1px solid #e0c36a";
      d.textContent = text;
      document.body.insertBefore(d, document.body.firstChild);
    }
    if (document.body) { add(); } else { document.addEventListener("DOMContentLoaded", add); }
  }
  if (typeof DecompressionStream === "undefined") {
    console.warn("wb-plotlyjs: " + %(too_old)s);
    say(%(too_old)s);
    return;
  }
  window.wbPlotlyjsPending = true;
  var bin = atob("%(b64)s");
  var bytes = new Uint8Array(bin.length);
  for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  new Response(stream).text().then(function (text) {
    var s = document.createElement("script");
    s.text = "(function (define, module, exports) {\\n" + text + "\\n}).call(window);";
    document.head.appendChild(s);
    window.wbPlotlyjsPending = false;
    if (!window.Plotly) { throw new Error("window.Plotly is not defined after unpacking"); }
    window.dispatchEvent(new CustomEvent(%(ready)s, {detail: {ms: performance.now() - t0}}));
  }).catch(function (err) {
    window.wbPlotlyjsPending = false;
    console.error("wb-plotlyjs: could not unpack plotly.js:", err);
    say("Could not unpack the plotly.js embedded in this page (" + err + "); "
      + "figures are not drawn.");
  });
})();
"""


@functools.cache
def plotlyjs_tag() -> str:
    """A ``<script>`` tag that defines ``window.Plotly`` from an embedded gzip of plotly.js.

    About 2.0 MB against 4.8 MB inlined as text; the same string on every call.
    """
    from plotly.offline import get_plotlyjs

    packed = gzip.compress(get_plotlyjs().encode("utf-8"), compresslevel=9, mtime=0)
    js = _LOADER % {
        "b64": base64.b64encode(packed).decode("ascii"),
        "too_old": json.dumps(_TOO_OLD),
        "ready": json.dumps(READY_EVENT),
    }
    return f'<script type="text/javascript" class="{PLOTLYJS_MARK}">{js}</script>'
