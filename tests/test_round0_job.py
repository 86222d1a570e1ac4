"""The classification round-0 model as one shared study job per (setting, seed): trained once for every
method of a seed under any executor, loaded by the method runs (the same numbers as training it
in the run), resumable, and rerun when its output is lost."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from classification.data import DEBIAN_FMNIST

ROOT = Path(__file__).resolve().parents[1]
needs_fmnist = pytest.mark.skipif(not (DEBIAN_FMNIST / "train-labels-idx1-ubyte.gz").exists(),
                                  reason="Debian dataset-fashion-mnist not installed")
SETTING = Path("classification/fashion_mnist/low/supervised")
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def cli(out, *extra, fit_log=None, quiet=True):
    env = {**os.environ, **THREADS, "REALISTIC_AL_QUIET": "1" if quiet else "0", "PYTHONPATH": str(ROOT)}
    if fit_log is not None:
        env["REALISTIC_AL_FIT_LOG"] = str(fit_log)
    args = ["--preset", "smoke", "--seeds", "1", "--method", "random", "entropy", "badge", "--out", str(out),
            "--cache-dir", str(out.parent / "cache"), *extra] + (["--quiet"] if quiet else [])
    return subprocess.run([sys.executable, "-m", "experiments.cifar10", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def fits(log: Path) -> list[tuple[int, int, int]]:
    """(seed, cycle, budget) of every AL-cycle training, in any process."""
    if not log.exists():
        return []
    return [tuple(int(x) for x in line.split("\t")[:3]) for line in log.read_text().splitlines()]


def numbers(out: Path) -> dict:
    return {str(p.parent.relative_to(out)): [(r["metrics"], r["queried"]) for r in map(json.loads, p.open())]
            for p in sorted(out.rglob("cycles.jsonl"))}


@needs_fmnist
def test_ray_two_workers_three_methods_train_round0_once_with_the_serial_numbers(tmp_path):
    pytest.importorskip("ray", reason="the [cluster] extra (ray) is not installed")
    serial, ray = tmp_path / "serial", tmp_path / "ray"
    r = cli(serial, fit_log=tmp_path / "serial.fits")
    assert r.returncode == 0, r.stderr
    r = cli(ray, "--executor", "ray", "--workers", "2", fit_log=tmp_path / "ray.fits", quiet=False)
    assert r.returncode == 0, r.stderr
    # round 0 trained exactly once (by its own job), each method trains cycles 1 and 2 itself
    for log in ("serial.fits", "ray.fits"):
        got = sorted(fits(tmp_path / log))
        assert got == [(0, 0, 50)] + [(0, 1, 100)] * 3 + [(0, 2, 150)] * 3, (log, got)
    r0 = ray / SETTING / "round0" / "seed0"
    meta = json.loads((r0 / ".job" / "job.json").read_text())
    assert meta["kind"] == "round0" and meta["attempt"] == 1 and (r0 / ".job" / "done.json").exists()
    assert {p.name for p in r0.iterdir()} == {".job", "model.pt", "round0.json"}
    want = numbers(serial)
    assert len(want) == 3 and numbers(ray) == want                        # bit-identical per-cycle numbers
    saved = json.loads((r0 / "round0.json").read_text())["metrics"]
    assert all(w[0][0] == saved for w in want.values())                    # every method's cycle 0 is that model
    lines = (r.stderr + r.stdout).splitlines()   # progress: plain lines when not on a terminal
    assert sum("fashion_mnist/low round 0 seed0 done acc " in x for x in lines) == 1, r.stderr
    # relaunch: nothing is recomputed; a lost round-0 output makes that job (only) pending and rerun
    r = cli(ray, "--resume", fit_log=tmp_path / "again.fits")
    assert r.returncode == 0, r.stderr
    assert fits(tmp_path / "again.fits") == []
    (r0 / "model.pt").unlink()
    st = subprocess.run([sys.executable, "-m", "experiments.study", "status", str(ray), "-v"], cwd=ROOT,
                        env={**os.environ, **THREADS}, capture_output=True, text=True, timeout=120)
    assert "pending: fashion_mnist/low round 0 seed0 — finished, but model.pt is missing" in st.stdout, st.stdout
    r = cli(ray, "--resume", fit_log=tmp_path / "lost.fits")
    assert r.returncode == 0, r.stderr
    assert fits(tmp_path / "lost.fits") == [(0, 0, 50)] and (r0 / "model.pt").exists()
    assert numbers(ray) == want


@needs_fmnist
def test_bald_gets_its_own_round0_model_and_retune_at_the_start_keeps_training_round0_in_the_run(tmp_path):
    """BALD's dropout head is another round-0 training config: its own job (``round0-dropout0.5``).
    With --retune-at at the starting budget round 0 is re-tuned per run: no round-0 job."""
    from experiments.cifar10 import ClassificationDomain, build_parser, domains
    from core.study import Study
    args = build_parser().parse_args(["--preset", "smoke", "--seeds", "2", "--method", "random", "bald", "entropy",
                                      "--out", str(tmp_path)])
    jobs = Study(tmp_path, domains(args, tmp_path)).plan()
    names = [j.name.removeprefix(str(SETTING) + "/") for j in jobs]
    assert names == ["round0/seed0", "round0-dropout0.5/seed0", "random/seed0", "bald/seed0", "entropy/seed0",
                     "round0/seed1", "round0-dropout0.5/seed1", "random/seed1", "bald/seed1", "entropy/seed1"]
    by = {n: j for n, j in zip(names, jobs)}
    assert by["bald/seed1"].deps == (f"{SETTING}/round0-dropout0.5/seed1",)
    assert by["random/seed0"].unkeyed == by["random/seed0"].deps == (f"{SETTING}/round0/seed0",)
    assert by["round0/seed0"].shared and by["round0/seed0"].outputs == ("model.pt", "round0.json")
    # the run's key does not depend on the round-0 job (finished runs of before it stay valid)
    from core.study import content_key
    assert by["random/seed0"].key == content_key("run", by["random/seed0"].config, ())
    args = build_parser().parse_args(["--preset", "smoke", "--seeds", "1", "--method", "random", "--retune-at", "50",
                                      "--out", str(tmp_path / "rt")])
    dom = domains(args, tmp_path / "rt")[0]
    assert isinstance(dom, ClassificationDomain) and not dom.round0
    assert [j.kind for j in dom.jobs()] == ["run"]


@needs_fmnist
def test_round0_job_follows_tuning_and_its_model_is_the_tuned_one(tmp_path):
    """--tune: tuning → round 0 → runs; the round-0 model is trained with the tuned hyper-parameters
    and a run whose config differs from the saved model's refuses it in one line."""
    from core.errors import UserError
    from experiments.cifar10 import build_parser, domains
    from core.study import Study
    out = tmp_path / "t"
    args = build_parser().parse_args(["--preset", "smoke", "--seeds", "1", "--method", "random", "--tune",
                                      "--out", str(out)])
    jobs = Study(out, domains(args, out)).plan()
    assert [j.kind for j in jobs] == ["tune", "round0", "run"]
    assert jobs[1].deps == (f"{SETTING}/tuning/seed0",)
    assert set(jobs[2].deps) == {f"{SETTING}/tuning/seed0", f"{SETTING}/round0/seed0"}
    r = cli(out, "--tune")
    assert r.returncode == 0, r.stderr
    best = json.loads((out / SETTING / "tuning" / "seed0" / "best.json").read_text())["params"]
    saved = json.loads((out / SETTING / "round0" / "seed0" / "round0.json").read_text())
    assert all(saved["train"][k] == v for k, v in best.items())
    # a model of another configuration is refused (never silently used)
    from dataclasses import replace
    from classification.experiment import load_round0, prepare
    from experiments.cifar10 import resolve
    setting, base_cfg, _ = resolve(args)
    prep = prepare(setting, 0)
    with pytest.raises(UserError, match="another configuration"):
        load_round0(out / SETTING / "round0" / "seed0", prep, prep.start_ids, replace(base_cfg, lr=0.123))
