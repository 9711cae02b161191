"""How sure a finding is: bootstrap over documents, intervals, and labels that wait for them.

Every statistic the analyses report is a ratio of per-document sums (a mean loss is
``Σ_d loss_d / Σ_d tokens_d``; a sink mass is ``Σ_d mass_d / Σ_d queries_d``). The
analyses keep those per-document sums inside their reductions, so a bootstrap
resamples *documents* from them at no extra model cost:

- :func:`resample_counts`: ``[n_boot, n_docs]`` how often each document is drawn;
- :func:`ratio_draws`: the statistic on every resample, ``[n_boot, ...]``;
- :func:`percentile_interval`: the usual 95% interval (figures' error bars);
- :func:`corrected_interval`: a Bonferroni-corrected interval for ``m`` tests, from the
  bootstrap standard error (``estimate ± z_{1-α/2m} · se``). A percentile interval at
  level ``1 - α/m`` would need far more resamples than there are tests to resolve its
  tails, so the corrected interval uses the normal form;
- :func:`label`: a label only where the corrected interval clears the cut-off, else
  ``"uncertain"``;
- :func:`too_few_documents`: the plain sentence a notebook prints when ``n`` is small.

Example:
    >>> sums, counts = np.array([2.0, 4.0]), np.array([1.0, 1.0])
    >>> draws = ratio_draws(sums, counts, resample_counts(2, 1000, seed=0))
    >>> percentile_interval(draws)          # about (2.0, 4.0)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from workbench.errors import WorkbenchError

__all__ = [
    "DEFAULT_BOOT",
    "MIN_DOCS",
    "Bootstrap",
    "UncertaintyError",
    "corrected_interval",
    "label",
    "percentile_interval",
    "ratio_draws",
    "resample_counts",
    "too_few_documents",
]

DEFAULT_BOOT = 1000
# Below this many documents a bootstrap interval is itself unreliable: say so.
MIN_DOCS = 8


class UncertaintyError(WorkbenchError, ValueError):
    """Resampling asked for something it cannot give (no documents, a bad level)."""


def resample_counts(n_docs: int, n_boot: int = DEFAULT_BOOT, *, seed: int = 0) -> np.ndarray:
    """``[n_boot, n_docs]`` int: how often each document is drawn in each bootstrap resample.

    Example:
        >>> resample_counts(3, 2, seed=0).sum(1).tolist()
        [3, 3]
    """
    if n_docs < 1:
        raise UncertaintyError(
            "A bootstrap needs at least one document, got 0; give the analysis more text."
        )
    if n_boot < 1:
        raise UncertaintyError(f"n_boot must be at least 1, got {n_boot}.")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_docs, size=(n_boot, n_docs))  # [B, n]
    counts = np.zeros((n_boot, n_docs), dtype=np.int64)
    np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1)
    return counts


def ratio_draws(sums: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``Σ w_d sums_d / Σ w_d counts_d`` on every resample.

    Args:
        sums: ``[n_docs, ...]`` per-document sums.
        counts: ``[n_docs, ...]`` per-document counts, broadcastable to ``sums``.
        weights: ``[n_boot, n_docs]`` from :func:`resample_counts`.

    Returns:
        ``[n_boot, ...]`` (NaN where a resample has no count).
    """
    sums, counts = _aligned(sums, counts)
    if sums.shape[0] != weights.shape[1]:
        raise UncertaintyError(
            f"{sums.shape[0]} documents of sums but resample weights for {weights.shape[1]}; "
            "draw the weights with resample_counts(n_docs) of the same table."
        )
    n = sums.shape[0]
    w = weights.astype(np.float64)
    num = (w @ sums.reshape(n, -1)).reshape(weights.shape[:1] + sums.shape[1:])
    den = (w @ counts.reshape(n, -1)).reshape(weights.shape[:1] + sums.shape[1:])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _aligned(sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sums`` ``[n, ...]`` and ``counts`` (``[n]`` or ``[n, ...]``) as float64 of one shape."""
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim < sums.ndim and counts.shape == sums.shape[: counts.ndim]:
        counts = counts.reshape(counts.shape + (1,) * (sums.ndim - counts.ndim))
    try:
        return sums, np.broadcast_to(counts, sums.shape)
    except ValueError:
        raise UncertaintyError(
            f"Per-document counts of shape {counts.shape} do not fit sums of shape "
            f"{sums.shape}; give one count per document or one per entry."
        ) from None


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise UncertaintyError(f"level must be in (0, 1), e.g. 0.95; got {level}.")


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval of bootstrap ``draws`` ``[n_boot, ...]``: (low, high)."""
    _check_level(level)
    a = (1 - level) / 2
    with warnings.catch_warnings():  # an all-NaN column (a class never seen) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(draws, [a, 1 - a], axis=0)
    return lo, hi


def _nanstd(draws: np.ndarray) -> np.ndarray:
    """Standard deviation over resamples (axis 0), NaN where a column has < 2 values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(draws, axis=0, ddof=1)


def corrected_interval(
    estimate: np.ndarray, draws: np.ndarray, *, m: int = 1, alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """``estimate ± z_{1-α/(2m)} · se`` with ``se`` the bootstrap standard deviation.

    ``m`` is the number of intervals read together (Bonferroni): with ``m`` heads tested,
    all ``m`` intervals hold at once with probability at least ``1 - alpha``.
    """
    if m < 1:
        raise UncertaintyError(f"m (the number of tests) must be at least 1, got {m}.")
    _check_level(1 - alpha)
    z = NormalDist().inv_cdf(1 - alpha / (2 * m))
    se = _nanstd(draws) if draws.shape[0] > 1 else np.zeros_like(estimate)
    est = np.asarray(estimate, dtype=np.float64)
    return est - z * se, est + z * se


def label(
    low: np.ndarray,
    high: np.ndarray,
    cut: float,
    *,
    above: str,
    below: str,
    uncertain: str = "uncertain",
) -> np.ndarray:
    """``above`` where ``low > cut``, ``below`` where ``high < cut``, else ``uncertain``.

    Example:
        >>> label(np.array([0.6, 0.1, 0.4]), np.array([0.9, 0.3, 0.7]), 0.5,
        ...       above="sink", below="not").tolist()
        ['sink', 'not', 'uncertain']
    """
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    out = np.full(low.shape, uncertain, dtype=object)
    out[low > cut] = above
    out[high < cut] = below
    return out


def too_few_documents(n_docs: int, what: str = "this result") -> str:
    """A sentence to print when ``n_docs`` is too small to trust intervals, else ``""``."""
    if n_docs >= MIN_DOCS:
        return ""
    return (
        f"Only {n_docs} document{'s' if n_docs != 1 else ''} went into {what}: bootstrap "
        f"intervals from fewer than {MIN_DOCS} documents are themselves unreliable, so treat "
        "every label as provisional and rerun with more documents."
    )


@dataclass
class Bootstrap:
    """Settings of a document bootstrap: resamples, interval level, family-wise alpha, seed.

    Example:
        >>> Bootstrap(n_boot=500, seed=1).weights(8).shape
        (500, 8)
    """

    n_boot: int = DEFAULT_BOOT
    level: float = 0.95
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        _check_level(self.level)
        _check_level(1 - self.alpha)
        if self.n_boot < 2:
            raise UncertaintyError(
                f"n_boot must be at least 2 to give a spread, got {self.n_boot}; 1000 is usual."
            )

    def weights(self, n_docs: int) -> np.ndarray:
        """``[n_boot, n_docs]`` resample counts, seeded."""
        return resample_counts(n_docs, self.n_boot, seed=self.seed)

    def z(self, m: int) -> float:
        """The normal quantile of a Bonferroni-corrected two-sided interval for ``m`` tests."""
        return NormalDist().inv_cdf(1 - self.alpha / (2 * max(m, 1)))

    def summarise(
        self, estimate: np.ndarray, draws: np.ndarray, m: int = 1, *, n_docs: int | None = None
    ) -> dict[str, np.ndarray]:
        """``low``/``high`` (percentile, ``level``), ``se``, ``low_c``/``high_c`` (corrected, m).

        Args:
            estimate: the statistic on all documents, ``[...]``.
            draws: the statistic on every resample, ``[n_boot, ...]``.
            m: how many such intervals are read together (Bonferroni).
            n_docs: the number of documents; with fewer than 2 the spread is unknown, so
                every interval is (-inf, inf) and no label can be given.
        """
        if n_docs is not None and n_docs < 2:
            inf = np.full(np.shape(estimate), np.inf)
            return {"low": -inf, "high": inf, "se": inf, "low_c": -inf, "high_c": inf}
        lo, hi = percentile_interval(draws, self.level)
        lo_c, hi_c = corrected_interval(estimate, draws, m=m, alpha=self.alpha)
        se = _nanstd(draws)
        return {"low": lo, "high": hi, "se": se, "low_c": lo_c, "high_c": hi_c}

    def ratio(
        self, sums: np.ndarray, counts: np.ndarray, m: int = 1
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(estimate, draws, :meth:`summarise`) of ``Σ sums / Σ counts`` over documents.

        Example:
            >>> est, draws, iv = Bootstrap(n_boot=200).ratio(np.ones((4, 3)), np.ones(4))
            >>> est.tolist(), iv["low"].tolist()
            ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
        """
        sums, counts = _aligned(sums, counts)
        tot = counts.sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            est = np.where(tot > 0, sums.sum(0) / np.where(tot > 0, tot, 1.0), np.nan)
        draws = ratio_draws(sums, counts, self.weights(sums.shape[0]))
        return est, draws, self.summarise(est, draws, m, n_docs=sums.shape[0])
