"""Logit lens: read the residual stream through the final norm and the unembedding.

Example:
    >>> cap = capture(model, "The capital of France is", what=["resid_post"])
    >>> df = logit_lens_table(model, cap, k=1)   # one row per (layer, position)
"""

from __future__ import annotations

import pandas as pd
import torch

from workbench.models.model import WorkbenchModel

__all__ = ["logit_lens", "logit_lens_table", "unembed"]


def unembed(model: WorkbenchModel, resid: torch.Tensor) -> torch.Tensor:
    """Logits [..., vocab] of residual vectors [..., d_model], as the model's head computes them."""
    with torch.no_grad():
        return model.logits_of(resid)


def logit_lens(model: WorkbenchModel, resid: torch.Tensor) -> torch.Tensor:
    """Log-probabilities [..., vocab] of residual vectors [..., d_model]."""
    return torch.log_softmax(unembed(model, resid).float(), dim=-1)


def logit_lens_table(model: WorkbenchModel, cap, k: int = 5, prompt: int = 0) -> pd.DataFrame:
    """Top-``k`` lens tokens per (layer, position) of one prompt of a capture.

    Columns: layer, position, token (the input token there), rank, top_token, prob.
    """
    n = cap.tokens.lengths[prompt]
    resid = cap.resid_post[:, prompt, :n]  # [L, seq, d_model]
    probs = logit_lens(model, resid).exp()  # [L, seq, vocab]
    top_p, top_i = probs.topk(k, dim=-1)
    rows = []
    toks = cap.tokens.strings[prompt]
    for li, layer in enumerate(cap.layers):
        for pos in range(n):
            for r in range(k):
                rows.append(
                    {
                        "layer": layer,
                        "position": pos,
                        "token": toks[pos],
                        "rank": r,
                        "top_token": model.tokenizer.decode([int(top_i[li, pos, r])]),
                        "prob": float(top_p[li, pos, r]),
                    }
                )
    return pd.DataFrame(rows)
