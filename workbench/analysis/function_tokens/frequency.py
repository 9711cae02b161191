"""Token frequencies over a corpus, the function-token set, Zipf's law and document coverage.

The function tokens are the smallest set of most frequent tokens that together make up
``coverage`` (40% in the paper) of all token occurrences; every other token is a content
token. Ties in frequency are broken by token id, so the set is deterministic.

Example:
    >>> freq = count_tokens(model.tokenizer, docs)
    >>> ft = function_tokens(freq, coverage=0.4)
    >>> len(ft), ft.table.head(3)["token"].tolist()
    (58, [' the', '\\n', ','])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from workbench.analysis.function_tokens.errors import FunctionTokenError
from workbench.documents import as_documents

__all__ = [
    "FunctionTokens",
    "TokenFrequency",
    "count_tokens",
    "counts_from_ids",
    "function_tokens",
    "smallest_covering_set",
    "zipf_table",
]


@dataclass
class TokenFrequency:
    """Occurrence and document counts per token id."""

    counts: torch.Tensor  # [vocab] long: occurrences
    doc_counts: torch.Tensor  # [vocab] long: documents holding the token at least once
    n_docs: int
    decode: Callable[[int], str]

    @property
    def n_tokens(self) -> int:
        return int(self.counts.sum())

    def order(self) -> torch.Tensor:
        """Token ids by decreasing count, ties by increasing id: [vocab] long."""
        ids = torch.arange(self.counts.numel())
        # lexsort: primary key -count, secondary key id (stable sort on the primary key)
        return ids[torch.argsort(-self.counts, stable=True)]

    def ranking(self, top: int | None = None) -> pd.DataFrame:
        """One row per token that occurs: rank (1 = most frequent), token, counts, shares."""
        order = self.order()
        n_seen = int((self.counts > 0).sum())
        order = order[: min(n_seen, top) if top is not None else n_seen]
        counts = self.counts[order].numpy()
        total = max(self.n_tokens, 1)
        return pd.DataFrame(
            {
                "rank": np.arange(1, len(order) + 1),
                "token_id": order.numpy(),
                "token": [self.decode(int(i)) for i in order],
                "count": counts,
                "share": counts / total,
                "cum_share": np.cumsum(self.counts[self.order()].numpy())[: len(order)] / total,
                "doc_coverage": self.doc_counts[order].numpy() / max(self.n_docs, 1),
            }
        )


def counts_from_ids(
    docs: Sequence[Sequence[int]], vocab_size: int, decode: Callable[[int], str] = str
) -> TokenFrequency:
    """Counts from documents already tokenized (lists of ids)."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    doc_counts = torch.zeros(vocab_size, dtype=torch.long)
    for ids in docs:
        t = torch.as_tensor(list(ids), dtype=torch.long)
        if t.numel() == 0:
            continue
        if int(t.max()) >= vocab_size or int(t.min()) < 0:
            raise FunctionTokenError(
                f"Token id {int(t.max())} is outside the vocabulary of {vocab_size} tokens."
            )
        counts += torch.bincount(t, minlength=vocab_size)
        doc_counts[torch.unique(t)] += 1
    return TokenFrequency(counts, doc_counts, len(docs), decode)


def count_tokens(tokenizer: Any, texts: Sequence[str], *, batch: int = 64) -> TokenFrequency:
    """Count every token of ``texts`` under any HF tokenizer (special tokens left out)."""
    texts = as_documents(texts, "count_tokens")
    if not texts:
        raise FunctionTokenError("count_tokens got no texts: the corpus sample is empty.")
    vocab = len(tokenizer)
    docs: list[list[int]] = []
    for s in range(0, len(texts), batch):
        docs.extend(tokenizer(list(texts[s : s + batch]), add_special_tokens=False).input_ids)
    return counts_from_ids(docs, vocab, lambda i: tokenizer.decode([i]))


def smallest_covering_set(counts: torch.Tensor, coverage: float = 0.4) -> torch.Tensor:
    """Ids of the fewest most frequent tokens whose counts sum to >= ``coverage`` of all.

    Example:
        >>> smallest_covering_set(torch.tensor([5, 30, 10, 55]), 0.6).tolist()
        [3, 1]
    """
    if not 0 < coverage <= 1:
        raise FunctionTokenError(f"coverage must be in (0, 1]; got {coverage}.")
    total = int(counts.sum())
    if total == 0:
        raise FunctionTokenError("No token occurs in the corpus: all counts are zero.")
    order = torch.argsort(-counts, stable=True)
    cum = torch.cumsum(counts[order], 0)
    # the first k with cum[k-1] >= coverage * total; the tiny slack absorbs float error
    # (0.4 * 100 is 40.000000000000007 in binary floating point)
    need = coverage * total * (1 - 1e-12)
    k = int(torch.searchsorted(cum.double(), torch.tensor([need], dtype=torch.float64))[0]) + 1
    return order[: min(k, order.numel())]


@dataclass
class FunctionTokens:
    """The function-token set: ids, the coverage they reach, and a table with decoded tokens."""

    ids: torch.Tensor  # [k] long, most frequent first
    coverage: float  # the target (e.g. 0.4)
    achieved: float  # the share of occurrences they actually cover (>= coverage)
    table: pd.DataFrame  # rank, token_id, token, count, share, cum_share, doc_coverage

    def __len__(self) -> int:
        return int(self.ids.numel())

    def __contains__(self, token_id: int) -> bool:
        return bool((self.ids == int(token_id)).any())

    def mask(self, vocab_size: int) -> torch.Tensor:
        """[vocab] bool: True for function tokens."""
        m = torch.zeros(vocab_size, dtype=torch.bool)
        m[self.ids] = True
        return m


def function_tokens(freq: TokenFrequency, coverage: float = 0.4) -> FunctionTokens:
    """The smallest top-frequency set covering ``coverage`` of all occurrences."""
    ids = smallest_covering_set(freq.counts, coverage)
    table = freq.ranking(top=len(ids))
    achieved = float(freq.counts[ids].sum()) / freq.n_tokens
    return FunctionTokens(ids, coverage, achieved, table)


def zipf_table(freq: TokenFrequency, *, max_points: int = 2000) -> pd.DataFrame:
    """Rank against frequency for a log-log plot, with a fitted Zipf exponent in ``attrs``.

    Ranks are thinned geometrically to at most ``max_points`` rows. ``attrs["zipf_s"]`` is
    the slope ``s`` of ``log f = c - s log r`` fitted over ranks 10..1000 (or what exists).
    """
    df = freq.ranking()
    n = len(df)
    if n == 0:
        raise FunctionTokenError("No token occurs in the corpus: nothing to plot.")
    if n <= max_points:
        keep = np.arange(n)
    else:  # geometric thinning keeps the log-log shape with few points
        keep = np.unique(np.round(np.geomspace(1, n, num=max_points)).astype(int)) - 1
    out = df.iloc[keep][["rank", "token", "count", "share", "doc_coverage"]].reset_index(drop=True)
    lo, hi = (10, min(1000, n)) if n > 20 else (1, n)
    fit = df.iloc[lo - 1 : hi]
    if len(fit) >= 2:
        slope, _ = np.polyfit(np.log(fit["rank"]), np.log(fit["share"]), 1)
        out.attrs["zipf_s"] = float(-slope)
    return out
