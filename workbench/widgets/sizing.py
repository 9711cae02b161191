"""Live figures that fill their output area, and follow it when it changes width.

plotly's ``FigureWidget`` sizes itself on lumino resize messages, which an anywidget
never receives, so in JupyterLab 4 every live figure stayed at plotly's default 700 px
whatever the output area's width. :class:`FitWidth` is a zero-size widget placed beside
the figures: it watches its box with a ``ResizeObserver`` and, when the box first gets a
width and whenever that width changes, sends the window a ``resize`` event, on which
figures drawn with ``autosize`` and ``responsive`` (see :class:`~.views.View`) redraw at
their container's width.

Example:
    >>> box = widgets.VBox([go.FigureWidget(fig), FitWidth()])  # doctest: +SKIP
"""

from __future__ import annotations

import anywidget
import plotly.graph_objects as go

__all__ = ["FitWidth", "fit"]

_ESM = """
function render({ el }) {
  el.style.cssText = "width:0; height:0; overflow:hidden";
  let box = null, last = -1, timer = null, observer = null;
  const nudge = () => {
    timer = null;
    window.dispatchEvent(new Event("resize"));
  };
  const watch = () => {
    box = el.parentElement;  // the view's box, which spans the output area
    if (!box) { setTimeout(watch, 100); return; }
    observer = new ResizeObserver(entries => {
      const w = Math.round(entries[0].contentRect.width);
      if (w > 0 && w !== last) {
        last = w;
        clearTimeout(timer);
        timer = setTimeout(nudge, 60);  // one event per burst of changes
      }
    });
    observer.observe(box);
  };
  watch();
  return () => { if (observer) observer.disconnect(); clearTimeout(timer); };
}
export default { render };
"""


class FitWidth(anywidget.AnyWidget):
    """A zero-size widget that makes responsive figures in its box fill the box's width."""

    _esm = _ESM


def fit(figure: go.FigureWidget) -> go.FigureWidget:
    """Draw ``figure`` at its container's width (with a :class:`FitWidth` in its box)."""
    figure.layout.autosize = True
    figure._config = {**figure._config, "responsive": True}
    return figure
