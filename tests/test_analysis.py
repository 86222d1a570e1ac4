"""core.analysis on small hand-made tables with known answers (ranks with ties, a planted Nemenyi
winner, Kendall's τ = ±1, seed-id pairing of the PPM, shifted-copy curves for r)."""
import numpy as np
import pandas as pd
import pytest

from core.analysis import decision, ppm, ranks, significance


def scores_table(values: dict, metric="AUBC", higher=True, settings_cols=None):
    """values[setting][method] = list of per-seed values (seed ids 0..n-1)."""
    rows = []
    for s, per in values.items():
        for m, vs in per.items():
            for seed, v in (vs.items() if isinstance(vs, dict) else enumerate(vs)):
                row = {"setting": s, "method": m, "seed": seed, "metric": metric, "value": float(v),
                       "higher_is_better": higher}
                row.update((settings_cols or {}).get(s, {}))
                rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------- ranks

def test_ties_share_the_average_rank_and_direction_is_respected():
    sc = scores_table({"s": {"a": [0.8, 0.8], "b": [0.8, 0.8], "c": [0.5, 0.5]}})
    st = ranks.setting_ranks(sc, "AUBC", n_boot=200).set_index("method")
    assert st.loc["a", "mean_rank"] == st.loc["b", "mean_rank"] == 1.5
    assert st.loc["c", "mean_rank"] == 3.0
    assert st.loc["a", "se"] == 0.0 and st.loc["a", "se_kind"] == "bootstrap"
    low = scores_table({"s": {"a": [0.1], "b": [0.2], "c": [0.3]}}, metric="ACE", higher=False)
    lr = ranks.setting_ranks(low, "ACE").set_index("method")
    assert list(lr["mean_rank"]) == [1.0, 2.0, 3.0]
    assert np.isnan(lr.loc["a", "se"]) and "1 seed" in lr.loc["a", "reason"]


def test_aggregated_rank_and_standard_error_over_settings():
    sc = scores_table({"s1": {"a": [3.0], "b": [2.0], "c": [1.0]}, "s2": {"a": [2.0], "b": [3.0], "c": [1.0]}},
                      settings_cols={"s1": {"dataset": "x"}, "s2": {"dataset": "x"}})
    t = ranks.mean_ranks(sc, ["AUBC"], group_by=["dataset"])
    ov = t[t["level"] == "overall"].set_index("method")
    assert ov.loc["a", "mean_rank"] == 1.5 and ov.loc["b", "mean_rank"] == 1.5 and ov.loc["c", "mean_rank"] == 3.0
    assert ov.loc["a", "se"] == pytest.approx(np.std([1, 2], ddof=1) / np.sqrt(2)) == pytest.approx(0.5)
    assert ov.loc["c", "se"] == 0.0 and ov.loc["a", "n_settings"] == 2
    ds = t[t["level"] == "dataset"]
    assert set(ds["group"]) == {"x"} and len(ds) == 3


def test_bootstrap_ranks_pair_methods_by_seed_id():
    # a seed effect much larger than the method effect: a beats b in every seed, so every joint
    # resample ranks a first; pairing by position of unsorted seed lists would not
    sc = scores_table({"s": {"a": {0: 0.11, 1: 0.51, 2: 0.91}, "b": {2: 0.90, 1: 0.50, 0: 0.10}}})
    st = ranks.setting_ranks(sc, "AUBC", n_boot=500).set_index("method")
    assert st.loc["a", "mean_rank"] == 1.0 and st.loc["b", "mean_rank"] == 2.0


def test_leave_one_seed_out_stability():
    sc = scores_table({"s": {"a": [0.9, 0.9, 0.1], "b": [0.5, 0.5, 0.5], "c": [0.2, 0.2, 0.2]}})
    rk, st = ranks.leave_one_out(sc, "AUBC", "seed")
    assert len(st) == 3
    # dropping seed 2 keeps a first; dropping seed 0 or 1 leaves a (0.5) = b (0.5) tied
    full = st.set_index("left_out")
    assert full.loc[2, "tau"] == pytest.approx(1.0)
    assert full.loc[0, "tau"] < 1.0
    one = scores_table({"s": {"a": [1.0], "b": [0.0]}})
    _, st1 = ranks.leave_one_out(one, "AUBC", "seed")
    assert "≥ 2 seeds" in st1["reason"].iloc[0]


# ----------------------------------------------------------------------------- Friedman / Nemenyi

def fixed_order(n_blocks=10, k=4):
    return scores_table({f"s{i}": {m: [float(k - j)] for j, m in enumerate("wbcd"[:k])} for i in range(n_blocks)})


def test_friedman_statistic_and_planted_nemenyi_winner():
    fr = significance.friedman_nemenyi(fixed_order(), "AUBC")
    # same order in all 10 blocks, k = 4: chi2 = 12N/(k(k+1)) Σ R_j² − 3N(k+1) = 6·30 − 150 = 30
    assert fr.reason == "" and fr.blocks == "settings" and fr.n_blocks == 10
    assert fr.statistic == pytest.approx(30.0) and fr.pvalue < 1e-5
    assert list(fr.mean_ranks.index) == ["w", "b", "c", "d"] and list(fr.mean_ranks) == [1, 2, 3, 4]
    # Nemenyi CD = q(0.05, 4, ∞)/√2 · √(k(k+1)/(6N)) = 2.569 · √(20/60)
    assert fr.cd == pytest.approx(2.569 * np.sqrt(20 / 60), rel=1e-3)
    assert fr.nemenyi.loc["w", "d"] < 0.05 and fr.nemenyi.loc["w", "c"] < 0.05 and fr.nemenyi.loc["w", "b"] > 0.05
    assert fr.groups == [["w", "b"], ["b", "c"], ["c", "d"]]


def test_planted_winner_among_noise_is_found():
    rng = np.random.default_rng(3)
    vals = {f"s{i}": {"winner": [1.0 + rng.normal(0, 0.01)], **{m: [rng.random()] for m in ("m1", "m2", "m3", "m4")}}
            for i in range(15)}
    fr = significance.friedman_nemenyi(scores_table(vals), "AUBC")
    assert fr.pvalue < 0.05 and fr.mean_ranks.index[0] == "winner" and fr.mean_ranks.iloc[0] == 1.0
    worst = fr.mean_ranks.index[-1]
    assert fr.nemenyi.loc["winner", worst] < 0.05
    assert not any("winner" in g and worst in g for g in fr.groups)


def test_friedman_reports_what_it_cannot_compute():
    two = significance.friedman_nemenyi(fixed_order(k=2), "AUBC")
    assert "≥ 3 methods" in two.reason and np.isnan(two.pvalue) and two.nemenyi is None
    one = scores_table({"s": {"a": [0.3], "b": [0.2], "c": [0.1]}})
    r1 = significance.friedman_nemenyi(one, "AUBC")
    assert r1.blocks == "setting × seed" and "≥ 2 blocks" in r1.reason
    tied = significance.friedman_nemenyi(scores_table({f"s{i}": {m: [0.5] for m in "abc"} for i in range(4)}), "AUBC")
    assert "ties" in tied.reason
    # one setting, several seeds: auto blocks = setting × seed, paired by seed id
    seeds = scores_table({"s": {"a": [0.9, 0.8, 0.85, 0.95], "b": [0.5, 0.4, 0.45, 0.55], "c": [0.1, 0.0, 0.05, 0.15]}})
    rs = significance.friedman_nemenyi(seeds, "AUBC")
    assert rs.blocks == "setting × seed" and rs.n_blocks == 4 and rs.statistic == pytest.approx(8.0)
    # not significant → no post-hoc, one group
    flat = scores_table({f"s{i}": {"a": [i % 3], "b": [(i + 1) % 3], "c": [(i + 2) % 3]} for i in range(6)})
    nf = significance.friedman_nemenyi(flat, "AUBC")
    assert nf.pvalue >= 0.05 and nf.nemenyi is None and nf.groups == [list(nf.mean_ranks.index)]


# ------------------------------------------------------------------------------------------ Kendall

def kendall_case(order_b):
    order_a = ["a", "b", "c", "d"]
    vals = {"qs50": {m: [4.0 - i] for i, m in enumerate(order_a)},
            "qs100": {m: [4.0 - i] for i, m in enumerate(order_b)}}
    meta = {"qs50": {"dataset": "x", "query_size": 50}, "qs100": {"dataset": "x", "query_size": 100}}
    sc = scores_table(vals, settings_cols=meta)
    st = ranks.mean_ranks(sc, ["AUBC"], group_by=[])
    settings = sc[["setting", "dataset", "query_size"]].drop_duplicates("setting")
    return significance.kendall_compare(st, settings, "query_size")


def test_kendall_tau_plus_and_minus_one():
    same = kendall_case(["a", "b", "c", "d"])
    assert len(same) == 2 and set(same["scope"]) == {"mean", "qs50 vs qs100"}
    assert (same["tau"] == 1.0).all()
    assert same["pvalue"].iloc[0] == pytest.approx(2 / 24) and same["significant"].all()  # exact test, n = 4
    rev = kendall_case(["d", "c", "b", "a"])
    assert (rev["tau"] == -1.0).all() and rev["significant"].all()


def test_kendall_reasons():
    sc = scores_table({"s": {"a": [1.0], "b": [0.0]}}, settings_cols={"s": {"dataset": "x", "query_size": 50}})
    st = ranks.mean_ranks(sc, ["AUBC"], group_by=[])
    settings = sc[["setting", "dataset", "query_size"]].drop_duplicates("setting")
    r = significance.kendall_compare(st, settings, "query_size")
    assert np.isnan(r["tau"].iloc[0]) and "≥ 2 values" in r["reason"].iloc[0]
    r = significance.kendall_compare(st, settings, "patch")
    assert "no setting column" in r["reason"].iloc[0]


# --------------------------------------------------------------------------------------------- CI

def test_mean_ci_known_values_and_reasons():
    sc = scores_table({"s1": {"a": [0.5, 0.5, 0.5]}, "s2": {"a": [0.7, 0.7, 0.7]}})
    ci = significance.mean_ci(sc, ["AUBC"]).set_index("method")
    assert ci.loc["a", "mean"] == pytest.approx(0.6) and ci.loc["a", "ci_low"] == pytest.approx(0.6)
    assert ci.loc["a", "ci_high"] == pytest.approx(0.6) and ci.loc["a", "n_runs"] == 6
    noisy = scores_table({"s": {"a": list(np.random.default_rng(0).normal(0.8, 0.05, 30))}})
    c = significance.mean_ci(noisy, ["AUBC"]).iloc[0]
    assert c["ci_low"] < 0.8 < c["ci_high"] and c["half_width"] == pytest.approx(1.96 * 0.05 / np.sqrt(30), rel=0.35)
    one = significance.mean_ci(scores_table({"s": {"a": [0.5]}}), ["AUBC"]).iloc[0]
    assert np.isnan(one["ci_low"]) and "1 seed" in one["reason"]


# -------------------------------------------------------------------------------------------- PPM

def curves_table(spec: dict, budgets=(100, 200, 300, 400, 500)):
    """spec[(setting, method)] = {seed: list of values}."""
    rows = []
    for (s, m), per in spec.items():
        for seed, vals in per.items():
            for c, (b, v) in enumerate(zip(budgets, vals)):
                rows.append({"setting": s, "method": m, "seed": seed, "cycle": c, "budget": float(b), "value": float(v)})
    return pd.DataFrame(rows)


def test_ppm_pairs_by_seed_id_not_position():
    off = {0: 0.0, 1: 0.1, 2: 0.2, 3: 0.3}     # large seed effect
    eps = {1: 0.0100, 2: 0.0111}
    a = {s: [0.5 + off[s]] + [0.6 + off[s] + eps.get(s, 0.0) + 0.001 * k for k in range(4)] for s in (0, 1, 2)}
    b = {s: [0.5 + off[s]] + [0.6 + off[s] + 0.001 * k for k in range(4)] for s in (1, 2, 3)}
    W = ppm.setting_ppms(curves_table({("s", "A"): a, ("s", "B"): b}))["s"]
    # shared seeds {1, 2}: A is 0.010–0.011 better at the 4 budgets after the identical start
    assert W.loc["A", "B"] == pytest.approx(0.8) and W.loc["B", "A"] == 0.0
    wl = ppm.win_lose_tie({"s": W}, "B").iloc[0]
    assert (wl["method"], wl["wins"], wl["losses"], wl["ties"]) == ("A", pytest.approx(0.8), 0.0, pytest.approx(0.2))


def test_ppm_aggregate_mean_row_and_strongest_baseline():
    W1 = pd.DataFrame([[np.nan, 1.0, 0.0], [0.0, np.nan, 0.0], [0.5, 0.5, np.nan]],
                      index=["al", "random", "random_fg33"], columns=["al", "random", "random_fg33"])
    W2 = W1.copy()
    W2.loc["al", "random"] = 0.0
    share, count = ppm.aggregate({"s1": W1, "s2": W2})
    assert share.loc["al", "random"] == 0.5 and count.loc["al", "random"] == 2
    mr = ppm.mean_row(share)
    assert mr["random"] == pytest.approx((0.5 + 0.5) / 2) and mr["random_fg33"] == 0.0
    assert ppm.strongest_baseline(share) == "random_fg33"
    missing = ppm.win_lose_tie({"s": pd.DataFrame(np.nan, index=["a", "r"], columns=["a", "r"])}, "r")
    assert "never compared" in missing["reason"].iloc[0]


# --------------------------------------------------------------------------------------- decision

def test_crossing_interpolates_and_flags_censoring():
    b, fl = decision.crossing(np.array([0.0, 10.0, 20.0]), np.array([0.0, 0.5, 1.0]), np.array([0.75, 1.2, -0.1, 0.5]))
    assert list(b) == [15.0, 20.0, 0.0, 10.0] and list(fl) == [0, 1, -1, 0]


def shifted_runs(shift, seeds=5, noise=0.003, same=False, seed=0):
    rng = np.random.default_rng(seed)
    budgets = np.arange(100, 2100, 100.0)
    curve = lambda x: 0.9 - 0.5 * np.exp(-x / 600)
    spec, runs = {}, []
    for m, sh in (("random", 0.0), ("al", shift)):
        spec[("S", m)] = {}
        for s in range(seeds):
            v = curve(budgets + sh) + np.r_[0.0, rng.normal(0, noise, len(budgets) - 1)]
            spec[("S", m)][s] = spec[("S", "random")][s] if (same and m == "al") else v
            runs.append({"setting": "S", "method": m, "seed": s, "train_s": 600.0, "query_s": 30.0,
                         "final_train_s": 100.0, "domain": "test", "dataset": "d"})
    return curves_table(spec, budgets), pd.DataFrame(runs)


def test_shifted_copy_gives_r_200_within_its_ci():
    curves, runs = shifted_runs(200.0)
    d = decision.decide(curves, runs, ["domain", "dataset"], "random", decision.Costs(1.0, 2.0, 10.0))
    f = d.fingerprints.set_index("method").loc["al"]
    assert f["E_r"] == pytest.approx(200, abs=15) and f["ci_low"] <= 200 <= f["ci_high"]
    assert f["evidence"] == "E[r] > 0 supported" and f["p_greater"] < 1e-3
    # overhead: 5 × (600 + 30) s ... per run (600 + 30) s − 100 s = 0.147 h → × 2 EUR + 10 EUR
    assert f["overhead_h"] == pytest.approx(530 / 3600) and f["overhead_eur"] == pytest.approx(530 / 3600 * 2 + 10)
    assert f["saving_eur"] == pytest.approx(f["E_r"] * 1.0 - f["overhead_eur"])
    v = d.verdicts.iloc[0]
    assert v["verdict"] == "use AL (al)" and "E[r] = " in v["because"]


def test_identical_curves_are_no_evidence_and_r_is_exactly_zero():
    curves, runs = shifted_runs(0.0, same=True)
    d = decision.decide(curves, runs, ["domain", "dataset"], "random", decision.Costs(1.0, 2.0, 0.0))
    f = d.fingerprints.set_index("method").loc["al"]
    assert f["E_r"] == 0.0 and f["ci_low"] == 0.0 and f["ci_high"] == 0.0
    assert f["evidence"] == "no evidence" and d.verdicts.iloc[0]["verdict"] == "no evidence"
    assert (d.budgets["r"] == 0).all()


def test_worse_method_and_unprofitable_method_say_do_not_use_al():
    curves, runs = shifted_runs(-200.0)
    d = decision.decide(curves, runs, ["domain", "dataset"], "random", decision.Costs(1.0, 2.0, 0.0))
    assert d.fingerprints.iloc[0]["evidence"] == "E[r] < 0 supported"
    assert d.verdicts.iloc[0]["verdict"] == "do not use AL"
    curves, runs = shifted_runs(200.0)
    d = decision.decide(curves, runs, ["domain", "dataset"], "random", decision.Costs(0.01, 2.0, 1000.0))
    assert d.verdicts.iloc[0]["verdict"] == "do not use AL" and "not money" in d.verdicts.iloc[0]["because"]
    d = decision.decide(curves, runs, ["domain", "dataset"], "random", decision.Costs())
    assert d.verdicts.iloc[0]["verdict"].startswith("AL reduces labels")


def test_target_metric_and_censored_levels():
    curves, runs = shifted_runs(200.0, noise=0.0)
    d = decision.decide(curves, runs, ["domain"], "random", decision.Costs(1.0, 1.0, 0.0, target=0.8))
    s = d.settings.iloc[0]
    # 0.9 − 0.5 e^{−x/600} = 0.8 at x = 600 ln 5 = 965.7: Random needs it, the method 200 fewer
    assert s["r_target"] == pytest.approx(200, abs=6) and s["n_censored"] >= 1
    assert (d.budgets.loc[d.budgets["flag"] == 0, "r"]).sub(200).abs().max() < 6


def test_method_that_never_rises_above_its_start_has_no_r():
    curves, runs = shifted_runs(0.0)
    flat = curves["method"] == "al"
    first = curves[flat & (curves["cycle"] == 0)].set_index("seed")["value"]
    curves.loc[flat, "value"] = curves.loc[flat, "seed"].map(first) - 0.01 * curves.loc[flat, "cycle"]
    d = decision.decide(curves, runs, ["domain"], "random", decision.Costs(1.0, 1.0))
    assert "never rises above its starting performance" in d.settings.iloc[0]["reason"]
    f = d.fingerprints.iloc[0]
    assert "E_r" not in f or np.isnan(f["E_r"])
    assert d.verdicts.iloc[0]["verdict"] == "no evidence" and "never rises" in d.verdicts.iloc[0]["because"]
