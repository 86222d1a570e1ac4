"""End-to-end smoke test of ``python -m experiments.values`` (seconds) and its one-line errors."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from experiments.values import main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "REALISTIC_AL_QUIET": "1"}


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "experiments.values", *args], capture_output=True, text=True,
                          env=ENV, cwd=cwd or ROOT, timeout=300)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("values")
    args = ["--dataset", "toy2d", "--preset", "smoke", "--seeds", "1", "--workers", "1", "--out", str(out), "--quiet"]
    with pytest.raises(SystemExit) as e:
        from experiments.common import main_guard
        main_guard(main, args)
    assert e.value.code == 0
    return out / "toy2d_smoke", args


def test_smoke_writes_table_summary_and_plots(smoke_run):
    run, _ = smoke_run
    df = pd.read_csv(run / "results.csv")
    assert list(df.columns) == ["model", "measure", "utype", "aggregation", "task", "metric", "split", "seed", "value",
                                "shift"]
    assert set(df["shift"]) == {"toy"}
    assert set(df.model) == {"softmax", "ttd", "ensemble", "tta", "ssn"}
    assert set(df.task) == {"separation", "seg", "ood", "fd", "calib", "al", "am"}
    assert set(df.aggregation) >= {"image", "patch", "threshold"}
    sep = df[(df.task == "separation") & (df.metric == "ncc")]
    assert set(sep.model) == {"softmax", "ttd", "ensemble", "tta", "ssn"}
    # the SSN's MI is labelled aleatoric, the ensemble's MI epistemic
    assert set(df[(df.model == "ssn") & (df.measure == "mi")].utype) == {"AU"}
    assert set(df[(df.model == "ensemble") & (df.measure == "mi")].utype) == {"EU"}
    assert df.value.notna().all()
    auroc = df[df.metric == "auroc"].value
    assert ((auroc >= 0) & (auroc <= 1)).all()
    assert (df[df.metric == "eaurc"].value >= -1e-12).all()
    md = (run / "summary.md").read_text()
    assert "Table B.4a" in md and "Table B.4b" in md and "Closing note" in md
    for png in ("maps_iid.png", "maps_ood.png", "risk_coverage.png"):
        assert (run / png).stat().st_size > 1000
    assert (run / "DONE").exists()
    assert (run / "seed0" / "net_det0" / "net.pt").exists()


def test_resume_reuses_pieces_and_reproduces(smoke_run):
    run, args = smoke_run
    before = pd.read_csv(run / "results.csv")
    stamp = (run / "seed0" / "net_det0" / "net.pt").stat().st_mtime_ns
    (run / "seed0" / "eval_tta" / "eval.csv").unlink()   # a lost piece: its job is pending again
    r = _cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    after = pd.read_csv(run / "results.csv")
    pd.testing.assert_frame_equal(before, after)
    assert (run / "seed0" / "net_det0" / "net.pt").stat().st_mtime_ns == stamp   # checkpoint not retrained


def test_existing_run_without_resume_is_refused(smoke_run):
    _, args = smoke_run
    r = _cli(*args)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "--resume" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args,msg", [
    (["--dataset", "toy2d", "--models", "bayes"], "unknown model 'bayes'"),
    (["--dataset", "toy2d", "--measures", "varratio"], "unknown measure"),
    (["--dataset", "toy2d", "--tasks", "nope"], "unknown task"),
    (["--dataset", "toy4d"], "unknown dataset"),
    (["--dataset", "/nonexistent/path/x"], "unknown dataset"),
])
def test_bad_input_is_one_line_exit_2(args, msg, tmp_path):
    r = _cli(*args, "--out", str(tmp_path), "--preset", "smoke")
    assert r.returncode == 2
    assert msg in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr


def test_folder_without_dataset_json_is_one_line_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    r = _cli("--dataset", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--preset", "smoke")
    assert r.returncode == 2 and "dataset.json" in r.stderr and "Traceback" not in r.stderr


def test_real_data_path_smoke(tmp_path):
    from uncertainty.data import ToyConfig, make_toy, write_msd
    d = make_toy(ToyConfig(dim=2, size=24, n_train=8, n_val=4, n_test_iid=3, n_test_ood=6, n_pool_iid=4, n_pool_ood=4))
    write_msd(d, tmp_path / "DatasetToy")
    r = _cli("--dataset", str(tmp_path / "DatasetToy"), "--preset", "smoke", "--seeds", "1", "--workers", "1",
             "--models", "softmax", "ensemble", "--tasks", "separation", "ood", "fd", "--no-plots",
             "--out", str(tmp_path / "o"), "--quiet")
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(tmp_path / "o" / "DatasetToy_smoke" / "results.csv")
    assert set(df.model) == {"softmax", "ensemble"} and set(df.task) == {"separation", "ood", "fd"}


def test_study_file_gives_the_cli_numbers(smoke_run, tmp_path, capsys):
    """studies/ch6_values.toml at the smoke preset: the same results.csv as the CLI; status from the dirs."""
    from experiments import study
    run, _ = smoke_run
    assert study.main(["run", str(ROOT / "studies" / "ch6_values.toml"), "--preset", "smoke", "--seeds", "1",
                       "--out", str(tmp_path), "--quiet"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(run / "results.csv"), pd.read_csv(tmp_path / "toy2d_smoke" / "results.csv"))
    assert (tmp_path / "toy3d_smoke" / "summary.md").exists()
    capsys.readouterr()
    assert study.main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("done, 0 running, 0 failed, 0 pending")
    assert [line.split()[0] for line in out[2:5]] == ["train", "eval", "al"]
