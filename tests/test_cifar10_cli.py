"""End-to-end tests of ``python -m experiments.cifar10`` at smoke size."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from classification.data import DEBIAN_FMNIST
from core.loop import SimulatedCrash

ROOT = Path(__file__).resolve().parents[1]
needs_fmnist = pytest.mark.skipif(not (DEBIAN_FMNIST / "train-labels-idx1-ubyte.gz").exists(),
                                  reason="Debian dataset-fashion-mnist not installed")


def cli(*args, env=None):
    e = dict(os.environ, REALISTIC_AL_QUIET="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "experiments.cifar10", *args], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=600)


@needs_fmnist
def test_smoke_end_to_end_writes_runs_plots_table(tmp_path):
    r = cli("--preset", "smoke", "--seeds", "2", "--method", "random", "bald", "badge", "--out", str(tmp_path), "--quiet")
    assert r.returncode == 0, r.stderr
    root = tmp_path / "classification" / "fashion_mnist" / "low" / "supervised"
    for f in ("curves.png", "table.md", "table.csv", "ppm.png"):
        assert (root / f).stat().st_size > 0, f
    recs = [json.loads(x) for x in (root / "badge" / "seed1" / "cycles.jsonl").read_text().splitlines()]
    assert [x["budget"] for x in recs] == [50, 100, 150]
    assert all(len(x["queried"]) == 50 for x in recs[:-1]) and recs[-1]["queried"] == []
    assert 0.0 <= recs[-1]["metrics"]["accuracy"] <= 1.0
    cfg = json.loads((root / "bald" / "seed0" / "config.json").read_text())["config"]
    assert cfg["train"]["dropout"] == 0.0 and cfg["method"] == "bald"
    assert "| bald |" in (root / "table.md").read_text()
    # round 0 is the same model for random and badge (same seed, deterministic training) ...
    r0 = lambda m: json.loads((root / m / "seed0" / "cycles.jsonl").read_text().splitlines()[0])["metrics"]
    assert r0("random")["accuracy"] == r0("badge")["accuracy"]
    # the generic report CLI rebuilds the same summary from the run directories
    from experiments.report import main as report_main
    assert report_main([str(root), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "ppm.png").stat().st_size > 0
    assert (tmp_path / "rep" / "table.md").read_text().count("| fashion_mnist/low") == 3
    assert (tmp_path / "rep" / "report.html").stat().st_size > 0 and (tmp_path / "rep" / "ranks.csv").exists()
    # ... and the ch. 4 decision report runs on the same smoke study
    from experiments.decide import main as decide_main
    assert decide_main([str(root), "--out", str(tmp_path / "dec"), "--label-cost", "1", "--gpu-hour", "1",
                        "--bootstrap", "100"]) == 0
    import pandas as pd
    assert set(pd.read_csv(tmp_path / "dec" / "decision.csv")["method"]) == {"bald", "badge"}
    assert "# AL decision report" in (tmp_path / "dec" / "decision.md").read_text()
    # ... and a rerun without --resume refuses to touch the existing runs
    again = cli("--preset", "smoke", "--seeds", "1", "--method", "random", "--out", str(tmp_path), "--quiet")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--resume" in again.stderr


@pytest.mark.parametrize("args,needle", [
    (["--method", "bogus"], "valid: "),
    (["--regime", "huge"], "valid: low, medium, high"),
    (["--dataset", "mnist"], "valid: fashion_mnist"),
    (["--preset", "fast"], "valid: thesis, laptop, smoke"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "/nonexistent does not exist"),
    (["--dataset", "cifar10", "--data-dir", "/"], "cifar-10-batches-py"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, needle):
    from experiments.cifar10 import main
    from experiments.common import main_guard
    with pytest.raises(SystemExit) as e:
        main_guard(main, [*args, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err
    assert not (tmp_path / "o").exists()


def test_help_explains_flags():
    r = cli("--help")
    assert r.returncode == 0 and "--resume" in r.stdout and "Table A.4" in r.stdout


@needs_fmnist
def test_kill_and_resume_gives_identical_final_records(tmp_path, monkeypatch):
    from experiments.cifar10 import main
    args = ["--preset", "smoke", "--seeds", "1", "--method", "entropy", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "full")]) == 0
    monkeypatch.setenv("REALISTIC_AL_CRASH_AFTER_CYCLE", "0")
    with pytest.raises(SimulatedCrash):
        main(args + ["--out", str(tmp_path / "cut")])
    monkeypatch.delenv("REALISTIC_AL_CRASH_AFTER_CYCLE")
    assert main(args + ["--out", str(tmp_path / "cut"), "--resume"]) == 0
    run = Path("classification/fashion_mnist/low/supervised/entropy/seed0/state.json")
    strip = lambda p: [{k: v for k, v in r.items() if k != "timings"} for r in json.loads(p.read_text())["records"]]
    assert strip(tmp_path / "cut" / run) == strip(tmp_path / "full" / run)
    assert len(strip(tmp_path / "full" / run)) == 3


@needs_fmnist
@pytest.mark.parametrize("paradigm", ["selfsl", "fixmatch"])
def test_paradigms_end_to_end(tmp_path, paradigm):
    from experiments.cifar10 import main
    assert main(["--preset", "smoke", "--seeds", "1", "--method", "random", "badge", "--paradigm", paradigm,
                 "--out", str(tmp_path), "--quiet"]) == 0
    root = tmp_path / "classification" / "fashion_mnist" / "low" / paradigm
    recs = [json.loads(x) for x in (root / "badge" / "seed0" / "cycles.jsonl").read_text().splitlines()]
    cfg = json.loads((root / "badge" / "seed0" / "config.json").read_text())["config"]
    if paradigm == "fixmatch":  # query size 3 x start
        assert [r["budget"] for r in recs] == [50, 200, 350]
    else:
        assert [r["budget"] for r in recs] == [50, 100, 150]
        assert cfg["pretrained"]["tag"] == "fashion_mnist" and cfg["pretrained"]["seed"] == 0
        assert any((tmp_path / ".cache" / "simclr").glob("*.pt"))  # cached, reused by every method


@needs_fmnist
def test_tune_best_trial_is_used_by_all_cycles(tmp_path):
    from experiments.cifar10 import main
    args = ["--preset", "smoke", "--seeds", "1", "--method", "random", "entropy", "--tune", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    root = tmp_path / "classification" / "fashion_mnist" / "low" / "supervised"
    best = json.loads((root / "tuning" / "seed0" / "best.json").read_text())
    for m in ("random", "entropy"):
        cfg = json.loads((root / m / "seed0" / "config.json").read_text())["config"]
        assert cfg["tuned"]["params"] == best["params"]
        assert all(cfg["train"][k] == v for k, v in best["params"].items())
