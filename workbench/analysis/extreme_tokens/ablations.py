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

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench.analysis.extreme_tokens.errors import EmptyDomainError, ExtremeTokenError
from workbench.analysis.extreme_tokens.metrics import batches_of, scan_extreme_tokens
from workbench.analysis.extreme_tokens.sink import Sink, describe_sink, resolve_sink
from workbench.analysis.uncertainty import Bootstrap, too_few_documents
from workbench.models.model import Tokens, WorkbenchModel
from workbench.tracing.capture import Capture, capture
from workbench.tracing.interventions import HeadAblation
from workbench.tracing.provenance import Provenance, provenance_for
from workbench.tracing.tail import run_from

__all__ = [
    "MODES",
    "ActiveDormant",
    "SweepDocs",
    "ablation_sweep",
    "active_dormant",
    "classify_heads",
    "domain_contrast",
    "naive_ablation_sweep",
    "sweep_documents",
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
    return model.check_layers(layers)


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


@dataclass
class SweepDocs:
    """Per-document loss sums of a sweep: what the document bootstrap resamples.

    Attributes:
        keys: the (layer, head, mode) of each row of ``ablated``.
        ablated: ``[len(keys), n_docs]`` summed loss of each document under each ablation.
        clean: ``[n_docs]`` summed clean loss per document.
        counts: ``[n_docs]`` predicted tokens per document.
    """

    keys: list[tuple[int, int, str]]
    ablated: np.ndarray
    clean: np.ndarray
    counts: np.ndarray

    @property
    def n_docs(self) -> int:
        return int(self.clean.shape[0])

    def deltas(self) -> np.ndarray:
        """``[n_docs, len(keys)]`` per-document loss-change sums (ablated minus clean)."""
        return (self.ablated - self.clean[None, :]).T

    def table(self, boot: Bootstrap) -> pd.DataFrame:
        """One row per key: loss, clean_loss, delta_loss, tokens and its intervals.

        ``delta_low`` / ``delta_high`` are the 95% percentile interval; ``delta_low_c`` /
        ``delta_high_c`` are Bonferroni-corrected over every row of the table.
        """
        n = float(self.counts.sum())
        clean = float(self.clean.sum()) / n
        est, _, iv = boot.ratio(self.deltas(), self.counts, m=max(len(self.keys), 1))
        rows = [
            {
                "layer": l,
                "head": h,
                "mode": m,
                "loss": clean + float(est[i]),
                "clean_loss": clean,
                "delta_loss": float(est[i]),
                "tokens": int(n),
                "delta_low": float(iv["low"][i]),
                "delta_high": float(iv["high"][i]),
                "delta_low_c": float(iv["low_c"][i]),
                "delta_high_c": float(iv["high_c"][i]),
                "docs": self.n_docs,
            }
            for i, (l, h, m) in enumerate(self.keys)
        ]
        return pd.DataFrame(rows)


def _collect(
    per_doc: dict[tuple[int, int, str], list[torch.Tensor]],
    clean: list[torch.Tensor],
    counts: list[torch.Tensor],
) -> SweepDocs:
    keys = sorted(per_doc)
    ablated = np.stack([torch.cat(per_doc[k]).double().numpy() for k in keys])
    return SweepDocs(
        keys, ablated, torch.cat(clean).double().numpy(), torch.cat(counts).double().numpy()
    )


def _predicted(tokens: Tokens) -> torch.Tensor:
    """``[batch]`` how many tokens each row predicts (real tokens with a real successor)."""
    m = tokens.attention_mask
    return (m[:, 1:] * m[:, :-1]).sum(1).cpu()


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
    bootstrap: Bootstrap | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """The reference sweep: one full forward pass per (batch, layer, head, mode).

    Returns the same table as :func:`ablation_sweep`.
    """
    modes = _check_modes(modes)
    layer_ids, head_ids = _layer_list(model, layers), _head_list(model, heads)
    batches = _batches(model, prompts, batch_size, max_length)
    per_doc: dict[tuple[int, int, str], list[torch.Tensor]] = {}
    clean: list[torch.Tensor] = []
    counts: list[torch.Tensor] = []

    def loss_of(tokens: Tokens, ivs: list[HeadAblation]) -> torch.Tensor:
        cap = capture(
            model,
            tokens,
            ["logits"],
            interventions=ivs,
            transforms={
                "logits": lambda lg, _: token_loss_sums(
                    lg, tokens.input_ids, tokens.attention_mask
                )[0]
            },
        )
        return cap.logits.detach().double().cpu().reshape(-1)  # [batch]

    total = len(batches) * len(layer_ids) * len(head_ids) * len(modes)
    bar = tqdm(total=total, desc="naive sweep", disable=not progress)
    for tokens in batches:
        p = _common_sink(model, tokens, sink, modes)
        clean.append(loss_of(tokens, []))
        counts.append(_predicted(tokens))
        for layer in layer_ids:
            for head in head_ids:
                for mode in modes:
                    iv = HeadAblation(layer=layer, heads=[head], mode=mode, sink=p)
                    per_doc.setdefault((layer, head, mode), []).append(loss_of(tokens, [iv]))
                    bar.update(1)
    bar.close()
    return _collect(per_doc, clean, counts).table(bootstrap or Bootstrap())


# -- fast sweep ------------------------------------------------------------------------------
def _clean_pass(model: WorkbenchModel, tokens: Tokens, first: int) -> tuple[Capture, torch.Tensor]:
    """One unmodified capture that keeps the inputs of layers ``first..L-1`` and the
    loss sum of each row (``[batch]``)."""
    ids, mask = tokens.input_ids, tokens.attention_mask
    cap = capture(
        model,
        tokens,
        ["logits"],
        transforms={"logits": lambda lg, _: token_loss_sums(lg, ids, mask)[0]},
        layer_inputs=range(first, model.n_layers),
        provenance=False,
    )
    return cap, cap.logits.detach().double().cpu().reshape(-1)


def _sweep_layer(
    model: WorkbenchModel,
    clean: Capture,
    layer: int,
    copies: list[tuple[int, str]],
    sink: int,
) -> torch.Tensor:
    """Per-row loss sums ``[len(copies), batch]`` of ``copies`` (head, mode) ablated at
    ``layer``, in one batched tail run."""
    tokens = clean.tokens
    b = tokens.shape[0]
    n = len(copies)
    ids = tokens.input_ids.repeat(n, 1)
    mask = tokens.attention_mask.repeat(n, 1)
    variants = [[HeadAblation(layer=layer, heads=[h], mode=m, sink=sink)] for h, m in copies]
    sums = run_from(
        model, clean, layer, variants, head=lambda x: _unembed_loss_sums(model, x, ids, mask)
    )
    return sums.detach().double().cpu().reshape(n, b)


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
    bootstrap: Bootstrap | None = None,
    progress: bool = True,
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
        bootstrap: document resampling for the intervals (default 1000 resamples, seed 0).

    Returns:
        One row per (layer, head, mode): ``loss``, ``clean_loss``, ``delta_loss`` (nats per
        token), ``tokens`` (the number of predicted tokens), ``docs``, and the document
        bootstrap's ``delta_low`` / ``delta_high`` (95%) and ``delta_low_c`` /
        ``delta_high_c`` (Bonferroni-corrected over the table's rows).

    Raises:
        EmptyDomainError: no prompt, or none with a token to predict.
        HeadIndexError, LayerIndexError: a head or layer the model does not have.
    """
    docs = sweep_documents(
        model,
        prompts,
        modes=modes,
        layers=layers,
        heads=heads,
        sink=sink,
        batch_size=batch_size,
        max_length=max_length,
        copies_per_pass=copies_per_pass,
        progress=progress,
    )
    return docs.table(bootstrap or Bootstrap())


def sweep_documents(
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
    progress: bool = True,
) -> SweepDocs:
    """The fast sweep's per-document loss sums (what :func:`ablation_sweep` tabulates).

    Example:
        >>> docs = sweep_documents(model, texts, layers=[3], modes=["zero"])
        >>> docs.ablated.shape          # [heads, documents]
    """
    modes = _check_modes(modes)
    layer_ids, head_ids = _layer_list(model, layers), _head_list(model, heads)
    batches = _batches(model, prompts, batch_size, max_length)
    copies = [(h, m) for m in modes for h in head_ids]
    step = copies_per_pass or len(copies)
    if step < 1:
        raise ExtremeTokenError(f"copies_per_pass must be at least 1, got {copies_per_pass}.")
    per_doc: dict[tuple[int, int, str], list[torch.Tensor]] = {}
    clean_rows: list[torch.Tensor] = []
    counts: list[torch.Tensor] = []
    bar = tqdm(total=len(batches) * len(layer_ids), desc="ablation sweep", disable=not progress)
    for tokens in batches:
        p = _common_sink(model, tokens, sink, modes)
        clean, clean_loss = _clean_pass(model, tokens, layer_ids[0])
        clean_rows.append(clean_loss)
        counts.append(_predicted(tokens))
        for layer in layer_ids:
            for j in range(0, len(copies), step):
                group = copies[j : j + step]
                losses = _sweep_layer(model, clean, layer, group, p)  # [copies, batch]
                for (h, m), v in zip(group, losses, strict=True):
                    per_doc.setdefault((layer, h, m), []).append(v)
            bar.update(1)
        del clean
    bar.close()
    return _collect(per_doc, clean_rows, counts)


# -- active or dormant, per domain -----------------------------------------------------------
STATES = ("active", "dormant", "quiet", "uncertain")


def classify_heads(
    table: pd.DataFrame,
    *,
    sink_threshold: float = 0.5,
    effect_threshold: float = 0.01,
    effect: str = "delta_zero",
) -> pd.Series:
    """``"active"``, ``"dormant"``, ``"quiet"`` or ``"uncertain"`` per row of a table.

    - active: ablating the head changes the loss by more than ``effect_threshold`` nats;
    - dormant: it does not, and the head puts more than ``sink_threshold`` of its
      attention on the sink;
    - quiet: neither (little effect, attention spread elsewhere).

    When the table carries corrected intervals (``<effect>_low_c`` / ``_high_c`` and
    ``sink_mass_low_c`` / ``_high_c``, as :func:`active_dormant` gives), each condition
    must hold for the whole interval: a state is given only where the intervals clear
    the cut-offs, else the head is ``"uncertain"``. Without them, point values decide.

    Example:
        >>> classify_heads(ad.table).value_counts()
    """
    lo_c, hi_c = f"{effect}_low_c", f"{effect}_high_c"
    if {lo_c, hi_c, "sink_mass_low_c", "sink_mass_high_c"} <= set(table.columns):
        lo, hi = table[lo_c], table[hi_c]
        big = (lo > effect_threshold) | (hi < -effect_threshold)
        small = (lo > -effect_threshold) & (hi < effect_threshold)
        sunk = table["sink_mass_low_c"] > sink_threshold
        spread = table["sink_mass_high_c"] < sink_threshold
        state = pd.Series("uncertain", index=table.index)
        state[small & spread] = "quiet"
        state[small & sunk] = "dormant"
        state[big] = "active"
        return state
    big = table[effect].abs() >= effect_threshold
    sunk = table["sink_mass"] > sink_threshold
    state = pd.Series("quiet", index=table.index)
    state[sunk & ~big] = "dormant"
    state[big] = "active"
    return state


@dataclass
class ActiveDormant:
    """Sink mass and ablation effects of every head on every domain, with intervals.

    Attributes:
        table: one row per (domain, layer, head): ``sink_mass``, ``top1_is_sink``,
            ``sink_logit``, ``delta_zero`` and ``delta_sink`` (loss change in nats per
            token when zeroed / when its attention moves to the sink), ``clean_loss``,
            ``docs`` and ``state`` (see :func:`classify_heads`). Each of ``sink_mass``,
            ``delta_zero`` and ``delta_sink`` has ``_low`` / ``_high`` (95% document
            bootstrap) and ``_low_c`` / ``_high_c`` (Bonferroni-corrected over
            ``n_tests`` intervals: two per head and domain), which decide ``state``.
        scans: the :class:`ExtremeTokenScan` of each domain.
        sink: the sink rule in words.
        n_tests: the number of intervals the correction accounts for.
    """

    table: pd.DataFrame
    scans: dict[str, Any]
    sink: str
    provenance: Provenance
    n_tests: int = 1
    sink_threshold: float = 0.5
    effect_threshold: float = 0.01

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
        on the other (both states backed by their corrected intervals).
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

    def sample_warning(self) -> str:
        """A sentence when a domain has too few documents for its intervals, else ``""``."""
        n = int(self.table["docs"].min()) if "docs" in self.table else 0
        return too_few_documents(n, "the smallest domain's ablation sweep")

    def describe_head(self, layer: int, head: int) -> str:
        """One line per domain: the head's state, sink mass and effect with their intervals.

        Example:
            >>> print(ad.describe_head(15, 3))
            L15H3 on code: active; sink mass 0.57 [0.49, 0.64]; zeroing it +0.043 [...] nats
        """
        rows = self.table[(self.table["layer"] == layer) & (self.table["head"] == head)]
        if not len(rows):
            raise ExtremeTokenError(
                f"L{layer}H{head} was not swept; swept layers: "
                f"{sorted(set(self.table['layer']))}. Pass layers=[{layer}] to active_dormant."
            )
        return "\n".join(
            f"L{layer}H{head} on {r['domain']}: {r['state']}; sink mass {r['sink_mass']:.2f} "
            f"[{r['sink_mass_low']:.2f}, {r['sink_mass_high']:.2f}]; zeroing it "
            f"{r['delta_zero']:+.3f} [{r['delta_zero_low']:+.3f}, {r['delta_zero_high']:+.3f}] "
            f"nats per token ({int(r['docs'])} documents)"
            for _, r in rows.iterrows()
        )

    def findings(self) -> str:
        """What the corrected intervals support, in sentences computed from this result."""
        t = self.table
        lines = []
        for d in self.domains:
            c = t[t["domain"] == d]["state"].value_counts()
            lines.append(f"{d}: " + ", ".join(f"{int(c.get(k, 0))} {k}" for k in STATES) + " heads")
        ad = self.most_domain_specific(len(t), active_dormant_only=True)
        if len(ad):
            heads = ", ".join(
                f"L{int(r['layer'])}H{int(r['head'])} (dormant on {r['dormant_in']})"
                for _, r in ad.head(5).iterrows()
            )
            lines.append(
                f"{len(ad)} heads are dormant on one domain and active on the other: {heads}."
            )
        else:
            lines.append(
                "No head is both dormant on one domain and active on the other with intervals "
                "that clear the cut-offs (corrected for "
                f"{self.n_tests} intervals): no active-dormant claim is supported."
            )
        warn = self.sample_warning()
        if warn:
            lines.append(warn)
        return "\n".join(lines)


def domain_contrast(table: pd.DataFrame, domains: Sequence[str] | None = None) -> pd.DataFrame:
    """Per head, how differently it behaves on two domains, most different first.

    ``specificity = |d_sink_mass| + min(1, |d_delta_zero| / q95)``, where ``q95`` is the
    95th percentile of ``|delta_zero|`` over the table: both terms lie in [0, 1], so a
    head can stand out by where it looks or by what it does, and one head with a huge
    effect does not flatten the scale for all the others. ``switches`` is True when its
    state (active / dormant / quiet / uncertain) differs between the domains;
    ``dormant_in`` names the domain where it is dormant while active on the other (the
    paper's active-dormant head), else is empty. Numeric columns are float; interval
    columns (``<metric>_low_<domain>`` ...) come along when the table has them.
    """
    domains = list(domains or dict.fromkeys(table["domain"]))
    if len(domains) != 2:
        raise ExtremeTokenError(f"domain_contrast needs exactly two domains, got {domains}.")
    a, b = domains
    numeric = [
        c
        for c in (
            "sink_mass",
            "sink_mass_low",
            "sink_mass_high",
            "delta_zero",
            "delta_zero_low",
            "delta_zero_high",
            "delta_sink",
        )
        if c in table.columns
    ]
    wide = table.pivot(index=["layer", "head"], columns="domain", values=numeric).astype(float)
    states = table.pivot(index=["layer", "head"], columns="domain", values="state")
    out = pd.DataFrame(index=wide.index)
    for c in numeric:
        out[f"{c}_{a}"] = wide[(c, a)]
        out[f"{c}_{b}"] = wide[(c, b)]
    out[f"state_{a}"] = states[a].astype(str)
    out[f"state_{b}"] = states[b].astype(str)
    out[f"d_sink_mass ({a}-{b})"] = out[f"sink_mass_{a}"] - out[f"sink_mass_{b}"]
    out[f"d_delta_zero ({a}-{b})"] = out[f"delta_zero_{a}"] - out[f"delta_zero_{b}"]
    scale = float(table["delta_zero"].astype(float).abs().quantile(0.95)) or 1.0
    out["specificity"] = out[f"d_sink_mass ({a}-{b})"].abs() + (
        out[f"d_delta_zero ({a}-{b})"].abs() / scale
    ).clip(upper=1.0)
    out["switches"] = out[f"state_{a}"] != out[f"state_{b}"]
    sa, sb = out[f"state_{a}"], out[f"state_{b}"]
    out["dormant_in"] = ""
    out.loc[(sa == "dormant") & (sb == "active"), "dormant_in"] = a
    out.loc[(sb == "dormant") & (sa == "active"), "dormant_in"] = b
    return out.sort_values("specificity", ascending=False).reset_index()


def _check_domains(domains: Mapping[str, Sequence[str]]) -> None:
    if not domains:
        raise EmptyDomainError(
            "No domains were given; pass a mapping from domain name to documents, e.g. "
            "{'code': load_corpus('code', max_docs=8), 'prose': load_corpus('prose', max_docs=8)}."
        )
    for name, docs in domains.items():
        if isinstance(docs, str) or len(docs) == 0:
            what = "a single string, not a list of documents" if isinstance(docs, str) else "empty"
            raise EmptyDomainError(
                f"The {name!r} domain corpus is {what}. Give it at least one document: a list "
                "of strings, or workbench.data.load_corpus(spec, max_docs=8) where spec is a "
                "built-in name ('code', 'prose'), a .txt/.jsonl/.json file, a folder or a hub id."
            )


def active_dormant(
    model: WorkbenchModel,
    domains: Mapping[str, Sequence[str]],
    *,
    sink: Sink = "auto",
    layers: Sequence[int] | None = None,
    batch_size: int = 4,
    max_length: int = 64,
    copies_per_pass: int | None = None,
    modes: Sequence[str] = MODES,
    sink_threshold: float = 0.5,
    effect_threshold: float = 0.01,
    bootstrap: Bootstrap | None = None,
    progress: bool = True,
) -> ActiveDormant:
    """Sink mass (scan) and ablation effects (fast sweep, zero and sink) per head and domain.

    ``modes`` are the ablations swept (``"zero"`` decides the states; ``"sink"`` adds
    ``delta_sink``; sweeping only ``"zero"`` halves the cost). Both come from the same
    documents; each document's sums are kept, so the intervals
    (document bootstrap, ``bootstrap``) cost no extra model run. States are given only
    where the Bonferroni-corrected intervals clear the cut-offs (see
    :func:`classify_heads`).

    Example:
        >>> ad = active_dormant(model, {"code": load_corpus("code", max_docs=8),
        ...                             "prose": load_corpus("prose", max_docs=8)})
        >>> print(ad.findings())

    Raises:
        EmptyDomainError: a domain without documents.
    """
    _check_domains(domains)
    modes = _check_modes(modes)
    boot = bootstrap or Bootstrap()
    layer_ids = _layer_list(model, layers)
    found = {}
    for name, docs in domains.items():
        if progress:
            tqdm.write(f"active_dormant: domain {name!r} ({len(docs)} documents)")
        scan = scan_extreme_tokens(
            model,
            docs,
            sink=sink,
            batch_size=batch_size,
            max_length=max_length,
            bootstrap=boot,
            sink_threshold=sink_threshold,
            progress=progress,
        )
        sweep = sweep_documents(
            model,
            docs,
            modes=modes,
            layers=layer_ids,
            sink=sink,
            batch_size=batch_size,
            max_length=max_length,
            copies_per_pass=copies_per_pass,
            progress=progress,
        )
        found[name] = (scan, sweep)
    n_heads = model.n_heads
    n_tests = 2 * len(domains) * len(layer_ids) * n_heads
    frames = []
    for name, (scan, sweep) in found.items():
        mass_docs = scan.per_doc["sink_mass"][:, layer_ids, :].reshape(sweep.n_docs, -1)
        df = pd.DataFrame(
            {
                "domain": name,
                "layer": np.repeat(layer_ids, n_heads),
                "head": np.tile(np.arange(n_heads), len(layer_ids)),
            }
        )
        est, _, iv = boot.ratio(mass_docs, scan.per_doc["sink_queries"], m=n_tests)
        df["sink_mass"] = est
        for k in ("low", "high", "low_c", "high_c"):
            df[f"sink_mass_{k}"] = iv[k]
        heads = scan.heads.set_index(["layer", "head"])
        idx = pd.MultiIndex.from_arrays([df["layer"], df["head"]])
        df["top1_is_sink"] = heads["top1_is_sink"].reindex(idx).to_numpy()
        df["sink_logit"] = heads["sink_logit"].reindex(idx).to_numpy()
        deltas = sweep.deltas()  # [docs, keys]
        for mode in MODES:
            cols = [
                sweep.keys.index((l, h, mode)) if (l, h, mode) in sweep.keys else -1
                for l, h in zip(df["layer"], df["head"], strict=True)
            ]
            if -1 in cols:
                continue
            est, _, iv = boot.ratio(deltas[:, cols], sweep.counts, m=n_tests)
            df[f"delta_{mode}"] = est
            for k in ("low", "high", "low_c", "high_c"):
                df[f"delta_{mode}_{k}"] = iv[k]
        df["clean_loss"] = float(sweep.clean.sum() / sweep.counts.sum())
        df["docs"] = sweep.n_docs
        frames.append(df)
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
        bootstrap={"n_boot": boot.n_boot, "alpha": boot.alpha, "seed": boot.seed},
    )
    scans = {k: v[0] for k, v in found.items()}
    return ActiveDormant(
        table,
        scans,
        describe_sink(model, sink),
        prov,
        n_tests=n_tests,
        sink_threshold=sink_threshold,
        effect_threshold=effect_threshold,
    )
