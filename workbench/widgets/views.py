"""Live views: plotly ``FigureWidget``s updated in place, with their controls.

Each view takes results (DataFrames, arrays, token strings) and, to be live, a
``compute`` callable that turns a control's value into a new result. Views never see a
model: the notebook passes closures over the foundation (``wb.capture``, ``run_with``,
``logit_lens_table``). Recomputes are debounced (see :class:`~.controls.Debouncer`),
and a figure is updated in place with ``batch_update`` rather than redrawn.

Displaying a view shows the widget with a kernel and a static copy of its figure
without one (HTML export, a viewer, JupyterLab with no kernel): see :mod:`.static`.

=================  ===================================================================
view               shows
=================  ===================================================================
NextTokenView      top next tokens as bars, for an editable prompt
LogitLensView      top lens token and its probability per layer × position
AttentionView      one head's attention pattern, with layer and head pickers
AblationView       next-token probabilities, clean against heads ablated (live toggles)
=================  ===================================================================

Example:
    >>> view = NextTokenView(top_tokens(probs, decode, k=10))          # doctest: +SKIP
    >>> view = NextTokenView(compute=next_tokens, prompt="The capital of France is")
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from workbench.errors import WorkbenchError
from workbench.widgets.controls import (
    DEFAULT_WAIT_S,
    Debouncer,
    HeadToggles,
    PromptBox,
    TokenStrip,
    head_picker,
    layer_picker,
    link,
    threshold_slider,
)
from workbench.widgets.layout import (
    DESIGN_WIDTH_PX,
    title_chars,
    token_axis,
    token_label,
    wrap,
)
from workbench.widgets.sizing import FitWidth, fit
from workbench.widgets.static import FigureFrames, OfflineFrames, static_bundle

__all__ = [
    "AblationView",
    "AttentionView",
    "LogitLensView",
    "NextTokenView",
    "View",
    "ViewDataError",
    "top_tokens",
]

TEMPLATE = "plotly_white"
CLEAN, ABLATED = "#1f77b4", "#d62728"


class ViewDataError(WorkbenchError, ValueError):
    """A view was given data it cannot draw (a missing column, a mismatched shape)."""


def _array(x: Any) -> np.ndarray:
    """A float numpy copy of a tensor, array or list (tensors are detached, moved to CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def top_tokens(probs: Any, decode: Callable[[int], str], k: int = 10) -> pd.DataFrame:
    """The ``k`` most likely tokens of a probability vector ``probs`` [vocab].

    Returns columns ``token_id``, ``token``, ``prob``, most likely first.

    Example:
        >>> top_tokens(np.array([0.1, 0.7, 0.2]), decode=str, k=2)["token"].tolist()
        ['1', '2']
    """
    p = _array(probs)
    if p.ndim != 1:
        raise ViewDataError(f"top_tokens needs a probability vector [vocab]; got shape {p.shape}.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ViewDataError(f"k (how many tokens to show) must be an int >= 1, got {k!r}.")
    k = min(k, p.shape[0])
    ids = np.argsort(-p, kind="stable")[:k]
    return pd.DataFrame(
        {"token_id": ids, "token": [decode(int(i)) for i in ids], "prob": p[ids]}
    ).reset_index(drop=True)


def _need(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ViewDataError(
            f"{what} needs columns {list(cols)}; missing {missing}, got {sorted(df.columns)}."
        )


def _future_blank(attn: Any) -> np.ndarray:
    """``attn`` [..., query, key] as float64 with the keys after each query NaN (drawn blank)."""
    a = np.array(attn, dtype=np.float64)
    n = a.shape[-1]
    a[..., np.triu(np.ones((n, n), dtype=bool), k=1)] = np.nan
    return a


class View:
    """Base of the live views: a ``FigureWidget``, its controls and a status line.

    Subclasses build ``self.figure`` and implement ``update(result)``; the base class
    displays the box, keeps a static copy for exports, and wires controls to recomputes.
    """

    figure: go.FigureWidget

    def __init__(self, figure: go.Figure, controls: Sequence[widgets.Widget] = ()):
        self.figure = fit(go.FigureWidget(figure))  # the output area's width, not 700 px
        self.status = widgets.HTML("")
        self.controls: list[widgets.Widget] = list(controls)
        self.widget = widgets.VBox([*self.controls, self.figure, self.status, FitWidth()])
        self.debouncers: list[Debouncer] = []

    # -- display ---------------------------------------------------------------------------
    def static(self) -> go.Figure:
        """A plain ``go.Figure`` copy of the figure as it is now."""
        return go.Figure(self.figure.to_dict())

    def offline(self) -> OfflineFrames | FigureFrames | None:
        """Frames that let the static copy's controls work with no kernel (``None``: none)."""
        return None

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_())
        frames = self.offline()
        caption = "" if frames is not None else "static copy: run the notebook to interact"
        bundle.update(static_bundle(self.static(), offline=frames, caption=caption))
        bundle["text/plain"] = f"{type(self).__name__} (static copy; run the notebook to interact)"
        return bundle

    # -- live wiring -----------------------------------------------------------------------
    def update(self, *result: Any) -> None:
        raise NotImplementedError

    def show_error(self, exc: BaseException) -> None:
        """Report a failed recompute under the figure (a callback has no cell to raise in)."""
        self.status.value = (
            f'<span style="color:#b00">could not update: {type(exc).__name__}: '
            f"{html.escape(str(exc))}</span>"
        )

    def _recompute(self, compute: Callable[..., Any], *args: Any) -> None:
        self.status.value = '<span style="color:#888">computing…</span>'
        result = compute(*args)
        if isinstance(result, tuple):
            self.update(*result)
        else:
            self.update(result)
        self.status.value = ""

    def follow(
        self,
        control: widgets.ValueWidget,
        compute: Callable[[Any], Any],
        *,
        wait: float = DEFAULT_WAIT_S,
        embed: bool = False,
    ) -> Debouncer:
        """Recompute (debounced) with ``compute(control.value)`` whenever the control changes.

        ``compute`` returns what :meth:`update` takes (a tuple is spread over its arguments).
        ``embed`` puts the control at the top of this view's box.
        """
        if embed:
            self.controls.insert(0, control)
            self.widget.children = (control, *self.widget.children)
        d = link(
            control,
            lambda value: self._recompute(compute, value),
            wait=wait,
            on_error=self.show_error,
        )
        self.debouncers.append(d)
        return d

    def flush(self) -> None:
        """Run any waiting recompute now (useful in scripts and tests)."""
        for d in self.debouncers:
            d.flush()

    def _follow_prompt(
        self, compute: Callable[[str], Any] | None, prompt: str | PromptBox | None, wait: float
    ) -> Any:
        """Wire an optional prompt; return the first result (or ``None`` if not live)."""
        if compute is None:
            return None
        if prompt is None:
            raise ViewDataError(f"{type(self).__name__}(compute=...) also needs prompt=...")
        box = prompt if isinstance(prompt, PromptBox) else PromptBox(prompt)
        self.prompt = box
        self.follow(box, compute, wait=wait, embed=not isinstance(prompt, PromptBox))
        return compute(box.value)


# -- next tokens ------------------------------------------------------------------------------


def _bar_axis(tokens: Sequence[str]) -> dict[str, Any]:
    # Numeric positions with token tick labels: two tokens that decode alike stay two bars.
    return {
        "tickmode": "array",
        "tickvals": list(range(len(tokens))),
        "ticktext": [token_label(t, 14) for t in tokens],
        "autorange": "reversed",
        "automargin": True,
    }


def _title(text: str, *, font_px: float = 17) -> str:
    """``text`` wrapped to the design width (plotly never wraps a title itself)."""
    return wrap(text, title_chars(DESIGN_WIDTH_PX, font_px))


class NextTokenView(View):
    """Top next tokens as horizontal bars.

    Args:
        table: columns ``token`` and ``prob`` (e.g. from :func:`top_tokens`), most likely first.
        compute: ``compute(prompt) -> table``; with ``prompt`` the view gets a prompt box and
            recomputes (debounced) as you type.

    Example:
        >>> NextTokenView(pd.DataFrame({"token": [" Paris", " the"], "prob": [0.6, 0.1]}))
    """

    def __init__(
        self,
        table: pd.DataFrame | None = None,
        *,
        compute: Callable[[str], pd.DataFrame] | None = None,
        prompt: str | PromptBox | None = None,
        title: str = "Top next tokens",
        height: int = 360,
        wait: float = DEFAULT_WAIT_S,
    ):
        self.title = title
        fig = go.Figure(
            go.Bar(orientation="h", marker_color=CLEAN, textposition="auto", name="p"),
            layout={
                "template": TEMPLATE,
                "height": height,
                "margin": {"l": 110, "r": 20, "t": 50, "b": 40},
                "xaxis": {"title": {"text": "probability"}, "range": [0, 1]},
                "title": {"text": title},
            },
        )
        super().__init__(fig)
        first = self._follow_prompt(compute, prompt, wait)
        table = first if table is None else table
        if table is None:
            raise ViewDataError("NextTokenView needs a table, or compute= and prompt=.")
        self.update(table)

    def update(self, table: pd.DataFrame) -> None:
        """Show a new top-token table (in place)."""
        _need(table, ["token", "prob"], "NextTokenView")
        tokens = [str(t) for t in table["token"]]
        probs = _array(table["prob"])
        with self.figure.batch_update():
            bar = self.figure.data[0]
            bar.x = probs
            bar.y = list(range(len(tokens)))
            bar.text = [f"{p:.3f}" for p in probs]
            bar.hovertext = [f"{t!r}: p = {p:.4f}" for t, p in zip(tokens, probs, strict=True)]
            bar.hoverinfo = "text"
            self.figure.layout.yaxis = _bar_axis(tokens)
            top = f"{tokens[0]!r} ({probs[0]:.2f})" if tokens else "-"
            self.figure.layout.title.text = _title(f"{self.title}: {html.escape(top, quote=False)}")
        self.table = table


# -- logit lens -------------------------------------------------------------------------------


class LogitLensView(View):
    """Heatmap of the logit lens: layer × position, the top token written in each cell.

    Args:
        table: a :func:`workbench.tracing.lens.logit_lens_table` (columns layer, position,
            token, rank, top_token, prob); only rank 0 is drawn.
        threshold: cells whose top token has a lower probability show no text (a slider).

    Example:
        >>> LogitLensView(logit_lens_table(model, cap, k=1))                  # doctest: +SKIP
    """

    def __init__(
        self,
        table: pd.DataFrame | None = None,
        *,
        compute: Callable[[str], pd.DataFrame] | None = None,
        prompt: str | PromptBox | None = None,
        threshold: float = 0.2,
        height: int | None = None,
        wait: float = DEFAULT_WAIT_S,
    ):
        self.threshold = threshold_slider(threshold, description="show text ≥")
        self._height = height
        fig = go.Figure(
            go.Heatmap(
                colorscale="Blues",
                zmin=0,
                zmax=1,
                texttemplate="%{text}",
                textfont={"size": 10},
                colorbar={"title": {"text": "p(top)"}},
                hovertemplate="layer %{y}, position %{x}<br>%{customdata}<extra></extra>",
            ),
            layout={
                "template": TEMPLATE,
                "margin": {"l": 60, "r": 20, "t": 50, "b": 80},
                "xaxis": {"title": {"text": "position (input token)"}},
                "yaxis": {"title": {"text": "layer"}},
                "title": {"text": "Logit lens: top token and its probability"},
            },
        )
        super().__init__(fig, [self.threshold])
        self.threshold.observe(lambda _: self._apply_threshold(), names="value")
        first = self._follow_prompt(compute, prompt, wait)
        table = first if table is None else table
        if table is None:
            raise ViewDataError("LogitLensView needs a table, or compute= and prompt=.")
        self.update(table)

    def update(self, table: pd.DataFrame) -> None:
        """Show a new lens table (in place)."""
        _need(table, ["layer", "position", "token", "top_token", "prob"], "LogitLensView")
        if "rank" in table.columns:
            table = table[table["rank"] == 0]
        grid = table.pivot(index="layer", columns="position", values="prob")
        top = table.pivot(index="layer", columns="position", values="top_token")
        layers = [int(x) for x in grid.index]
        positions = [int(x) for x in grid.columns]
        inputs = table.drop_duplicates("position").set_index("position")["token"]
        self._z = grid.to_numpy(dtype=np.float64)  # [layer, position]
        self._top = top.to_numpy(dtype=object)  # [layer, position] str
        custom = [
            [
                f"input {inputs[p]!r}<br>top {self._top[i, j]!r}, p = {self._z[i, j]:.3f}"
                for j, p in enumerate(positions)
            ]
            for i in range(len(layers))
        ]
        height = self._height or max(320, 90 + 18 * len(layers))
        with self.figure.batch_update():
            hm = self.figure.data[0]
            hm.z = self._z
            hm.x = positions
            hm.y = layers
            hm.customdata = custom
            self.figure.layout.height = height
            span = DESIGN_WIDTH_PX - 60 - 20 - 80  # margins and the colorbar
            axis = token_axis(
                [f"{p}: {token_label(inputs[p], 12)}" for p in positions], span_px=span
            )
            axis["tickvals"] = [positions[i] for i in axis["tickvals"]]
            self.figure.layout.xaxis.update(axis)
            self._apply_threshold()
        self.table = table

    def _text(self) -> list[list[str]]:
        t = self.threshold.value
        return [
            [token_label(str(tok), 8) if p >= t else "" for tok, p in zip(row, zrow, strict=True)]
            for row, zrow in zip(self._top, self._z, strict=True)
        ]

    def _apply_threshold(self) -> None:
        self.figure.data[0].text = self._text()


# -- attention --------------------------------------------------------------------------------


class AttentionView(View):
    """One head's attention pattern (query × key) with layer and head pickers.

    Args:
        attn: attention probabilities [layer, head, query, key] of one prompt (tensor or array).
        tokens: the prompt's token strings (``len == query == key``).
        layers: the layer numbers of ``attn``'s rows when only some were captured.
        compute: ``compute(prompt) -> (attn, tokens)`` to recompute on a prompt box.

    Picking a layer or head re-slices the array in memory; no forward pass runs.
    Below the heatmap a token strip shades each key by the attention it gets from the
    last token; hover a token to read the value.

    Example:
        >>> cap = wb.capture(model, "The capital of France is", what=["attn_probs"])
        >>> AttentionView(cap.attn_probs[:, 0], cap.tokens.strings[0], layer=3)   # doctest: +SKIP
    """

    def __init__(
        self,
        attn: Any = None,
        tokens: Sequence[str] | None = None,
        *,
        layers: Sequence[int] | None = None,
        layer: int = 0,
        head: int = 0,
        compute: Callable[[str], tuple[Any, Sequence[str]]] | None = None,
        prompt: str | PromptBox | None = None,
        height: int = 420,
        wait: float = DEFAULT_WAIT_S,
    ):
        fig = go.Figure(
            go.Heatmap(
                colorscale="Viridis",
                zmin=0,
                zmax=1,
                colorbar={"title": {"text": "attention"}},
                hovertemplate="query %{y} → key %{x}<br>%{customdata}<extra></extra>",
            ),
            layout={
                "template": TEMPLATE,
                "height": height,
                "margin": {"l": 110, "r": 20, "t": 50, "b": 90},
                "xaxis": {"title": {"text": "key"}, "automargin": True},
                "yaxis": {"title": {"text": "query"}, "autorange": "reversed"},
            },
        )
        self.strip = TokenStrip(label="attention from the last token")
        self._syncing = False
        self._layers = list(layers) if layers is not None else None
        n_layers = len(self._layers) if self._layers is not None else 1
        self.layer = layer_picker(max(n_layers, 1), value=0)
        self.head = head_picker(1, value=0)
        super().__init__(fig, [widgets.HBox([self.layer, self.head])])
        self.widget.children = (*self.widget.children, self.strip)
        first = self._follow_prompt(compute, prompt, wait)
        if attn is None:
            if first is None:
                raise ViewDataError("AttentionView needs attn and tokens, or compute= and prompt=.")
            attn, tokens = first
        self.update(attn, tokens, layer=layer, head=head)
        self.layer.observe(lambda _: self._draw(), names="value")
        self.head.observe(lambda _: self._draw(), names="value")

    def update(
        self,
        attn: Any,
        tokens: Sequence[str] | None,
        *,
        layer: int | None = None,
        head: int | None = None,
    ) -> None:
        """Show new attention probabilities [layer, head, query, key] and tokens (in place)."""
        a = _array(attn)
        if a.ndim != 4 or a.shape[2] != a.shape[3]:
            raise ViewDataError(
                f"AttentionView needs attention [layer, head, query, key]; got shape {a.shape}."
            )
        tokens = list(tokens or [str(i) for i in range(a.shape[2])])
        if len(tokens) != a.shape[3]:
            raise ViewDataError(f"{len(tokens)} tokens for {a.shape[3]} attention keys.")
        if self._layers is not None and len(self._layers) != a.shape[0]:
            raise ViewDataError(f"layers= names {len(self._layers)} layers; attn has {a.shape[0]}.")
        self.attn, self.tokens = a, tokens
        layer_row = self._row(layer) if layer is not None else min(self.layer.value, a.shape[0] - 1)
        head = head if head is not None else min(self.head.value, a.shape[1] - 1)
        if not 0 <= head < a.shape[1]:
            raise ViewDataError(f"Head {head} is out of range; attn has {a.shape[1]} heads.")
        self._syncing = True  # the pickers' observers must not draw a half-updated state
        try:
            self.layer.max = a.shape[0] - 1
            self.layer.value = layer_row
            if len(self.head.options) != a.shape[1]:
                self.head.options = [(f"head {h}", h) for h in range(a.shape[1])]
            self.head.value = head
        finally:
            self._syncing = False
        self._draw()

    def _row(self, layer: int) -> int:
        if self._layers is None:
            if not 0 <= layer < self.attn.shape[0]:
                raise ViewDataError(f"Layer {layer} is out of range 0..{self.attn.shape[0] - 1}.")
            return layer
        if layer not in self._layers:
            raise ViewDataError(f"Layer {layer} was not captured; captured: {self._layers}.")
        return self._layers.index(layer)

    def static(self) -> go.Figure:
        fig = super().static()
        toks = self.tokens
        n = len(toks)
        # hover reads the value from z, so it stays right when the offline pickers switch
        fig.data[0].customdata = [
            [f"{toks[q]!r} → {toks[k]!r}" for k in range(n)] for q in range(n)
        ]
        fig.data[0].hovertemplate = "%{customdata}: %{z:.3f}<extra></extra>"
        return fig

    def offline(self) -> OfflineFrames | None:
        """Every layer and head of the prompt, so both pickers work in the static copy."""
        a = _future_blank(self.attn)
        layers = self._layers if self._layers is not None else list(range(a.shape[0]))
        titles = [f"Attention, layer {lyr} head {h}" for lyr in layers for h in range(a.shape[1])]
        return OfflineFrames(
            controls=[
                ("layer", [str(x) for x in layers]),
                ("head", list(map(str, range(a.shape[1])))),
            ],
            z=a,
            start=[self.layer.value, self.head.value],
            titles=titles,
            note="layer and head work offline (no kernel); the prompt and the token strip "
            "need the notebook",
        )

    @property
    def layer_number(self) -> int:
        row = self.layer.value
        return self._layers[row] if self._layers is not None else row

    def _draw(self) -> None:
        if self._syncing:
            return
        row, head = self.layer.value, self.head.value
        a = self.attn[row, head]  # [query, key]
        n = a.shape[0]
        # A query cannot see later keys: leave them blank (None, since NaN is not valid JSON).
        z = [[float(a[q, k]) if k <= q else None for k in range(n)] for q in range(n)]
        labels = [f"{i} {token_label(t, 10)}" for i, t in enumerate(self.tokens)]
        height = min(820, max(420, 150 + 14 * n))
        custom = [
            [
                f"{self.tokens[q]!r} → {self.tokens[k]!r}: {self.attn[row, head, q, k]:.3f}"
                for k in range(n)
            ]
            for q in range(n)
        ]
        with self.figure.batch_update():
            hm = self.figure.data[0]
            hm.z = z
            hm.x = list(range(n))
            hm.y = list(range(n))
            hm.customdata = custom
            self.figure.layout.height = height
            self.figure.layout.xaxis.update(
                token_axis(labels, span_px=DESIGN_WIDTH_PX - 110 - 20 - 80)
            )
            self.figure.layout.yaxis.update(token_axis(labels, span_px=height - 140, vertical=True))
            self.figure.layout.title.text = f"Attention, layer {self.layer_number} head {head}"
        self.strip.update(self.tokens, self.attn[row, head, -1])


# -- head ablation ----------------------------------------------------------------------------


class AblationView(View):
    """Next-token probabilities with chosen heads ablated, against the clean run.

    Args:
        compute: ``compute(prompt, layer, heads) -> probs [vocab]``; ``heads == []`` is
            the clean run. It is called (debounced) whenever the toggles change.
        decode: token id -> string.
        prompt: the prompt (a string, or a shared :class:`PromptBox` to follow).
        n_layers, n_heads: the ranges of the pickers.
        k: how many of the clean run's top tokens to show.

    Example:
        >>> def probs(text, layer, heads):
        ...     ivs = [HeadAblation(layer=layer, heads=heads)] if heads else []
        ...     return wb.run_with(model, text, ivs)[0, -1].softmax(-1)
        >>> AblationView(probs, decode, prompt="The capital of France is",
        ...              n_layers=30, n_heads=9, layer=3, heads=[0])      # doctest: +SKIP
    """

    def __init__(
        self,
        compute: Callable[[str, int, list[int]], Any],
        decode: Callable[[int], str],
        *,
        prompt: str | PromptBox,
        n_layers: int,
        n_heads: int,
        layer: int = 0,
        heads: Sequence[int] = (),
        k: int = 10,
        height: int = 400,
        wait: float = DEFAULT_WAIT_S,
    ):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ViewDataError(f"k (how many tokens to show) must be an int >= 1, got {k!r}.")
        self.compute, self.decode, self.k = compute, decode, k
        self.layer = layer_picker(n_layers, value=layer)
        self.heads = HeadToggles(n_heads, value=heads)
        fig = go.Figure(
            [
                go.Bar(orientation="h", name="clean", marker_color=CLEAN, hoverinfo="text"),
                go.Bar(orientation="h", name="ablated", marker_color=ABLATED, hoverinfo="text"),
            ],
            layout={
                "template": TEMPLATE,
                "height": height,
                "barmode": "group",
                "margin": {"l": 110, "r": 20, "t": 70, "b": 40},
                "xaxis": {"title": {"text": "next-token probability"}, "range": [0, 1]},
                "legend": {"orientation": "h", "y": -0.15},
            },
        )
        owned = not isinstance(prompt, PromptBox)
        self.prompt = PromptBox(prompt) if owned else prompt
        controls = [self.prompt] if owned else []
        super().__init__(fig, [*controls, self.layer, self.heads])
        self._clean_for: tuple[str, Any] | None = None  # (prompt, clean probs)
        self._note: tuple[str, int] | None = None  # (what was cleared, on which layer)
        # Before the recompute is wired: a head index means another head on a new layer, so
        # the toggles are cleared (and the view says so) rather than carried over silently.
        self.layer.observe(self._layer_changed, names="value")
        d = Debouncer(self._refresh, wait, on_error=self.show_error)
        self.debouncers.append(d)
        for control in (self.prompt, self.layer, self.heads):
            control.observe(lambda _: d(), names="value")
        self._refresh()

    def _layer_changed(self, change: dict[str, Any]) -> None:
        if self.heads.value:
            self._note = (
                f"layer {change['old']} → {change['new']}: head toggles "
                f"{list(self.heads.value)} cleared (pick the heads of layer {change['new']})",
                change["new"],
            )
            self.heads.value = []

    def _clean(self, text: str) -> np.ndarray:
        if self._clean_for is None or self._clean_for[0] != text:
            self._clean_for = (text, _array(self.compute(text, self.layer.value, [])))
        return self._clean_for[1]

    def _refresh(self) -> None:
        self.status.value = '<span style="color:#888">computing…</span>'
        text, layer, heads = self.prompt.value, self.layer.value, list(self.heads.value)
        clean = self._clean(text)
        ablated = _array(self.compute(text, layer, heads)) if heads else clean
        self.update(clean, ablated, layer=layer, heads=heads)
        # The note stays until a head is toggled or the layer moves again.
        if self._note is not None and (heads or self._note[1] != layer):
            self._note = None
        note = self._note[0] if self._note else ""
        self.status.value = f'<span style="color:#555">{html.escape(note)}</span>' if note else ""

    def update(
        self, clean: Any, ablated: Any, *, layer: int | None = None, heads: Sequence[int] = ()
    ) -> None:
        """Show clean and ablated probability vectors [vocab] (in place)."""
        clean, ablated = _array(clean), _array(ablated)
        if clean.shape != ablated.shape or clean.ndim != 1:
            raise ViewDataError(
                f"clean and ablated must be probability vectors of one size; got {clean.shape} "
                f"and {ablated.shape}."
            )
        table = top_tokens(clean, self.decode, self.k)
        ids = table["token_id"].to_numpy()
        tokens = table["token"].tolist()
        a = ablated[ids]
        new_top = int(np.argmax(ablated))
        if heads:
            what = f"layer {layer} heads {sorted(heads)} ablated"
            change = (
                f"top {tokens[0]!r} {clean[ids[0]]:.2f} → {a[0]:.2f}; "
                f"now top {self.decode(new_top)!r} ({ablated[new_top]:.2f})"
            )
        else:
            what, change = "no heads ablated", "toggle heads to ablate them"
        with self.figure.batch_update():
            c, b = self.figure.data
            y = list(range(len(tokens)))
            c.x, c.y = clean[ids], y
            b.x, b.y = a, y
            c.hovertext = [
                f"{t!r} clean p = {p:.4f}" for t, p in zip(tokens, clean[ids], strict=True)
            ]
            b.hovertext = [
                f"{t!r} ablated p = {p:.4f} (Δ {p - q:+.4f})"
                for t, p, q in zip(tokens, a, clean[ids], strict=True)
            ]
            self.figure.layout.yaxis = _bar_axis(tokens)
            self.figure.layout.title.text = _title(html.escape(f"{what}: {change}", quote=False))
        self.table = table.assign(clean=clean[ids], ablated=a)
