"""Widgets: controls and live plotly views that take results and callables, never models.

Reusable pieces live here; an analysis's own widgets live next to them in
``workbench/widgets/<analysis>_view.py`` and build on these.

Example:
    >>> import workbench.widgets as wbw
    >>> view = wbw.NextTokenView(compute=next_tokens, prompt="The capital of France is")
    >>> view          # live in JupyterLab; a static plotly figure in an HTML export
"""

from workbench.widgets.controls import (
    ControlValueError,
    Debouncer,
    HeadToggles,
    PromptBox,
    TokenStrip,
    debounce,
    head_list,
    head_picker,
    layer_picker,
    link,
    positive_int,
    threshold_slider,
)
from workbench.widgets.lab_view import InterventionLab
from workbench.widgets.static import static_bundle, static_html
from workbench.widgets.views import (
    AblationView,
    AttentionView,
    LogitLensView,
    NextTokenView,
    View,
    ViewDataError,
    top_tokens,
)

__all__ = [
    "AblationView",
    "AttentionView",
    "ControlValueError",
    "Debouncer",
    "HeadToggles",
    "InterventionLab",
    "LogitLensView",
    "NextTokenView",
    "PromptBox",
    "TokenStrip",
    "View",
    "ViewDataError",
    "debounce",
    "head_list",
    "head_picker",
    "layer_picker",
    "link",
    "positive_int",
    "static_bundle",
    "static_html",
    "threshold_slider",
    "top_tokens",
]
