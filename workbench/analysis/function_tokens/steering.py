"""Steer with an SAE feature at a function token, against the reviewers' controls.

The feature's decoder row, times a strength, is added to the residual stream that the SAE
reads (layer ``L``'s output) at one position of the prompt, and the continuation is
generated greedily. Three positions are compared with the unsteered baseline:

- ``last function token``: the paper's condition;
- ``content token``: the same steering at the last content token before it;
- ``distant function token``: the same steering at the first function token of the prompt.

Generation is a short loop of :func:`workbench.run_with` calls without a KV cache: every
step reruns the prompt with the edit, so the edit stays at its prompt position while
new tokens are appended. Each call is its own trace, so the model is left unchanged. The
baseline and the three conditions run as one batch (each steering edits only its row), so
a step reads the weights once; on a CPU that is what a small forward pass costs.

Example:
    >>> steering_table(model, sae, "Q: What is the capital of Russia?\\nA:", feature=123,
    ...                strength=8.0, function_ids=ft.ids)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from workbench.analysis.function_tokens.errors import NoFunctionTokenError
from workbench.analysis.function_tokens.reactivation import function_positions
from workbench.models.model import WorkbenchModel
from workbench.sae.model import SAE
from workbench.tracing.capture import run_with
from workbench.tracing.interventions import Steering

__all__ = [
    "RowSteering",
    "control_positions",
    "feature_steering",
    "greedy_generate",
    "greedy_generate_batch",
    "steered_text",
    "steering_table",
]


@dataclass
class RowSteering(Steering):
    """:class:`Steering` restricted to some rows of the batch (``rows=None``: every row).

    Several conditions then run as one batch, so each generation step reads the weights
    once for all of them.
    """

    rows: list[int] | None = None

    def _bind(self, model: Any, tokens: Any) -> None:
        super()._bind(model, tokens)
        if self.rows is not None:
            keep = set(self.rows)
            self._rows = [r if i in keep else [] for i, r in enumerate(self._rows)]


def feature_steering(
    sae: SAE,
    feature: int,
    strength: float,
    positions: Sequence[int],
    rows: Sequence[int] | None = None,
) -> RowSteering:
    """A :class:`Steering` adding ``strength * W_dec[feature]`` where the SAE reads.

    ``strength`` is in units of the feature's activation (its decoder row is the
    direction one unit of activation writes). ``rows`` limits it to those batch rows.
    """
    sae.direction(feature)  # validates the index
    vec = sae.W_dec[feature].detach().float().cpu()
    return RowSteering(
        layer=sae.cfg.hook_layer,
        vector=vec,
        positions=list(positions),
        scale=float(strength),
        at="resid_post" if sae.cfg.site == "resid_post" else "resid_pre",
        rows=None if rows is None else list(rows),
    )


def greedy_generate_batch(
    model: WorkbenchModel,
    ids: torch.Tensor,
    *,
    max_new_tokens: int = 12,
    steering: Sequence[Steering] = (),
    stop_at_eos: bool = True,
) -> list[list[int]]:
    """Greedy continuations of the rows of ``ids`` [b, s] (unpadded), one trace per step.

    Each row's continuation ends at its first end-of-text token when ``stop_at_eos``.
    Steering positions must be absolute (>= 0) so they stay on the prompt as it grows.
    """
    for st in steering:
        if st.positions is None or any(p < 0 for p in st.positions):
            raise NoFunctionTokenError(
                "Steering positions must be absolute (>= 0) for generation; negative "
                f"positions would move as tokens are appended. Got {st.positions}."
            )
    eos = model.tokenizer.eos_token_id
    new = [[] for _ in range(ids.shape[0])]
    done = [False] * ids.shape[0]
    for _ in range(max_new_tokens):
        logits = run_with(model, ids, list(steering))  # [b, s, vocab]
        nxt = logits[:, -1].argmax(-1)  # [b]
        for i, t in enumerate(nxt.tolist()):
            if not done[i]:
                new[i].append(t)
                done[i] = stop_at_eos and t == eos
        if all(done):
            break
        ids = torch.cat([ids, nxt[:, None].to(ids.device)], dim=1)
    return new


def greedy_generate(
    model: WorkbenchModel,
    prompt: str | torch.Tensor,
    *,
    max_new_tokens: int = 12,
    steering: Sequence[Steering] = (),
    stop_at_eos: bool = True,
) -> list[int]:
    """Greedy continuation token ids of one ``prompt`` with ``steering`` at every step."""
    ids = model.tokenize(prompt).input_ids if isinstance(prompt, str) else prompt.view(1, -1)
    return greedy_generate_batch(
        model, ids, max_new_tokens=max_new_tokens, steering=steering, stop_at_eos=stop_at_eos
    )[0]


def control_positions(ids: Sequence[int], function_ids: Sequence[int] | torch.Tensor) -> dict:
    """The three steering positions: last function token, a content token, a distant one."""
    fpos = function_positions(ids, function_ids)
    if len(fpos) < 2:
        raise NoFunctionTokenError(
            f"The prompt has {len(fpos)} function token(s) after the sink; the controls need "
            "two (the last one, and a distant one). Use a longer prompt."
        )
    last = fpos[-1]
    fset = set(fpos)
    content = [p for p in range(1, last) if p not in fset]
    if not content:
        raise NoFunctionTokenError(
            "The prompt has no content token before its last function token."
        )
    return {
        "last function token": last,
        "content token": content[-1],
        "distant function token": fpos[0],
    }


def steering_table(
    model: WorkbenchModel,
    sae: SAE,
    prompt: str,
    *,
    feature: int,
    strength: float,
    function_ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int = 12,
    positions: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Baseline and steered continuations: condition, position, token, text, changed."""
    tokens = model.tokenize(prompt)
    ids = tokens.input_ids[:, : tokens.lengths[0]]
    strings = tokens.strings[0]
    where = positions or control_positions(ids[0].tolist(), function_ids)
    decode = model.tokenizer.decode
    # one batch: row 0 is the baseline, row j the j-th steering condition
    steer = [
        feature_steering(sae, feature, strength, [pos], rows=[j])
        for j, pos in enumerate(where.values(), start=1)
    ]
    batch = ids.expand(len(where) + 1, -1).contiguous()
    outs = greedy_generate_batch(model, batch, max_new_tokens=max_new_tokens, steering=steer)
    base = outs[0]
    rows = [
        {
            "condition": "baseline",
            "position": None,
            "token": "",
            "text": decode(base),
            "changed": False,
        }
    ]
    for (name, pos), out in zip(where.items(), outs[1:], strict=True):
        rows.append(
            {
                "condition": name,
                "position": pos,
                "token": strings[pos],
                "text": decode(out),
                "changed": out != base,
            }
        )
    df = pd.DataFrame(rows)
    df["position"] = df["position"].astype("Int64")
    df.attrs.update({"feature": feature, "strength": strength, "layer": sae.cfg.hook_layer})
    return df


def steered_text(
    model: WorkbenchModel,
    sae: SAE,
    prompt: str,
    *,
    feature: int,
    strength: float,
    position: int,
    max_new_tokens: int = 12,
) -> str:
    """The prompt and its greedy continuation with ``feature`` steered at ``position``.

    ``strength == 0`` is the plain continuation. This is what a steering slider calls.
    """
    steer = [feature_steering(sae, feature, strength, [position])] if strength else []
    new = greedy_generate(model, prompt, max_new_tokens=max_new_tokens, steering=steer)
    return prompt + model.tokenizer.decode(new)
