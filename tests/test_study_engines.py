"""The study layer on its engines (the ``[cluster]`` extra): Ray and submitit's local executor.

Same per-cycle numbers under every executor, SIGKILLed workers retried to the serial numbers, the
values testbed identical under serial and Ray, and no worker outliving a SIGKILLed driver."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from core.executors import RayExecutor, SerialExecutor, SlurmExecutor
from core.study import Study

from test_study import ROOT, blobs_domains, curves

ray = pytest.importorskip("ray", reason="the [cluster] extra (ray) is not installed")
pytest.importorskip("submitit", reason="the [cluster] extra (submitit) is not installed")


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for the in-process tests of this module; the executor reuses it."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def serial_curves(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    assert Study(out, blobs_domains(out)).run(SerialExecutor(), threads=1).ok
    return curves(out)


def test_same_numbers_under_serial_ray_and_submitit(tmp_path, ray_local, serial_curves):
    """2 methods × 2 seeds: bit-identical per-cycle metrics and queries, 1 thread per job everywhere."""
    for name, ex in (("ray", RayExecutor(workers=2)), ("submitit", SlurmExecutor(local=True, poll_s=0.2))):
        out = tmp_path / name
        res = Study(out, blobs_domains(out)).run(ex, threads=1)
        assert res.ok and len(res.ran) == 6, (name, res.failed)
        assert curves(out) == serial_curves, name
    assert list((tmp_path / "submitit" / ".study" / "submitit").iterdir())       # it really went through submitit


def test_ray_worker_sigkilled_mid_run_completes_with_the_serial_numbers(tmp_path, ray_local, serial_curves,
                                                                        monkeypatch):
    monkeypatch.setenv("REALISTIC_AL_KILL_JOB", "entropy/seed1@2")      # the worker dies after committing cycle 2
    res = Study(tmp_path, blobs_domains(tmp_path)).run(RayExecutor(workers=2, retries=2), threads=1)
    assert res.ok, res.failed
    meta = json.loads((tmp_path / "blobs/smoke/entropy/seed1/.job/job.json").read_text())
    assert meta["attempt"] == 2                                            # Ray retried it once
    assert curves(tmp_path) == serial_curves


def test_submitit_job_sigkilled_is_resubmitted_to_the_serial_numbers(tmp_path, serial_curves, monkeypatch):
    monkeypatch.setenv("REALISTIC_AL_KILL_JOB", "random/seed0@3")
    res = Study(tmp_path, blobs_domains(tmp_path, seeds=1)).run(SlurmExecutor(local=True, retries=1, poll_s=0.2),
                                                                threads=1)
    assert res.ok, res.failed
    assert json.loads((tmp_path / "blobs/smoke/random/seed0/.job/job.json").read_text())["attempt"] == 2
    assert curves(tmp_path, seeds=(0,)) == {k: v for k, v in serial_curves.items() if k[1] == 0}


def test_ray_job_failing_every_attempt_is_listed(tmp_path, ray_local, monkeypatch):
    monkeypatch.setenv("REALISTIC_AL_KILL_JOB", "random/seed0@1")
    # retries=0: the first kill is final; the other jobs still run and the domain is not summarised
    res = Study(tmp_path, blobs_domains(tmp_path)).run(RayExecutor(workers=2, retries=0), threads=1)
    failed = dict(res.failed)
    assert list(failed) == ["blobs/smoke/random/seed0"] and "worker died 1 time(s)" in failed["blobs/smoke/random/seed0"]
    assert len(res.ran) == 5 and not (tmp_path / "blobs/smoke/curves.png").exists()


def _values_spec(out, **kw):
    from uncertainty.runner import RunSpec
    return RunSpec(dataset="toy2d", preset="smoke", models=["softmax", "ensemble"], tasks=["seg", "ood", "al"],
                   seeds=[0], device="cpu", out=out, plots=False, **kw)


def test_values_testbed_identical_under_serial_and_ray(tmp_path, ray_local):
    from uncertainty.runner import Runner
    a = Runner(_values_spec(tmp_path / "s"), log=lambda m: None).run(SerialExecutor(), threads=1)["results"]
    b = Runner(_values_spec(tmp_path / "r"), log=lambda m: None).run(RayExecutor(workers=2), threads=1)["results"]
    assert len(a) > 20 and set(a.task) == {"seg", "ood", "al"}
    pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "r/toy2d_smoke/seed0/eval_ensemble/eval.npz").exists()


# ------------------------------------------------------------------------------ orphans
def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            out.setdefault(ppid, []).append(int(p.name))
    return out


def _descendants(pid: int) -> set[int]:
    kids, todo, seen = _children(), [pid], set()
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the driver's processes")
def test_sigkill_of_the_values_driver_leaves_no_workers(tmp_path):
    """issue 8's orphans: the values CLI on Ray, SIGKILLed while its workers train; nothing survives it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "REALISTIC_AL_QUIET": "1"}
    drv = subprocess.Popen([sys.executable, "-m", "experiments.values", "--dataset", "toy2d", "--preset", "smoke",
                            "--seeds", "2", "--workers", "2", "--executor", "ray", "--out", str(tmp_path), "--quiet"],
                           cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        workers: set[int] = set()
        while time.time() < deadline and drv.poll() is None:   # wait until Ray workers are running jobs
            pids = {json.loads(p.read_text()).get("pid") for p in tmp_path.rglob(".job/job.json")} - {drv.pid}
            if pids:
                workers = pids
                break
            time.sleep(0.2)
        assert drv.poll() is None, drv.stderr.read().decode()[-2000:]
        assert workers, "no job started on a Ray worker"
        tree = _descendants(drv.pid)
        assert workers & tree, "the jobs' processes are not the driver's descendants"
        tree |= _descendants(drv.pid)
        os.kill(drv.pid, signal.SIGKILL)
        drv.wait(30)
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(p) for p in tree):
            time.sleep(0.5)
        left = sorted(p for p in tree if _alive(p))
        names = {p: Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")[:80] for p in left}
        assert not left, f"processes left after SIGKILL of the driver: {names}"
    finally:
        if drv.poll() is None:
            drv.kill()


def test_local_ray_jobs_run_at_the_drivers_priority(tmp_path):
    """Ray starts workers at nice 15 by default: beside any other work the jobs would starve while the
    serial executor's run at full priority.  The local instance the executor starts runs them at the
    driver's niceness (own process: the module's Ray fixture must not be initialised)."""
    code = (
        "import os, ray\n"
        "from core.executors import RayExecutor\n"
        "with RayExecutor(workers=1).session(%r, {}, 1):\n"
        "    print('NICE', ray.get(ray.remote(lambda: os.nice(0)).remote()), os.nice(0))\n" % str(tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "RAY_worker_niceness"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    line = [x for x in r.stdout.splitlines() if x.startswith("NICE")]
    assert r.returncode == 0 and line, r.stderr[-2000:]
    _, worker, driver = line[0].split()
    assert worker == driver, line
