"""FG-Eff (eq. C.1) fit in core.metrics.fgeff."""
import numpy as np
import pytest

from core import metrics


@pytest.mark.parametrize("gamma", [3.0, 17.0, 45.0])
def test_fit_recovers_known_gamma_from_noisy_curves(gamma):
    rng = np.random.default_rng(int(gamma))
    t0, y0, y_full = 0.03, 0.42, 0.86
    ts, ys = [], []
    for seed in range(4):                      # 4 seeds × 5 loops, like the thesis
        t = t0 + np.sort(rng.uniform(0, 0.25, 5))
        t[0] = t0
        ts.append(t)
        ys.append(metrics.fg_eff_curve(t, gamma, t0, y0, y_full) + rng.normal(0, 0.004, 5))
    fit = metrics.fit_fg_eff(np.concatenate(ts), np.concatenate(ys), t0=t0, y0=y0, y_full=y_full)
    assert fit.gamma == pytest.approx(gamma, rel=0.1)
    assert fit.n_points == 20 and fit.variance >= 0


def test_setting_anchor_and_per_method_fits():
    t0, y0, y_full = 0.02, 0.5, 0.9
    slow_t = [np.array([0.02, 0.05, 0.1, 0.2, 0.3])] * 2
    fast_t = [np.array([0.02, 0.04, 0.06, 0.08, 0.1])] * 2
    curves = {"slow": [(t, metrics.fg_eff_curve(t, 5.0, t0, y0, y_full)) for t in slow_t],
              "fast": [(t, metrics.fg_eff_curve(t, 40.0, t0, y0, y_full)) for t in fast_t]}
    assert metrics.setting_anchor([0.05, 0.02, 0.02], [0.7, 0.4, 0.6]) == (0.02, pytest.approx(0.5))
    fits = metrics.fg_eff_setting(curves, y_full)
    assert fits["slow"].gamma == pytest.approx(5.0, rel=1e-3)
    assert fits["fast"].gamma == pytest.approx(40.0, rel=1e-3)
    assert fits["fast"].gamma > fits["slow"].gamma     # higher = more annotation efficient


def test_degenerate_fits_are_nan():
    assert np.isnan(metrics.fit_fg_eff([0.1], [0.5], t0=0.1, y0=0.5, y_full=0.9).gamma)
    assert np.isnan(metrics.fit_fg_eff([0.1, 0.2], [0.5, 0.6], t0=0.1, y0=0.9, y_full=0.9).gamma)
