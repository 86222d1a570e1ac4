"""End-to-end tests of ``python -m experiments.report`` and ``python -m experiments.decide`` on
hand-made run directories (known answers), bad inputs, and a ``--preset smoke`` classification study."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = np.arange(100, 2100, 100)


def curve(x):
    return 0.9 - 0.5 * np.exp(-np.asarray(x, float) / 600)


def write_records(store: RunStore, records: list) -> None:
    """All cycles of a finished run in one commit (the store's format, without a write per cycle)."""
    store.records = [json.loads(json.dumps(r)) for r in records[:-1]]
    store.commit(records[-1], {})
    store.finish()


def make_cls_runs(root, methods, seeds=(0, 1, 2), shift=None, datasets=("d1",), regimes=("low",), noise=0.003,
                  same_as=None, metric="accuracy", timings=(60.0, 1.0, 2.0), seed=0):
    """Classification-like run directories whose curves are ``curve(b + shift[method])`` + noise;
    ``same_as[m] = other`` copies another method's curves exactly."""
    rng = np.random.default_rng(seed)
    shift, same_as = shift or {}, same_as or {}
    for ds in datasets:
        for reg in regimes:
            made = {}
            for m in methods:
                for s in seeds:
                    cfg = {"experiment": "classification", "dataset": ds, "regime": {"name": reg, "query": 100, "start": 100},
                           "paradigm": "supervised", "method": m, "seed": s, "preset": "laptop", "train": {"epochs": 5}}
                    st = RunStore(Path(root) / ds / reg / m / f"seed{s}", cfg)
                    if m in same_as:
                        vals = made[(same_as[m], s)]
                    else:
                        vals = curve(BUDGETS + shift.get(m, 0)) + np.r_[0.0, rng.normal(0, noise, len(BUDGETS) - 1)]
                    made[(m, s)] = vals
                    write_records(st, [{"cycle": c, "budget": int(b), "metrics": {metric: float(v)}, "queried": [],
                                        "timings": {"train_s": timings[0], "eval_s": timings[1], "query_s": timings[2]}}
                                       for c, (b, v) in enumerate(zip(BUDGETS, vals))])


def run_cli(module, *args):
    e = dict(os.environ, REALISTIC_AL_QUIET="1")
    return subprocess.run([sys.executable, "-m", f"experiments.{module}", *map(str, args)], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=600)


def call(main, args, capsys):
    from experiments.common import main_guard
    with pytest.raises(SystemExit) as e:
        main_guard(main, [str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """2 datasets × 2 regimes × 4 methods × 3 seeds: badge = Random shifted by 200 labels,
    bald by 50, entropy by −100."""
    root = tmp_path_factory.mktemp("study")
    make_cls_runs(root / "runs", ["random", "entropy", "badge", "bald"], shift={"badge": 200, "entropy": -100, "bald": 50},
                  datasets=("d1", "d2"), regimes=("low", "high"))
    return root


def test_report_writes_every_output_with_known_answers(study, capsys):
    from experiments.report import main
    out = study / "rep"
    code, stdout, err = call(main, [study / "runs", "--out", out, "--bootstrap", "200"], capsys)
    assert code == 0, err
    for f in ("curves.png", "table.md", "table.csv", "ppm.png", "ppm.csv", "winlose.png", "winlose.csv", "ranks.png",
              "cd.png", "ranks.csv", "friedman.csv", "nemenyi.csv", "ci.csv", "kendall.csv", "loo.csv", "r.png",
              "report.html"):
        assert (out / f).stat().st_size > 0, f
    rk = pd.read_csv(out / "ranks.csv")
    ov = rk[(rk["level"] == "overall") & (rk["metric"] == "AUBC")].set_index("method")["mean_rank"]
    assert list(ov.sort_values().index) == ["badge", "bald", "random", "entropy"] and ov["badge"] == 1.0
    assert set(rk["level"]) == {"setting", "dataset", "overall"}
    fr = pd.read_csv(out / "friedman.csv").set_index("metric")
    assert fr.loc["AUBC", "n_blocks"] == 4 and fr.loc["AUBC", "chi2"] == pytest.approx(12.0)  # same order in 4 blocks
    wl = pd.read_csv(out / "winlose.csv").set_index(["method", "reference"])
    assert wl.loc[("badge", "random"), "losses"] == 0 and wl.loc[("badge", "random"), "wins"] > 0.7
    assert wl.loc[("entropy", "random"), "wins"] == 0
    kd = pd.read_csv(out / "kendall.csv")  # regime and dataset vary: rankings identical → τ = 1
    assert {"regime", "dataset"} <= set(kd["key"]) and (kd.loc[kd["metric"] == "AUBC", "tau"] == 1.0).all()
    ci = pd.read_csv(out / "ci.csv").set_index(["metric", "method"])
    assert ci.loc[("AUBC", "badge"), "ci_low"] <= ci.loc[("AUBC", "badge"), "mean"] <= ci.loc[("AUBC", "badge"), "ci_high"]
    loo = pd.read_csv(out / "loo.csv")
    assert set(loo["unit"]) == {"seed", "dataset"}
    page = (out / "report.html").read_text()
    for sid in ("overview", "curves", "ranks", "friedman", "ppm", "winlose", "ci", "kendall", "loo", "decision"):
        assert f"<section id='{sid}'" in page
    assert page.count("data:image/png;base64,") >= 6 and "http://" not in page and "https://" not in page
    assert "mean rank AUBC: badge 1.00" in stdout


def test_report_compare_flag_and_friedman_blocks(study, capsys):
    from experiments.report import main
    out = study / "rep2"
    code, _, err = call(main, [study / "runs", "--out", out, "--compare", "regime=low,high", "--group-by",
                               "dataset,regime", "--friedman-blocks", "seeds", "--bootstrap", "50"], capsys)
    assert code == 0, err
    kd = pd.read_csv(out / "kendall.csv")
    assert set(kd["key"]) == {"regime"} and set(kd["a"]) == {"low"} and set(kd["b"]) == {"high"}
    assert (kd["scope"] == "mean").sum() == 2 and len(kd) == 6  # 2 datasets matched + mean, × AUBC / Final
    fr = pd.read_csv(out / "friedman.csv")
    assert (fr["blocks"] == "setting × seed").all() and (fr["n_blocks"] == 12).all()
    assert "dataset+regime" in set(pd.read_csv(out / "ranks.csv")["level"])


def test_decide_planted_shift_gives_r_200_and_identical_curves_no_evidence(tmp_path, capsys):
    from experiments.decide import main
    make_cls_runs(tmp_path / "shift", ["random", "badge"], seeds=range(5), shift={"badge": 200})
    code, out, err = call(main, [tmp_path / "shift", "--label-cost", 1, "--gpu-hour", 3, "--overhead", 20,
                                 "--target-metric", 0.8], capsys)
    assert code == 0, err
    d = pd.read_csv(tmp_path / "shift" / "decision.csv").set_index("method").loc["badge"]
    assert abs(d["E_r"] - 200) < 15 and d["ci_low"] <= 200 <= d["ci_high"], d
    assert d["evidence"] == "E[r] > 0 supported" and d["ppm_lose"] == 0
    # overhead: 20 cycles × (60 s train + 2 s query) − the one final 60 s training of a Random project
    assert d["overhead_h"] == pytest.approx((20 * 62 - 60) / 3600)
    assert d["saving_eur"] == pytest.approx(d["E_r"] * 1 - (d["overhead_h"] * 3 + 20))
    assert "use AL (badge)" in out
    md = (tmp_path / "shift" / "decision.md").read_text()
    assert "**use AL (badge)**" in md and "Labels to reach accuracy = 0.8" in md
    page = (tmp_path / "shift" / "report.html").read_text()
    assert "use AL (badge)" in page and "<section id='decision'" in page
    make_cls_runs(tmp_path / "same", ["random", "entropy"], seeds=range(4), same_as={"entropy": "random"})
    code, out, err = call(main, [tmp_path / "same", "--label-cost", 1, "--gpu-hour", 3], capsys)
    assert code == 0, err
    d = pd.read_csv(tmp_path / "same" / "decision.csv").set_index("method").loc["entropy"]
    assert d["E_r"] == 0 and d["evidence"] == "no evidence"
    assert ": no evidence" in out


def test_bad_inputs_are_one_line_exit_2_nothing_written(tmp_path, capsys):
    from experiments.decide import main as decide
    from experiments.report import main as report
    (tmp_path / "empty").mkdir()
    make_cls_runs(tmp_path / "one_method", ["random"], seeds=(0, 1))
    make_cls_runs(tmp_path / "one_seed", ["random", "badge"], seeds=(0,))
    make_cls_runs(tmp_path / "mixed" / "a", ["random", "badge"], seeds=(0, 1))
    make_cls_runs(tmp_path / "mixed" / "b", ["random", "badge"], seeds=(0, 1), datasets=("isic2019",),
                  metric="balanced_accuracy")
    make_cls_runs(tmp_path / "no_random", ["entropy", "badge", "bald"], seeds=(0, 1))
    make_cls_runs(tmp_path / "corrupt", ["random", "badge"], seeds=(0, 1))
    (tmp_path / "corrupt" / "d1" / "low" / "badge" / "seed1" / "state.json").write_text("{not json")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "config.json").write_text('{"lr": 0.1}')  # another tool's config: skipped
    price = ["--label-cost", 1, "--gpu-hour", 1]
    cases = [
        (report, [tmp_path / "empty"], "no realistic-al run directories"),
        (report, [tmp_path / "nope"], "does not exist"),
        (report, [tmp_path / "mixed"], "different metrics mixed"),
        (report, [tmp_path / "corrupt"], "corrupt run directory"),
        (report, [tmp_path / "foreign"], "no realistic-al run directories"),
        (report, [tmp_path / "one_seed", "--group-by", "bogus"], "--group-by bogus: not a setting column"),
        (report, [tmp_path / "one_seed", "--alpha", 2], "--alpha"),
        (decide, [tmp_path / "empty", *price], "no realistic-al run directories"),
        (decide, [tmp_path / "mixed", *price], "different metrics mixed"),
        (decide, [tmp_path / "one_method", *price], "at least one AL method"),
        (decide, [tmp_path / "one_seed", *price], "≥ 2 seeds"),
        (decide, [tmp_path / "no_random", *price], "pass --baseline"),
        (decide, [tmp_path / "one_seed", "--label-cost", -1, "--gpu-hour", 1], "--label-cost"),
    ]
    for main, args, needle in cases:
        before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
        code, _, err = call(main, [*args, "--out", tmp_path / "out"], capsys)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err, (args, err)
        assert not (tmp_path / "out").exists()
        assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == before
    # missing prices: argparse's one line
    code, _, err = call(decide, [tmp_path / "one_seed"], capsys)
    assert code == 2 and "--label-cost" in err and err.count("\n") == 1


def test_one_seed_and_two_methods_report_reasons_not_numbers(tmp_path, capsys):
    from experiments.report import main
    make_cls_runs(tmp_path / "r", ["random", "badge"], seeds=(0,), shift={"badge": 200})
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "ppm.png").write_bytes(b"stale")  # from an earlier report
    code, _, err = call(main, [tmp_path / "r", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert not (tmp_path / "o" / "ppm.png").exists()  # no pair shares 2 seeds: no PPM figure, stale one removed
    fr = pd.read_csv(tmp_path / "o" / "friedman.csv")
    assert fr["chi2"].isna().all() and fr["reason"].str.contains("≥ 3 methods").all()
    ci = pd.read_csv(tmp_path / "o" / "ci.csv")
    assert ci["ci_low"].isna().all() and ci["reason"].str.contains("1 seed").all()
    loo = pd.read_csv(tmp_path / "o" / "loo.csv")
    assert loo["tau"].isna().all() and loo["reason"].str.contains("needs ≥ 2").all()
    wl = pd.read_csv(tmp_path / "o" / "winlose.csv")
    assert wl["wins"].isna().all() and wl["reason"].str.contains("never compared").all()
    kd = pd.read_csv(tmp_path / "o" / "kendall.csv")
    assert kd["tau"].isna().all() and "no setting column varies" in kd["reason"].iloc[0]
    page = (tmp_path / "o" / "report.html").read_text()
    assert "not computable" in page


def make_seg_runs(root, with_reference=True):
    from experiments.runs import full_data_name
    rng = np.random.default_rng(1)
    preset, plan = {"name": "smoke", "iterations": 10}, {"patch_size": [16, 16, 16]}
    for m, fg_rate in (("random", 0.5), ("random_fg33", 1.0), ("claspe", 1.3)):
        for s in (0, 1):
            cfg = {"experiment": "segmentation", "dataset": "phantoms", "data_key": "abc", "regime": "low", "method": m,
                   "seed": s, "preset": preset, "query": {"query_size": 4, "patch": [8, 8, 8]}, "plan": plan}
            st = RunStore(Path(root) / "phantoms" / "low" / m / f"seed{s}", cfg)
            recs = []
            for c in range(5):
                t = 0.02 + 0.05 * c * fg_rate
                y = 0.8 - 0.5 * np.exp(-12 * t) + (rng.normal(0, 0.005) if c else 0.0)
                recs.append({"cycle": c, "budget": 4 * (c + 1), "queried": [],
                             "metrics": {"mean_dice": float(y), "fg_fraction": float(t), "voxel_fraction": 0.01 * c},
                             "timings": {"train_s": 5.0, "eval_s": 1.0, "query_s": 0.5}})
            write_records(st, recs)
    if with_reference:
        ref = Path(root) / "phantoms" / "full_data" / full_data_name("abc", plan, preset)
        ref.parent.mkdir(parents=True)
        ref.write_text(json.dumps({"mean_dice": 0.8, "train_s": 1.0}))


def test_segmentation_runs_get_fgeff_and_values_rows_get_ranks(tmp_path, capsys):
    from experiments.report import main
    make_seg_runs(tmp_path / "seg")
    code, stdout, err = call(main, [tmp_path / "seg", "--out", tmp_path / "o", "--bootstrap", "50"], capsys)
    assert code == 0, err
    assert (tmp_path / "o" / "fgeff.png").stat().st_size > 0
    fg = pd.read_csv(tmp_path / "o" / "fgeff.csv").set_index("method")
    assert fg.loc["claspe", "fg_eff"] == pytest.approx(12, rel=0.1) and fg.loc["claspe", "y_full"] == 0.8
    rk = pd.read_csv(tmp_path / "o" / "ranks.csv")
    assert "FG-Eff" in set(rk["metric"])
    wl = pd.read_csv(tmp_path / "o" / "winlose.csv")
    assert set(wl["reference"]) == {"random", "random_fg33"}  # Random and the strongest random baseline
    assert "<section id='fgeff'" in (tmp_path / "o" / "report.html").read_text()
    make_seg_runs(tmp_path / "seg2", with_reference=False)
    code, _, err = call(main, [tmp_path / "seg2", "--out", tmp_path / "o2", "--bootstrap", "50"], capsys)
    assert code == 0, err
    assert "FG-Eff not computed" in (tmp_path / "o2" / "report.html").read_text()
    # the values testbed: tidy results.csv rows, no budget curves
    vd = tmp_path / "values" / "toy2d_smoke"
    RunStore(vd, {"dataset": {"kind": "toy2d", "size": 32}, "preset": "smoke"})
    rows = []
    for seed in (0, 1):
        for model, base in (("softmax", 0.6), ("ensemble", 0.8), ("tta", 0.7)):
            rows.append([model, "pe", "PU", "patch", "ood", "auroc", "pool", seed, base + 0.01 * seed])
            rows.append([model, "pe", "PU", "patch", "fd", "aurc", "test_iid", seed, 1.0 - base])
            rows.append([model, "-", "-", "-", "seg", "dice", "test_iid", seed, base])
    pd.DataFrame(rows, columns=["model", "measure", "utype", "aggregation", "task", "metric", "split", "seed",
                                "value"]).to_csv(vd / "results.csv", index=False)
    code, _, err = call(main, [tmp_path / "values", "--out", tmp_path / "ov"], capsys)
    assert code == 0, err
    rk = pd.read_csv(tmp_path / "ov" / "ranks.csv")
    best = rk[rk["level"] == "overall"].sort_values("mean_rank").groupby("metric").first()["method"]
    assert best["ood/auroc"] == "ensemble/pe/patch" and best["fd/aurc"] == "ensemble/pe/patch"  # lower AURC is better
    assert best["seg/dice"] == "ensemble"
    page = (tmp_path / "ov" / "report.html").read_text()
    assert "values testbed records no AL budget curves" in page
    from experiments.decide import main as decide
    code, _, err = call(decide, [tmp_path / "values", "--label-cost", 1, "--gpu-hour", 1, "--out", tmp_path / "od"], capsys)
    assert code == 2 and "no budget curve" in err and not (tmp_path / "od").exists()


def test_help_explains():
    r = run_cli("decide", "--help")
    assert r.returncode == 0 and "--label-cost" in r.stdout and "eq. 4.1" in r.stdout
    r = run_cli("report", "--help")
    assert r.returncode == 0 and "--compare" in r.stdout and "report.html" in r.stdout
