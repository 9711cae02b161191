"""The document bootstrap: against hand-computed resamples, labels withheld, seeds."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from workbench.analysis.extreme_tokens import classify_heads
from workbench.analysis.uncertainty import (
    Bootstrap,
    UncertaintyError,
    corrected_interval,
    label,
    percentile_interval,
    ratio_draws,
    resample_counts,
    too_few_documents,
)

# A tiny table: three documents, each with a loss sum and a token count.
SUMS = np.array([3.0, 1.0, 8.0])
COUNTS = np.array([2.0, 1.0, 4.0])


def test_ratio_draws_equal_a_hand_loop_over_the_same_resamples():
    w = resample_counts(3, 50, seed=7)
    assert w.shape == (50, 3) and (w.sum(1) == 3).all()
    draws = ratio_draws(SUMS, COUNTS, w)
    for b in range(50):
        idx = [d for d in range(3) for _ in range(w[b, d])]  # the documents drawn
        by_hand = sum(SUMS[i] for i in idx) / sum(COUNTS[i] for i in idx)
        assert draws[b] == pytest.approx(by_hand)


def test_two_document_bootstrap_matches_its_exact_distribution():
    """Docs with means 2 and 4 (one token each): resampled means are 2, 3, 4 with
    probabilities 1/4, 1/2, 1/4, so the 95% interval is [2, 4] and the bootstrap
    standard error is sqrt(1/2)."""
    est, draws, iv = Bootstrap(n_boot=20_000, seed=0).ratio(np.array([2.0, 4.0]), np.ones(2))
    assert est == pytest.approx(3.0)
    assert set(np.unique(draws)) == {2.0, 3.0, 4.0}
    assert (draws == 3.0).mean() == pytest.approx(0.5, abs=0.02)
    assert (float(iv["low"]), float(iv["high"])) == (2.0, 4.0)
    assert float(iv["se"]) == pytest.approx(np.sqrt(0.5), abs=0.01)
    z = NormalDist().inv_cdf(1 - 0.05 / 2)
    assert float(iv["low_c"]) == pytest.approx(3.0 - z * float(iv["se"]))


def test_corrected_interval_widens_with_the_number_of_tests():
    draws = np.random.default_rng(0).normal(size=(2000, 1))
    one = corrected_interval(np.zeros(1), draws, m=1)
    many = corrected_interval(np.zeros(1), draws, m=100)
    assert many[1][0] > one[1][0] > 0
    z100 = NormalDist().inv_cdf(1 - 0.05 / 200)
    assert many[1][0] == pytest.approx(z100 * draws.std(ddof=1), rel=1e-9)


def test_percentile_interval_of_known_draws():
    draws = np.arange(101, dtype=float)[:, None]  # 0..100
    lo, hi = percentile_interval(draws, 0.9)
    assert (lo[0], hi[0]) == pytest.approx((5.0, 95.0))


def test_label_is_withheld_when_the_interval_straddles_the_cut_off():
    low, high = np.array([0.6, 0.2, 0.45]), np.array([0.8, 0.4, 0.55])
    assert label(low, high, 0.5, above="sink", below="not sink").tolist() == [
        "sink",
        "not sink",
        "uncertain",
    ]


def test_head_state_is_uncertain_when_its_interval_straddles_a_cut_off():
    t = pd.DataFrame(
        {
            "sink_mass": [0.9, 0.9, 0.2, 0.9],
            "sink_mass_low_c": [0.8, 0.8, 0.1, 0.3],  # the last straddles 0.5
            "sink_mass_high_c": [0.95, 0.95, 0.3, 0.95],
            "delta_zero": [0.001, 0.05, 0.2, 0.0],
            "delta_zero_low_c": [-0.005, -0.01, 0.1, -0.004],  # the second straddles 0.01
            "delta_zero_high_c": [0.005, 0.11, 0.3, 0.004],
        }
    )
    state = classify_heads(t, sink_threshold=0.5, effect_threshold=0.01).tolist()
    assert state == ["dormant", "uncertain", "active", "uncertain"]
    # the same point values without intervals would all get a state
    points = classify_heads(t[["sink_mass", "delta_zero"]]).tolist()
    assert "uncertain" not in points


def test_one_document_gives_no_interval_and_no_label():
    _, _, iv = Bootstrap(n_boot=100).ratio(np.array([[2.0, 4.0]]), np.ones(1), m=2)
    assert np.isinf(iv["low_c"]).all() and np.isinf(iv["high_c"]).all()
    assert (label(iv["low_c"], iv["high_c"], 0.0, above="a", below="b") == "uncertain").all()
    assert "Only 1 document" in too_few_documents(1)
    assert too_few_documents(50) == ""


def test_the_same_seed_gives_the_same_intervals_and_another_seed_does_not():
    sums = np.random.default_rng(1).normal(size=(12, 4))
    a = Bootstrap(n_boot=300, seed=3).ratio(sums, np.ones(12))[2]
    b = Bootstrap(n_boot=300, seed=3).ratio(sums, np.ones(12))[2]
    c = Bootstrap(n_boot=300, seed=4).ratio(sums, np.ones(12))[2]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["low"], c["low"])


def test_counts_per_document_broadcast_over_heads():
    sums = np.ones((5, 3, 2))
    est, draws, _ = Bootstrap(n_boot=20).ratio(sums, np.full(5, 2.0))
    assert est.shape == (3, 2) and draws.shape == (20, 3, 2)
    assert np.allclose(est, 0.5)


def test_bad_settings_are_named():
    with pytest.raises(UncertaintyError, match="at least one document"):
        resample_counts(0)
    with pytest.raises(UncertaintyError, match="level must be in"):
        Bootstrap(level=1.5)
    with pytest.raises(UncertaintyError, match="n_boot must be at least 2"):
        Bootstrap(n_boot=1)
    with pytest.raises(UncertaintyError, match="do not fit"):
        Bootstrap(n_boot=5).ratio(np.ones((4, 3)), np.ones((4, 2)))
