"""The segmentation cycle-0 ensemble as one shared study job per (setting, seed): trained once for every
method of a seed, loaded by the method runs with the numbers of training it in each run (cycle-0 Dice,
queries, later loops), under the serial, Ray and (local) Slurm executors; run directories made before
the stage resume as they are; a damaged or foreign saved model is one line."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import UserError
from core.loop import SimulatedCrash
from experiments import segmentation as seg_cli
from segmentation.experiment import FIT_LOG_ENV

ROOT = Path(__file__).resolve().parents[1]
SETTING = Path("segmentation/phantoms/low")
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
BASE = ["--preset", "smoke", "--quiet", "--no-full-data", "--loops", "3"]
METHODS = ["random_fg33", "claspe"]


def _argv(out, data, methods=METHODS, *extra):
    return [*BASE, "--method", *methods, "--out", str(out), "--data-dir", str(data), *extra]


def _main(mp, argv, fits, share=True):
    """The CLI in this process (serial executor); ``share=False`` declares the jobs as before the stage."""
    mp.setattr(seg_cli, "SHARE_ROUND0", share)
    mp.setenv(FIT_LOG_ENV, str(fits))
    return seg_cli.main(argv)


def fits(log: Path) -> list[tuple[int, int]]:
    """(seed, cycle) of every ensemble training, in any process, sorted."""
    if not log.exists():
        return []
    return sorted(tuple(int(x) for x in line.split("\t")[:2]) for line in log.read_text().splitlines())


def numbers(out: Path) -> dict:
    """Every run's per-cycle (budget, metrics, queried patch ids), timings aside."""
    res = {}
    for p in sorted(out.rglob("state.json")):
        recs = json.loads(p.read_text())["records"]
        res[str(p.parent.relative_to(out))] = [(r["budget"], r["metrics"], r["queried"]) for r in recs]
    return res


def _round0_dirs(out: Path) -> list[Path]:
    return sorted((out / SETTING).glob("round0-*/seed*"))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same two-method run made the old way (each run trains its own cycle 0) and with the stage."""
    base = tmp_path_factory.mktemp("seg-round0")
    data = base / "data"
    with pytest.MonkeyPatch.context() as mp:
        assert _main(mp, _argv(base / "old", data), base / "old.fits", share=False) == 0
        assert _main(mp, _argv(base / "new", data), base / "new.fits") == 0
    return base


def test_shared_cycle0_gives_the_numbers_of_training_it_in_every_run(pair):
    old, new = numbers(pair / "old"), numbers(pair / "new")
    assert sorted(old) == [f"{SETTING}/{m}/seed0" for m in sorted(METHODS)] and len(old) == 2
    assert new == old                                    # cycle-0 Dice, queried patch ids, later loops: identical
    assert all(len(v) == 3 for v in new.values())
    a, b = (new[f"{SETTING}/{m}/seed0"] for m in METHODS)
    assert a[0][:2] == b[0][:2]                          # one cycle-0 model: the same Dice and annotation
    assert a[0][2] != b[0][2]                            # the methods query differently from it
    # trainings: old 2 methods × 3 loops; new one cycle-0 training for both methods + 2 × 2 loops
    assert fits(pair / "old.fits") == [(0, 0)] * 2 + [(0, 1)] * 2 + [(0, 2)] * 2
    assert fits(pair / "new.fits") == [(0, 0)] + [(0, 1)] * 2 + [(0, 2)] * 2
    assert _round0_dirs(pair / "old") == []
    [r0] = _round0_dirs(pair / "new")
    assert {p.name for p in r0.iterdir()} == {".job", "models.pt", "round0.json"}
    job = json.loads((r0 / ".job" / "job.json").read_text())
    assert job["kind"] == "round0" and job["deps"] == [] and (r0 / ".job" / "done.json").exists()
    meta = json.loads((r0 / "round0.json").read_text())
    assert meta["n_models"] == 2 and meta["threads"] == 1 and meta["budget"] == len(meta["labelled"])
    pool = json.loads((pair / "new" / SETTING / "claspe" / "seed0" / "state.json").read_text())["pool"]
    assert meta["labelled"] == sorted(i for i, c in zip(pool["ids"], pool["cycles"]) if c == 0)
    # the runs depend on it but keep their key: the same key as the runs made without the stage
    from core.study import content_key
    for m in METHODS:
        jn = json.loads((pair / "new" / SETTING / m / "seed0" / ".job" / "job.json").read_text())
        jo = json.loads((pair / "old" / SETTING / m / "seed0" / ".job" / "job.json").read_text())
        assert jn["deps"] == [str(r0.relative_to(pair / "new"))] and jo["deps"] == []
        assert jn["key"] == jo["key"] == content_key("run", jo["config"], ())


def test_runs_made_before_the_stage_resume_and_load_nothing(pair, tmp_path, monkeypatch):
    """Old run directories (no dependency; one with cycle 0 committed, one further on) resume with the
    numbers of an uninterrupted run; a seed whose runs all have cycle 0 gets no round-0 job; a method
    added later gets the shared model, and only it loads it."""
    import segmentation.experiment as ex
    from core.study import Study
    out, data = tmp_path / "o", pair / "data"
    for m, at in (("random_fg33", "0"), ("claspe", "1")):
        monkeypatch.setenv("REALISTIC_AL_CRASH_AFTER_CYCLE", at)
        with pytest.raises(SimulatedCrash):
            _main(monkeypatch, _argv(out, data, [m]), tmp_path / "before.fits", share=False)
    monkeypatch.delenv("REALISTIC_AL_CRASH_AFTER_CYCLE")
    assert [len(v) for v in numbers(out).values()] == [2, 1]           # claspe after cycle 1, random_fg33 after 0
    monkeypatch.setattr(seg_cli, "SHARE_ROUND0", True)
    args = seg_cli.build_parser().parse_args(_argv(out, data))
    jobs = Study(out, seg_cli.domains(args, out)).plan()
    assert [j.kind for j in jobs] == ["run", "run"] and all(j.deps == () for j in jobs)   # nothing to share
    loads = []
    real = ex.load_round0
    monkeypatch.setattr(ex, "load_round0", lambda path, dom, pool: loads.append(dom.method.name) or real(path, dom, pool))
    assert _main(monkeypatch, _argv(out, data, [*METHODS, "random"], "--resume"), tmp_path / "after.fits") == 0
    assert loads == ["random"]
    # cycle 0 trained once (the round-0 job, for the new method); the old runs finish their own loops
    assert fits(tmp_path / "after.fits") == [(0, 0)] + [(0, 1)] * 2 + [(0, 2)] * 3
    got, want = numbers(out), numbers(pair / "new")
    for m in METHODS:
        assert got[f"{SETTING}/{m}/seed0"] == want[f"{SETTING}/{m}/seed0"], m
    assert got[f"{SETTING}/random/seed0"][0][1] == want[f"{SETTING}/claspe/seed0"][0][1]   # the same cycle-0 model
    assert len(_round0_dirs(out)) == 1 and (out / SETTING / "random" / "seed0" / "DONE").exists()


def _domain(out, data, seed=0):
    """The study domain of the pair's flags and its seed's SegmentationDomain with the starting pool."""
    from segmentation.experiment import SegmentationDomain
    args = seg_cli.build_parser().parse_args(_argv(out, data))
    dom = seg_cli.domains(args, out)[0]
    d = SegmentationDomain(dom.data, dom.qs, dom.r["preset"], dom.plan, seed=seed, device="cpu")
    return dom, d, d.initial_pool([])


def test_a_saved_model_of_another_configuration_or_damaged_is_one_line(pair, tmp_path, capsys):
    from core.threads import limited
    from segmentation.experiment import load_round0
    from segmentation.training import Ensemble
    [r0] = _round0_dirs(pair / "new")
    _, dom, pool = _domain(pair / "new", pair / "data")
    ens = load_round0(r0, dom, pool)
    assert isinstance(ens, Ensemble) and len(ens.models) == 2 and not any(m.training for m in ens.models)
    assert ens.folds == json.loads((r0 / "round0.json").read_text())["folds"]
    with limited(2), pytest.raises(UserError, match="another configuration .*--threads.*delete that folder"):
        load_round0(r0, dom, pool)                                       # same seed, other thread count
    _, other, pool1 = _domain(pair / "new", pair / "data", seed=1)
    with pytest.raises(UserError, match="another configuration"):
        load_round0(r0, other, pool1)                                    # another seed's start
    bad = tmp_path / "bad"
    shutil.copytree(r0, bad)
    (bad / "models.pt").write_bytes((bad / "models.pt").read_bytes()[:100])
    with pytest.raises(UserError, match=r"missing or damaged \(.*\); delete that folder and rerun with --resume"):
        load_round0(bad, dom, pool)
    # through the CLI: a run that loads a damaged shared model fails in one line, the rest is kept
    out = tmp_path / "o"
    shutil.copytree(pair / "new", out)
    (next(iter(_round0_dirs(out))) / "models.pt").write_bytes(b"garbage")
    from experiments.common import main_guard
    with pytest.raises(SystemExit) as e:
        main_guard(seg_cli.main, _argv(out, pair / "data", ["random"], "--resume"))
    err = capsys.readouterr().err
    assert e.value.code == 1 and "random/seed0: " in err and "delete that folder and rerun with --resume" in err, err
    assert json.loads((out / SETTING / "claspe" / "seed0" / "state.json").read_text())["done"]


def test_round0_job_is_keyed_by_its_training_and_only_on_the_monai_backend(pair, tmp_path):
    """Another training setting in the same folder (a --queries-from replay with another length, --iterations)
    gets its own round-0 folder; the nnU-Net backend keeps training cycle 0 in every run."""
    from core.study import Study
    data = pair / "data"
    dom, _, _ = _domain(pair / "new", data)
    jobs = {j.name: j for j in Study(pair / "new", [dom]).plan()}
    [name] = [n for n in jobs if "/round0-" in n]
    assert jobs[name].shared and jobs[name].outputs == ("models.pt", "round0.json") and jobs[name].kind == "round0"
    assert str(_round0_dirs(pair / "new")[0].relative_to(pair / "new")) == name
    args = seg_cli.build_parser().parse_args(_argv(tmp_path, data, METHODS, "--iterations", "3", "--seeds", "2"))
    jobs2 = {j.name: j for j in Study(tmp_path, seg_cli.domains(args, tmp_path)).plan()}
    r0 = sorted(n for n in jobs2 if "/round0-" in n)
    assert len(r0) == 2 and name not in r0 and r0[0].rsplit("/", 1)[0] == r0[1].rsplit("/", 1)[0]
    run = jobs2[f"{SETTING}/claspe/seed1"]
    assert run.deps == run.unkeyed == (r0[1],)
    src = pair / "new" / SETTING
    args = seg_cli.build_parser().parse_args(_argv(tmp_path, data, ["random_fg33"], "--queries-from", str(src),
                                                   "--iterations", "3"))
    jobs3 = [j.name for j in Study(tmp_path, seg_cli.domains(args, tmp_path)).plan()]
    assert jobs3 == [r0[0], f"{SETTING}/random_fg33_precomputed/seed0"]
    from segmentation import nnunet
    if nnunet.available():
        args = seg_cli.build_parser().parse_args(_argv(tmp_path, data, METHODS, "--backend", "nnunet"))
        assert [j.kind for j in Study(tmp_path, seg_cli.domains(args, tmp_path)).plan()] == ["run", "run"]


def test_ray_two_workers_and_local_slurm_train_cycle0_once_with_the_serial_numbers(pair, tmp_path):
    pytest.importorskip("ray", reason="the [cluster] extra (ray) is not installed")
    pytest.importorskip("submitit", reason="the [cluster] extra (submitit) is not installed")
    want = numbers(pair / "new")
    env = {**os.environ, **THREADS, "REALISTIC_AL_QUIET": "1", "PYTHONPATH": str(ROOT),
           FIT_LOG_ENV: str(tmp_path / "ray.fits"), "RAY_AUTH_MODE": "disabled"}
    r = subprocess.run([sys.executable, "-m", "experiments.segmentation",
                        *_argv(tmp_path / "ray", pair / "data", METHODS, "--executor", "ray", "--workers", "2")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert fits(tmp_path / "ray.fits") == [(0, 0)] + [(0, 1)] * 2 + [(0, 2)] * 2
    assert numbers(tmp_path / "ray") == want
    from core.executors import SlurmExecutor
    from core.study import Study
    out = tmp_path / "slurm"
    args = seg_cli.build_parser().parse_args(_argv(out, pair / "data"))
    os.environ[FIT_LOG_ENV] = str(tmp_path / "slurm.fits")
    try:
        res = Study(out, seg_cli.domains(args, out), lock="jobs").run(SlurmExecutor(local=True, poll_s=0.2), threads=1)
    finally:
        del os.environ[FIT_LOG_ENV]
    assert res.ok, res.failed
    assert fits(tmp_path / "slurm.fits") == [(0, 0)] + [(0, 1)] * 2 + [(0, 2)] * 2
    assert numbers(out) == want and list((out / ".study" / "submitit").iterdir())
