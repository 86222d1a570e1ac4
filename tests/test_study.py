"""The study layer without engines: job graph, content keys, status, failures, locks, study files, progress."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import UserError
from core.executors import SerialExecutor, SlurmExecutor
from core.store import exclusive
from core.study import Job, Study, StudyFailed, content_key, job_state, status
from experiments.common import Progress, main_guard

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "REALISTIC_AL_QUIET": "1"}


def _cli(module, *args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env={**ENV, **(env or {})}, cwd=ROOT, timeout=timeout)


def blobs_domains(out, methods=("random", "entropy"), seeds=2, **kw):
    from experiments.blobs import build_parser, domains
    argv = ["--out", str(out), "--preset", "smoke", "--seeds", str(seeds), "--method", *methods]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return domains(build_parser().parse_args(argv), Path(out))


def curves(out, methods=("random", "entropy"), seeds=(0, 1)):
    """Per-cycle metrics (and queried ids) of every run: what must be bit-identical across executors."""
    return {(m, s): [(r["metrics"], r["queried"]) for r in map(json.loads, (Path(out) / "blobs" / "smoke" / m /
                                                                           f"seed{s}" / "cycles.jsonl").open())]
            for m in methods for s in seeds}


# ------------------------------------------------------------------------------ graph, keys, relaunch
def test_plan_orders_dependencies_and_keys_chain(tmp_path):
    (dom,) = blobs_domains(tmp_path)
    jobs = Study(tmp_path, [dom]).plan()
    names = [j.name for j in jobs]
    for j in jobs:
        assert all(names.index(d) < names.index(j.name) for d in j.deps)
    data = next(j for j in jobs if j.name.endswith("data/seed0"))
    run = next(j for j in jobs if j.name.endswith("entropy/seed0"))
    assert run.key == content_key(run.kind, run.config, [data.key])
    # a changed upstream config changes the dependants' keys
    (dom2,) = blobs_domains(tmp_path, epochs=61)
    run2 = next(j for j in Study(tmp_path, [dom2]).plan() if j.name == run.name)
    assert run2.key != run.key


def test_serial_study_then_relaunch_runs_nothing(tmp_path):
    (dom,) = blobs_domains(tmp_path)
    res = Study(tmp_path, [dom]).run(SerialExecutor())
    assert res.ok and len(res.ran) == 6 and not res.skipped
    before = curves(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and ".job" in p.parts
              or p.name in ("state.json", "data.npz")}
    for f in ("curves.png", "table.md", "table.csv", "ppm.png", "summary.json"):
        assert (tmp_path / "blobs" / "smoke" / f).exists()
    (dom,) = blobs_domains(tmp_path)
    res2 = Study(tmp_path, [dom]).run(SerialExecutor())
    assert res2.ok and res2.ran == [] and len(res2.skipped) == 6
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps          # nothing rewritten
    assert curves(tmp_path) == before
    rows = status(tmp_path)
    assert [st.status for _, st in rows] == ["done"] * 6


def test_stale_config_is_refused(tmp_path):
    (dom,) = blobs_domains(tmp_path, seeds=1, methods=("random",))
    Study(tmp_path, [dom]).run(SerialExecutor())
    (dom2,) = blobs_domains(tmp_path, seeds=1, methods=("random",), epochs=7)
    with pytest.raises(UserError, match="different configuration"):
        Study(tmp_path, [dom2]).run(SerialExecutor())


def test_lost_output_makes_the_job_pending_and_it_reruns_identically(tmp_path):
    (dom,) = blobs_domains(tmp_path, seeds=1, methods=("entropy",))
    Study(tmp_path, [dom]).run(SerialExecutor())
    before = curves(tmp_path, ("entropy",), (0,))
    (tmp_path / "blobs/smoke/entropy/seed0/DONE").unlink()
    (tmp_path / "blobs/smoke/entropy/seed0/state.json").unlink()
    (tmp_path / "blobs/smoke/entropy/seed0/cycles.jsonl").unlink()
    st = {j["name"]: s for j, s in status(tmp_path)}
    assert st["blobs/smoke/entropy/seed0"].status == "pending" and "missing" in st["blobs/smoke/entropy/seed0"].detail
    res = Study(tmp_path, [blobs_domains(tmp_path, seeds=1, methods=("entropy",))[0]]).run(SerialExecutor())
    assert res.ran == ["blobs/smoke/entropy/seed0"]
    assert curves(tmp_path, ("entropy",), (0,)) == before


def test_killed_serial_driver_resumes_to_the_same_numbers(tmp_path):
    ref = tmp_path / "ref"
    Study(ref, blobs_domains(ref, seeds=1)).run(SerialExecutor())
    out = tmp_path / "out"
    args = ["--preset", "smoke", "--seeds", "1", "--out", str(out), "--quiet"]
    r = _cli("experiments.blobs", *args, env={"REALISTIC_AL_KILL_JOB": "entropy/seed0@2"})
    assert r.returncode == -9                       # SIGKILL after cycle 2 of entropy/seed0
    st = {j["name"]: s for j, s in status(out)}
    assert st["blobs/smoke/random/seed0"].status == "done"
    assert st["blobs/smoke/entropy/seed0"].status == "pending" and "after cycle 2" in st["blobs/smoke/entropy/seed0"].detail
    r = _cli("experiments.blobs", *args, "--resume")
    assert r.returncode == 0, r.stderr
    assert curves(out, seeds=(0,)) == curves(ref, seeds=(0,))
    meta = json.loads((out / "blobs/smoke/entropy/seed0/.job/job.json").read_text())
    assert meta["attempt"] == 2


# ------------------------------------------------------------------------------ failures and locks
def _ok(ctx, run):
    (run.dir / "out.txt").write_text("ok")
    return {"ok": True}


def _user_error(ctx, run):
    raise UserError("the data folder lacks labels.csv\nsecond line never shown")


def _bug(ctx, run):
    raise ZeroDivisionError("division by zero")


class _Toy:
    name = "toy"

    def __init__(self, fns):
        self.fns = fns
        self.finished = False

    def context(self):
        return None

    def jobs(self):
        out = [Job(f"toy/{n}", "work", fn, {"n": n}) for n, fn in self.fns.items()]
        out.append(Job("toy/after_bad", "late", _ok, {}, deps=("toy/bad",)))
        return out

    def finish(self, result):
        self.finished = True


def test_failed_jobs_are_listed_and_the_rest_runs(tmp_path):
    dom = _Toy({"good": _ok, "bad": _user_error, "bug": _bug})
    res = Study(tmp_path, [dom]).run(SerialExecutor())
    failed = dict(res.failed)
    assert failed["toy/bad"] == "the data folder lacks labels.csv"
    assert failed["toy/bug"].startswith("ZeroDivisionError: division by zero")
    assert (tmp_path / "toy/bug/.job/traceback.txt").exists()
    assert "dependency toy/bad is not done" in failed["toy/after_bad"]
    assert res.ran == ["toy/good"] and (tmp_path / "toy/good/out.txt").exists()
    assert not dom.finished                                  # no summary from a half-failed domain
    st = {j["name"]: s for j, s in status(tmp_path)}
    assert st["toy/bad"].status == "failed" and st["toy/bad"].detail == "the data folder lacks labels.csv"
    assert StudyFailed(res).lines == [f"failed: {n}: {m}" for n, m in res.failed]


def test_study_failure_exits_1_listing_failures(tmp_path, capsys):
    dom = _Toy({"good": _ok, "bad": _user_error})

    def main(argv=None):
        res = Study(tmp_path, [dom]).run(SerialExecutor())
        if not res.ok:
            raise StudyFailed(res)
    with pytest.raises(SystemExit) as e:
        main_guard(main)
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "failed: toy/bad: the data folder lacks labels.csv" in err
    assert err[-1].startswith("error: 2 job(s) failed")


def test_second_study_on_the_same_out_is_refused(tmp_path):
    (dom,) = blobs_domains(tmp_path, seeds=1, methods=("random",))
    with exclusive(tmp_path / ".study" / "lock", "another study"):
        with pytest.raises(UserError, match="being written by another process"):
            Study(tmp_path, [dom]).run(SerialExecutor())
    assert not (tmp_path / "blobs").exists()


def test_second_cli_on_one_out_is_one_line_exit_2(tmp_path, capsys):
    """A CLI on an --out whose study lock another holder has: one line, exit 2."""
    from experiments import blobs
    with exclusive(tmp_path / ".study" / "lock", "a running study"):
        with pytest.raises(SystemExit) as e:
            main_guard(blobs.main, ["--preset", "smoke", "--seeds", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "another process" in err


class _SharedToy:
    """A shared stage (``toy/stage``) and a job that depends on it without keying on it."""
    name = "toy"

    def context(self):
        return None

    def jobs(self):
        return [Job("toy/stage", "stage", _ok, {"s": 1}, shared=True, outputs=("out.txt",)),
                Job("toy/run", "run", _ok, {"r": 1}, deps=("toy/stage",), unkeyed=("toy/stage",))]

    def finish(self, result):
        pass


def test_shared_stage_running_elsewhere_is_waited_for_and_unkeyed_deps_stay_out_of_the_key(tmp_path):
    """lock="jobs": a shared stage that another study is running is neither claimed nor refused: the
    study waits for its lock, finds it done and runs what depends on it; an ``unkeyed`` dependency
    orders a job without entering its key."""
    import threading
    import time
    study = Study(tmp_path, [_SharedToy()], lock="jobs")
    stage, run = study.plan()
    assert run.key == content_key("run", {"r": 1}, ()) and stage.key == content_key("stage", {"s": 1}, ())
    meta = tmp_path / "toy" / "stage" / ".job"
    box = {}
    with exclusive(meta / "lock", "the other study's stage"):
        t = threading.Thread(target=lambda: box.setdefault("res", study.run(SerialExecutor())))
        t.start()
        time.sleep(1.5)
        assert t.is_alive() and "res" not in box          # waiting for the stage, not refused
        (tmp_path / "toy" / "stage" / "out.txt").write_text("by the other study")
        (meta / "done.json").write_text(json.dumps({"key": stage.key, "result": {}}))
    t.join(60)
    res = box["res"]
    assert res.ok and res.ran == ["toy/run"], (res.ran, res.failed)
    assert (tmp_path / "toy" / "stage" / "out.txt").read_text() == "by the other study"   # not rerun here


def test_running_status_comes_from_the_lock(tmp_path):
    d = tmp_path / "a" / ".job"
    d.mkdir(parents=True)
    import socket
    (d / "job.json").write_text(json.dumps({"key": "k", "attempt": 1, "host": socket.gethostname(), "pid": 1}))
    assert job_state(tmp_path, "a", "k").status == "pending"
    with exclusive(d / "lock", "job a"):
        assert job_state(tmp_path, "a", "k").status == "running"
    assert job_state(tmp_path, "a", "k").status == "pending"
    (d / "job.json").write_text(json.dumps({"key": "k", "attempt": 1, "host": "node17.cluster", "pid": 1}))
    st = job_state(tmp_path, "a", "k")          # a Slurm node's job: its lock is not visible from here
    assert st.status == "running" and "node17.cluster" in st.detail
    (d / "failed.json").write_text(json.dumps({"key": "k", "message": "bad"}))
    assert job_state(tmp_path, "a", "k").status == "failed"


# ------------------------------------------------------------------------------ Slurm stages (no Slurm)
class _FakeSub:
    def __init__(self, job_id):
        self.job_id = job_id


class _FakeSlurm:
    def __init__(self):
        self.params, self.batches, self.n = [], [], 100

    def update_parameters(self, **kw):
        self.params.append(kw)

    def batch(self):
        import contextlib
        self.batches.append([])
        return contextlib.nullcontext()

    def submit(self, fn, job, *a):
        self.n += 1
        self.batches[-1].append(job.name)
        return _FakeSub(f"{self.n}_0")


def test_slurm_arrays_per_stage_chained_with_afterany(tmp_path):
    (dom,) = blobs_domains(tmp_path, seeds=2)
    jobs = Study(tmp_path, [dom]).plan()
    ex = SlurmExecutor(partition="gpu")
    ex._ex, ex.root, ex.contexts, ex.threads = _FakeSlurm(), tmp_path, {}, 1
    stages = ex._levels(jobs)
    assert [sorted({j.kind for j in st}) for st in stages] == [["data"], ["run"]]
    subs0 = ex._submit(stages[0], [])
    ex._submit(stages[1], subs0)
    fake = ex._ex
    assert len(fake.batches) == 2 and len(fake.batches[0]) == 2 and len(fake.batches[1]) == 4
    assert fake.params[0]["dependency"] is None
    assert fake.params[1]["dependency"] == "afterany:101:102"


# ------------------------------------------------------------------------------ progress lines
def test_progress_lines_in_a_non_terminal(capsys, monkeypatch):
    monkeypatch.delenv("REALISTIC_AL_QUIET", raising=False)
    with Progress(lines=True) as pr:
        t = pr.task("cifar10/low: 2 methods", 4, lines=True)
        pr.advance(t, 1, description="badge seed1: cycle 1/2")
        s = pr.task("study", 10)
        pr.advance(s, 3)                                   # silent credit
        pr.advance(s, 1, line="cifar10/low/badge seed1 cycle 3/11 acc 0.612 (41 s)")
        pr.grow(s, 12)
        pr.advance(s, 0, line="x FAILED: because")
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("[1/4] badge seed1: cycle 1/2 (")
    assert err[1] == "[4/10] cifar10/low/badge seed1 cycle 3/11 acc 0.612 (41 s)"
    assert err[2] == "[4/12] x FAILED: because"
    assert len(err) == 3


def test_blobs_cli_prints_one_line_per_cycle_to_a_file(tmp_path, capsys, monkeypatch):
    from experiments import blobs
    monkeypatch.delenv("REALISTIC_AL_QUIET", raising=False)
    monkeypatch.delenv("REALISTIC_AL_PROGRESS", raising=False)
    assert blobs.main(["--preset", "smoke", "--seeds", "1", "--method", "random", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err                          # captured: not a terminal
    lines = [ln for ln in err.splitlines() if ln.startswith("[")]
    assert lines[0].startswith("[1/5] blobs/smoke data seed0 done")
    assert lines[1].startswith("[2/5] blobs/smoke/random seed0 cycle 1/4 acc 0.")
    assert lines[-1].startswith("[5/5] blobs/smoke/random seed0 cycle 4/4 acc ")
    assert "\x1b[" not in err                             # no terminal control codes in a log file


# ------------------------------------------------------------------------------ study files
def test_study_file_run_status_report(tmp_path, capsys):
    from experiments import study
    f = tmp_path / "s.toml"
    f.write_text(f'out = "{tmp_path / "o"}"\npreset = "smoke"\nseeds = 2\n[executor]\nkind = "serial"\n'
                 '[[blobs]]\nmethod = ["random", "entropy"]\ngrid = { rounds = [2, 3] , setting = ["a"] }\n')
    with pytest.raises(UserError, match="two experiments write"):     # a grid over rounds with one setting name
        study.main(["run", str(f)])
    f.write_text(f'out = "{tmp_path / "o"}"\npreset = "laptop"\nseeds = 2\n'
                 '[[blobs]]\nmethod = ["random", "entropy"]\ngrid = { setting = ["a", "b"] }\n')
    assert study.main(["run", str(f), "--preset", "smoke"]) == 0
    assert "12 job(s) ran" in capsys.readouterr().out
    for s in ("a", "b"):
        assert (tmp_path / "o/blobs" / s / "curves.png").exists()
    assert study.main(["run", str(f), "--preset", "smoke"]) == 0
    assert "0 job(s) ran, 12 were already done" in capsys.readouterr().out
    assert study.main(["status", str(f)]) == 0
    assert "12 job(s) — 12 done, 0 running, 0 failed, 0 pending" in capsys.readouterr().out
    assert study.main(["report", str(f), "--report-dir", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "curves.png").exists() and "blobs/a" in capsys.readouterr().out


@pytest.mark.parametrize("body,msg", [
    ('nonsense = 1\n[[blobs]]\n', "unknown key 'nonsense' (valid: out, preset"),
    ('[[blobs]]\nmethods = ["random"]\n', "blobs[1]: unknown key 'methods' (valid:"),
    ('[[blobs]]\nmethod = ["magic"]\n', "blobs[1].method: unknown method 'magic'"),
    ('[[blobs]]\nepochs = "many"\n', "blobs[1].epochs: invalid int value: 'many'"),
    ('[[blobs]]\nepochs = 0\n', "blobs[1]: --epochs must be >= 1"),
    ('[[blobs]]\nmethod = ["bald"]\n', "needs evidence the blobs domain does not provide"),
    ('seeds = [1, 2]\n[[blobs]]\n', "seeds must be a single value"),
    ('preset = "huge"\n[[blobs]]\n', "preset: unknown preset 'huge'"),
    ('[[blobs]]\nresume = true\n', "blobs[1]: unknown key 'resume'"),
    ('[[blobs]]\ngrid = { epochs = 3 }\n', "blobs[1].grid.epochs: must be a non-empty list"),
    ('[executor]\nkind = "spark"\n[[blobs]]\n', "executor.kind: unknown executor 'spark'"),
    ('[executor]\nworkers = 0\n[[blobs]]\n', "executor.workers: --workers must be >= 1"),
    ('[executor]\nnodes = 3\n[[blobs]]\n', "executor: unknown key 'nodes'"),
    ('[[values]]\nmodels = ["softmax"]\n', "values[1]: missing key(s): dataset"),
    ('[[values]]\ndataset = "toy2d"\nno_plots = "yes"\n', "values[1].no_plots: must be true or false"),
    ('[blobs\n', "not valid TOML"),
    ('title = "x"\n', "no experiments"),
])
def test_bad_study_file_is_one_line_exit_2(tmp_path, body, msg, capsys):
    from experiments import study
    f = tmp_path / "bad.toml"
    f.write_text(f'out = "{tmp_path / "o"}"\n' + body)
    with pytest.raises(SystemExit) as e:
        main_guard(study.main, ["run", str(f)])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert msg in err and str(f) in err
    assert not (tmp_path / "o").exists()                     # nothing written


def test_missing_study_file_and_engine_absent(tmp_path, capsys, monkeypatch):
    from experiments import study
    with pytest.raises(SystemExit) as e:
        main_guard(study.main, ["run", str(tmp_path / "none.toml")])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
    f = tmp_path / "s.toml"
    f.write_text(f'out = "{tmp_path / "o"}"\npreset = "smoke"\nseeds = 1\n[[blobs]]\n')
    for engine, flags in (("ray", ["--executor", "ray"]), ("submitit", ["--executor", "slurm", "--slurm-local"])):
        monkeypatch.setitem(sys.modules, engine, None)        # as if the [cluster] extra were not installed
        with pytest.raises(SystemExit) as e:
            main_guard(study.main, ["run", str(f), *flags])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1
        assert f"needs the '{engine}' package" in err and "pip install -e '.[cluster]'" in err
    assert not (tmp_path / "o").exists()


def test_slurm_submission_scripts_with_a_fake_sbatch(tmp_path, monkeypatch):
    """The real submitit SlurmExecutor up to sbatch: one array per stage, afterany on the previous one."""
    pytest.importorskip("submitit", reason="the [cluster] extra (submitit) is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncat "$1" >> {log}\necho "=====" >> {log}\n'
                                    'n=$(grep -c ===== ' + str(log) + ')\necho "Submitted batch job 420$n"\n')
    (bin_dir / "sbatch").chmod(0o755)
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    (dom,) = blobs_domains(tmp_path / "o", seeds=2)
    study = Study(tmp_path / "o", [dom])
    jobs = study.plan()
    ex = SlurmExecutor(partition="gpu", time_min=90, gpus=1, array_parallelism=3)
    with ex.session(tmp_path / "o", {dom.name: None}, 1):
        stages = ex._levels(jobs)
        first = ex._submit(stages[0], [])
        ex._submit(stages[1], first)
    scripts = log.read_text().split("=====\n")[:2]
    assert "#SBATCH --partition=gpu" in scripts[0] and "#SBATCH --time=90" in scripts[0]
    assert "#SBATCH --gpus-per-node=1" in scripts[0] and "#SBATCH --cpus-per-task=1" in scripts[0]
    assert "#SBATCH --array=0-1%2" in scripts[0] and "dependency" not in scripts[0]
    assert "#SBATCH --array=0-3%3" in scripts[1] and "#SBATCH --dependency=afterany:4201" in scripts[1]
    assert "export OMP_NUM_THREADS=1" in scripts[1]
