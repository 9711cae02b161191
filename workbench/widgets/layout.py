"""Layout rules that keep figures readable at a notebook's output width, and a checker.

Views are drawn for an output area of :data:`DESIGN_WIDTH_PX` (JupyterLab with the file
browser open) and must read as well at 1,400 px. Plotly places colorbars, tick labels and
titles in paper coordinates, blind to what else is there, so the helpers here compute the
room each part needs at the design width:

- :func:`token_label` makes a token visible and short (spaces ``·``, newlines ``⏎``,
  no-break space ``⍽``, runs folded as ``·×8``), never a Python escape like ``\\xa0``;
- :func:`thin_ticks` keeps every n-th tick label, so labels never overprint;
- :func:`panel_domains` and :func:`colorbar` put a colorbar in a gutter beside its panel,
  clear of the next panel and its tick labels;
- :func:`log_axis` labels whole decades only (no cluttered 2s and 5s) when the data spans
  more than one;
- :func:`wrap` breaks a long title into lines;
- :func:`layout_problems` estimates the drawn layout of a figure (as the browser test
  measures it) and lists colorbars over plots or tick labels, overprinted ticks and
  titles wider than the figure. Tests assert it returns nothing.

Example:
    >>> token_label("\\xa0")
    '⍽'
    >>> thin_ticks(list(range(40)), [str(i) for i in range(40)], span_px=200, per_label_px=14)[0]
    [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39]
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

__all__ = [
    "CHAR_PX",
    "DESIGN_WIDTH_PX",
    "colorbar",
    "layout_problems",
    "log_axis",
    "panel_domains",
    "thin_ticks",
    "token_label",
    "wrap",
]

# The narrowest output area a view must read at: JupyterLab 4 in a 1,400 px window with the
# file browser open gives 968 px (measured in Chromium), so views are laid out for 950.
DESIGN_WIDTH_PX = 950
CHAR_PX = 0.62  # average glyph width per pixel of font size (plotly's default font)
TICK_FONT_PX = 11
LINE_PX = 1.45  # a text line's height per pixel of font size
COLORBAR_THICKNESS_PX = 12
# A colorbar's full width: the bar, its pad, the tick labels ("0.25") and a title on its side.
COLORBAR_PX = COLORBAR_THICKNESS_PX + 4 + 34 + 18

_VISIBLE = {
    " ": "\u00b7",  # ·
    "\n": "\u23ce",  # ⏎
    "\t": "\u21e5",  # ⇥
    "\r": "\u240d",  # ␍
    "\u00a0": "\u237d",  # ⍽  no-break space
}


def token_label(tok: str, max_chars: int = 16) -> str:
    """``tok`` made visible and at most ``max_chars`` long (for tick labels and cells).

    Spaces, newlines, tabs and no-break spaces get visible marks; other invisible
    characters their code point (``U+200B``); a run of four or more equal marks folds to
    ``mark×n``; anything longer than ``max_chars`` ends in ``…``. The empty token is ``∅``.

    Example:
        >>> token_label("        return")
        '·×8return'
    """
    out = []
    for ch in str(tok):
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif ch.isprintable() and not ch.isspace():
            out.append(ch)
        else:
            out.append(f"U+{ord(ch):04X}")
    folded: list[str] = []
    i = 0
    while i < len(out):
        j = i
        while j < len(out) and out[j] == out[i]:
            j += 1
        run = j - i
        marks = set(_VISIBLE.values())
        folded.append(f"{out[i]}×{run}" if run >= 4 and out[i] in marks else "".join(out[i:j]))
        i = j
    text = "".join(folded) or "\u2205"
    if len(text) > max_chars:
        text = text[: max(1, max_chars - 1)] + "\u2026"
    return text


def thin_ticks(
    values: Sequence[Any],
    labels: Sequence[str],
    *,
    span_px: float,
    per_label_px: float,
) -> tuple[list[Any], list[str]]:
    """Every n-th of ``values``/``labels``, so that labels ``per_label_px`` apart fit ``span_px``.

    The last label is kept when it does not crowd the one before it (the end of a prompt
    is usually the position of interest).
    """
    n = len(values)
    if n == 0:
        return [], []
    fits = max(1, int(span_px // max(per_label_px, 1.0)))
    step = max(1, math.ceil(n / fits))
    keep = list(range(0, n, step))
    # positions a label needs between it and the next: the last one joins only that far
    # from the one before it (half a step overprinted: 62 and 63 of 64 at step 2)
    room = math.ceil(per_label_px * n / max(span_px, 1.0))
    if keep[-1] != n - 1 and n - 1 - keep[-1] >= room:
        keep.append(n - 1)
    return [values[i] for i in keep], [labels[i] for i in keep]


def label_px(labels: Sequence[str], font_px: float = TICK_FONT_PX) -> float:
    """The width in pixels of the longest of ``labels`` (an estimate)."""
    return max((len(str(s)) for s in labels), default=0) * CHAR_PX * font_px


def token_axis(
    labels: Sequence[str],
    *,
    span_px: float,
    vertical: bool = False,
    font_px: float = TICK_FONT_PX,
) -> dict[str, Any]:
    """A category-like axis over positions ``0..n-1`` with thinned token tick labels.

    ``vertical`` is a y axis (labels stacked, one text line apart); an x axis turns its
    labels to -90° once they would not fit side by side, and then needs one line each.
    """
    n = len(labels)
    positions = list(range(n))
    if vertical:
        per = font_px * LINE_PX
        angle = None
    else:
        wide = label_px(labels, font_px) + 6
        angle = 0 if n * wide <= span_px else -90
        per = wide if angle == 0 else font_px * LINE_PX
    vals, text = thin_ticks(positions, list(labels), span_px=span_px, per_label_px=per)
    axis: dict[str, Any] = {
        "tickmode": "array",
        "tickvals": vals,
        "ticktext": text,
        "tickfont": {"size": font_px},
        "automargin": True,
    }
    if angle is not None:
        axis["tickangle"] = angle
    return axis


def panel_domains(
    widths: Sequence[float],
    gaps_px: Sequence[float],
    *,
    width_px: float = DESIGN_WIDTH_PX,
    margin_px: tuple[float, float] = (70, 30),
) -> list[list[float]]:
    """Paper-coordinate x domains of panels side by side, ``gaps_px`` apart at ``width_px``.

    ``widths`` are relative panel widths; ``gaps_px`` (one fewer) the room between panels
    for a colorbar and the next panel's tick labels. At wider figures the gaps grow.
    """
    if len(gaps_px) != len(widths) - 1:
        raise ValueError(f"{len(widths)} panels need {len(widths) - 1} gaps; got {len(gaps_px)}.")
    plot_px = width_px - sum(margin_px)
    gaps = [g / plot_px for g in gaps_px]
    room = 1.0 - sum(gaps)
    if room <= 0.2:
        raise ValueError(f"Gaps of {sum(gaps_px)} px leave no room for panels at {width_px} px.")
    total = float(sum(widths))
    out, x = [], 0.0
    for i, w in enumerate(widths):
        end = x + room * w / total
        out.append([round(x, 4), round(min(end, 1.0), 4)])
        x = end + (gaps[i] if i < len(gaps) else 0.0)
    return out


def colorbar(
    after: float | None = None,
    *,
    title: str | None = None,
    y: tuple[float, float] = (0.0, 1.0),
    width_px: float = DESIGN_WIDTH_PX,
    margin_px: tuple[float, float] = (70, 30),
) -> dict[str, Any]:
    """A slim colorbar just right of x = ``after`` (paper), over the y domain ``y``.

    ``after=None`` puts it in the right margin (plotly makes room for it there). The title
    reads along the bar, so the colorbar is never wider than :data:`COLORBAR_PX`.
    """
    bar: dict[str, Any] = {
        "thickness": COLORBAR_THICKNESS_PX,
        "len": max(0.1, (y[1] - y[0]) * 0.95),
        "y": (y[0] + y[1]) / 2,
        "yanchor": "middle",
        "xpad": 4,
        "tickfont": {"size": 10},
        "outlinewidth": 0,
    }
    if after is not None:
        bar.update(x=after + 6 / (width_px - sum(margin_px)), xanchor="left", xref="paper")
    if title:
        bar["title"] = {"text": title, "side": "right", "font": {"size": 11}}
    return bar


def log_axis(values: Sequence[float] | Any, *, pad: float = 0.08) -> dict[str, Any]:
    """A log axis whose range comes from ``values`` (positive ones) and whose labels stay few.

    Over more than one decade only powers of ten are labelled (``dtick=1``); within one,
    plotly's 2-and-5 labels are kept since there would be too few otherwise.
    """
    pos = [float(v) for v in values if v is not None and math.isfinite(float(v)) and v > 0]
    axis: dict[str, Any] = {"type": "log", "exponentformat": "power", "minor": {"ticks": ""}}
    if not pos:
        return axis
    lo, hi = math.log10(min(pos)), math.log10(max(pos))
    span = hi - lo
    margin = pad * max(span, 0.5)
    axis["range"] = [lo - margin, hi + margin]
    if span > 1.2:
        axis["dtick"] = 1
    else:
        axis["dtick"] = "D2"
    return axis


def wrap(text: str, width_chars: int) -> str:
    """``text`` broken into lines of at most ``width_chars`` with ``<br>`` (plotly's break)."""
    lines = []
    for part in str(text).split("<br>"):
        lines += textwrap.wrap(part, width_chars, break_long_words=False) or [""]
    return "<br>".join(lines)


def title_chars(width_px: float = DESIGN_WIDTH_PX, font_px: float = 17) -> int:
    """How many characters of a title fit on one line of a figure ``width_px`` wide."""
    return int((width_px - 80) / (CHAR_PX * font_px))


# -- checking ---------------------------------------------------------------------------------


def _axes(layout: dict[str, Any], letter: str) -> dict[str, dict[str, Any]]:
    out = {}
    for key, val in layout.items():
        if key == f"{letter}axis" or (key.startswith(f"{letter}axis") and key[5:].isdigit()):
            out[key] = val or {}
    if not out:
        out[f"{letter}axis"] = {}
    return out


def _ref(key: str) -> str:
    """``xaxis2`` -> ``x2``."""
    return key[0] + key[5:]


def _tick_labels(axis: dict[str, Any]) -> list[str] | None:
    if axis.get("tickmode") == "array" or "ticktext" in axis:
        return [str(t) for t in axis.get("ticktext") or []]
    return None


def layout_problems(
    fig: go.Figure | dict[str, Any], width_px: float = DESIGN_WIDTH_PX
) -> list[str]:
    """What would collide when ``fig`` is drawn ``width_px`` wide (empty when nothing would).

    An estimate from the figure's JSON, using the same rules as the browser test's SVG
    checks: a colorbar must not cover a plot area or the y tick labels left of one; array
    tick labels on one axis must not overprint; the title must fit its width (it may wrap
    with ``<br>``). Margins plotly grows by itself (``automargin``) are assumed grown.
    """
    spec = fig.to_plotly_json() if isinstance(fig, go.Figure) else fig
    layout = spec.get("layout") or {}
    height = float(layout.get("height") or 450)
    margin = layout.get("margin") or {}
    ml, mr = float(margin.get("l", 80)), float(margin.get("r", 80))
    mt, mb = float(margin.get("t", 100)), float(margin.get("b", 80))
    plot_w, plot_h = width_px - ml - mr, height - mt - mb
    problems: list[str] = []
    xaxes, yaxes = _axes(layout, "x"), _axes(layout, "y")
    # panels: (xref, yref) -> paper boxes of the plot area and of its left tick labels
    panels = []
    used = {(t.get("xaxis", "x"), t.get("yaxis", "y")) for t in spec.get("data") or []}
    for xr, yr in sorted(used):
        xa = xaxes.get(f"xaxis{xr[1:]}", {})
        ya = yaxes.get(f"yaxis{yr[1:]}", {})
        x0, x1 = xa.get("domain", [0, 1])
        y0, y1 = ya.get("domain", [0, 1])
        labels = _tick_labels(ya)
        lab_px = label_px(labels) if labels is not None else 5 * CHAR_PX * TICK_FONT_PX
        if ya.get("showticklabels") is False:
            lab_px = 0
        panels.append((f"{xr}{yr}", x0, x1, y0, y1, x0 - (lab_px + 4) / plot_w))
    for i, tr in enumerate(spec.get("data") or []):
        shows = tr.get("type") in ("heatmap", "contour", "histogram2d") and tr.get(
            "showscale", True
        )
        marker = tr.get("marker") or {}
        shows = shows or bool(marker.get("showscale"))
        if not shows:
            continue
        cb = tr.get("colorbar") or marker.get("colorbar") or {}
        x = float(cb.get("x", 1.02))
        anchor = cb.get("xanchor", "left")
        thick = float(cb.get("thickness", 30))
        title = cb.get("title") or {}
        side = title.get("side", "top") if isinstance(title, dict) else "top"
        text = title.get("text", "") if isinstance(title, dict) else str(title)
        extra = 18 if (text and side == "right") else max(0.0, len(text) * 7 - thick - 30)
        w_px = float(cb.get("xpad", 10)) + thick + 34 + extra
        left = x if anchor == "left" else x - w_px / plot_w
        right = left + w_px / plot_w
        clen = float(cb.get("len", 1))
        cy = float(cb.get("y", 0.5))
        yanchor = cb.get("yanchor", "middle")
        bottom = (
            cy - clen / 2 if yanchor == "middle" else (cy if yanchor == "bottom" else cy - clen)
        )
        top = bottom + clen
        for name, x0, x1, y0, y1, lab0 in panels:
            if bottom >= y1 or top <= y0:
                continue
            if left < x1 and right > lab0:
                what = "plot area" if left < x1 and right > x0 else "y tick labels"
                problems.append(
                    f"trace {i}'s colorbar (x {left:.3f}..{right:.3f}) covers the {what} of "
                    f"panel {name} (x {x0:.3f}..{x1:.3f}, labels from {lab0:.3f})"
                )
        if right > 1 + mr / plot_w and x < 1:
            problems.append(f"trace {i}'s colorbar runs past the right edge")
    for key, axis in {**xaxes, **yaxes}.items():
        labels = _tick_labels(axis)
        if not labels:
            continue
        d0, d1 = axis.get("domain", [0, 1])
        font = float((axis.get("tickfont") or {}).get("size", 12))
        if key.startswith("x"):
            span = (d1 - d0) * plot_w
            angle = axis.get("tickangle", "auto")
            flat = max(len(s) for s in labels) * CHAR_PX * font + 4
            if angle == "auto":  # plotly turns crowded labels by 30 degrees
                per = min(flat, font * 1.2 / math.sin(math.radians(30)))
            elif float(angle) == 0:
                per = flat
            else:
                per = font * 1.2 / max(math.sin(math.radians(abs(float(angle)))), 0.5)
        else:
            span = (d1 - d0) * plot_h
            per = font * 1.15
        if len(labels) * per > span + 1:
            problems.append(
                f"{key}: {len(labels)} tick labels need {len(labels) * per:.0f} px; the axis "
                f"is {span:.0f} px long, so they overprint"
            )
    title = layout.get("title") or {}
    text = title.get("text") if isinstance(title, dict) else title
    if text:
        font = float(((title.get("font") or {}) if isinstance(title, dict) else {}).get("size", 17))
        longest = max(len(line) for line in str(text).split("<br>"))
        if longest * CHAR_PX * font > width_px - 40:
            problems.append(f"the title ({longest} characters on a line) is wider than the figure")
    return problems
