"""Classification and segmentation on the study layer: the thesis study files at smoke size, relaunch
runs nothing, one outputs contract, and the same per-cycle numbers for all three domains under
serial, Ray and submitit (local)."""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from classification.data import DEBIAN_FMNIST
from core.executors import RayExecutor, SerialExecutor, SlurmExecutor

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "REALISTIC_AL_QUIET": "1"}
needs_fmnist = pytest.mark.skipif(not (DEBIAN_FMNIST / "train-labels-idx1-ubyte.gz").exists(),
                                  reason="Debian dataset-fashion-mnist not installed")

# all three domains, 2 methods × 2 seeds each (values: two prediction models on one net), tiny sizes
THREE = """
seeds = 2
preset = "smoke"
[[classification]]
method = ["random", "badge"]
[[segmentation]]
method = ["random_fg33", "pe"]
ensemble = 1
iterations = 2
loops = 2
no_full_data = true
[[values]]
dataset = "toy2d"
models = ["softmax", "tta"]          # one trained net per seed, two prediction models
tasks = ["seg", "al"]
no_plots = true
"""


def _study(tmp_path, out, text=THREE):
    from experiments.study import load_study
    f = tmp_path / "three.toml"
    f.write_text(text)
    study, _, _ = load_study(str(f), argparse.Namespace(out=str(out), quiet=True))
    return study


def numbers(out: Path) -> dict:
    """Per-cycle metrics and queries of every AL run, and the values testbed's results."""
    res = {}
    for p in sorted(out.rglob("cycles.jsonl")):
        res[str(p.parent.relative_to(out))] = [(r["metrics"], r["queried"]) for r in map(json.loads, p.open())]
    for p in sorted(out.rglob("results.csv")):
        res[str(p.relative_to(out))] = pd.read_csv(p).to_csv(index=False)
    return res


@needs_fmnist
def test_ch5_study_smoke_then_relaunch_runs_nothing(tmp_path):
    cmd = [sys.executable, "-m", "experiments.study", "run", "studies/ch5_classification.toml", "--preset", "smoke",
           "--seeds", "1", "--out", str(tmp_path)]
    first = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    setting = tmp_path / "classification" / "fashion_mnist" / "low" / "supervised"
    for f in ("curves.png", "table.md", "table.csv", "summary.json"):          # the outputs contract
        assert (setting / f).stat().st_size > 0, f
    assert (setting / "badge" / "seed0" / "DONE").exists()
    before = numbers(tmp_path)
    t0 = time.perf_counter()
    again = subprocess.run(cmd, cwd=ROOT, env={**ENV, "REALISTIC_AL_QUIET": "0"}, capture_output=True, text=True,
                           timeout=600)
    wall = time.perf_counter() - t0
    assert again.returncode == 0, again.stderr
    assert "0 job(s) ran, 3 were already done" in again.stdout, again.stdout   # 2 runs + their round-0 model
    assert numbers(tmp_path) == before
    print(f"relaunch of the finished ch5 smoke study: {wall:.1f} s")
    st = subprocess.run([sys.executable, "-m", "experiments.study", "status", str(tmp_path)], cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=120)
    assert st.returncode == 0 and "3 done" in st.stdout and "round0" in st.stdout, st.stdout
    rep = subprocess.run([sys.executable, "-m", "experiments.report", str(tmp_path / "classification"), "--out",
                          str(tmp_path / "rep")], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr
    assert "| fashion_mnist/low" in (tmp_path / "rep" / "table.md").read_text()


def test_study_files_of_the_thesis_grids_load_at_every_preset(tmp_path):
    """ch5 / ch7 / ch8 parse and plan (the thesis preset names data folders: a missing one is one line)."""
    from core.errors import UserError
    from experiments.study import load_study
    for name in ("ch5_classification", "ch7_segmentation", "ch8_claspe"):
        for preset in ("smoke", "laptop", "thesis"):
            ns = argparse.Namespace(out=str(tmp_path / name / preset), quiet=True, preset=preset)
            try:
                study, _, _ = load_study(f"studies/{name}.toml", ns)
            except UserError as e:   # thesis data are not on this machine
                assert preset == "thesis" and "data" in str(e) and "\n" not in str(e), (name, preset, e)
                continue
            if name == "ch5_classification" and not (DEBIAN_FMNIST / "train-labels-idx1-ubyte.gz").exists():
                continue
            jobs = study.plan()
            assert jobs and all(j.key for j in jobs)
    assert not any((tmp_path / "ch5_classification").rglob("config.json"))   # planning writes no run


@needs_fmnist
def test_same_numbers_for_all_three_domains_under_serial_ray_and_submitit(tmp_path):
    ray = pytest.importorskip("ray", reason="the [cluster] extra (ray) is not installed")
    pytest.importorskip("submitit", reason="the [cluster] extra (submitit) is not installed")
    ref = tmp_path / "serial"
    res = _study(tmp_path, ref).run(SerialExecutor(), threads=1)
    assert res.ok, res.failed
    want = numbers(ref)
    assert len([k for k in want if k.startswith("classification/")]) == 4
    assert len([k for k in want if k.startswith("segmentation/")]) == 4
    assert any(k.endswith("results.csv") for k in want)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        out = tmp_path / "ray"
        res = _study(tmp_path, out).run(RayExecutor(workers=2), threads=1)
        assert res.ok, res.failed
        assert numbers(out) == want
    finally:
        ray.shutdown()
    out = tmp_path / "submitit"
    res = _study(tmp_path, out).run(SlurmExecutor(local=True, poll_s=0.2), threads=1)
    assert res.ok, res.failed
    assert numbers(out) == want
    assert list((out / ".study" / "submitit").iterdir())        # it really went through submitit
