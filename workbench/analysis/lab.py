"""The intervention lab's computation: compose interventions, run clean and intervened.

An intervention is described by a plain dict (a *spec*), so a widget can build it from
controls, print it, and the result's provenance can record it:

==========  ===============================================================================
kind        keys
==========  ===============================================================================
ablate      layer, heads, mode ("zero" | "mean" | "sink")
knockout    layer, edges ([[query, key], ...]; negative positions count from the end),
            heads (optional)
patch       layer, site ("resid_post" | "resid_pre" | "attn_out" | "mlp_out" | "head_out"),
            positions (e.g. [-1]); the source is the lab's second prompt
steer       layer, vector (a name in ``vectors``), scale, positions, at ("resid_pre" |
            "resid_post")
clamp       layer, neuron, value, positions
==========  ===============================================================================

:func:`lab_run` runs the prompt clean and with every spec applied and returns, side by
side: the top-k next tokens, a chosen logit difference, the per-layer logit lens of the
last position, and a greedy continuation. :func:`python_code` writes the Python that
reproduces the composed list.

Example:
    >>> specs = [{"kind": "ablate", "layer": 0, "heads": [4], "mode": "zero"}]
    >>> res = lab_run(model, "The capital of France is", specs, good=" Paris", bad=" London")
    >>> res.logit_diff, res.continuation
    >>> print(python_code(specs))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from workbench.errors import InterventionError
from workbench.models.model import WorkbenchModel
from workbench.tracing import (
    ActivationPatch,
    AttentionKnockout,
    HeadAblation,
    Intervention,
    NeuronClamp,
    Provenance,
    Steering,
    capture,
    logit_lens,
    site_values,
)
from workbench.tracing.provenance import provenance_for

__all__ = ["KINDS", "LabResult", "build_interventions", "lab_run", "python_code"]

KINDS = ("ablate", "knockout", "patch", "steer", "clamp")


def _need(spec: Mapping[str, Any], *keys: str) -> None:
    missing = [k for k in keys if k not in spec]
    if missing:
        raise InterventionError(
            f"A {spec.get('kind')!r} spec needs {list(keys)}; it lacks {missing}: {dict(spec)}."
        )


def _absolute(positions: Sequence[int] | None, n: int) -> list[int] | None:
    """Positions counted from the prompt's end made absolute, so they stay on the prompt
    while a continuation grows."""
    if positions is None:
        return None
    out = []
    for p in positions:
        q = int(p) + n if int(p) < 0 else int(p)
        if not 0 <= q < n:
            raise InterventionError(f"Position {p} is outside the prompt of {n} tokens.")
        out.append(q)
    return out


def build_interventions(
    model: WorkbenchModel,
    prompt: str,
    specs: Sequence[Mapping[str, Any]],
    *,
    source: str | None = None,
    vectors: Mapping[str, torch.Tensor] | None = None,
) -> list[Intervention]:
    """The interventions ``specs`` describe, for ``prompt`` (positions made absolute).

    Args:
        source: the second prompt that ``patch`` specs copy from.
        vectors: named ``[d_model]`` directions for ``steer`` specs (a steering vector, an
            SAE feature's decoder row).
    """
    n = model.tokenize(prompt).lengths[0]
    out: list[Intervention] = []
    head_means: dict[int, torch.Tensor] = {}
    for spec in specs:
        kind = spec.get("kind")
        if kind not in KINDS:
            raise InterventionError(f"Unknown intervention kind {kind!r}; kinds: {KINDS}.")
        _need(spec, "layer")
        layer = int(spec["layer"])
        if kind == "ablate":
            _need(spec, "heads")
            mode = spec.get("mode", "zero")
            mean = None
            if mode == "mean":  # the head's mean output over the prompt's own positions
                if layer not in head_means:
                    cap = capture(model, prompt, ["head_out"], layers=[layer])
                    head_means[layer] = cap.head_out[0, 0].float().mean(0)  # [heads, d_head]
                mean = head_means[layer]
            out.append(HeadAblation(layer=layer, heads=list(spec["heads"]), mode=mode, mean=mean))
        elif kind == "knockout":
            _need(spec, "edges")
            edges = [tuple(_absolute(e, n)) for e in spec["edges"]]  # type: ignore[arg-type]
            heads = spec.get("heads")
            out.append(
                AttentionKnockout(
                    layer=layer, edges=edges, heads=None if heads is None else list(heads)
                )
            )
        elif kind == "patch":
            if source is None:
                raise InterventionError(
                    "A 'patch' spec copies from the lab's second prompt: give source=."
                )
            site = spec.get("site", "resid_post")
            positions = list(spec.get("positions", [-1]))
            src = capture_site(model, source, layer, site)
            out.append(
                ActivationPatch(
                    layer=layer,
                    site_name=site,
                    value=src,
                    positions=_absolute(positions, n),
                    source_positions=positions,
                    heads=spec.get("heads"),
                )
            )
        elif kind == "steer":
            _need(spec, "vector")
            name = spec["vector"]
            if not vectors or name not in vectors:
                raise InterventionError(
                    f"Unknown steering vector {name!r}; the lab has {sorted(vectors or {})}."
                )
            out.append(
                Steering(
                    layer=layer,
                    vector=vectors[name],
                    scale=float(spec.get("scale", 1.0)),
                    positions=_absolute(spec.get("positions", [-1]), n),
                    at=spec.get("at", "resid_pre"),
                )
            )
        else:
            _need(spec, "neuron", "value")
            out.append(
                NeuronClamp(
                    layer=layer,
                    neuron=int(spec["neuron"]),
                    value=float(spec["value"]),
                    positions=_absolute(spec.get("positions"), n),
                )
            )
    return out


def capture_site(model: WorkbenchModel, prompt: str, layer: int, site: str) -> torch.Tensor:
    """The raw value at an intervention ``site`` of ``layer`` for ``prompt`` ([1, seq, ...])."""
    run = site_values(model, prompt, [site], layers=[layer])
    return run.values[(model.check_layer(layer), site)]


def python_code(
    specs: Sequence[Mapping[str, Any]], *, prompt_var: str = "prompt", source_var: str = "source"
) -> str:
    """Python that rebuilds the composed interventions with the workbench API."""
    lines = [
        "from workbench.analysis.lab import build_interventions",
        "",
        f"specs = {[dict(s) for s in specs]!r}",
        f"interventions = build_interventions(model, {prompt_var}, specs, source={source_var}, "
        "vectors=vectors)",
        f"logits = wb.run_with(model, {prompt_var}, interventions)",
    ]
    return "\n".join(lines)


@dataclass
class LabResult:
    """Clean and intervened runs of one prompt, side by side.

    Attributes:
        top: top-k next tokens, columns token, clean, intervened (probabilities), ranked by
            the clean run; top_intervened likewise ranked by the intervened run.
        logit_diff: ``(clean, intervened)`` of logit[good] - logit[bad], or ``None``.
        lens: per layer, the log-probability of the clean run's top token at the last
            position through the logit lens, clean and intervened, and their change.
        continuation: ``(clean, intervened)`` greedy continuations (text).
        code: Python that reproduces the interventions.
    """

    top: pd.DataFrame
    top_intervened: pd.DataFrame
    logit_diff: tuple[float, float] | None
    lens: pd.DataFrame
    continuation: tuple[str, str]
    code: str
    specs: list[dict[str, Any]]
    provenance: Provenance


def _greedy(model: WorkbenchModel, prompt: str, ivs: list[Intervention], n_new: int) -> str:
    """``n_new`` greedy tokens after ``prompt`` with ``ivs`` applied at every step (their
    positions are absolute, so they stay on the prompt)."""
    ids = model.tokenize(prompt).input_ids
    new: list[int] = []
    for _ in range(n_new):
        t = int(capture(model, ids, ["logits"], interventions=ivs).logits[0, -1].argmax())
        new.append(t)
        if t == model.tokenizer.eos_token_id:
            break
        ids = torch.cat([ids, torch.tensor([[t]], device=ids.device)], dim=1)
    return model.tokenizer.decode(new)


def lab_run(
    model: WorkbenchModel,
    prompt: str,
    specs: Sequence[Mapping[str, Any]],
    *,
    source: str | None = None,
    vectors: Mapping[str, torch.Tensor] | None = None,
    good: str | int | None = None,
    bad: str | int | None = None,
    k: int = 8,
    n_new: int = 8,
) -> LabResult:
    """Run ``prompt`` clean and with ``specs`` applied; see :class:`LabResult`."""
    from workbench.analysis.attribution.metrics import LogitDiff

    ivs = build_interventions(model, prompt, specs, source=source, vectors=vectors)
    clean_cap = capture(model, prompt, ["resid_post", "logits"])
    int_cap = capture(model, prompt, ["resid_post", "logits"], interventions=ivs)
    p_clean = clean_cap.logits[0, -1].float().softmax(-1)
    p_int = int_cap.logits[0, -1].float().softmax(-1)
    dec = model.tokenizer.decode

    def table(rank_by: torch.Tensor) -> pd.DataFrame:
        ids = rank_by.topk(min(k, rank_by.shape[0])).indices.tolist()
        return pd.DataFrame(
            {
                "token": [dec([i]) for i in ids],
                "clean": [float(p_clean[i]) for i in ids],
                "intervened": [float(p_int[i]) for i in ids],
            }
        )

    diff = None
    if good is not None and bad is not None:
        m = LogitDiff(good, bad, tokenizer=model.tokenizer)
        diff = (float(m(clean_cap.logits)[0]), float(m(int_cap.logits)[0]))
    target = int(p_clean.argmax())
    lc = logit_lens(model, clean_cap.resid_post[:, 0, -1])[:, target].cpu()
    li = logit_lens(model, int_cap.resid_post[:, 0, -1])[:, target].cpu()
    lens = pd.DataFrame(
        {
            "layer": range(model.n_layers),
            "clean": lc.tolist(),
            "intervened": li.tolist(),
        }
    )
    lens["change"] = lens["intervened"] - lens["clean"]
    lens.attrs["token"] = dec([target])
    cont_clean = _greedy(model, prompt, [], n_new)
    cont_int = _greedy(model, prompt, ivs, n_new)
    specs_list = [dict(s) for s in specs]
    prov = provenance_for(
        model,
        int_cap.tokens,
        ivs,
        analysis="intervention_lab",
        specs=specs_list,
        source=source,
    )
    return LabResult(
        top=table(p_clean),
        top_intervened=table(p_int),
        logit_diff=diff,
        lens=lens,
        continuation=(cont_clean, cont_int),
        code=python_code(specs_list),
        specs=specs_list,
        provenance=prov,
    )
