"""InterventionLab: compose interventions from controls and see their combined effect.

The lab holds a list of intervention *specs* (plain dicts, see
:mod:`workbench.analysis.lab`). Controls pick a kind (ablate heads, knock out
query→key edges, patch from a second prompt, steer along a named vector, clamp a
neuron) and its settings; **add** appends it, **remove last** and **clear** edit the
list. Every change recomputes (debounced) and shows, clean against intervened:

- the top next tokens (bars);
- the per-layer logit lens of the last position for the clean run's top token;
- the chosen logit difference and a greedy continuation (in the title);
- the Python that reproduces the list (below the figure).

Like every view it takes a ``compute`` callable, never a model:
``compute(prompt, specs, source) -> LabResult``.

Example:
    >>> lab = InterventionLab(
    ...     lambda p, specs, src: lab_run(model, p, specs, source=src, good=" Paris",
    ...                                   bad=" London", vectors=vectors),
    ...     prompt="The capital of France is", n_layers=30, n_heads=9,
    ...     vectors=list(vectors), source="The capital of Italy is")
    >>> lab.add({"kind": "ablate", "layer": 0, "heads": [4], "mode": "zero"})
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
from plotly.subplots import make_subplots

from workbench.widgets.controls import DEFAULT_WAIT_S, ControlValueError, Debouncer, PromptBox
from workbench.widgets.layout import token_label
from workbench.widgets.static import static_bundle
from workbench.widgets.views import ABLATED, CLEAN, TEMPLATE, View

__all__ = ["InterventionLab", "parse_edges", "parse_ints"]

KINDS = ("ablate", "knockout", "patch", "steer", "clamp")
SITES = ("resid_post", "resid_pre", "attn_out", "mlp_out", "head_out")


def parse_ints(text: str, what: str) -> list[int]:
    """``"0, 3 5"`` -> ``[0, 3, 5]``; anything else is a :class:`ControlValueError`."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ControlValueError(
            f"{what}: expected whole numbers separated by commas (e.g. '0, 3'), got {text!r}."
        ) from None


def parse_edges(text: str) -> list[list[int]]:
    """``"-1->0, 5->2"`` -> ``[[-1, 0], [5, 2]]`` (query -> key)."""
    edges = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        if "->" not in part:
            raise ControlValueError(
                f"edges: expected 'query->key' pairs separated by commas (e.g. '-1->0'), "
                f"got {part!r}."
            )
        q, k = part.split("->", 1)
        edges.append(parse_ints(q, "edge query") + parse_ints(k, "edge key"))
        if len(edges[-1]) != 2:
            raise ControlValueError(f"edges: {part!r} is not one query and one key.")
    return edges


class InterventionLab(View):
    """Build a list of interventions from controls; clean against intervened, live."""

    def __init__(
        self,
        compute: Callable[[str, list[dict[str, Any]], str | None], Any],
        *,
        prompt: str,
        n_layers: int,
        n_heads: int,
        source: str = "",
        vectors: Sequence[str] = (),
        specs: Sequence[Mapping[str, Any]] = (),
        height: int = 480,
        wait: float = DEFAULT_WAIT_S,
    ):
        self.compute = compute
        self.n_layers, self.n_heads = n_layers, n_heads
        self.specs: list[dict[str, Any]] = []
        self.prompt = PromptBox(prompt)
        self.source = PromptBox(source, description="source")
        self.source.placeholder = "second prompt: the source of 'patch'"
        lay = widgets.Layout(width="210px")
        self.kind = widgets.Dropdown(options=KINDS, value="ablate", description="kind", layout=lay)
        self.layer = widgets.BoundedIntText(
            value=0, min=0, max=max(0, n_layers - 1), description="layer", layout=lay
        )
        self.heads = widgets.Text(value="0", description="heads", layout=lay)
        self.mode = widgets.Dropdown(
            options=("zero", "mean", "sink"), value="zero", description="mode", layout=lay
        )
        self.edges = widgets.Text(value="-1->0", description="edges", layout=lay)
        self.site = widgets.Dropdown(
            options=SITES, value="resid_post", description="site", layout=lay
        )
        self.positions = widgets.Text(value="-1", description="positions", layout=lay)
        self.vector = widgets.Dropdown(
            options=list(vectors) or ["(none)"], description="vector", layout=lay
        )
        self.scale = widgets.FloatText(value=4.0, description="scale", layout=lay)
        self.neuron = widgets.BoundedIntText(
            value=0, min=0, max=10**7, description="neuron", layout=lay
        )
        self.value = widgets.FloatText(value=0.0, description="value", layout=lay)
        self.add_button = widgets.Button(description="add", button_style="primary")
        self.pop_button = widgets.Button(description="remove last")
        self.clear_button = widgets.Button(description="clear")
        self.listing = widgets.HTML()
        self.code = widgets.HTML()
        self.fields = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        fig = make_subplots(
            rows=1,
            cols=2,
            column_widths=[0.55, 0.45],
            horizontal_spacing=0.16,
            subplot_titles=("next token: clean vs intervened", "logit lens, last position"),
        )
        fig.add_bar(orientation="h", name="clean", marker_color=CLEAN, row=1, col=1)
        fig.add_bar(orientation="h", name="intervened", marker_color=ABLATED, row=1, col=1)
        fig.add_scatter(mode="lines+markers", name="clean lens", line_color=CLEAN, row=1, col=2)
        fig.add_scatter(
            mode="lines+markers", name="intervened lens", line_color=ABLATED, row=1, col=2
        )
        fig.update_layout(
            template=TEMPLATE,
            height=height,
            barmode="group",
            margin={"l": 90, "r": 20, "t": 150, "b": 50},  # a three-line title
            legend={"orientation": "h", "y": -0.18},
        )
        fig.update_xaxes(title_text="probability", row=1, col=1)
        fig.update_xaxes(title_text="layer", row=1, col=2)
        fig.update_yaxes(title_text="log p", row=1, col=2)
        buttons = widgets.HBox([self.add_button, self.pop_button, self.clear_button])
        super().__init__(
            fig, [self.prompt, self.source, self.kind, self.fields, buttons, self.listing]
        )
        self.widget.children = (*self.widget.children, self.code)
        d = Debouncer(self._refresh, wait, on_error=self.show_error)
        self.debouncers.append(d)
        self._recompute_soon = d
        self.prompt.observe(lambda _: d(), names="value")
        self.source.observe(lambda _: d(), names="value")
        self.kind.observe(lambda _: self._show_fields(), names="value")
        self.add_button.on_click(lambda _: self._guarded(self.add_from_controls))
        self.pop_button.on_click(lambda _: self._guarded(self.pop))
        self.clear_button.on_click(lambda _: self._guarded(self.clear))
        self._show_fields()
        self.result: Any = None
        for spec in specs:
            self.specs.append(dict(spec))
        self._list()
        self._refresh()

    # -- the list -----------------------------------------------------------------------------
    def _guarded(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as exc:  # a click handler has no cell to raise in
            self.show_error(exc)

    def _show_fields(self) -> None:
        per_kind = {
            "ablate": [self.layer, self.heads, self.mode],
            "knockout": [self.layer, self.edges, self.heads],
            "patch": [self.layer, self.site, self.positions],
            "steer": [self.layer, self.vector, self.scale, self.positions],
            "clamp": [self.layer, self.neuron, self.value, self.positions],
        }
        self.fields.children = per_kind[self.kind.value]

    def spec_from_controls(self) -> dict[str, Any]:
        """The spec the controls describe now (not yet added)."""
        kind, layer = self.kind.value, int(self.layer.value)
        if kind == "ablate":
            heads = parse_ints(self.heads.value, "heads")
            bad = [h for h in heads if not 0 <= h < self.n_heads]
            if not heads or bad:
                raise ControlValueError(
                    f"heads: give head indices in 0..{self.n_heads - 1}; got {self.heads.value!r}."
                )
            return {"kind": kind, "layer": layer, "heads": heads, "mode": self.mode.value}
        if kind == "knockout":
            spec: dict[str, Any] = {
                "kind": kind,
                "layer": layer,
                "edges": parse_edges(self.edges.value),
            }
            heads = parse_ints(self.heads.value, "heads")
            if heads:
                spec["heads"] = heads
            return spec
        if kind == "patch":
            return {
                "kind": kind,
                "layer": layer,
                "site": self.site.value,
                "positions": parse_ints(self.positions.value, "positions"),
            }
        if kind == "steer":
            if self.vector.value == "(none)":
                raise ControlValueError("steer: the lab was given no vectors (vectors=[...]).")
            return {
                "kind": kind,
                "layer": layer,
                "vector": self.vector.value,
                "scale": float(self.scale.value),
                "positions": parse_ints(self.positions.value, "positions"),
            }
        return {
            "kind": kind,
            "layer": layer,
            "neuron": int(self.neuron.value),
            "value": float(self.value.value),
            "positions": parse_ints(self.positions.value, "positions"),
        }

    def add(self, spec: Mapping[str, Any]) -> None:
        """Append ``spec`` and recompute."""
        if spec.get("kind") not in KINDS:
            raise ControlValueError(
                f"Unknown intervention kind {spec.get('kind')!r}; kinds: {KINDS}."
            )
        self.specs.append(dict(spec))
        self._list()
        self._recompute_soon()

    def add_from_controls(self) -> None:
        self.add(self.spec_from_controls())

    def pop(self) -> None:
        if self.specs:
            self.specs.pop()
        self._list()
        self._recompute_soon()

    def clear(self) -> None:
        self.specs.clear()
        self._list()
        self._recompute_soon()

    def _list(self) -> None:
        if not self.specs:
            self.listing.value = "<i>no interventions: add one</i>"
            return
        items = "".join(f"<li><code>{html.escape(repr(s))}</code></li>" for s in self.specs)
        self.listing.value = f"<ol style='margin:2px 0'>{items}</ol>"

    # -- recompute and draw --------------------------------------------------------------------
    def _refresh(self) -> None:
        self.status.value = '<span style="color:#888">computing…</span>'
        source = self.source.value or None
        self.update(self.compute(self.prompt.value, list(self.specs), source))
        self.status.value = ""

    def update(self, result: Any) -> None:
        """Show a :class:`~workbench.analysis.lab.LabResult` (in place)."""
        self.result = result
        top = result.top
        labels = [token_label(t) for t in top["token"]]
        y = list(range(len(labels)))
        lens = result.lens
        with self.figure.batch_update():
            c, i, lc, li = self.figure.data
            c.x, c.y = top["clean"].to_numpy(), y
            i.x, i.y = top["intervened"].to_numpy(), y
            lc.x, lc.y = lens["layer"].to_numpy(), lens["clean"].to_numpy()
            li.x, li.y = lens["layer"].to_numpy(), lens["intervened"].to_numpy()
            self.figure.layout.yaxis.update(
                tickmode="array", tickvals=y, ticktext=labels, autorange="reversed"
            )
            self.figure.layout.title.text = self._title(result)
        n = len(self.specs)
        self.code.value = (
            f"<details open><summary>Python for these {n} intervention(s)</summary>"
            f"<pre style='white-space:pre-wrap'>{html.escape(result.code)}</pre></details>"
        )

    def _title(self, result: Any) -> str:
        parts = [f"{len(self.specs)} intervention(s)"]
        if result.logit_diff is not None:
            a, b = result.logit_diff
            parts.append(f"logit diff {a:+.3f} → {b:+.3f}")
        clean, new = result.continuation
        cont = f"clean: {html.escape(clean[:60])!r}<br>intervened: {html.escape(new[:60])!r}"
        token = result.lens.attrs.get("token", "")
        parts.append(f"lens of {token_label(token)!r}")
        return " · ".join(parts) + "<br>" + cont

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_())
        static = static_bundle(self.static())
        listing = self.listing.value + self.code.value
        static["text/html"] = static["text/html"] + listing
        bundle.update(static)
        bundle["text/plain"] = "InterventionLab (static copy; run the notebook to interact)"
        return bundle
