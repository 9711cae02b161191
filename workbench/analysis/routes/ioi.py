"""The known check: GPT-2 small's IOI circuit heads should appear in its route graphs.

Indirect-object identification prompts ("When Mary and John went to the store, John gave
a drink to" → " Mary") and the circuit of Wang et al. (2022) live in
``workbench/data/ioi.json``. :func:`ioi_route_check` builds the route graph of the last
prediction of each prompt and reports, per circuit head, how often it is on the route.
The check passes when at least one name-mover, S-inhibition, induction and
previous-token head each appear in at least ``min_frequency`` of the graphs.

GPT-2 small must come from a model hub, so the check runs only where one is reachable
(:func:`hub_reachable`); it is a GPU-machine or online check.

Example:
    >>> if hub_reachable():
    ...     model = wb.load_model("openai-community/gpt2")
    ...     check = ioi_route_check(model, ioi_prompts(8))
    ...     check.passed
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from typing import Any

import pandas as pd

from workbench.analysis.routes.graph import DEFAULT_TAU, trace_routes
from workbench.data.prompts import prompt_set
from workbench.models.hub import hub_reachable  # re-exported: the notebook asks it
from workbench.models.model import WorkbenchModel

__all__ = [
    "REQUIRED_ROLES",
    "IoiCheck",
    "circuit_heads",
    "hub_reachable",
    "ioi_prompts",
    "ioi_route_check",
    "ioi_spec",
]

REQUIRED_ROLES = ("name mover", "s-inhibition", "induction", "previous token")


@cache
def ioi_spec() -> dict[str, Any]:
    """The IOI prompt set, ``data/ioi.json`` (see :func:`workbench.data.prompt_set`)."""
    return prompt_set("ioi")


def circuit_heads() -> pd.DataFrame:
    """The IOI circuit of GPT-2 small: columns role, layer, head."""
    rows = []
    for role, heads in ioi_spec()["circuit"].items():
        for lh in heads:
            layer, head = (int(x) for x in lh.split("."))
            rows.append({"role": role, "layer": layer, "head": head})
    return pd.DataFrame(rows)


def ioi_prompts(n: int = 8, *, seed: int = 0) -> pd.DataFrame:
    """``n`` IOI prompts: columns prompt, io (the answer, with a leading space), s, template."""
    spec = ioi_spec()
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        template = spec["templates"][k % len(spec["templates"])]
        io, s = rng.sample(spec["names"], 2)
        prompt = template.format(
            IO=io, S=s, PLACE=rng.choice(spec["places"]), OBJECT=rng.choice(spec["objects"])
        )
        rows.append({"prompt": prompt, "io": " " + io, "s": " " + s, "template": template})
    return pd.DataFrame(rows)


@dataclass
class IoiCheck:
    """Result of :func:`ioi_route_check`.

    Attributes:
        heads: one row per circuit head: role, layer, head, frequency (share of graphs).
        roles: one row per role: heads, found (heads with frequency ≥ min_frequency).
        accuracy: share of prompts where the model prefers the IO name over the S name.
        passed: every role in :data:`REQUIRED_ROLES` has a found head.
    """

    heads: pd.DataFrame
    roles: pd.DataFrame
    accuracy: float
    passed: bool
    n_prompts: int


def ioi_route_check(
    model: WorkbenchModel,
    prompts: pd.DataFrame,
    *,
    tau: float = DEFAULT_TAU,
    min_frequency: float = 0.25,
) -> IoiCheck:
    """Which IOI circuit heads appear in the route graphs of the last prediction."""
    circuit = circuit_heads()
    counts = {(r.layer, r.head): 0 for r in circuit.itertuples()}
    correct = 0
    for row in prompts.itertuples():
        routes = trace_routes(model, row.prompt)
        on_route = routes.graph(-1, tau).heads()
        for lh in counts:
            counts[lh] += lh in on_route
        logits = routes.lens(routes.fp.mlp_whole(routes.n_layers - 1)[-1:])[0]
        io = model.tokenizer(row.io, add_special_tokens=False).input_ids[0]
        s = model.tokenizer(row.s, add_special_tokens=False).input_ids[0]
        correct += bool(logits[io] > logits[s])
    n = max(len(prompts), 1)
    heads = circuit.copy()
    heads["frequency"] = [counts[(r.layer, r.head)] / n for r in circuit.itertuples()]
    heads["found"] = heads["frequency"] >= min_frequency
    roles = (
        heads.groupby("role", sort=False)
        .agg(heads=("head", "size"), found=("found", "sum"))
        .reset_index()
    )
    found = dict(zip(roles["role"], roles["found"], strict=True))
    passed = all(found.get(r, 0) > 0 for r in REQUIRED_ROLES)
    return IoiCheck(heads, roles, correct / n, passed, len(prompts))
