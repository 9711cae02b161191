"""Where the sink's residual peak comes from: ablate early blocks one at a time.

The paper (Guo et al., 2024) finds that one early MLP writes the huge residual norm of
the sink token: in Llama-3.1-8B the BOS norm at a late layer falls from 496 to 34 when
the layer-0 MLP is zeroed. Here every attention and MLP block of the chosen early layers
is zeroed in turn (its contribution to the residual stream is set to 0 at every
position), and the sink's residual norm is read at a later layer.

Example:
    >>> peak = residual_peak_sources(model, load_corpus("prose", max_docs=4))
    >>> peak.table[["ablated", "sink_norm", "ratio", "drop"]]
    >>> peak.creator()        # e.g. "mlp 2"
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench.analysis.extreme_tokens.errors import ExtremeTokenError
from workbench.analysis.extreme_tokens.metrics import batches_of, norm_stat_sums, resid_table
from workbench.analysis.extreme_tokens.sink import Sink, describe_sink, resolve_sink
from workbench.models.model import Tokens, WorkbenchModel
from workbench.tracing.capture import capture
from workbench.tracing.interventions import BlockAblation
from workbench.tracing.provenance import Provenance, provenance_for

__all__ = ["BLOCKS", "ResidualPeak", "residual_peak_sources", "rise_layer"]

BLOCKS = ("attn", "mlp")


@dataclass
class ResidualPeak:
    """The sink's residual norm at ``at_layer`` after zeroing each early block.

    Attributes:
        table: one row per run, the clean run first (``ablated == "none"``): ``block``,
            ``layer``, ``sink_norm``, ``median_norm`` (other tokens), ``ratio`` and
            ``drop`` (the share of the clean sink norm that the ablation removes).
        trajectories: one row per run and layer: the sink and median norms after each
            layer, to see where the peak appears and where it goes.
        at_layer: the layer whose output is read.
        clean: the clean run's norms at every layer (as ``ExtremeTokenScan.residual``).
        rise_layer: the first layer whose sink / median ratio reaches half its maximum.
    """

    table: pd.DataFrame
    trajectories: pd.DataFrame
    at_layer: int
    sink: str
    provenance: Provenance
    clean: pd.DataFrame | None = None
    rise_layer: int | None = None

    def creator(self) -> str:
        """The ablation that removes the largest share of the sink's norm, e.g. ``"mlp 0"``."""
        runs = self.table[self.table["ablated"] != "none"]
        return str(runs.loc[runs["drop"].idxmax(), "ablated"])


def _norm_sums(
    model: WorkbenchModel,
    tokens: Tokens,
    pos: torch.Tensor,
    upto: int,
    zero: tuple[str, int] | None = None,
) -> torch.Tensor:
    """``[upto + 1, 5]`` norm statistics of layers ``0..upto`` for one batch.

    ``zero = (block, layer)`` sets that block's raw output to 0 at every position (a
    post-block RMSNorm, as in Gemma-2 or OLMo-2, then also gives 0). The run stops after
    layer ``upto``: the later layers and the unembedding never run.
    """
    mask = tokens.attention_mask
    ivs = [] if zero is None else [BlockAblation(layer=zero[1], block=zero[0])]
    cap = capture(
        model,
        tokens,
        ["resid_post"],
        layers=range(upto + 1),
        interventions=ivs,
        transforms={"resid_post": lambda r, _: norm_stat_sums(r.float().norm(dim=-1), mask, pos)},
        provenance=False,
    )
    return cap.resid_post.cpu()


def rise_layer(residual: pd.DataFrame) -> int:
    """The first layer whose sink / median norm ratio reaches half of its maximum."""
    ratio = residual["ratio"].to_numpy()
    return int((ratio >= ratio.max() / 2).argmax())


def residual_peak_sources(
    model: WorkbenchModel,
    prompts: Sequence[str] | Tokens,
    *,
    layers: Sequence[int] | None = None,
    at_layer: int | None = None,
    blocks: Sequence[str] = BLOCKS,
    sink: Sink = "auto",
    batch_size: int = 8,
    max_length: int = 64,
    progress: bool = True,
) -> ResidualPeak:
    """Zero each block of ``layers`` in turn and read the sink's residual norm at ``at_layer``.

    Args:
        layers: the early layers whose blocks are ablated. Default: every layer up to the
            one where the peak rises (the first whose sink / median ratio reaches half its
            maximum in the clean run), and before ``at_layer``.
        at_layer: whose output residual is read (default: two thirds of the way up, or
            the last layer if the peak only rises after that).
        blocks: ``"attn"`` and/or ``"mlp"``.
    """
    n = model.n_layers
    bad = [b for b in blocks if b not in BLOCKS]
    if bad or not blocks:
        raise ExtremeTokenError(f"Unknown blocks {bad or list(blocks)}; choose from {BLOCKS}.")
    batches = batches_of(model, prompts, batch_size, max_length)
    sinks = [resolve_sink(model, t, sink) for t in batches]
    n_prompts = sum(t.shape[0] for t in batches)
    # the clean run, every layer: where the peak rises, and the reference norms
    clean = sum(_norm_sums(model, t, p, n - 1) for t, p in zip(batches, sinks, strict=True))
    clean_table = resid_table(clean, n_prompts)
    rise = rise_layer(clean_table)
    at = model.check_layer(at_layer) if at_layer is not None else max((2 * n) // 3, rise + 1)
    at = min(at, n - 1)
    if layers is None:
        early = list(range(min(rise, at) + 1))
    else:
        early = model.check_layers(layers)
    late = [i for i in early if i > at]
    if late:
        raise ExtremeTokenError(
            f"Layers {late} come after at_layer={at}: ablating them cannot change its input. "
            f"Pick layers before {at} or a later at_layer."
        )
    runs: list[tuple[str, str | None, int | None]] = [("none", None, None)]
    runs += [(f"{b} {i}", b, i) for i in early for b in blocks]
    sums = torch.zeros(len(runs), at + 1, 5, dtype=torch.float64)
    sums[0] = clean[: at + 1]
    bar = tqdm(total=len(batches) * (len(runs) - 1), desc="residual peak", disable=not progress)
    for tokens, pos in zip(batches, sinks, strict=True):
        for r, (_, block, layer) in enumerate(runs[1:], start=1):
            sums[r] += _norm_sums(model, tokens, pos, at, (block, layer))
            bar.update(1)
    bar.close()
    rows, traj = [], []
    for r, (name, block, layer) in enumerate(runs):
        per_layer = resid_table(sums[r], n_prompts)
        per_layer.insert(0, "ablated", name)
        traj.append(per_layer)
        at_row = per_layer.iloc[at]
        rows.append(
            {
                "ablated": name,
                "block": block or "none",
                "layer": -1 if layer is None else layer,
                "sink_norm": float(at_row["sink_norm"]),
                "median_norm": float(at_row["median_norm"]),
                "ratio": float(at_row["ratio"]),
            }
        )
    table = pd.DataFrame(rows)
    table["drop"] = 1.0 - table["sink_norm"] / table.loc[0, "sink_norm"]
    prov = provenance_for(
        model,
        None,
        [],
        analysis="extreme_tokens.residual_peak",
        sink=str(sink),
        layers=early,
        at_layer=at,
        blocks=list(blocks),
        n_prompts=n_prompts,
        max_length=max_length,
    )
    return ResidualPeak(
        table,
        pd.concat(traj, ignore_index=True),
        at,
        describe_sink(model, sink),
        prov,
        clean=clean_table,
        rise_layer=rise,
    )
