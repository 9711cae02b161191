"""Active or dormant: the loss change when a head is ablated, per head and per domain.

A head is ablated in one of two ways (the foundation's :class:`HeadAblation`):

- ``"zero"``: its output is zero;
- ``"sink"``: all of its attention moves to the sink, so its output is the sink's value
  vector (a dormant head, which already parks its attention there, barely changes).

The loss is the mean next-token cross-entropy over every real token that has a
successor, pooled over the domain's prompts; the effect is ablated minus clean loss.

Two sweeps compute the same numbers:

- :func:`naive_ablation_sweep`: one full forward pass per (head, mode), through
  :func:`workbench.tracing.run_with`-style traces. Simple, and the reference.
- :func:`ablation_sweep`: one clean pass per batch caches each layer's input (the
  residual stream and the keyword arguments the model gives its layers: mask, rotary
  tables, positions). Then, for each layer ``l``, one nnsight trace runs only layers
  ``l .. L-1`` on the cached residual, repeated once per ablated (head, mode): each copy
  of the batch ablates a different head at ``l``'s out-projection input. Layers before
  ``l`` are never recomputed, and the heads of a layer share one batched pass.

  nnsight cannot start a model's own forward in the middle, so the trace drives the
  model with a small function (``trace(..., fn=...)``) that calls the same HF decoder
  layers, final norm and unembedding in order; the ablation itself is an ordinary edit
  of ``o_proj.input`` inside that trace. The loss is taken from the unembedding in
  chunks of rows, so the ``[copies * batch, seq, vocab]`` logits never exist at once.

Example:
    >>> code = load_corpus("code", max_docs=4)
    >>> table = ablation_sweep(model, code, max_length=64)      # one row per (layer, head, mode)
    >>> table.sort_values("delta_loss").tail()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench.analysis.extreme_tokens.errors import EmptyDomainError, ExtremeTokenError
from workbench.analysis.extreme_tokens.metrics import batches_of, scan_extreme_tokens
from workbench.analysis.extreme_tokens.sink import Sink, describe_sink, resolve_sink
from workbench.models.model import Tokens, WorkbenchModel
from workbench.tracing.capture import Capture, capture
from workbench.tracing.interventions import HeadAblation
from workbench.tracing.provenance import Provenance, provenance_for
from workbench.tracing.tail import run_from

__all__ = [
    "MODES",
    "ActiveDormant",
    "ablation_sweep",
    "active_dormant",
    "classify_heads",
    "domain_contrast",
    "naive_ablation_sweep",
    "token_loss_sums",
]

MODES = ("zero", "sink")
# Logits are formed this many elements at a time (rows * seq * vocab): ~256 MB in float32.
LOGIT_CHUNK = 1 << 26


# -- loss ------------------------------------------------------------------------------------
def token_loss_sums(
    logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy summed per row over real tokens that have a successor.

    Args:
        logits: ``[rows, seq, vocab]``.
        input_ids, mask: ``[rows, seq]``.

    Returns:
        ``sums`` ``[rows]`` (float32) and ``counts`` ``[rows]``.
    """
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = input_ids[:, 1:].to(lp.device)
    nll = -lp.gather(-1, target[..., None]).squeeze(-1)  # [rows, seq-1]
    valid = (mask[:, 1:] * mask[:, :-1]).to(lp.device).bool()
    return (nll * valid).sum(-1), valid.sum(-1)


def _unembed_loss_sums(
    model: WorkbenchModel, final: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-row loss sums from the last layer's output ``final`` ``[rows, seq, d]``, chunked."""
    rows, s, _ = final.shape
    step = max(1, LOGIT_CHUNK // max(1, s * model.adapter.vocab_size))
    sums = []
    for i in range(0, rows, step):
        logits = model.logits_of(final[i : i + step])
        sums.append(token_loss_sums(logits, ids[i : i + step], mask[i : i + step])[0])
    return torch.cat(sums)


# -- helpers ---------------------------------------------------------------------------------
def _layer_list(model: WorkbenchModel, layers: Sequence[int] | None) -> list[int]:
    if layers is None:
        return list(range(model.n_layers))
    return sorted({model.check_layer(i) for i in layers})


def _head_list(model: WorkbenchModel, heads: Sequence[int] | None) -> list[int]:
    if heads is None:
        return list(range(model.n_heads))
    return [model.check_head(h) for h in heads]


def _check_modes(modes: Sequence[str]) -> list[str]:
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ExtremeTokenError(f"Unknown ablation modes {bad or modes}; choose from {MODES}.")
    return list(modes)


def _batches(
    model: WorkbenchModel, prompts: Sequence[str] | Tokens, batch_size: int, max_length: int
) -> list[Tokens]:
    if not isinstance(prompts, Tokens) and not isinstance(prompts, str) and len(prompts) == 0:
        raise EmptyDomainError("The corpus is empty: the ablation sweep needs at least one text.")
    batches = batches_of(model, prompts, batch_size, max_length)
    if not any(n > 1 for t in batches for n in t.lengths):
        raise EmptyDomainError(
            "No prompt has two tokens, so there is no next token to predict; give longer texts."
        )
    return batches


def _common_sink(model: WorkbenchModel, tokens: Tokens, sink: Sink, modes: list[str]) -> int:
    """The one sink position every prompt of the batch shares (sink ablation needs one)."""
    if "sink" not in modes:
        return 0
    pos = resolve_sink(model, tokens, sink).unique()
    if len(pos) != 1:
        raise ExtremeTokenError(
            f"Sink ablation needs one sink position per batch, but sink={sink!r} gives "
            f"positions {pos.tolist()} in one batch. Use batch_size=1, or sink='first'."
        )
    return int(pos[0])


def _rows(layer: int, head: int, mode: str, loss: float, clean: float, n: int) -> dict[str, Any]:
    return {
        "layer": layer,
        "head": head,
        "mode": mode,
        "loss": loss,
        "clean_loss": clean,
        "delta_loss": loss - clean,
        "tokens": n,
    }


def _table(sums: dict[tuple[int, int, str], float], clean_sum: float, count: int) -> pd.DataFrame:
    clean = clean_sum / count
    rows = [_rows(l, h, m, s / count, clean, count) for (l, h, m), s in sorted(sums.items())]
    return pd.DataFrame(rows)


# -- naive sweep -----------------------------------------------------------------------------
def naive_ablation_sweep(
    model: WorkbenchModel,
    prompts: Sequence[str] | Tokens,
    *,
    modes: Sequence[str] = MODES,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    sink: Sink = "auto",
    batch_size: int = 4,
    max_length: int = 64,
    progress: bool = False,
) -> pd.DataFrame:
    """The reference sweep: one full forward pass per (batch, layer, head, mode).

    Returns the same table as :func:`ablation_sweep`.
    """
    modes = _check_modes(modes)
    layer_ids, head_ids = _layer_list(model, layers), _head_list(model, heads)
    batches = _batches(model, prompts, batch_size, max_length)
    sums: dict[tuple[int, int, str], float] = {}
    clean_sum, count = 0.0, 0

    def loss_of(tokens: Tokens, ivs: list[HeadAblation]) -> float:
        cap = capture(
            model,
            tokens,
            ["logits"],
            interventions=ivs,
            transforms={
                "logits": lambda lg, _: token_loss_sums(
                    lg, tokens.input_ids, tokens.attention_mask
                )[0].sum()
            },
        )
        return float(cap.logits)

    total = len(batches) * len(layer_ids) * len(head_ids) * len(modes)
    bar = tqdm(total=total, desc="naive sweep", disable=not progress)
    for tokens in batches:
        p = _common_sink(model, tokens, sink, modes)
        clean_sum += loss_of(tokens, [])
        count += int((tokens.attention_mask[:, 1:] * tokens.attention_mask[:, :-1]).sum())
        for layer in layer_ids:
            for head in head_ids:
                for mode in modes:
                    iv = HeadAblation(layer=layer, heads=[head], mode=mode, sink=p)
                    key = (layer, head, mode)
                    sums[key] = sums.get(key, 0.0) + loss_of(tokens, [iv])
                    bar.update(1)
    bar.close()
    return _table(sums, clean_sum, count)


# -- fast sweep ------------------------------------------------------------------------------
def _clean_pass(model: WorkbenchModel, tokens: Tokens, first: int) -> tuple[Capture, float]:
    """One unmodified capture that keeps the inputs of layers ``first..L-1`` and the loss."""
    ids, mask = tokens.input_ids, tokens.attention_mask
    cap = capture(
        model,
        tokens,
        ["logits"],
        transforms={"logits": lambda lg, _: token_loss_sums(lg, ids, mask)[0].sum()},
        layer_inputs=range(first, model.n_layers),
        provenance=False,
    )
    return cap, float(cap.logits)


def _sweep_layer(
    model: WorkbenchModel,
    clean: Capture,
    layer: int,
    copies: list[tuple[int, str]],
    sink: int,
) -> list[float]:
    """Loss sums of ``copies`` (head, mode) ablated at ``layer``, in one batched tail run."""
    tokens = clean.tokens
    b = tokens.shape[0]
    n = len(copies)
    ids = tokens.input_ids.repeat(n, 1)
    mask = tokens.attention_mask.repeat(n, 1)
    variants = [[HeadAblation(layer=layer, heads=[h], mode=m, sink=sink)] for h, m in copies]
    sums = run_from(
        model, clean, layer, variants, head=lambda x: _unembed_loss_sums(model, x, ids, mask)
    )
    return sums.reshape(n, b).sum(1).tolist()


def ablation_sweep(
    model: WorkbenchModel,
    prompts: Sequence[str] | Tokens,
    *,
    modes: Sequence[str] = MODES,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    sink: Sink = "auto",
    batch_size: int = 4,
    max_length: int = 64,
    copies_per_pass: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Loss change of every (layer, head, mode) ablation over ``prompts``, computed fast.

    Args:
        modes: ``"zero"`` and/or ``"sink"`` (attention moved to the sink).
        layers, heads: subsets to sweep (default all); heads apply in every swept layer.
        sink: the sink rule or position; sink ablation needs the same position in every
            prompt of a batch (true of the default, BOS or position 0).
        copies_per_pass: how many (head, mode) ablations of one layer share a batched
            pass (default: all of them). Lower it for big models: a pass holds
            ``copies * batch`` sequences.

    Returns:
        One row per (layer, head, mode): ``loss``, ``clean_loss``, ``delta_loss`` (nats per
        token) and ``tokens`` (the number of predicted tokens).

    Raises:
        EmptyDomainError: no prompt, or none with a token to predict.
        HeadIndexError, LayerIndexError: a head or layer the model does not have.
    """
    modes = _check_modes(modes)
    layer_ids, head_ids = _layer_list(model, layers), _head_list(model, heads)
    batches = _batches(model, prompts, batch_size, max_length)
    copies = [(h, m) for m in modes for h in head_ids]
    step = copies_per_pass or len(copies)
    if step < 1:
        raise ExtremeTokenError(f"copies_per_pass must be at least 1, got {copies_per_pass}.")
    sums: dict[tuple[int, int, str], float] = {}
    clean_sum, count = 0.0, 0
    bar = tqdm(total=len(batches) * len(layer_ids), desc="ablation sweep", disable=not progress)
    for tokens in batches:
        p = _common_sink(model, tokens, sink, modes)
        clean, clean_loss = _clean_pass(model, tokens, layer_ids[0])
        clean_sum += clean_loss
        count += int((tokens.attention_mask[:, 1:] * tokens.attention_mask[:, :-1]).sum())
        for layer in layer_ids:
            for j in range(0, len(copies), step):
                group = copies[j : j + step]
                losses = _sweep_layer(model, clean, layer, group, p)
                for (h, m), v in zip(group, losses, strict=True):
                    sums[(layer, h, m)] = sums.get((layer, h, m), 0.0) + v
            bar.update(1)
        del clean
    bar.close()
    return _table(sums, clean_sum, count)


# -- active or dormant, per domain -----------------------------------------------------------
STATES = ("active", "dormant", "quiet")


def classify_heads(
    table: pd.DataFrame,
    *,
    sink_threshold: float = 0.5,
    effect_threshold: float = 0.01,
    effect: str = "delta_zero",
) -> pd.Series:
    """``"active"``, ``"dormant"`` or ``"quiet"`` per row of an :class:`ActiveDormant` table.

    - active: ablating the head changes the loss by at least ``effect_threshold`` nats;
    - dormant: it does not, and the head puts more than ``sink_threshold`` of its
      attention on the sink;
    - quiet: neither (little effect, attention spread elsewhere).
    """
    big = table[effect].abs() >= effect_threshold
    sunk = table["sink_mass"] > sink_threshold
    state = pd.Series("quiet", index=table.index)
    state[sunk & ~big] = "dormant"
    state[big] = "active"
    return state


@dataclass
class ActiveDormant:
    """Sink mass and ablation effects of every head on every domain.

    Attributes:
        table: one row per (domain, layer, head): ``sink_mass``, ``top1_is_sink``,
            ``sink_logit``, ``delta_zero`` and ``delta_sink`` (loss change in nats per
            token when zeroed / when its attention moves to the sink), ``clean_loss`` and
            ``state`` (see :func:`classify_heads`).
        scans: the :class:`ExtremeTokenScan` of each domain.
        sink: the sink rule in words.
    """

    table: pd.DataFrame
    scans: dict[str, Any]
    sink: str
    provenance: Provenance

    @property
    def domains(self) -> list[str]:
        return list(dict.fromkeys(self.table["domain"]))

    def pivot(self, value: str = "sink_mass") -> pd.DataFrame:
        """``value`` as a heads x domains frame, indexed by (layer, head)."""
        return self.table.pivot_table(index=["layer", "head"], columns="domain", values=value)

    def most_domain_specific(
        self, n: int = 10, *, active_dormant_only: bool = False
    ) -> pd.DataFrame:
        """The ``n`` heads whose behaviour differs most between the first two domains.

        ``active_dormant_only`` keeps the heads that are dormant on one domain and active
        on the other.
        """
        c = domain_contrast(self.table, self.domains[:2])
        if active_dormant_only:
            c = c[c["dormant_in"] != ""]
        return c.head(n).reset_index(drop=True)

    def showcase_head(self) -> tuple[int, int]:
        """(layer, head) of the strongest active-dormant head, else the most specific one."""
        best = self.most_domain_specific(1, active_dormant_only=True)
        if not len(best):
            best = self.most_domain_specific(1)
        return int(best.loc[0, "layer"]), int(best.loc[0, "head"])


def domain_contrast(table: pd.DataFrame, domains: Sequence[str] | None = None) -> pd.DataFrame:
    """Per head, how differently it behaves on two domains, most different first.

    ``specificity = |d_sink_mass| + min(1, |d_delta_zero| / q95)``, where ``q95`` is the
    95th percentile of ``|delta_zero|`` over the table: both terms lie in [0, 1], so a
    head can stand out by where it looks or by what it does, and one head with a huge
    effect does not flatten the scale for all the others. ``switches`` is True when its
    state (active / dormant / quiet) differs between the domains; ``dormant_in`` names the
    domain where it is dormant while active on the other (the paper's active-dormant
    head), else is empty.
    """
    domains = list(domains or dict.fromkeys(table["domain"]))
    if len(domains) != 2:
        raise ExtremeTokenError(f"domain_contrast needs exactly two domains, got {domains}.")
    a, b = domains
    cols = ["sink_mass", "delta_zero", "delta_sink", "state"]
    wide = table.pivot(index=["layer", "head"], columns="domain", values=cols)
    out = pd.DataFrame(index=wide.index)
    for c in cols:
        out[f"{c}_{a}"] = wide[(c, a)]
        out[f"{c}_{b}"] = wide[(c, b)]
    out[f"d_sink_mass ({a}-{b})"] = out[f"sink_mass_{a}"] - out[f"sink_mass_{b}"]
    out[f"d_delta_zero ({a}-{b})"] = out[f"delta_zero_{a}"] - out[f"delta_zero_{b}"]
    scale = float(table["delta_zero"].abs().quantile(0.95)) or 1.0
    out["specificity"] = out[f"d_sink_mass ({a}-{b})"].abs() + (
        out[f"d_delta_zero ({a}-{b})"].abs() / scale
    ).clip(upper=1.0)
    out["switches"] = out[f"state_{a}"] != out[f"state_{b}"]
    sa, sb = out[f"state_{a}"], out[f"state_{b}"]
    out["dormant_in"] = ""
    out.loc[(sa == "dormant") & (sb == "active"), "dormant_in"] = a
    out.loc[(sb == "dormant") & (sa == "active"), "dormant_in"] = b
    return out.sort_values("specificity", ascending=False).reset_index()


def active_dormant(
    model: WorkbenchModel,
    domains: Mapping[str, Sequence[str]],
    *,
    sink: Sink = "auto",
    layers: Sequence[int] | None = None,
    batch_size: int = 4,
    max_length: int = 64,
    copies_per_pass: int | None = None,
    sink_threshold: float = 0.5,
    effect_threshold: float = 0.01,
    progress: bool = False,
) -> ActiveDormant:
    """Sink mass (scan) and ablation effects (fast sweep, zero and sink) per head and domain.

    Example:
        >>> ad = active_dormant(model, {"code": load_corpus("code", max_docs=4),
        ...                             "prose": load_corpus("prose", max_docs=4)})
        >>> ad.most_domain_specific(5)

    Raises:
        EmptyDomainError: a domain without documents.
    """
    if not domains:
        raise EmptyDomainError("No domains were given; pass e.g. {'code': [...], 'prose': [...]}.")
    for name, docs in domains.items():
        if isinstance(docs, str) or len(docs) == 0:
            what = "a single string, not a list of documents" if isinstance(docs, str) else "empty"
            raise EmptyDomainError(
                f"The {name!r} domain corpus is {what}. Give it at least one document, e.g. "
                f"load_corpus({name!r}, max_docs=8)."
            )
    layer_ids = _layer_list(model, layers)
    frames, scans = [], {}
    for name, docs in domains.items():
        scan = scan_extreme_tokens(
            model, docs, sink=sink, batch_size=batch_size, max_length=max_length
        )
        sweep = ablation_sweep(
            model,
            docs,
            layers=layer_ids,
            sink=sink,
            batch_size=batch_size,
            max_length=max_length,
            copies_per_pass=copies_per_pass,
            progress=progress,
        )
        wide = sweep.pivot(index=["layer", "head"], columns="mode", values="delta_loss")
        wide.columns = [f"delta_{m}" for m in wide.columns]
        heads = scan.heads[["layer", "head", "sink_mass", "top1_is_sink", "sink_logit"]]
        df = heads.merge(wide.reset_index(), on=["layer", "head"])
        df.insert(0, "domain", name)
        df["clean_loss"] = float(sweep["clean_loss"].iloc[0])
        frames.append(df)
        scans[name] = scan
    table = pd.concat(frames, ignore_index=True)
    table["state"] = classify_heads(
        table, sink_threshold=sink_threshold, effect_threshold=effect_threshold
    )
    prov = provenance_for(
        model,
        None,
        [],
        analysis="extreme_tokens.active_dormant",
        sink=str(sink),
        domains={k: len(v) for k, v in domains.items()},
        batch_size=batch_size,
        max_length=max_length,
        layers=layer_ids,
    )
    return ActiveDormant(table, scans, describe_sink(model, sink), prov)
