"""Reusable controls: prompt box, layer/head pickers, head toggles, token strip, threshold.

Controls are plain ipywidgets. They hold values, not models: a view (see
:mod:`workbench.widgets.views`) or a notebook wires a control to a recompute callable
with :func:`link`, which debounces it so that typing a prompt runs one forward pass
after the typing stops, not one per keystroke.

Example:
    >>> box = PromptBox("The capital of France is")
    >>> layer = layer_picker(30, value=3)
    >>> link(box, lambda text: print(len(text)), wait=0.4)   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import html
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import traitlets

from workbench.errors import WorkbenchError
from workbench.widgets.layout import token_label

__all__ = [
    "Debouncer",
    "HeadToggles",
    "PromptBox",
    "TokenStrip",
    "debounce",
    "head_picker",
    "layer_picker",
    "link",
    "threshold_slider",
]

log = logging.getLogger(__name__)

# Long enough to cover the gap between two keystrokes, short enough to feel live.
DEFAULT_WAIT_S = 0.4


class Debouncer:
    """Call ``fn`` once, ``wait`` seconds after the last of a burst of calls.

    Only the arguments of the last call are used. Inside a Jupyter kernel the call is
    scheduled on the kernel's asyncio loop (so it runs on the main thread, like a cell);
    elsewhere on a timer thread. ``wait=0`` calls through at once (tests, scripts).
    Calls never overlap: a burst that arrives while ``fn`` runs is run after it.

    Example:
        >>> d = Debouncer(print, wait=0)
        >>> d("hello")
        hello
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        wait: float = DEFAULT_WAIT_S,
        on_error: Callable[[BaseException], Any] | None = None,
    ):
        self.fn = fn
        self.wait = float(wait)
        self.on_error = on_error
        self.calls = 0  # how many times fn actually ran
        self._args: tuple[tuple, dict] | None = None
        self._handle: asyncio.TimerHandle | threading.Timer | None = None
        self._lock = threading.Lock()  # guards _args and _handle
        self._run_lock = threading.RLock()  # serialises runs of fn

    @property
    def pending(self) -> bool:
        """Whether a call is waiting to run."""
        return self._args is not None

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self._args = (args, kwargs)
            self._cancel()
            if self.wait <= 0:
                self._handle = None
            else:
                self._handle = self._schedule()
                return
        self.flush()

    def _schedule(self) -> asyncio.TimerHandle | threading.Timer:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            timer = threading.Timer(self.wait, self.flush)
            timer.daemon = True
            timer.start()
            return timer
        return loop.call_later(self.wait, self.flush)

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def cancel(self) -> None:
        """Drop the waiting call, if any."""
        with self._lock:
            self._cancel()
            self._args = None

    def flush(self) -> None:
        """Run the waiting call now (no-op if none is waiting)."""
        with self._run_lock:  # two runs never overlap; a burst during a run goes next
            with self._lock:
                if self._args is None:
                    return
                args, kwargs = self._args
                self._args = None
                self._cancel()
            self.calls += 1
            try:
                self.fn(*args, **kwargs)
            except Exception as exc:  # a callback has no caller to raise to
                if self.on_error is None:
                    log.exception("Debounced call to %r failed.", self.fn)
                else:
                    self.on_error(exc)


def debounce(
    wait: float = DEFAULT_WAIT_S,
) -> Callable[[Callable[..., Any]], Debouncer]:
    """Decorator form of :class:`Debouncer`.

    Example:
        >>> @debounce(0.3)
        ... def recompute(text): ...
    """

    def wrap(fn: Callable[..., Any]) -> Debouncer:
        return Debouncer(fn, wait)

    return wrap


def link(
    control: widgets.ValueWidget,
    fn: Callable[[Any], Any],
    *,
    wait: float = DEFAULT_WAIT_S,
    on_error: Callable[[BaseException], Any] | None = None,
) -> Debouncer:
    """Call ``fn(control.value)`` (debounced) whenever the control's value changes.

    Returns the :class:`Debouncer`, whose ``flush()`` forces the pending call.
    """
    d = Debouncer(fn, wait, on_error)
    control.observe(lambda change: d(change["new"]), names="value")
    return d


# -- simple controls ------------------------------------------------------------------------


class PromptBox(widgets.Textarea):
    """A prompt editor that reports every keystroke (pair it with :func:`link`).

    A text area, so a prompt keeps its newlines (code, chat turns): it grows to the
    prompt's line count, up to ``max_rows``.

    Example:
        >>> PromptBox("def f(x):\n    return x").value
        'def f(x):\n    return x'
    """

    def __init__(
        self, value: str = "", description: str = "prompt", max_rows: int = 8, **kwargs: Any
    ):
        kwargs.setdefault("layout", widgets.Layout(width="100%"))
        kwargs.setdefault("placeholder", "type a prompt")
        kwargs.setdefault("rows", min(max_rows, max(1, str(value).count("\n") + 1)))
        super().__init__(
            value=value,
            description=description,
            continuous_update=True,
            **kwargs,
        )


class ControlValueError(WorkbenchError, ValueError):
    """A control's starting value outside the range it offers (a notebook parameter, say)."""


def _check_index(value: Any, n: int, what: str) -> int:
    """``value`` as an index in ``0 .. n-1``, or :class:`ControlValueError` (never clamped)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ControlValueError(f"The {what} must be an int, got {type(value).__name__} {value!r}.")
    if not 0 <= value < n:
        raise ControlValueError(
            f"The {what} {value} is out of range: the model has {n} (valid: 0..{n - 1}). "
            "Pick a value in range (e.g. -p <parameter> 0 for a notebook)."
        )
    return value


def positive_int(value: Any, what: str) -> int:
    """``value`` if it is an int >= 1, else :class:`ControlValueError` (e.g. ``top_k``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ControlValueError(f"{what} must be an int >= 1, got {value!r}.")
    return value


def head_list(value: Any) -> list[int]:
    """``value`` as a list of head indices; a bare int (``heads=2``) is named, not guessed."""
    if isinstance(value, int | str) or not hasattr(value, "__iter__"):
        raise ControlValueError(
            f"Heads must be a list of head indices, e.g. [{value!r}]; got {value!r}."
        )
    return list(value)


def layer_picker(n_layers: int, value: int = 0, description: str = "layer") -> widgets.IntSlider:
    """A slider over ``range(n_layers)``; a ``value`` outside it is an error, not clamped."""
    _check_index(value, n_layers, description)
    return widgets.IntSlider(
        value=value,
        min=0,
        max=max(0, n_layers - 1),
        step=1,
        description=description,
        continuous_update=True,
    )


def head_picker(n_heads: int, value: int = 0, description: str = "head") -> widgets.Dropdown:
    """A drop-down of the heads ``0 .. n_heads-1``; a ``value`` outside it is an error."""
    _check_index(value, n_heads, description)
    return widgets.Dropdown(
        options=[(f"head {h}", h) for h in range(n_heads)],
        value=value,
        description=description,
        layout=widgets.Layout(width="180px"),
    )


def threshold_slider(
    value: float = 0.1,
    *,
    min: float = 0.0,  # noqa: A002 - mirrors the ipywidgets keyword
    max: float = 1.0,  # noqa: A002
    step: float = 0.01,
    description: str = "threshold",
) -> widgets.FloatSlider:
    """A float slider for a cut-off (probability, importance, attention weight)."""
    return widgets.FloatSlider(
        value=value,
        min=min,
        max=max,
        step=step,
        description=description,
        readout_format=".2f",
        continuous_update=True,
    )


class HeadToggles(widgets.HBox):
    """One toggle button per head; ``value`` is the sorted list of heads switched on.

    Example:
        >>> t = HeadToggles(4, value=[1, 3])
        >>> t.value
        [1, 3]
    """

    value = traitlets.List(traitlets.Int())

    def __init__(
        self, n_heads: int, value: Sequence[int] = (), description: str = "ablate", **kwargs: Any
    ):
        if isinstance(value, int | str):
            raise ControlValueError(
                f"Heads must be a list of head indices, e.g. [{value!r}]; got {value!r}."
            )
        for h in value:  # a head the model lacks would be dropped silently: refuse it
            _check_index(h, n_heads, "head")
        self.buttons = [
            widgets.ToggleButton(
                value=h in value,
                description=str(h),
                tooltip=f"ablate head {h}",
                layout=widgets.Layout(width="42px"),
            )
            for h in range(n_heads)
        ]
        label = widgets.Label(description, layout=widgets.Layout(width="90px"))
        super().__init__([label, *self.buttons], **kwargs)
        self.layout.flex_flow = "row wrap"
        self.value = sorted(int(h) for h in value)
        for b in self.buttons:
            b.observe(self._from_buttons, names="value")

    def _from_buttons(self, _change: dict) -> None:
        if not getattr(self, "_syncing", False):
            self.value = [h for h, b in enumerate(self.buttons) if b.value]

    @traitlets.observe("value")
    def _to_buttons(self, change: dict) -> None:
        # Setting several buttons must not report the half-way states ([2] on the way from
        # [1, 2] to []) as values of their own: each would start a recompute.
        on = set(change["new"])
        self._syncing = True
        try:
            for h, b in enumerate(self.buttons):
                if b.value != (h in on):
                    b.value = h in on
        finally:
            self._syncing = False


class TokenStrip(widgets.HTML):
    """Tokens in a row, shaded by a value per token; hovering a token shows its value.

    Example:
        >>> strip = TokenStrip(["The", " cat"], [0.9, 0.1], label="attention")
        >>> strip.update(["The", " dog"], [0.2, 0.8])
    """

    def __init__(
        self,
        tokens: Sequence[str] = (),
        values: Sequence[float] | None = None,
        *,
        label: str = "value",
        fmt: str = ".3f",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.label = label
        self.fmt = fmt
        self.update(tokens, values)

    def update(self, tokens: Sequence[str], values: Sequence[float] | None = None) -> None:
        """Show ``tokens`` with ``values`` (one per token; ``None`` for no shading)."""
        if values is not None and len(values) != len(tokens):
            raise ValueError(f"TokenStrip got {len(tokens)} tokens but {len(values)} values.")
        self.tokens = list(tokens)
        self.values = None if values is None else [float(v) for v in values]
        self.value = token_strip_html(self.tokens, self.values, label=self.label, fmt=self.fmt)


def show_token(tok: str) -> str:
    """A token made visible: spaces ``·``, newlines ``⏎``, tabs ``⇥``, no-break spaces ``⍽``.

    Unlike ``repr`` it never shows a Python escape such as ``\\xa0``. For labels that must
    also stay short, see :func:`workbench.widgets.layout.token_label`.
    """
    return token_label(tok, max_chars=10**9)


def token_strip_html(
    tokens: Sequence[str],
    values: Sequence[float] | None,
    *,
    label: str = "value",
    fmt: str = ".3f",
) -> str:
    """The HTML of a :class:`TokenStrip` (also usable on its own, e.g. in a static export)."""
    top = max((abs(v) for v in values), default=0.0) if values else 0.0
    spans = []
    for i, tok in enumerate(tokens):
        if values is None:
            shade, tip = 0.0, f"position {i}: {tok!r}"
        else:
            v = values[i]
            shade = abs(v) / top if top > 0 else 0.0
            tip = f"position {i}: {tok!r}\n{label} = {v:{fmt}}"
        spans.append(
            f'<span class="wb-token" data-pos="{i}" title="{html.escape(tip)}" '
            f'style="background: rgba(31,119,180,{shade:.3f}); padding: 1px 3px; '
            f"margin: 1px; border: 1px solid #ccc; border-radius: 3px; font-family: monospace; "
            f'color: {"white" if shade > 0.6 else "black"}">'
            f"{html.escape(show_token(tok))}</span>"
        )
    return f'<div class="wb-token-strip" style="line-height: 1.9">{"".join(spans)}</div>'
