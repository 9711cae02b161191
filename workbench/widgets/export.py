"""Shared copies: an executed notebook as one HTML page that needs no kernel and no network.

:func:`notebook_page` turns an executed notebook into a self-contained page:

- **no requests**: nbconvert's ``lab`` template loads require.js and MathJax from a CDN
  (and mermaid when a diagram is present); those tags are removed. Math in markdown
  cells (``$q\\cdot k/\\sqrt d$``) is rendered to HTML with Unicode and ``<sub>``/``<sup>``
  (:func:`latex_to_html`), so it reads offline. plotly.js is inlined once, compressed
  (about 2 MB);
- **progress bars in their final state**: a tqdm bar is a widget, and without widget
  state nbconvert shows its first text, "0%". The widget state saved with the notebook
  holds the last one, so each bar becomes a static bar with its final text
  ("100% 3001/3001 [00:52<00:00, loss=0.0123]");
- **every view's static copy**: widget views fall back to the static copies stored with
  them (see :mod:`.static`); figures shown as plotly JSON only get one.

Example:
    >>> nb = nbformat.read("executed.ipynb", as_version=4)  # doctest: +SKIP
    >>> page = notebook_page(nb, name="executed")  # doctest: +SKIP
    >>> external_urls(page)  # doctest: +SKIP
    []
"""

from __future__ import annotations

import html
import re
from typing import Any

from workbench.widgets.static import add_static_copies, ensure_plotlyjs

__all__ = [
    "external_urls",
    "latex_to_html",
    "notebook_page",
    "offline_page",
    "progress_outputs",
    "render_math",
]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
BAR_COLOURS = {"success": "#5cb85c", "danger": "#d9534f", "warning": "#f0ad4e", "info": "#5bc0de"}

# -- math -------------------------------------------------------------------------------------

_SYMBOLS = {
    "cdot": "·", "times": "×", "to": "→", "rightarrow": "→", "leftarrow": "←",
    "gets": "←", "Rightarrow": "⇒", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥",
    "ne": "≠", "neq": "≠", "approx": "≈", "sim": "∼", "in": "∈", "infty": "∞", "sum": "∑",
    "prod": "∏", "pm": "±", "lVert": "‖", "rVert": "‖", "Vert": "‖", "|": "‖", "lvert": "|",
    "rvert": "|", "langle": "⟨", "rangle": "⟩", "ldots": "…", "dots": "…", "cdots": "⋯",
    "partial": "∂", "nabla": "∇", "propto": "∝", "circ": "∘", "top": "⊤", "ell": "ℓ",
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε",
    "zeta": "ζ", "eta": "η", "theta": "θ", "kappa": "κ", "lambda": "λ", "mu": "μ", "nu": "ν",
    "xi": "ξ", "pi": "π", "rho": "ρ", "sigma": "σ", "tau": "τ", "phi": "φ", "varphi": "φ",
    "chi": "χ", "psi": "ψ", "omega": "ω", "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ",
    "Lambda": "Λ", "Pi": "Π", "Sigma": "Σ", "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω",
    ",": "\u2009", ";": "\u2005", ":": "\u2005", "quad": "\u2003", "qquad": "\u2003\u2003",
    "!": "", "left": "", "right": "", "big": "", "Big": "", "{": "{", "}": "}", "%": "%",
    "_": "_", "$": "$", "#": "#", "&": "&",
}  # fmt: skip
_WORDS = {"max", "min", "log", "exp", "softmax", "argmax", "argmin", "sin", "cos", "tanh", "lim"}
_TEXT = {"text", "mathrm", "textrm", "operatorname", "mathbf", "textbf", "mathit", "mathcal"}
_INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\s)([^$\n]+?)(?<![\s\\])\$(?!\d)")
_DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.S)


def _group(src: str, i: int) -> tuple[str, int]:
    """The argument starting at ``src[i]``: a ``{...}`` group or one character/command."""
    while i < len(src) and src[i] == " ":
        i += 1
    if i >= len(src):
        return "", i
    if src[i] == "{":
        depth, j = 1, i + 1
        while j < len(src) and depth:
            depth += {"{": 1, "}": -1}.get(src[j], 0)
            j += 1
        return src[i + 1 : j - 1], j
    if src[i] == "\\":
        m = re.match(r"\\([A-Za-z]+|.)", src[i:])
        if m:
            return m.group(0), i + len(m.group(0))
    return src[i], i + 1


def latex_to_html(expr: str) -> str:
    """A small LaTeX math expression as HTML: Unicode symbols, ``<sub>``, ``<sup>``, ``√``.

    Covers what notebooks write inline (Greek letters, norms, arrows, ``\\sqrt``,
    ``\\text``, sub- and superscripts); an unknown command keeps its name.

    Example:
        >>> latex_to_html(r"q\\cdot k_{\\text{sink}}/\\sqrt d")
        'q·k<sub>sink</sub>/√d'
    """
    out: list[str] = []
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch in "_^":
            arg, i = _group(expr, i + 1)
            tag = "sub" if ch == "_" else "sup"
            out.append(f"<{tag}>{latex_to_html(arg)}</{tag}>")
        elif ch == "\\":
            m = re.match(r"\\([A-Za-z]+|.)", expr[i:])
            name = m.group(1) if m else ""
            i += len(m.group(0)) if m else 1
            if name == "sqrt":
                arg, i = _group(expr, i)
                inner = latex_to_html(arg)
                out.append(f"√{inner}" if len(arg) <= 1 else f"√({inner})")
            elif name == "frac":
                num, i = _group(expr, i)
                den, i = _group(expr, i)
                out.append(f"({latex_to_html(num)})/({latex_to_html(den)})")
            elif name in _TEXT:
                arg, i = _group(expr, i)
                out.append(html.escape(arg) if name.startswith("text") else latex_to_html(arg))
            elif name in _SYMBOLS:
                out.append(html.escape(_SYMBOLS[name]))
            elif name in _WORDS:
                out.append(name)
            else:
                out.append(html.escape(name))
        elif ch in "{} ":  # braces group, and spaces do not show in math
            i += 1
        else:
            out.append(html.escape(ch))
            i += 1
    return "".join(out)


def _math_span(expr: str, display: bool = False) -> str:
    style = "font-family: 'Latin Modern Math', 'STIX Two Math', 'Cambria Math', serif"
    body = latex_to_html(expr.strip())
    if display:
        return f'<div class="wb-math" style="text-align:center; {style}">{body}</div>'
    return f'<span class="wb-math" style="{style}">{body}</span>'


def render_math(markdown: str) -> str:
    """``markdown`` with its ``$...$`` and ``$$...$$`` math rendered as HTML (no MathJax).

    Code spans and fenced blocks are left alone.
    """
    parts = re.split(r"(```.*?```|`[^`\n]*`)", markdown, flags=re.S)
    for k in range(0, len(parts), 2):
        text = _DISPLAY_MATH.sub(lambda m: _math_span(m.group(1), display=True), parts[k])
        parts[k] = _INLINE_MATH.sub(lambda m: _math_span(m.group(1)), text)
    return "".join(parts)


# -- progress bars ----------------------------------------------------------------------------


def _widget_states(nb: Any) -> dict[str, dict[str, Any]]:
    meta = (nb.get("metadata") or {}).get("widgets") or {}
    state = (meta.get(WIDGET_STATE) or {}).get("state") or {}
    return {k: v for k, v in state.items() if isinstance(v, dict)}


def _model(states: dict[str, Any], ref: Any) -> dict[str, Any] | None:
    key = str(ref).removeprefix("IPY_MODEL_")
    return states.get(key)


def _progress(states: dict[str, Any], model_id: str) -> tuple[str, float, str] | None:
    """``(text, fraction, bar_style)`` of a tqdm-style bar, or ``None`` if it is not one."""
    box = states.get(model_id) or {}
    if box.get("model_name") != "HBoxModel":
        return None
    kids = [_model(states, c) for c in (box.get("state") or {}).get("children") or []]
    names = [k.get("model_name") if k else None for k in kids]
    if "FloatProgressModel" not in names and "IntProgressModel" not in names:
        return None
    texts, fraction, style = [], 1.0, ""
    for kid, name in zip(kids, names, strict=True):
        st = (kid or {}).get("state") or {}
        if name in ("FloatProgressModel", "IntProgressModel"):
            top = float(st.get("max") or 0)
            fraction = float(st.get("value") or 0) / top if top else 1.0
            style = str(st.get("bar_style") or "")
        elif name in ("HTMLModel", "LabelModel"):
            texts.append(html.unescape(re.sub(r"<[^>]+>", "", str(st.get("value") or ""))))
    text = " ".join(t.replace("\u2007", " ").strip() for t in texts if t.strip())
    return text, max(0.0, min(1.0, fraction)), style


def _bar_html(text: str, fraction: float, style: str) -> str:
    colour = BAR_COLOURS.get(style, "#2196f3")
    return (
        '<div class="wb-progress" style="display:flex; align-items:center; gap:8px; '
        'font-family:monospace; font-size:12px">'
        '<div style="width:240px; height:12px; background:#eee; border-radius:2px">'
        f'<div style="width:{100 * fraction:.1f}%; height:100%; background:{colour}; '
        'border-radius:2px"></div></div>'
        f"<span>{html.escape(text)}</span></div>"
    )


def progress_outputs(nb: Any) -> int:
    """Give every progress-bar widget output its final state as HTML and text; return how many.

    Reads the widget state saved with the notebook (``metadata.widgets``), so call it before
    that state is dropped.
    """
    states = _widget_states(nb)
    done = 0
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            data = out.get("data") or {}
            view = data.get(WIDGET_VIEW)
            if not isinstance(view, dict):
                continue
            found = _progress(states, str(view.get("model_id")))
            if found is None:
                continue
            text, fraction, style = found
            data["text/plain"] = text
            data["text/html"] = _bar_html(text, fraction, style)
            done += 1
    return done


# -- the page ---------------------------------------------------------------------------------

_REMOTE_SCRIPT = re.compile(
    r"<script\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//[^>]*>\s*</script>", re.I | re.S
)
_REMOTE_LINK = re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//[^>]*>", re.I)
_MERMAID = re.compile(
    r"<script type=\"module\">(?:(?!</script>).)*?mermaid(?:(?!</script>).)*</script>", re.S
)
_MATHJAX_CONFIG = re.compile(r"<script type=\"text/x-mathjax-config\">.*?</script>", re.S)
_URL_ATTR = re.compile(
    r"<(?:script|link|img|iframe|source|audio|video|embed)\b[^>]*?\b(?:src|href)\s*=\s*"
    r"[\"']?((?:https?:)?//[^\"'\s>]+)",
    re.I,
)
_CSS_URL = re.compile(r"(?:@import\s+|url\(\s*)[\"']?((?:https?:)?//[^\"')\s]+)", re.I)
_IMPORT = re.compile(r"\bimport\s*\(\s*[\"']((?:https?:)?//[^\"']+)", re.I)


def external_urls(page: str) -> list[str]:
    """Every URL that ``page`` would fetch when opened: script/link/img sources, CSS
    ``url()``/``@import`` and dynamic ``import()``; links a reader may click are not counted.
    """
    return sorted({m.group(1) for rx in (_URL_ATTR, _CSS_URL, _IMPORT) for m in rx.finditer(page)})


def offline_page(page: str) -> str:
    """An nbconvert page without its CDN scripts (require.js, MathJax, mermaid's loader)."""
    page = _REMOTE_SCRIPT.sub("", page)
    page = _REMOTE_LINK.sub("", page)
    page = _MATHJAX_CONFIG.sub("", page)
    if "jp-Mermaid" not in page.split("<body", 1)[-1]:
        page = _MERMAID.sub("", page)
    return ensure_plotlyjs(page)


def notebook_page(nb: Any, *, name: str = "notebook") -> str:
    """The HTML page of an executed notebook ``nb`` (changed in place): no kernel, no network.

    Progress bars take their final state, widget state is dropped (each view falls back to
    the static copy stored with it), plotly-JSON-only figures get a static copy, markdown
    math is rendered without MathJax, and the CDN scripts nbconvert adds are removed.
    """
    from nbconvert import HTMLExporter

    progress_outputs(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data") or {}
            if WIDGET_VIEW in data and len(data) > 1:
                del data[WIDGET_VIEW]  # its static copy (text/html) or text is shown instead
        if cell.cell_type == "markdown":
            cell.source = render_math(cell.source)
    add_static_copies(nb)
    page, _ = HTMLExporter(template_name="lab").from_notebook_node(
        nb, resources={"metadata": {"name": name}}
    )
    return offline_page(page)
