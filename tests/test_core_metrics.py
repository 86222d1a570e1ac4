import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from core import metrics as M


def test_aubc_flat_and_thesis_reconstruction():
    assert M.aubc([0.8] * 10) == pytest.approx(0.8)
    assert M.aubc([0.8, 0.8]) == pytest.approx(0.8)
    # CIFAR-10 ST Random Low: Table A.23 points with the interpolated budgets gives Table A.10's 0.4720
    y = [0.251, 0.323, 0.385, 0.444, 0.470, 0.505, 0.535, 0.565, 0.590, 0.612]
    assert M.aubc(y) == pytest.approx(0.472, abs=0.002)
    assert M.aubc([0.0, 1.0]) == pytest.approx(0.5)


def test_ppm_known_winner():
    rng = np.random.default_rng(0)
    base = np.linspace(0.3, 0.8, 10)
    settings = {}
    for s in range(3):
        b = base[None] + rng.normal(0, 0.005, size=(3, 10))
        a = b + 0.05 + rng.normal(0, 0.005, size=(3, 10))
        c = b + rng.normal(0, 0.005, size=(3, 10))
        settings[f"s{s}"] = {"A": a, "B": b, "C": c}
    ppm = M.pairwise_penalty_matrix(settings)
    i = {m: k for k, m in enumerate(ppm.methods)}
    assert ppm.max_value == 3
    assert ppm.wins[i["A"], i["B"]] == pytest.approx(3.0)
    assert ppm.wins[i["B"], i["A"]] == 0
    assert ppm.wins[i["A"], i["C"]] == pytest.approx(3.0)
    assert ppm.wins.max() <= ppm.max_value
    assert np.all(np.diag(ppm.wins) == 0)
    # mean row: column A is never beaten
    assert ppm.mean_row[i["A"]] == 0
    assert ppm.mean_row[i["B"]] == pytest.approx((ppm.wins[i["A"], i["B"]] + ppm.wins[i["C"], i["B"]]) / 2)


def test_ppm_identical_curves_and_single_seed_never_score():
    y = np.tile(np.linspace(0, 1, 5), (3, 1))
    ppm = M.pairwise_penalty_matrix({"s": {"A": y, "B": y.copy()}})
    assert ppm.wins.sum() == 0
    ppm = M.pairwise_penalty_matrix({"s": {"A": y[:1] + 1, "B": y[:1]}})
    assert ppm.wins.sum() == 0


def test_classification_metrics_match_sklearn(rng):
    t = rng.integers(0, 5, 300)
    p = np.where(rng.random(300) < 0.6, t, rng.integers(0, 5, 300))
    assert M.accuracy(t, p) == pytest.approx((t == p).mean())
    assert M.balanced_accuracy(t, p, 5) == pytest.approx(balanced_accuracy_score(t, p))
    assert M.macro_f1(t, p, 5) == pytest.approx(f1_score(t, p, average="macro"))
