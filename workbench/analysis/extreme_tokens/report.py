"""The paper's claims beside what a model shows: one table from the analyses' results.

Example:
    >>> paper_comparison(scan, ad, peak)          # columns: phenomenon, paper, this model
"""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["PAPER", "paper_comparison"]

# Guo et al. (2024), "Active-Dormant Attention Heads: Mechanistically Demystifying
# Extreme-Token Phenomena in LLMs": the LLM-side claims this notebook checks.
PAPER = {
    "attention sink": "Many heads, above all in the middle and late layers, put most of "
    "their attention on the first token (BOS), whatever the query.",
    "sink logit": "The sink key gets a much larger attention logit than the other keys.",
    "value-state drain": "The sink's value state is small: ||v W_O|| at the sink is far below "
    "that of the other tokens, so attending to it adds almost nothing.",
    "residual-state peak": "The sink's residual norm is far above every other token's in the "
    "middle layers (Llama-3.1-8B: 496 at BOS) and falls again in the last layers.",
    "peak source": "One early MLP writes the peak: zeroing Llama-3.1-8B's layer-0 MLP takes "
    "the BOS norm from 496 to 34.",
    "active-dormant": "Heads are dormant (a sink, no effect when ablated) on some domains and "
    "active on others: Llama-2-7B L16H25 is a sink on Wikipedia and active on GitHub.",
}


def _sink_heads(scan: Any, threshold: float) -> pd.DataFrame:
    return scan.heads[scan.heads["sink_mass"] > threshold]


def paper_comparison(
    scan: Any, ad: Any = None, peak: Any = None, *, threshold: float = 0.5
) -> pd.DataFrame:
    """One row per phenomenon: the paper's claim and what this model's results show.

    Args:
        scan: an ``ExtremeTokenScan``.
        ad: an ``ActiveDormant`` (optional).
        peak: a ``ResidualPeak`` (optional).
        threshold: the sink mass above which a head counts as a sink head.
    """
    h = scan.heads
    sinks = _sink_heads(scan, threshold)
    s = scan.summary()
    rows = [
        (
            "attention sink",
            f"{s['share_heads_sink_mass_gt_0.5']:.0%} of the heads put more than {threshold} of "
            f"their attention on the sink ({scan.sink}); the sink is the top-1 key of "
            f"{s['share_heads_top1_is_sink']:.0%}. Mean sink mass by third of the model: "
            + ", ".join(
                f"{x:.2f}"
                for x in h.groupby(pd.cut(h["layer"], 3, labels=False))["sink_mass"].mean()
            )
            + ".",
        ),
        (
            "sink logit",
            f"median sink logit {sinks['sink_logit'].median():.2f} over the sink heads "
            f"({h['sink_logit'].median():.2f} over all heads)"
            if len(sinks)
            else f"no sink heads; median sink logit {h['sink_logit'].median():.2f}",
        ),
        (
            "value-state drain",
            f"median ||v W_O|| sink / other = {sinks['value_norm_ratio'].median():.2f} over the "
            f"sink heads ({h['value_norm_ratio'].median():.2f} over all heads)"
            if len(sinks)
            else f"median ||v W_O|| sink / other = {h['value_norm_ratio'].median():.2f}",
        ),
        (
            "residual-state peak",
            f"sink / median-token residual norm peaks at {s['peak_resid_ratio']:.0f}x after "
            f"layer {s['peak_layer']} (sink norm "
            f"{scan.residual.loc[s['peak_layer'], 'sink_norm']:.0f}); "
            f"{s['last_layer_resid_ratio']:.1f}x after the last layer.",
        ),
    ]
    if peak is not None:
        t = peak.table
        best = t.loc[t["ablated"] == peak.creator()].iloc[0]
        rows.append(
            (
                "peak source",
                f"zeroing {best['ablated']} takes the sink norm after layer {peak.at_layer} from "
                f"{t.loc[0, 'sink_norm']:.0f} to {best['sink_norm']:.0f} "
                f"({best['drop']:.0%} drop); the peak rises at layer {peak.rise_layer}.",
            )
        )
    if ad is not None:
        a, b = ad.domains[:2]
        counts = ad.table.groupby("domain")["state"].value_counts().unstack(fill_value=0)
        states = "; ".join(
            f"{d}: "
            + ", ".join(
                f"{counts.loc[d].get(k, 0)} {k}" for k in ("active", "dormant", "uncertain")
            )
            for d in counts.index
        )
        top = ad.most_domain_specific(1).iloc[0]
        text = f"most domain-specific head {_describe(top, a, b)}"
        ad_heads = ad.most_domain_specific(1, active_dormant_only=True)
        if len(ad_heads):
            best = ad_heads.iloc[0]
            text += (
                f"; the strongest active-dormant head is {_describe(best, a, b)}, dormant on "
                f"{best['dormant_in']}"
            )
        n_ad = len(ad.most_domain_specific(len(ad.table), active_dormant_only=True))
        text += (
            f". {n_ad} swept heads are dormant on one domain and active on the other, each "
            f"state backed by its corrected interval ({states})."
        )
        warn = ad.sample_warning() if hasattr(ad, "sample_warning") else ""
        if warn:
            text += " " + warn
        rows.append(("active-dormant", text))
    return pd.DataFrame([{"phenomenon": k, "paper": PAPER[k], "this model": v} for k, v in rows])


def _describe(row: Any, a: str, b: str) -> str:
    def effect(d: str) -> str:
        v = f"{row[f'delta_zero_{d}']:+.3f}"
        lo, hi = f"delta_zero_low_{d}", f"delta_zero_high_{d}"
        if lo in row and hi in row:
            v += f" [{row[lo]:+.3f}, {row[hi]:+.3f}]"
        return v

    return (
        f"L{int(row['layer'])}H{int(row['head'])} (sink mass {row[f'sink_mass_{a}']:.2f} on {a} "
        f"vs {row[f'sink_mass_{b}']:.2f} on {b}; ablation effect {effect(a)} on {a} vs "
        f"{effect(b)} on {b} nats, 95% intervals)"
    )
