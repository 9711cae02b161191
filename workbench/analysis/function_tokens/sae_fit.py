"""How well each SAE reconstructs the text being analysed, not only its training text.

An SAE trained on one corpus can fit another badly; then the token→feature graph and
C(k) say little about the model. :func:`sae_fit` measures FVU, L0 and dead features on
any texts through :mod:`workbench.sae`'s public API (the same metrics as training uses,
the same secondary-sink rows left out), and :func:`fit_warning` says plainly when the fit
is too poor.

Threshold: an FVU above :data:`POOR_FIT_FVU` (0.5) means the SAE misses more than half of
the activations' variance on that text: its features describe less than half of what
the layer carries, so who reaches which feature (C(k)) is not a statement about the
model's representation.

Example:
    >>> fit = sae_fit(lm, saes, texts, n_tokens=4_000)
    >>> fit[["fvu", "l0", "dead_fraction", "poor_fit"]]
    >>> print(fit_warning(fit))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from workbench.documents import as_documents
from workbench.models.model import WorkbenchModel
from workbench.sae import SAE, drop_outliers, evaluate_sae, harvest

__all__ = ["POOR_FIT_FVU", "fit_warning", "sae_fit"]

POOR_FIT_FVU = 0.5


def sae_fit(
    model: WorkbenchModel,
    saes: Mapping[int, SAE],
    texts: Sequence[str],
    *,
    n_tokens: int = 4_000,
    length: int = 128,
    batch_size: int = 8,
    outlier_norm_ratio: float | None = 20.0,
    threshold: float = POOR_FIT_FVU,
    progress: bool = True,
) -> pd.DataFrame:
    """FVU, L0 and dead features of every SAE on ``n_tokens`` tokens of ``texts``.

    Returns one row per layer (index ``layer``): ``fvu``, ``l0``, ``dead``,
    ``dead_fraction``, ``n_tokens``, ``outliers_dropped`` and ``poor_fit``
    (``fvu > threshold``).
    """
    texts = as_documents(texts, "sae_fit")
    sites = {sae.cfg.site for sae in saes.values()}
    store = harvest(
        model,
        texts,
        sorted(saes),
        n_tokens=n_tokens,
        length=length,
        batch_size=batch_size,
        site=sites.pop() if len(sites) == 1 else "resid_post",
        progress=progress,
    )
    rows = []
    for layer, sae in sorted(saes.items()):
        acts, dropped = drop_outliers(store.acts[layer].to(sae.W_enc.device), outlier_norm_ratio)
        m = evaluate_sae(sae, acts)
        rows.append(
            {
                "layer": layer,
                "fvu": m["fvu"],
                "l0": m["l0"],
                "dead": m["dead"],
                "dead_fraction": m["dead"] / sae.cfg.d_sae,
                "n_tokens": int(acts.shape[0]),
                "outliers_dropped": dropped,
                "poor_fit": m["fvu"] > threshold,
            }
        )
    return pd.DataFrame(rows).set_index("layer")


def fit_warning(fit: pd.DataFrame, *, threshold: float = POOR_FIT_FVU) -> str:
    """A sentence naming the layers whose SAE fits the analysed text poorly, else ``""``.

    ``fit`` has an ``fvu`` column (or ``fvu (analysed)``) indexed by layer.
    """
    col = "fvu (analysed)" if "fvu (analysed)" in fit else "fvu"
    bad = fit[fit[col] > threshold]
    if not len(bad):
        return ""
    layers = ", ".join(f"layer {i} (FVU {v:.2f})" for i, v in bad[col].items())
    return (
        f"The SAEs of {layers} leave more than {threshold:.0%} of the variance unexplained on "
        "the analysed text: C(k) and the degrees at those layers describe the SAE more than "
        "the model. Train SAEs on this text (more sae_tokens) or use pretrained ones that fit."
    )
