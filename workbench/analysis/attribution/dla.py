"""Direct logit attribution: what each head, each MLP and the embedding write straight into
a logit difference at one position.

The residual stream at the last layer is an exact sum of parts: the embedding, and per
layer each head's output (through its out-projection and any post-attention norm, per
token, as in the route decomposition), the out-projection's bias, and the MLP's output.
Each part is read through the final norm **with the norm's scale frozen at the clean
run's value** (the standard approximation; it makes the map linear), then through the
unembedding direction ``W_U[good] - W_U[bad]``. With the scale frozen, the parts add up
exactly to the logit difference the model computes before any final logit soft-cap
(Gemma-2's soft-cap is not linear; ``actual`` is the capped value, ``uncapped`` the sum).

Example:
    >>> dla = direct_logit_attribution(model, "When Mary and John went to the store, John "
    ...                                "gave a drink to", LogitDiff(" Mary", " John",
    ...                                tokenizer=model.tokenizer))
    >>> dla.heads.shape        # [layers, heads]
    >>> dla.total, dla.uncapped
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from workbench.analysis.attribution.metrics import AttributionError, LogitDiff
from workbench.analysis.routes.decomposition import _queries, forward_pass
from workbench.models.model import Tokens, WorkbenchModel

__all__ = ["DLAResult", "direct_logit_attribution"]


@dataclass
class DLAResult:
    """Direct contributions to a logit difference at one position.

    Attributes:
        heads: ``[layers, heads]``; mlps, attn_bias: ``[layers]``; embed: the embedding's
            (with position embeddings) contribution; norm_bias: the final norm's bias term.
        total: the sum of every part (= ``uncapped``, up to float error).
        uncapped: the logit difference before any final soft-cap; actual: as the model
            gives it.
    """

    heads: torch.Tensor
    mlps: torch.Tensor
    attn_bias: torch.Tensor
    embed: float
    norm_bias: float
    total: float
    uncapped: float
    actual: float
    position: int
    token: str
    metric_name: str
    note: str = (
        "Each part is read through the final norm with its scale frozen at the clean run's "
        "value, so the parts add up to the (uncapped) logit difference."
    )

    def table(self) -> pd.DataFrame:
        """One row per part (embedding, every head, bias, MLP), largest magnitude first."""
        rows = [("embed", -1, -1, self.embed)]
        L, H = self.heads.shape
        for layer in range(L):
            rows += [("head", layer, h, float(self.heads[layer, h])) for h in range(H)]
            if self.attn_bias[layer] != 0:
                rows.append(("attn bias", layer, -1, float(self.attn_bias[layer])))
            rows.append(("mlp", layer, -1, float(self.mlps[layer])))
        if self.norm_bias:
            rows.append(("final norm bias", -1, -1, self.norm_bias))
        df = pd.DataFrame(rows, columns=["component", "layer", "head", "contribution"])
        order = df["contribution"].abs().sort_values(ascending=False).index
        return df.reindex(order).reset_index(drop=True)


def direct_logit_attribution(
    model: WorkbenchModel, prompt: str | Tokens, metric: LogitDiff, *, position: int = -1
) -> DLAResult:
    """Each part's direct contribution to ``metric`` (a :class:`LogitDiff`) at ``position``.

    Raises:
        AttributionError: a metric that is not a logit difference (a log-probability is
            not a sum of parts).
        UndecomposableAttentionError: attention that is not a sum of per-head parts.
    """
    if not isinstance(metric, LogitDiff):
        raise AttributionError(
            "Direct logit attribution splits a logit difference; pass LogitDiff(good, bad). "
            f"Got {type(metric).__name__}."
        )
    fp = forward_pass(model, prompt)
    (p,) = _queries(fp, [position])
    final = fp.mlp_whole(fp.n_layers - 1)[p]  # [d]
    apply, norm_bias = model.frozen_final_norm(final)
    w_u = model.unembed.weight.detach()
    direction = metric.direction(w_u).to(final.device)  # [d]
    b_u = getattr(model.unembed, "bias", None)
    bias_u = 0.0
    if b_u is not None:
        bias_u = float(b_u[metric.good_id] - b_u[metric.bad_id])

    def read(part: torch.Tensor) -> torch.Tensor:
        return apply(part.to(final.device)) @ direction

    L, H = fp.n_layers, fp.n_heads
    heads = torch.zeros(L, H)
    mlps = torch.zeros(L)
    attn_bias = torch.zeros(L)
    for layer in range(L):
        a = fp.query_weights(layer, [p])  # [H, 1, s]
        u = fp.value_outputs(layer)  # [H, s, d]
        per_head = torch.bmm(a.to(u.device), u)[:, 0]  # [H, d]
        heads[layer] = read(per_head).cpu()
        b = fp.bias_part(layer)
        if b is not None:
            attn_bias[layer] = float(read(b[p]))
        mlps[layer] = float(read(fp.mlp_out[layer, p].float()))
    embed = float(read(fp.resid_pre[0, p].float()))
    nb = float(norm_bias.to(final.device) @ direction) + bias_u
    total = float(heads.sum() + mlps.sum() + attn_bias.sum()) + embed + nb
    with torch.no_grad():
        x = model.final_norm(final[None].to(model.device, model.dtype))
        raw = model.unembed(x).float()[0]
    uncapped = float(raw[metric.good_id] - raw[metric.bad_id])
    capped = model.adapter.softcap_logits(raw)
    actual = float(capped[metric.good_id] - capped[metric.bad_id])
    return DLAResult(
        heads=heads,
        mlps=mlps,
        attn_bias=attn_bias,
        embed=embed,
        norm_bias=nb,
        total=total,
        uncapped=uncapped,
        actual=actual,
        position=p,
        token=fp.tokens[p],
        metric_name=metric.name,
    )
