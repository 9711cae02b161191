"""Heads over a data set: how often each appears in routes, and what kind of edges it makes.

For every document (truncated to ``max_length`` tokens) we build the route graphs of a few
predictions (``predictions_per_doc`` positions spread over the document, always including
the last) from one forward pass, and count per head (layer ``l``, head ``h``):

- ``graphs``: in how many route graphs it has at least one edge; ``frequency`` divides by
  the number of graphs (Ferrando & Voita's "how often a head appears in routes");
- ``edges`` and ``mass``: its edges and their summed importance;
- ``prev_share``: the share of its edges whose source is the previous token (``j = i − 1``);
- ``subword_share``: the share of its edges that join two pieces of one word (``j < i`` in
  the same word; a token continues a word when it starts with a letter or digit and the
  token before it ends with one, so " Par" + "is" is one word and " the" + " cat" two).

:func:`classify_heads` labels previous-token heads (most edges go to ``i − 1``, not only
inside words) and subword-merging heads (most edges join pieces of a word).
:func:`domain_specialisation` compares the frequencies on two corpora (any two domains
from :func:`workbench.data.load_corpora`).

**Uncertainty.** The counter keeps every document's counts, so a bootstrap over
documents gives each head's route frequency an interval (``frequency_low`` /
``frequency_high``, 95%) at no extra model cost, and :func:`domain_specialisation` names
a domain only where the Bonferroni-corrected interval of the difference (over all heads)
clears the margin; otherwise the head is ``"uncertain"``.

Example:
    >>> from workbench.data import load_corpus
    >>> stats = head_route_stats(model, load_corpus("prose", max_docs=8), max_length=64)
    >>> classify_heads(stats).query("previous_token")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from workbench.analysis.routes.decomposition import (
    CAPTURED,
    HeadWeights,
    forward_pass_from_capture,
    head_weights,
)
from workbench.analysis.routes.errors import RouteError
from workbench.analysis.routes.graph import DEFAULT_TAU, RouteGraph, Routes, check_tau
from workbench.analysis.uncertainty import Bootstrap, ratio_draws, too_few_documents
from workbench.models.model import WorkbenchModel
from workbench.tracing.capture import Capture
from workbench.tracing.streaming import Reducer, stream

__all__ = [
    "HeadRouteStats",
    "RouteHeadCounter",
    "classify_heads",
    "domain_specialisation",
    "head_route_stats",
    "prediction_positions",
    "word_ids",
]

_COUNTS = ("graphs", "edges", "mass", "prev", "subword")


def word_ids(tokens: Sequence[str]) -> list[int]:
    """A word number per token: a token continues the previous word when it starts with a
    letter or digit and the token before it ends with one.

    Example:
        >>> word_ids([" Par", "is", " is", " big"])
        [0, 0, 1, 2]
    """
    out, word = [], -1
    prev_end = ""
    for t in tokens:
        cont = bool(t) and t[0].isalnum() and prev_end.isalnum()
        word += 0 if cont and word >= 0 else 1
        out.append(word)
        prev_end = t[-1:] if t else ""
    return out


def prediction_positions(n_tokens: int, k: int) -> list[int]:
    """``k`` positions spread evenly over ``1..n_tokens-1``, always including the last."""
    if n_tokens < 2:
        return [n_tokens - 1] if n_tokens else []
    k = max(1, min(k, n_tokens - 1))
    return sorted({int(round(x)) for x in np.linspace(n_tokens - 1, 1, k)})


def _count_graph(g: RouteGraph, words: list[int], acc: dict[str, np.ndarray]) -> None:
    seen = set()
    for u, v, d in g.graph.edges(data=True):
        if d["kind"] != "head":
            continue
        lh = (d["layer"], d["head"])
        seen.add(lh)
        i, j = v.pos, u.pos
        acc["edges"][lh] += 1
        acc["mass"][lh] += d["importance"]
        acc["prev"][lh] += j == i - 1
        acc["subword"][lh] += j < i and words[j] == words[i]
    for lh in seen:
        acc["graphs"][lh] += 1


class RouteHeadCounter(Reducer):
    """A :class:`~workbench.tracing.streaming.Reducer` that counts heads in route graphs."""

    def __init__(
        self,
        model: WorkbenchModel,
        *,
        tau: float = DEFAULT_TAU,
        predictions_per_doc: int = 8,
        block_bytes: int | None = None,
        weights: list[HeadWeights] | None = None,
    ):
        self.model = model
        self.tau = check_tau(tau)
        self.k = int(predictions_per_doc)
        self.block_bytes = block_bytes
        self.weights = weights or [head_weights(model, i) for i in range(model.n_layers)]
        shape = (model.n_layers, model.n_heads)
        self.acc = {name: np.zeros(shape) for name in _COUNTS}
        self.n_graphs = 0
        self.n_docs = 0
        # per document: counts [L, H] per name, and its number of graphs (for the bootstrap)
        self.doc_acc: dict[str, list[np.ndarray]] = {name: [] for name in _COUNTS}
        self.doc_graphs: list[int] = []
        self._boot = Bootstrap()

    def update(self, cap: Capture) -> None:
        for b in range(cap.tokens.shape[0]):
            fp = forward_pass_from_capture(self.model, cap, b, weights=self.weights)
            routes = Routes(fp, block_bytes=self.block_bytes)
            words = word_ids(fp.tokens)
            doc = {name: np.zeros_like(v) for name, v in self.acc.items()}
            n = 0
            for p in prediction_positions(fp.seq_len, self.k):
                _count_graph(routes.graph(p, self.tau), words, doc)
                n += 1
            for name, v in doc.items():
                self.acc[name] += v
                self.doc_acc[name].append(v)
            self.doc_graphs.append(n)
            self.n_graphs += n
            self.n_docs += 1

    def state(self) -> dict[str, Any]:
        shape = (0, *self.acc["graphs"].shape)
        return {
            **{k: torch.from_numpy(v) for k, v in self.acc.items()},
            **{
                f"doc_{k}": torch.from_numpy(np.stack(v) if v else np.zeros(shape))
                for k, v in self.doc_acc.items()
            },
            "graphs_per_doc": torch.tensor(self.doc_graphs, dtype=torch.long),
            "n_graphs": self.n_graphs,
            "n_docs": self.n_docs,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.acc = {k: state[k].numpy().copy() for k in _COUNTS}
        self.doc_acc = {k: list(state[f"doc_{k}"].numpy().copy()) for k in _COUNTS}
        self.doc_graphs = state["graphs_per_doc"].tolist()
        self.n_graphs, self.n_docs = int(state["n_graphs"]), int(state["n_docs"])

    def result(self) -> HeadRouteStats:
        n_layers, n_heads = self.acc["graphs"].shape
        layer, head = np.meshgrid(range(n_layers), range(n_heads), indexing="ij")
        edges = self.acc["edges"].ravel()
        safe = np.maximum(edges, 1)
        frame = pd.DataFrame(
            {
                "layer": layer.ravel(),
                "head": head.ravel(),
                "graphs": self.acc["graphs"].ravel().astype(int),
                "frequency": self.acc["graphs"].ravel() / max(self.n_graphs, 1),
                "edges": edges.astype(int),
                "mass": self.acc["mass"].ravel(),
                "prev_share": np.where(edges > 0, self.acc["prev"].ravel() / safe, np.nan),
                "subword_share": np.where(edges > 0, self.acc["subword"].ravel() / safe, np.nan),
            }
        )
        per_doc = {
            k: np.stack(v).reshape(len(v), -1) if v else np.zeros((0, edges.size))
            for k, v in self.doc_acc.items()
        }
        per_doc["n_graphs"] = np.asarray(self.doc_graphs, dtype=np.float64)
        stats = HeadRouteStats(frame, self.n_graphs, self.n_docs, self.tau, per_doc)
        if self.n_docs:
            _, _, iv = self._boot.ratio(per_doc["graphs"], per_doc["n_graphs"])
            frame["frequency_low"], frame["frequency_high"] = iv["low"], iv["high"]
        return stats


@dataclass
class HeadRouteStats:
    """Per-head route statistics over a data set (see the module docstring for columns)."""

    frame: pd.DataFrame
    n_graphs: int
    n_docs: int
    tau: float
    per_doc: dict[str, np.ndarray] | None = None  # [docs, layers * heads] counts; n_graphs [docs]

    def top(self, k: int = 10, by: str = "frequency") -> pd.DataFrame:
        return self.frame.sort_values(by, ascending=False).head(k).reset_index(drop=True)

    def sample_warning(self) -> str:
        """A sentence when there are too few documents for the intervals, else ``""``."""
        return too_few_documents(self.n_docs, "these route statistics")


def head_route_stats(
    model: WorkbenchModel,
    texts: Sequence[str],
    *,
    tau: float = DEFAULT_TAU,
    predictions_per_doc: int = 8,
    max_length: int = 128,
    batch_size: int = 4,
    block_bytes: int | None = None,
    cache_dir: Any = None,
    use_cache: bool = True,
    progress: bool = True,
) -> HeadRouteStats:
    """Count heads in the route graphs of ``texts`` (resumable; see ``tracing.streaming``)."""
    if not texts:
        raise RouteError("head_route_stats got no texts: the data set is empty.")
    reducer = RouteHeadCounter(
        model, tau=tau, predictions_per_doc=predictions_per_doc, block_bytes=block_bytes
    )
    return stream(
        model,
        texts,
        reducer,
        what=list(CAPTURED),
        batch_size=batch_size,
        max_length=max_length,
        cache_dir=cache_dir,
        use_cache=use_cache,
        settings={"tau": reducer.tau, "predictions_per_doc": reducer.k},
        progress=progress,
    )


def classify_heads(
    stats: HeadRouteStats,
    *,
    min_edges: int = 5,
    prev_threshold: float = 0.5,
    subword_threshold: float = 0.5,
) -> pd.DataFrame:
    """Add boolean columns ``previous_token`` and ``subword_merging`` to ``stats.frame``.

    - previous-token head: at least ``min_edges`` edges, at least ``prev_threshold`` of
      them to ``i − 1``, and not mostly inside words (so it also crosses word boundaries);
    - subword-merging head: at least ``min_edges`` edges, at least ``subword_threshold``
      of them joining pieces of one word.
    """
    df = stats.frame.copy()
    enough = df["edges"] >= min_edges
    sub = df["subword_share"].fillna(0.0)
    prev = df["prev_share"].fillna(0.0)
    df["subword_merging"] = enough & (sub >= subword_threshold)
    df["previous_token"] = enough & (prev >= prev_threshold) & ~df["subword_merging"]
    return df


def domain_specialisation(
    by_domain: Mapping[str, HeadRouteStats],
    *,
    margin: float = 0.1,
    z_min: float = 2.0,
    bootstrap: Bootstrap | None = None,
) -> pd.DataFrame:
    """Which heads appear in routes more often in one domain than the other.

    Args:
        by_domain: exactly two domains, e.g. ``{"code": stats_code, "wiki": stats_wiki}``.
        margin: the least difference in frequency for a head to count as specialised.
        z_min: the least |z| of a two-proportion z-test on the graph counts (used only
            when the stats carry no per-document counts).
        bootstrap: document resampling, each domain resampled on its own.

    Returns one row per head: ``freq_<a>``, ``freq_<b>``, ``diff`` (a − b), ``z``, and with
    per-document counts ``diff_low`` / ``diff_high`` (95%) and ``diff_low_c`` /
    ``diff_high_c`` (Bonferroni over all heads). ``specialised`` is the domain whose
    corrected interval lies beyond ``margin``, ``"shared"`` where it lies inside
    ``(-margin, margin)``, else ``"uncertain"``. Graphs of one document share their
    heads, so documents, not graphs, are resampled (the z-test treats graphs as
    independent and is kept only for tables without per-document counts).
    """
    if len(by_domain) != 2:
        raise RouteError(
            f"domain_specialisation compares two domains; got {len(by_domain)}: {list(by_domain)}."
        )
    (a, sa), (b, sb) = by_domain.items()
    fa, fb = sa.frame, sb.frame
    df = fa[["layer", "head"]].copy()
    df[f"freq_{a}"] = fa["frequency"].to_numpy()
    df[f"freq_{b}"] = fb["frequency"].to_numpy()
    for name, f in ((a, fa), (b, fb)):
        for k in ("low", "high"):
            if f"frequency_{k}" in f:
                df[f"freq_{name}_{k}"] = f[f"frequency_{k}"].to_numpy()
    df["diff"] = df[f"freq_{a}"] - df[f"freq_{b}"]
    n1, n2 = max(sa.n_graphs, 1), max(sb.n_graphs, 1)
    pooled = (fa["graphs"].to_numpy() + fb["graphs"].to_numpy()) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, df["diff"].to_numpy() / se, 0.0)
    df["z"] = z
    if sa.per_doc is not None and sb.per_doc is not None and sa.n_docs and sb.n_docs:
        boot = bootstrap or Bootstrap()
        m = len(df)
        draws = []
        for i, st in enumerate((sa, sb)):
            w = Bootstrap(boot.n_boot, boot.level, boot.alpha, boot.seed + i).weights(st.n_docs)
            draws.append(ratio_draws(st.per_doc["graphs"], st.per_doc["n_graphs"], w))
        iv = boot.summarise(
            df["diff"].to_numpy(), draws[0] - draws[1], m, n_docs=min(sa.n_docs, sb.n_docs)
        )
        for k in ("low", "high", "low_c", "high_c"):
            df[f"diff_{k}"] = iv[k]
        lab = np.full(len(df), "uncertain", dtype=object)
        lab[iv["low_c"] > margin] = a
        lab[iv["high_c"] < -margin] = b
        lab[(iv["low_c"] > -margin) & (iv["high_c"] < margin)] = "shared"
        df["specialised"] = lab
    else:
        lab = np.full(len(df), "shared", dtype=object)
        lab[(df["diff"] >= margin) & (z >= z_min)] = a
        lab[(df["diff"] <= -margin) & (z <= -z_min)] = b
        df["specialised"] = lab
    return df.sort_values("diff", key=lambda s: -s.abs()).reset_index(drop=True)
