"""Metrics of the uncertainty testbed against hand-computed values and invariants (uncertainty.md §10, §13)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from core import metrics as cm


# ------------------------------------------------------------------------------------ AUROC
def test_auroc_hand_value_and_edge_cases():
    # pairs (pos, neg): (0.35 vs 0.1 ✓, 0.35 vs 0.4 ✗, 0.8 vs both ✓) → 3/4
    assert cm.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert cm.auroc([0, 1, 2, 3], [0, 0, 1, 1]) == 1.0
    assert np.isnan(cm.auroc([0.1, 0.2], [1, 1]))


# ------------------------------------------------------------------------------------ AURC
def test_aurc_hand_values():
    risks = [0.2, 0.8, 0.5]
    # most confident first: 0.2, 0.5, 0.8 → selective risks 0.2, 0.35, 0.5
    assert cm.aurc(risks, [3, 1, 2]) == pytest.approx((0.2 + 0.35 + 0.5) / 3)
    assert cm.eaurc(risks, [3, 1, 2]) == pytest.approx(0.0)
    # worst ranking: 0.8, 0.5, 0.2 → 0.8, 0.65, 0.5
    assert cm.aurc(risks, [1, 3, 2]) == pytest.approx((0.8 + 0.65 + 0.5) / 3)
    assert cm.eaurc(risks, [1, 3, 2]) == pytest.approx(0.65 - 0.35)
    assert cm.optimal_aurc(risks) == pytest.approx(0.35)


def test_aurc_ties_are_resolved_by_expectation():
    # both tied: expected selective risk at coverage 1/2 is 0.5 → AURC 0.5; oracle (0, 0.5) → 0.25
    assert cm.aurc([0, 1], [0, 0]) == pytest.approx(0.5)
    assert cm.eaurc([0, 1], [0, 0]) == pytest.approx(0.25)
    cov, r = cm.rc_curve([0, 1], [0, 0])
    np.testing.assert_allclose(cov, [0.5, 1.0])
    np.testing.assert_allclose(r, [0.5, 0.5])


def test_oracle_csf_gives_zero_eaurc():
    rng = np.random.default_rng(0)
    risks = rng.random(50)
    assert cm.eaurc(risks, -risks) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=25))
def test_eaurc_is_never_negative(pairs):
    risks = np.array([p[0] for p in pairs], float) / 4
    confids = np.array([p[1] for p in pairs], float)  # many ties
    assert cm.eaurc(risks, confids) >= -1e-12


# ------------------------------------------------------------------------------------ ACE
def test_ace_hand_value():
    conf = [0.12, 0.13, 0.91, 0.93]
    correct = [0, 1, 1, 1]
    # bin [0.10, 0.15): conf 0.125, acc 0.5 → 0.375; bin [0.90, 0.95): conf 0.92, acc 1 → 0.08
    assert cm.ace(conf, correct) == pytest.approx((0.375 + 0.08) / 2)


def test_ace_zero_when_calibrated_and_bins_weighted_equally():
    conf = np.full(10, 0.7)
    correct = np.r_[np.ones(7), np.zeros(3)]
    assert cm.ace(conf, correct) == pytest.approx(0.0, abs=1e-12)
    # a huge well-calibrated bin does not dilute a small bad one (ACE, not ECE)
    conf2 = np.r_[np.full(1000, 0.7), [0.3]]
    corr2 = np.r_[np.ones(700), np.zeros(300), [1.0]]
    assert cm.ace(conf2, corr2) == pytest.approx(0.7 / 2)


def test_ace_soft_correctness_equals_repeating_pixels_per_rater():
    rng = np.random.default_rng(1)
    conf = rng.random(200)
    raters = rng.random((3, 200)) < conf  # three raters' correctness per pixel
    soft = cm.ace(conf, raters.mean(0))
    rep = cm.ace(np.tile(conf, 3), raters.reshape(-1).astype(float))
    assert soft == pytest.approx(rep)


def test_ace_rows_are_images():
    conf = np.array([[0.12, 0.13], [0.91, 0.93]])
    correct = np.array([[0, 1], [1, 1]])
    np.testing.assert_allclose(cm.ace(conf, correct), [0.375, 0.08])


def test_platt_matches_sklearn_sigmoid_calibration():
    sk = pytest.importorskip("sklearn.calibration")
    if not hasattr(sk, "_sigmoid_calibration"):
        pytest.skip("private sklearn helper not available")
    rng = np.random.default_rng(0)
    s = rng.normal(size=400)
    y = (rng.random(400) < 1 / (1 + np.exp(-(2 * s - 0.5)))).astype(float)
    a, b = cm.platt_fit(s, y)
    a_sk, b_sk = sk._sigmoid_calibration(s, y)  # P = 1/(1+exp(a s + b))
    assert a[0] == pytest.approx(-a_sk, rel=1e-5)
    assert b[0] == pytest.approx(-b_sk, rel=1e-5, abs=1e-6)


# ------------------------------------------------------------------------------------ NCC
def test_ncc_hand_value_and_invariants():
    a, b = np.array([1.0, 2, 3]), np.array([1.0, 3, 2])
    # centred (-1,0,1)·(-1,1,0) / 3 = 1/3; variances 2/3 each → 0.5
    assert cm.ncc(a, b) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    x = rng.random(100)
    assert cm.ncc(x, x) == pytest.approx(1.0)
    assert cm.ncc(x, -x) == pytest.approx(-1.0)
    y = rng.random(100)
    assert cm.ncc(x, 3 * y + 2) == pytest.approx(cm.ncc(x, y))
    assert np.isnan(cm.ncc(np.ones(5), x[:5]))
    np.testing.assert_allclose(cm.ncc(np.stack([a, a]), np.stack([b, a])), [0.5, 1.0])


# ------------------------------------------------------------------------------------ GED
A, B = np.array([1, 1, 0, 0]), np.array([0, 0, 1, 1])


def test_ged_hand_values():
    # one rater, one sample: Dice = 2·1/(2+1) = 2/3 → d = 1/3 → GED = 2/3
    assert cm.ged([A], [[1, 0, 0, 0]]) == pytest.approx(2 / 3)
    # raters {A, B}, sample {A}: cross mean(0, 1) = 0.5; rater pairs (0,1,1,0) → 0.5; sample pairs 0
    assert cm.ged([A, B], [A]) == pytest.approx(2 * 0.5 - 0.5 - 0.0)
    # identical sets → 0, also with empty masks (Dice(∅, ∅) = 1)
    assert cm.ged([A, B], [A, B]) == pytest.approx(0.0)
    assert cm.ged([np.zeros(4)], [np.zeros(4)]) == pytest.approx(0.0)


def test_ged_batched_matches_single():
    rng = np.random.default_rng(0)
    r = rng.random((3, 2, 30)) < 0.4
    s = rng.random((3, 5, 30)) < 0.4
    np.testing.assert_allclose(cm.ged(r, s), [cm.ged(r[i], s[i]) for i in range(3)])
