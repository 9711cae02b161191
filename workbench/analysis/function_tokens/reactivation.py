"""Which features does a later function token reactivate? Contrastive prompts.

Two prompts differ in one content span ("…capital of Russia?" against "…capital of the
UK?"). At the later function token (":" or a newline, by default the last function token
of the prompt) a feature is

- *content-specific* when it fires there in prompt A and not in prompt B: it carries
  something of A's content, since the prompts differ in nothing else;
- *reactivated* when, in addition, it fired on A's differing content tokens: the
  function token has pulled that feature back up.

The table lists reactivated features first, then content-specific ones, then the rest of
the features firing at A's function token, each group by how much more they fire in A.

Example:
    >>> r = reactivated_features(model, sae, "Q: What is the capital of Russia?\\nA:",
    ...                          "Q: What is the capital of the UK?\\nA:", ft.ids)
    >>> r.table.head()     # feature, at_content_a, at_function_a, at_function_b, diff, ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from workbench.analysis.function_tokens.errors import NoFunctionTokenError
from workbench.models.model import WorkbenchModel
from workbench.sae.activations import residuals
from workbench.sae.model import SAE
from workbench.tracing.provenance import Provenance, provenance_for

__all__ = [
    "ReactivationResult",
    "differing_span",
    "function_positions",
    "reactivated_features",
    "steering_choice",
]


def function_positions(
    ids: Sequence[int], function_ids: Sequence[int] | torch.Tensor, *, skip_first: bool = True
) -> list[int]:
    """Positions of function tokens in ``ids`` (position 0, the sink, left out by default)."""
    fset = set(torch.as_tensor(function_ids).tolist())
    return [p for p, t in enumerate(ids) if t in fset and (p > 0 or not skip_first)]


def differing_span(a: Sequence[int], b: Sequence[int]) -> tuple[int, int, int, int]:
    """(start_a, end_a, start_b, end_b): the token spans where ``a`` and ``b`` differ.

    Example:
        >>> differing_span([1, 2, 3, 9], [1, 5, 6, 3, 9])
        (1, 2, 1, 3)
    """
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    q = 0
    while q < min(len(a), len(b)) - p and a[-1 - q] == b[-1 - q]:
        q += 1
    return p, len(a) - q, p, len(b) - q


@dataclass
class ReactivationResult:
    """Feature activations at A's content span and at both prompts' later function token."""

    layer: int
    tokens_a: list[str]
    tokens_b: list[str]
    content_positions: list[int]  # in A
    function_position_a: int
    function_position_b: int
    # feature, at_content_a, at_function_a, at_function_b, diff, content_specific,
    # reactivated; reactivated first, then content-specific, each by diff (A minus B)
    table: pd.DataFrame
    provenance: Provenance | None = field(default=None, repr=False)

    @property
    def reactivated(self) -> list[int]:
        return self.table.loc[self.table["reactivated"], "feature"].tolist()

    @property
    def content_specific(self) -> list[int]:
        return self.table.loc[self.table["content_specific"], "feature"].tolist()


def _codes(
    model: WorkbenchModel, sae: SAE, prompt: str
) -> tuple[list[int], list[str], torch.Tensor]:
    tokens = model.tokenize(prompt)
    ids = tokens.input_ids[:, : tokens.lengths[0]]
    x = residuals(model, ids, [sae.cfg.hook_layer], site=sae.cfg.site)[sae.cfg.hook_layer][0]
    with torch.inference_mode():
        f = sae.encode(x.to(sae.W_enc.device)).float().cpu()  # [s, d_sae]
    return ids[0].tolist(), tokens.strings[0], f


def reactivated_features(
    model: WorkbenchModel,
    sae: SAE,
    prompt_a: str,
    prompt_b: str,
    function_ids: Sequence[int] | torch.Tensor,
    *,
    function_position: int | None = None,
    top: int = 20,
) -> ReactivationResult:
    """Features that the later function token of ``prompt_a`` reactivates (see module doc).

    ``function_position`` picks the function token (a position counted from the end,
    e.g. -2, in both prompts); by default the last function token of each prompt.
    """
    ids_a, toks_a, fa = _codes(model, sae, prompt_a)
    ids_b, toks_b, fb = _codes(model, sae, prompt_b)
    s_a, e_a, _, _ = differing_span(ids_a, ids_b)
    if e_a <= s_a:
        raise NoFunctionTokenError(
            "The two prompts tokenize the same up to their lengths; they must differ in a "
            "content span (e.g. 'Russia' against 'the UK')."
        )
    fpos = set(function_positions(ids_a, function_ids))
    content = [p for p in range(s_a, e_a) if p not in fpos] or list(range(s_a, e_a))
    if function_position is None:
        pa = [p for p in function_positions(ids_a, function_ids) if p >= e_a]
        pb = [
            p
            for p in function_positions(ids_b, function_ids)
            if p >= len(ids_b) - (len(ids_a) - e_a)
        ]
        if not pa or not pb:
            raise NoFunctionTokenError(
                "No function token follows the differing span in both prompts; end them with "
                "one, e.g. '…?\\nA:', or pass function_position."
            )
        pos_a, pos_b = pa[-1], pb[-1]
    else:
        pos_a, pos_b = function_position % len(ids_a), function_position % len(ids_b)
    at_content = fa[content].max(0).values  # [d_sae]
    at_a, at_b = fa[pos_a], fb[pos_b]
    diff = at_a - at_b
    cand = torch.nonzero(at_a > 0).squeeze(-1)
    cand = cand[torch.argsort(diff[cand], descending=True, stable=True)]
    specific = at_b[cand] == 0
    react = specific & (at_content[cand] > 0)
    group = 2 - react.long() - specific.long()  # 0 reactivated, 1 content-specific, 2 rest
    order = cand[torch.argsort(group, stable=True)][:top]
    table = pd.DataFrame(
        {
            "feature": order.numpy(),
            "at_content_a": at_content[order].numpy(),
            "at_function_a": at_a[order].numpy(),
            "at_function_b": at_b[order].numpy(),
            "diff": diff[order].numpy(),
        }
    )
    table["content_specific"] = (table["at_function_a"] > 0) & (table["at_function_b"] == 0)
    table["reactivated"] = table["content_specific"] & (table["at_content_a"] > 0)
    prov = provenance_for(
        model,
        None,
        None,
        analysis="reactivation",
        prompts=[prompt_a, prompt_b],
        layer=sae.cfg.hook_layer,
    )
    return ReactivationResult(
        sae.cfg.hook_layer, toks_a, toks_b, content, pos_a, pos_b, table, prov
    )


def steering_choice(result: ReactivationResult) -> tuple[int, str]:
    """(feature, kind) to steer with from one layer's :func:`reactivated_features`.

    Its top reactivated feature, else its most content-specific one, else the feature that
    fires most at A's function token; ``kind`` says which (``"reactivated"``,
    ``"content-specific"`` or ``"firing"``). Choose the layer first: on SmolLM2 a middle
    layer's content-specific feature steers at 4x its largest activation, while layer 22's
    reactivated feature for the notebook's prompts needs 8x.

    Example:
        >>> feature, kind = steering_choice(reactivated_features(lm, sae, a, b, ids))
    """
    table = result.table
    if not len(table):
        raise NoFunctionTokenError(
            f"No SAE feature fires at prompt A's function token at layer {result.layer}; try "
            "another layer or other prompts."
        )
    first = table.iloc[0]  # the table lists reactivated, then content-specific, then the rest
    if bool(first["reactivated"]):
        kind = "reactivated"
    elif bool(first["content_specific"]):
        kind = "content-specific"
    else:
        kind = "firing"
    return int(first["feature"]), kind
