"""The token→feature bipartite graph, streamed in memory that does not grow with the corpus.

There is an edge (t, f) when SAE feature f fires (activation > 0) at any occurrence of
token t; the sink (position 0 of every window) is left out. Per layer the graph is held
as a bitset ``[vocab, ceil(d_sae / 8)]`` (uint8): 25 MB for a 49k vocabulary and 4096
features, whatever the number of tokens streamed. Alongside it the accumulator keeps
token counts, feature firing counts, and each feature's top-activating contexts (a fixed
``[d_sae, n_contexts]`` table of activations and token snippets).

- **Degree** of a token: its number of features.
- **Coverage** C(k): the share of features reached by the k most frequent tokens,
  against all features and against the features that ever fire.

**Uncertainty of C(k).** For the tracked tokens (the top 10 by default) the accumulator
also keeps, per document, the features each one reaches there, and the features that
fire there. C(k) is a union over documents, so a bootstrap resample (which holds about
63% of the distinct documents) would always reach fewer features; instead the interval
comes from random halves: over ``n_splits`` random splits of the documents into two
disjoint halves, ``var(C) ≈ mean((C_A − C_B)²) / 4`` (the random-groups estimate), and the
interval is ``C ± z · sd``. It says how much C(k) depends on which documents were read,
not how it would grow with more text.

Example:
    >>> graphs = build_graph(model, saes, docs, max_tokens=200_000)   # {layer: FeatureGraph}
    >>> graphs[14].coverage(k_max=10)[["k", "token", "pct_all", "pct_fired"]]
    >>> coverage_table(graphs)        # the paper's Table 1, with its Gemma-2-9B numbers beside
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench.analysis.function_tokens.errors import FunctionTokenError
from workbench.analysis.function_tokens.windows import packed_windows
from workbench.documents import as_documents
from workbench.models.model import WorkbenchModel
from workbench.sae.activations import residuals
from workbench.sae.model import SAE
from workbench.tracing.provenance import Provenance, provenance_for

__all__ = [
    "PAPER_TABLE1",
    "FeatureGraph",
    "GraphAccumulator",
    "build_graph",
    "coverage_table",
    "degree_table",
    "sparse_codes",
]

log = logging.getLogger(__name__)

# The paper's Gemma-2-9B numbers (Gemma Scope SAEs at layers 9/20/31): the share of all
# features reached by the top-1 token (".") and by the top-10 tokens. The paper's other
# rows are not reproduced here, so they stay empty rather than guessed.
PAPER_TABLE1 = {
    "layers": (9, 20, 31),
    1: (23.2, 51.3, 37.2),
    10: (48.5, 76.5, 68.3),
}

_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int32)
_BITS = torch.tensor([1 << b for b in range(8)], dtype=torch.uint8)


def _unpack_row(row: torch.Tensor, d_sae: int) -> torch.Tensor:
    """[n_bytes] uint8 -> [d_sae] bool (bit b of byte j is feature 8j + b)."""
    return ((row[:, None] & _BITS) != 0).reshape(-1)[:d_sae]


def _set_bits(flat: torch.Tensor, keys: torch.Tensor) -> None:
    """Set bit ``key`` of the bitset ``flat`` (uint8, bit b of byte j is 8j + b) per key."""
    keys = torch.unique(keys)
    if not keys.numel():
        return
    byte = keys >> 3
    bit = _BITS[(keys & 7)].to(torch.int32)
    ub, inv = torch.unique(byte, return_inverse=True)
    acc = torch.zeros(ub.numel(), dtype=torch.int32).index_add_(0, inv, bit)
    flat[ub] |= acc.to(torch.uint8)  # distinct bits of one byte add up to their OR


def _popcount(bits: np.ndarray) -> np.ndarray:
    """Set bits along the last axis of a uint8 array."""
    return _POPCOUNT.numpy()[bits].sum(-1)


def sparse_codes(sae: SAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Non-zero SAE activations of ``x`` [n, d_in] as (rows [m], features [m], values [m]).

    TopK SAEs never build the dense [n, d_sae] table.
    """
    if sae.cfg.architecture == "topk":
        idx, val = sae.encode_sparse(x)  # [n, k]
        keep = val > 0
        rows = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(idx)
        return rows[keep], idx[keep], val[keep]
    f = sae.encode(x)
    rows, feats = f.nonzero(as_tuple=True)
    return rows, feats, f[rows, feats]


class GraphAccumulator:
    """Folds (token, feature activations) into one layer's graph; memory fixed at creation.

    Args:
        vocab_size, d_sae: the graph's two sides.
        n_contexts: top-activating contexts kept per feature.
        before, after: tokens of context kept left and right of the activating token.
    """

    def __init__(
        self,
        vocab_size: int,
        d_sae: int,
        *,
        n_contexts: int = 8,
        before: int = 12,
        after: int = 3,
        track: Sequence[int] | torch.Tensor | None = None,
        n_docs: int = 0,
    ):
        self.vocab_size, self.d_sae = vocab_size, d_sae
        self.n_bytes = (d_sae + 7) // 8
        self.bits = torch.zeros(vocab_size, self.n_bytes, dtype=torch.uint8)
        self.token_counts = torch.zeros(vocab_size, dtype=torch.long)
        self.feature_counts = torch.zeros(d_sae, dtype=torch.long)
        self.n_contexts, self.before, self.after = n_contexts, before, after
        width = before + 1 + after
        self.top_vals = torch.full((d_sae, n_contexts), -torch.inf)
        self.top_ctx = torch.full((d_sae, n_contexts, width), -1, dtype=torch.int32)
        self.n_tokens = 0
        # per document: features each tracked token reaches there, and features that fire
        self.track = None if track is None else torch.as_tensor(track, dtype=torch.long)
        k = 0 if self.track is None else int(self.track.numel())
        self.slot = torch.full((vocab_size,), -1, dtype=torch.long)
        if k:
            self.slot[self.track] = torch.arange(k)
        self.doc_bits = torch.zeros(n_docs, k, self.n_bytes, dtype=torch.uint8)
        self.doc_fired = torch.zeros(n_docs, self.n_bytes, dtype=torch.uint8)
        self.doc_tokens = torch.zeros(n_docs, dtype=torch.long)

    def update(
        self,
        tokens: torch.Tensor,
        rows: torch.Tensor,
        feats: torch.Tensor,
        vals: torch.Tensor,
        contexts: torch.Tensor | None = None,
        docs: torch.Tensor | None = None,
    ) -> None:
        """Add ``tokens`` [n] whose non-zero activations are (rows, feats, vals) [m].

        ``contexts`` [n, before + 1 + after] holds each token's snippet (ids, -1 = none);
        ``docs`` [n] the document of each token (for the per-document bitsets).
        """
        tokens = tokens.cpu().long()
        rows, feats, vals = rows.cpu().long(), feats.cpu().long(), vals.detach().float().cpu()
        self.n_tokens += int(tokens.numel())
        self.token_counts += torch.bincount(tokens, minlength=self.vocab_size)
        self.feature_counts += torch.bincount(feats, minlength=self.d_sae)
        # edges: set bit (token, feature); duplicates collapse in unique()
        tok = tokens[rows]
        width = self.n_bytes * 8
        _set_bits(self.bits.view(-1), tok * width + feats)
        if docs is not None and self.doc_tokens.numel():
            docs = docs.cpu().long()
            self.doc_tokens += torch.bincount(docs, minlength=self.doc_tokens.numel())
            d = docs[rows]
            _set_bits(self.doc_fired.view(-1), d * width + feats)
            k = self.doc_bits.shape[1]
            if k:
                slot = self.slot[tok]
                sel = slot >= 0
                _set_bits(self.doc_bits.view(-1), (d[sel] * k + slot[sel]) * width + feats[sel])
        if contexts is not None and vals.numel():
            self._update_contexts(rows, feats, vals, contexts.cpu().to(torch.int32))

    def _update_contexts(
        self, rows: torch.Tensor, feats: torch.Tensor, vals: torch.Tensor, ctx: torch.Tensor
    ) -> None:
        k = self.n_contexts
        beat = vals > self.top_vals[feats, -1]  # only candidates that enter a top list
        rows, feats, vals = rows[beat], feats[beat], vals[beat]
        if not vals.numel():
            return
        order = torch.argsort(-vals, stable=True)
        order = order[torch.argsort(feats[order], stable=True)]  # by feature, then value desc
        rows, feats, vals = rows[order], feats[order], vals[order]
        fs, inv, counts = torch.unique_consecutive(feats, return_inverse=True, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(feats.numel()) - starts[inv]
        keep = rank < k
        new_vals = torch.full((fs.numel(), k), -torch.inf)
        new_ctx = torch.full((fs.numel(), k, ctx.shape[1]), -1, dtype=torch.int32)
        new_vals[inv[keep], rank[keep]] = vals[keep]
        new_ctx[inv[keep], rank[keep]] = ctx[rows[keep]]
        all_vals = torch.cat([self.top_vals[fs], new_vals], 1)  # [u, 2k]
        all_ctx = torch.cat([self.top_ctx[fs], new_ctx], 1)
        best = all_vals.topk(k, dim=1)
        self.top_vals[fs] = best.values
        self.top_ctx[fs] = torch.gather(
            all_ctx, 1, best.indices[..., None].expand(-1, -1, ctx.shape[1])
        )

    def result(self, layer: int, decode: Callable[[int], str]) -> FeatureGraph:
        return FeatureGraph(
            layer=layer,
            d_sae=self.d_sae,
            bits=self.bits.clone(),
            token_counts=self.token_counts.clone(),
            feature_counts=self.feature_counts.clone(),
            top_vals=self.top_vals.clone(),
            top_ctx=self.top_ctx.clone(),
            before=self.before,
            n_tokens=self.n_tokens,
            decode=decode,
            tracked=None if self.track is None else self.track.clone(),
            doc_bits=self.doc_bits[self.doc_tokens > 0].clone(),
            doc_fired=self.doc_fired[self.doc_tokens > 0].clone(),
        )


@dataclass
class FeatureGraph:
    """One layer's token→feature graph with the counts it was built from."""

    layer: int
    d_sae: int
    bits: torch.Tensor  # [vocab, ceil(d_sae/8)] uint8 bitset of edges
    token_counts: torch.Tensor  # [vocab] long: occurrences streamed (sink left out)
    feature_counts: torch.Tensor  # [d_sae] long: how many tokens each feature fired on
    top_vals: torch.Tensor  # [d_sae, n_contexts] float, -inf = empty
    top_ctx: torch.Tensor  # [d_sae, n_contexts, width] int32 token ids, -1 = none
    before: int
    n_tokens: int
    decode: Callable[[int], str] = field(repr=False, default=str)
    provenance: Provenance | None = field(repr=False, default=None)
    tracked: torch.Tensor | None = field(repr=False, default=None)  # [k] token ids
    doc_bits: torch.Tensor | None = field(repr=False, default=None)  # [docs, k, n_bytes]
    doc_fired: torch.Tensor | None = field(repr=False, default=None)  # [docs, n_bytes]

    @property
    def n_docs(self) -> int:
        """Documents with at least one streamed token (0 when none were tracked)."""
        return 0 if self.doc_fired is None else int(self.doc_fired.shape[0])

    def coverage_intervals(
        self, *, n_splits: int = 200, level: float = 0.95, seed: int = 0
    ) -> pd.DataFrame:
        """C(k) of the tracked tokens with random-halves intervals (see the module notes).

        Columns: k, token_id, token, pct_all, pct_all_low, pct_all_high, pct_fired,
        pct_fired_low, pct_fired_high, docs. Intervals are NaN with fewer than 2 documents.

        Example:
            >>> graphs[14].coverage_intervals()[["k", "token", "pct_all", "pct_all_low"]]
        """
        if self.tracked is None or self.doc_bits is None or not self.tracked.numel():
            raise FunctionTokenError(
                "This graph tracked no tokens per document, so C(k) has no interval; build "
                "it with build_graph(..., track=freq.order()[:10])."
            )
        k = int(self.tracked.numel())
        cov = self.coverage(k, order=self.tracked.tolist()).reset_index(drop=True)
        n = self.n_docs
        z = NormalDist().inv_cdf(0.5 + level / 2)
        cov["docs"] = n
        if n < 2:
            for c in ("pct_all", "pct_fired"):
                cov[f"{c}_low"] = cov[f"{c}_high"] = np.nan
            return cov
        bits = np.bitwise_or.accumulate(self.doc_bits.numpy(), axis=1)  # [docs, k, nb]
        fired = self.doc_fired.numpy()
        rng = np.random.default_rng(seed)
        half_all, half_fired = [], []
        for _ in range(n_splits):
            perm = rng.permutation(n)
            pair = []
            for part in (perm[: n // 2], perm[n // 2 :]):
                reach = _popcount(np.bitwise_or.reduce(bits[part], axis=0))  # [k]
                n_fired = max(int(_popcount(np.bitwise_or.reduce(fired[part], axis=0))), 1)
                pair.append((100 * reach / self.d_sae, 100 * reach / n_fired))
            half_all.append(pair[0][0] - pair[1][0])
            half_fired.append(pair[0][1] - pair[1][1])
        for c, diffs in (("pct_all", half_all), ("pct_fired", half_fired)):
            sd = np.sqrt(np.mean(np.square(diffs), axis=0) / 4)  # [k]
            cov[f"{c}_low"] = (cov[c] - z * sd).clip(lower=0)
            cov[f"{c}_high"] = (cov[c] + z * sd).clip(upper=100)
        return cov

    # -- graph --------------------------------------------------------------------------
    def degrees(self) -> torch.Tensor:
        """[vocab] long: the number of features each token connects to."""
        return _POPCOUNT[self.bits.long()].sum(-1).long()

    def degree(self, token_id: int) -> int:
        """The number of features ``token_id`` connects to."""
        self._check_token(token_id)
        return int(_POPCOUNT[self.bits[token_id].long()].sum())

    def features_of(self, token_id: int) -> torch.Tensor:
        """Feature ids connected to ``token_id`` (ascending)."""
        self._check_token(token_id)
        return _unpack_row(self.bits[token_id], self.d_sae).nonzero().squeeze(-1)

    def tokens_of(self, feature: int) -> torch.Tensor:
        """Token ids connected to ``feature`` (ascending)."""
        self._check_feature(feature)
        col = (self.bits[:, feature >> 3] & (1 << (feature & 7))) != 0
        return col.nonzero().squeeze(-1)

    @property
    def fired(self) -> torch.Tensor:
        """[d_sae] bool: features that fired at least once."""
        return self.feature_counts > 0

    def frequency_order(self) -> torch.Tensor:
        """Token ids by decreasing streamed count (ties by id), only tokens that occur."""
        order = torch.argsort(-self.token_counts, stable=True)
        return order[: int((self.token_counts > 0).sum())]

    def coverage(self, k_max: int = 10, order: Sequence[int] | None = None) -> pd.DataFrame:
        """C(k) for k = 1..k_max: the share of features reached by the top-k tokens.

        ``order`` ranks the tokens (default: by their count in the stream). Columns: k,
        token_id, token, degree, pct_all (of all d_sae features), pct_fired (of the
        features that ever fired).
        """
        ids = self.frequency_order() if order is None else torch.as_tensor(list(order))
        ids = ids[:k_max]
        reached = torch.zeros(self.d_sae, dtype=torch.bool)
        n_fired = max(int(self.fired.sum()), 1)
        deg = self.degrees()
        rows = []
        for k, t in enumerate(ids.tolist(), start=1):
            reached |= _unpack_row(self.bits[t], self.d_sae)
            n = int(reached.sum())
            rows.append(
                {
                    "k": k,
                    "token_id": t,
                    "token": self.decode(t),
                    "degree": int(deg[t]),
                    "pct_all": 100 * n / self.d_sae,
                    "pct_fired": 100 * n / n_fired,
                }
            )
        return pd.DataFrame(rows)

    # -- contexts -----------------------------------------------------------------------
    def contexts(self, feature: int) -> pd.DataFrame:
        """The feature's top-activating contexts: activation, left, token, right (text)."""
        self._check_feature(feature)
        rows = []
        for v, ctx in zip(self.top_vals[feature].tolist(), self.top_ctx[feature], strict=True):
            if v == -np.inf:
                continue
            ids = ctx.tolist()
            left = [i for i in ids[: self.before] if i >= 0]
            right = [i for i in ids[self.before + 1 :] if i >= 0]
            rows.append(
                {
                    "activation": v,
                    "left": "".join(self.decode(i) for i in left),
                    "token": self.decode(ids[self.before]),
                    "right": "".join(self.decode(i) for i in right),
                }
            )
        return pd.DataFrame(rows, columns=["activation", "left", "token", "right"])

    def token_features(self, token_id: int) -> pd.DataFrame:
        """The features of ``token_id``, with how often each fires overall, most frequent first."""
        feats = self.features_of(token_id)
        df = pd.DataFrame(
            {
                "feature": feats.numpy(),
                "fires": self.feature_counts[feats].numpy(),
                "max_activation": self.top_vals[feats, 0].numpy(),
            }
        )
        return df.sort_values("fires", ascending=False, kind="stable").reset_index(drop=True)

    def _check_token(self, token_id: int) -> None:
        if not 0 <= int(token_id) < self.bits.shape[0]:
            raise FunctionTokenError(
                f"Token id {token_id} is outside the vocabulary (0..{self.bits.shape[0] - 1})."
            )

    def _check_feature(self, feature: int) -> None:
        if not 0 <= int(feature) < self.d_sae:
            raise FunctionTokenError(
                f"Feature {feature} is out of range: layer {self.layer}'s SAE has {self.d_sae} "
                f"features (valid: 0..{self.d_sae - 1})."
            )


def build_graph(
    model: WorkbenchModel,
    saes: Mapping[int, SAE],
    texts: Iterable[str],
    *,
    max_tokens: int = 200_000,
    length: int = 128,
    batch_size: int = 8,
    n_contexts: int = 8,
    track: Sequence[int] | None = None,
    max_doc_tokens: int | None = None,
    progress: bool = True,
) -> dict[int, FeatureGraph]:
    """Stream ``texts`` through ``model`` and every layer's SAE into one graph per layer.

    One early-stopped nnsight trace per batch reads every SAE's layer; the sink (window
    position 0) is left out. Memory is fixed by the vocabulary and the SAE widths, plus
    ``len(track) + 1`` small bitsets per document for the C(k) intervals.

    Args:
        track: the tokens whose per-document features are kept for
            :meth:`FeatureGraph.coverage_intervals` (default: the 10 most frequent
            streamed tokens; pass the order you will read C(k) in, e.g.
            ``freq.order()[:10]``).
        max_doc_tokens: read only the first tokens of each document, so the budget
            spans more documents (see :func:`packed_windows`).

    Example:
        >>> graphs = build_graph(model, saes, docs, max_tokens=20_000)
        >>> graphs[14].coverage_intervals()
    """
    texts = as_documents(texts, "build_graph")
    if not saes:
        raise FunctionTokenError("build_graph needs at least one SAE ({layer: SAE}).")
    for layer, sae in saes.items():
        if sae.cfg.d_in != model.d_model:
            raise FunctionTokenError(
                f"The SAE for layer {layer} reads d_in = {sae.cfg.d_in}, but {model.model_id} "
                f"has d_model = {model.d_model}: it was trained on another model."
            )
    sites = {sae.cfg.site for sae in saes.values()}
    if len(sites) != 1:
        raise FunctionTokenError(f"All SAEs must read the same site; got {sorted(sites)}.")
    site = sites.pop()
    vocab = max(len(model.tokenizer), model.adapter.vocab_size)
    pw = packed_windows(
        model, texts, length=length, max_tokens=max_tokens, max_doc_tokens=max_doc_tokens
    )
    if track is None:
        streamed = torch.bincount(pw.ids[:, 1:].reshape(-1), minlength=vocab)
        track = torch.argsort(-streamed, stable=True)[: min(10, int((streamed > 0).sum()))]
    accs = {
        i: GraphAccumulator(
            vocab, sae.cfg.d_sae, n_contexts=n_contexts, track=track, n_docs=pw.n_docs
        )
        for i, sae in saes.items()
    }
    ctx_pad = (next(iter(accs.values())).before, next(iter(accs.values())).after)
    total = pw.ids.shape[0] * (length - 1)  # whole windows: never past the bar's total
    bar = tqdm(total=total, desc="bipartite graph", unit="tok", disable=not progress)
    t0 = time.perf_counter()
    try:
        for batch, doc in pw.batches(batch_size):
            acts = residuals(model, batch, list(saes), site=site)
            tokens = batch[:, 1:].reshape(-1)  # sink left out
            docs = doc[:, 1:].reshape(-1)
            padded = torch.nn.functional.pad(batch, ctx_pad, value=-1)  # [b, s + before + after]
            ctx = padded.unfold(1, sum(ctx_pad) + 1, 1)[:, 1:].reshape(-1, sum(ctx_pad) + 1)
            with torch.inference_mode():
                for i, sae in saes.items():
                    x = acts[i][:, 1:].reshape(-1, model.d_model)
                    rows, feats, vals = sparse_codes(sae, x.to(sae.W_enc.device))
                    accs[i].update(tokens, rows, feats, vals, ctx, docs)
            bar.update(tokens.numel())
    finally:
        bar.close()
    n = next(iter(accs.values())).n_tokens
    if n == 0:
        raise FunctionTokenError("build_graph streamed no tokens: the texts are too short.")
    log.info("Bipartite graph: %d tokens in %.1f s.", n, time.perf_counter() - t0)
    prov = provenance_for(
        model,
        None,
        None,
        analysis="bipartite_graph",
        n_tokens=n,
        length=length,
        layers=sorted(saes),
        d_sae={i: s.cfg.d_sae for i, s in saes.items()},
    )
    decode = _decoder(model.tokenizer)
    graphs = {}
    for i, acc in accs.items():
        graphs[i] = acc.result(i, decode)
        graphs[i].provenance = prov
    return graphs


def _decoder(tokenizer: Any) -> Callable[[int], str]:
    cache: dict[int, str] = {}

    def decode(i: int) -> str:
        if i not in cache:
            cache[i] = tokenizer.decode([int(i)])
        return cache[i]

    return decode


def degree_table(graphs: Mapping[int, FeatureGraph], top: int | None = None) -> pd.DataFrame:
    """Per token that occurs: frequency rank, count, and degree per layer (``degree_L{i}``)."""
    first = next(iter(graphs.values()))
    order = first.frequency_order()
    if top is not None:
        order = order[:top]
    df = pd.DataFrame(
        {
            "rank": np.arange(1, order.numel() + 1),
            "token_id": order.numpy(),
            "token": [first.decode(int(t)) for t in order],
            "count": first.token_counts[order].numpy(),
        }
    )
    for i, g in graphs.items():
        df[f"degree_L{i}"] = g.degrees()[order].numpy()
    return df


def coverage_table(
    graphs: Mapping[int, FeatureGraph], k_max: int = 10, order: Sequence[int] | None = None
) -> pd.DataFrame:
    """Table 1 of the paper: cumulative % of features reached by the top-k tokens, per layer.

    Columns per layer ``i``: ``L{i} token``, ``L{i} % all``, ``L{i} % firing``; then the
    paper's Gemma-2-9B numbers (layers 9/20/31, % of all features) where it gives them.
    """
    out = pd.DataFrame({"k": range(1, k_max + 1)})
    for i, g in graphs.items():
        cov = g.coverage(k_max, order).set_index("k")
        out[f"L{i} token"] = out["k"].map(cov["token"])
        out[f"L{i} % all"] = out["k"].map(cov["pct_all"]).round(1)
        out[f"L{i} % firing"] = out["k"].map(cov["pct_fired"]).round(1)
        if _tracks(g, cov["token_id"].tolist()):
            iv = g.coverage_intervals().set_index("k")
            out[f"L{i} % all low"] = out["k"].map(iv["pct_all_low"]).round(1)
            out[f"L{i} % all high"] = out["k"].map(iv["pct_all_high"]).round(1)
    for j, lay in enumerate(PAPER_TABLE1["layers"]):
        col = f"paper Gemma-2-9B L{lay} % all"
        out[col] = [PAPER_TABLE1[k][j] if k in PAPER_TABLE1 else np.nan for k in out["k"]]
    out.attrs["note"] = (
        "Paper: Gemma-2-9B with Gemma Scope SAEs; its top-1 token is '.'. Only the top-1 and "
        "top-10 rows of the paper are filled in. '% all low/high': 95% random-halves interval "
        "over documents (how much C(k) depends on which documents were read)."
    )
    return out


def _tracks(g: FeatureGraph, ids: list[int]) -> bool:
    """Whether ``g`` kept per-document features for the first ``len(ids)`` of ``ids``."""
    if g.tracked is None or g.n_docs < 2:
        return False
    t = g.tracked.tolist()
    return len(ids) > 0 and t[: len(ids)] == ids
