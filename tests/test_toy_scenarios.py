"""The separation-study scenarios 1, 2, 3a, 3b of the toy data (thesis Table B.1, ``uncertainty.md`` §7.1),
each selectable with ``--scenario``."""
import json
from dataclasses import replace

import numpy as np
import pytest

from experiments.common import main_guard
from experiments.values import main
from uncertainty.data import SCENARIOS, ToyConfig, make_toy

# the thesis sizes (laptop/thesis toy2d): 160 train / 40 val (of 200), 21 + 21 test cases
CFG = ToyConfig(dim=2, size=32, n_train=160, n_val=40, n_test_iid=21, n_test_ood=21, n_pool_iid=8, n_pool_ood=9)


def data(scenario, **kw):
    return make_toy(replace(CFG, scenario=scenario, **kw))


def test_table_B1_case_counts():
    # scenario: (train, blurred train of train+val, test i.i.d., blurred test i.i.d., test OoD)
    want = {"1": (160, 200, 20, 20, 0), "2": (160, 0, 21, 0, 21), "3a": (160, 100, 21, 0, 21), "3b": (160, 100, 42, 21, 21)}
    for sc, (n_tr, blur_trval, n_ti, blur_ti, n_to) in want.items():
        d = data(sc)
        tr, va, ti, to = (d.splits[k] for k in ("train", "val", "test_iid", "test_ood"))
        assert (len(tr), len(ti), len(to)) == (n_tr, n_ti, n_to), sc
        assert int(tr.ambiguous.sum() + va.ambiguous.sum()) == blur_trval, sc       # blurred = ambiguous raters
        assert int(ti.ambiguous.sum()) == blur_ti and not ti.ood.any() and to.ood.all(), sc
        if n_to:
            assert sorted(set(to.shift)) == ["border", "gray", "shape"] and (to.shift == "gray").sum() == 7
        assert not d.splits["pool"].ood.any() if sc == "1" else d.splits["pool"].ood.any()


def test_scenarios_share_what_the_thesis_shares():
    s2, s3a, s3b = data("2"), data("3a"), data("3b")
    assert np.array_equal(s3a.splits["train"].images, s3b.splits["train"].images)        # 3b trains "as 3a"
    assert not np.array_equal(s2.splits["train"].images, s3a.splits["train"].images)
    for other in (s3a, s3b):                                   # tests 1-4 of 3a/3b are scenario 2's tests
        assert np.array_equal(s2.splits["test_ood"].images, other.splits["test_ood"].images)
        assert np.array_equal(s2.splits["test_iid"].images, other.splits["test_iid"].images[:21])
    # 3b's blurred test cases are i.i.d. with AU: 3 raters that disagree
    blurred = s3b.splits["test_iid"].subset(np.arange(21, 42))
    assert blurred.ambiguous.all() and (blurred.reference_variance() > 0).any()


def test_scenario_1_is_blurred_without_noise_and_mixed_is_unchanged():
    s1 = data("1")
    # no background noise: (almost) all background pixels keep the case's minimum (only the blur tail
    # differs); with noise, half of them are U(0, 1)
    flat = lambda d, i: d.splits["train"].images[i, 0][d.splits["train"].raters[i].max(0) == 0]
    at_min = lambda x: float(np.mean(np.isclose(x, x.min())))
    s2 = data("2")
    assert min(at_min(flat(s1, i)) for i in range(10)) > 0.8
    assert max(at_min(flat(s2, i)) for i in range(10)) < 0.7
    # the smaller blur (σ ¼ of 3a/3b's) gives a thinner ambiguous shell than 3b's blurred cases
    amb1 = (s1.splits["test_iid"].reference_variance() > 0).mean()
    amb3 = (data("3b").splits["test_iid"].subset(np.arange(21, 42)).reference_variance() > 0).mean()
    assert 0 < amb1 < amb3
    mixed, default = make_toy(replace(CFG, scenario="mixed")), make_toy(CFG)
    assert np.array_equal(mixed.splits["pool"].images, default.splits["pool"].images)
    assert mixed.name == "toy2d" and s1.name == "toy2d-s1"


def test_every_scenario_is_in_table_b1():
    assert set(SCENARIOS) == {"1", "2", "3a", "3b"}
    with pytest.raises(Exception, match="unknown toy scenario"):
        make_toy(replace(CFG, scenario="4"))


def _run(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main_guard(main, list(args))
    out = capsys.readouterr()
    return e.value.code, out


def test_values_cli_scenario_dry_run_and_errors(capsys, tmp_path):
    code, out = _run(capsys, "--dataset", "toy2d", "--scenario", "2", "--dry-run", "--out", str(tmp_path / "o"))
    assert code == 0, out.err
    c = json.loads(out.out)
    assert c["dataset"]["scenario"] == "2" and c["dataset"]["scenario_protocol"]["train_blur"] == 0.0
    assert c["out"].endswith("toy2d-s2_laptop") and not (tmp_path / "o").exists()
    code, out = _run(capsys, "--dataset", str(tmp_path), "--scenario", "1", "--out", str(tmp_path / "o"))
    assert code == 2 and "needs --dataset toy2d or toy3d" in out.err and out.err.count("\n") == 1
    code, out = _run(capsys, "--dataset", "toy2d", "--scenario", "5", "--out", str(tmp_path / "o"))
    assert code == 2 and "valid: mixed, 1, 2, 3a, 3b" in out.err


def test_scenario_1_runs_end_to_end_without_shifted_cases(capsys, tmp_path):
    """Scenario 1 has no shifted cases: NCC rows only, no AUROC / OoD / AL rows, and no crash."""
    import pandas as pd
    code, out = _run(capsys, "--dataset", "toy2d", "--preset", "smoke", "--scenario", "1", "--seeds", "1",
                     "--models", "ttd", "tta", "--workers", "1", "--out", str(tmp_path), "--quiet", "--no-plots")
    assert code == 0, out.err
    df = pd.read_csv(tmp_path / "toy2d-s1_smoke" / "results.csv")
    sep = df[df.task == "separation"]
    assert set(sep.metric) == {"ncc"} and set(sep.measure) >= {"pe", "ee", "mi"}
    assert not (df.task.isin(["ood", "al"])).any() and not (df.split == "test_ood").any()
    cfg = json.loads((tmp_path / "toy2d-s1_smoke" / "config.json").read_text())["config"]
    assert cfg["dataset"]["scenario"] == "1"


def test_study_file_runs_every_scenario(tmp_path):
    """studies/ch6_toy_scenarios.toml: Table B.4 scenario by scenario in one study."""
    import pandas as pd

    from experiments import study
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    assert study.main(["run", str(root / "studies" / "ch6_toy_scenarios.toml"), "--preset", "smoke", "--seeds", "1",
                       "--out", str(tmp_path), "--quiet"]) == 0
    for sc in ("1", "2", "3a", "3b"):
        df = pd.read_csv(tmp_path / f"toy2d-s{sc}_smoke" / "results.csv")
        assert set(df.task) == {"separation"}
        assert set(df.metric) == ({"ncc"} if sc == "1" else {"auroc"} if sc in ("2", "3a") else {"ncc", "auroc", "auroc_noamb"})
        cfg = json.loads((tmp_path / f"toy2d-s{sc}_smoke" / "config.json").read_text())["config"]
        assert cfg["dataset"]["scenario"] == sc
