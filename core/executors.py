"""Where a study's jobs run: in this process, on Ray, or on Slurm through submitit (``core.study``).

* :class:`SerialExecutor` — one job after the other in this process (default; no extra packages);
* :class:`RayExecutor` — a local Ray instance (``workers`` concurrent jobs × ``threads`` CPU threads,
  ``gpus_per_run`` fractional GPUs each) or a running cluster (``address``).  Dependencies are Ray
  task arguments, so Ray starts a job only after its inputs exist; a job whose worker dies (SIGKILL,
  OOM, lost node) is retried by Ray from its last committed state.  Ray's workers die with the
  driver (Ray's reaper), so a killed study leaves no processes behind;
* :class:`SlurmExecutor` — one submitit job array per stage (dependency level) with
  ``afterany`` dependencies between stages; preempted / timed-out jobs are requeued (checkpoint =
  the job's own resume); with ``local=True`` the same arrays run through submitit's
  ``LocalExecutor`` on this machine (tests, no Slurm needed; stage after stage, at most
  ``array_parallelism`` — capped at the CPU count — jobs at once).

Ray and submitit come with the optional extra ``pip install -e '.[cluster]'``; without it the
executor says so in one line.  Every executor runs :func:`core.study.execute_job` with the same
thread count, so a study's numbers do not depend on where it ran.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .errors import UserError
from .study import STUDY_DIR, Job, execute_job

EXECUTORS = ("serial", "ray", "slurm")
_REPO = str(Path(__file__).resolve().parents[1])


def _require(module: str, kind: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"--executor {kind} needs the '{module}' package, which is not installed: "
                        f"pip install -e '.[cluster]' (or pip install {module})") from None


def worker_env(threads: int | None) -> dict[str, str]:
    """Environment of a job process elsewhere: thread counts, this checkout on the path, our own
    REALISTIC_AL_* switches (quiet output, fault injection in tests)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("REALISTIC_AL_")}
    if threads:
        env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    path = os.environ.get("PYTHONPATH", "")
    env["PYTHONPATH"] = _REPO + (os.pathsep + path if path and _REPO not in path.split(os.pathsep) else "")
    return env


class Executor:
    """Runs the to-do jobs of one planning round (dependencies first) and returns their outcomes."""
    name = "base"
    retries = 0
    retries_natively = False   # True: the engine itself retries jobs whose process died

    def __init__(self):
        self.root: Path | None = None
        self.contexts: dict = {}
        self.threads: int | None = 1

    @contextlib.contextmanager
    def session(self, root: Path, contexts: dict, threads: int | None):
        self.root, self.contexts, self.threads = Path(root), contexts, threads
        yield

    def check(self) -> None:
        """Fail with one line, before anything is written, when the engine is missing."""

    def run(self, jobs: list[Job], tracker) -> dict[str, dict]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class SerialExecutor(Executor):
    name = "serial"

    def run(self, jobs, tracker):
        out = {}
        for j in jobs:   # the plan lists dependencies first
            out[j.name] = oc = execute_job(j, str(self.root), self.contexts.get(j.domain), self.threads,
                                           sink=tracker.event)
            tracker.finished(j, oc)
        return out

    def describe(self):
        return f"this process ({self.threads or 'default'} thread(s) per job)"


def _crash_message(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


# Ray's own fate-sharing stops the raylet, GCS and workers within seconds of the driver's death, but
# its two agents linger ~60 s (a hard-coded timeout publishing "raylet died" to the dead GCS).  This
# guard follows the process tree of the instance the driver started (once a second) while blocked on
# a pipe from the driver, so it wakes however the driver ends, and then SIGKILLs every process of
# that tree still alive (same pid and start time).
_GUARD = r"""
import os, select, signal, sys, time
heads = {int(p) for p in sys.argv[1:]}
known = {}

def table():
    out = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
                out[int(p)] = (int(f[1]), f[19])
            except (OSError, IndexError, ValueError):
                pass
    return out

def follow():
    t = table()
    known.update({h: t[h][1] for h in heads if h in t and h not in known})
    grew = True
    while grew:
        grew = False
        for pid, (ppid, start) in t.items():
            if ppid in known and pid not in known:
                known[pid], grew = start, True
    return t

while True:
    follow()
    ready, _, _ = select.select([sys.stdin], [], [], 1.0)
    if ready and not os.read(sys.stdin.fileno(), 4096):
        break
for sweep in range(3):
    t = table()
    for pid, start in known.items():
        if pid != os.getpid() and pid in t and t[pid][1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    time.sleep(0.5)
"""


def _children(pid: int) -> set[int]:
    out = set()
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.add(int(p))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _start_guard(before: set[int]):
    """Fate-share the local Ray instance just started with this process (Linux; else None)."""
    if not Path("/proc/self/environ").exists():
        return None
    heads = sorted(_children(os.getpid()) - before)
    if not heads:
        return None
    return subprocess.Popen([sys.executable, "-c", _GUARD, *map(str, heads)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


class RayExecutor(Executor):
    name = "ray"
    retries_natively = True

    def __init__(self, workers: int | None = None, gpus_per_run: float = 0.0, address: str | None = None,
                 retries: int = 2, poll_s: float = 0.5):
        super().__init__()
        self.workers, self.gpus_per_run, self.address = workers, float(gpus_per_run), address
        self.retries, self.poll_s = int(retries), poll_s
        self._ray = None

    def check(self):
        _require("ray", "ray")

    @contextlib.contextmanager
    def session(self, root, contexts, threads):
        ray = _require("ray", "ray")
        self.root, self.threads = Path(root), threads
        started, guard = False, None
        if not ray.is_initialized():
            kw = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                      runtime_env={"env_vars": worker_env(threads)})
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")    # a local instance for this study only
            try:
                if self.address:
                    ray.init(address=self.address, **kw)
                else:
                    workers = self.workers or max(1, (os.cpu_count() or 1) // max(1, threads or 1))
                    before = _children(os.getpid()) if Path("/proc").is_dir() else set()
                    # Ray starts its workers at nice 15: on a machine running anything else the study's
                    # jobs would get a fraction of a core while the serial executor's run at full
                    # priority.  A local instance runs them at the driver's priority (a user's
                    # RAY_worker_niceness wins).
                    os.environ.setdefault("RAY_worker_niceness", "0")
                    ray.init(address="local", num_cpus=workers * max(1, threads or 1), **kw)
                    guard = _start_guard(before)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
                raise UserError(f"cannot start or reach {where}: {_crash_message(e)}") from None
            started = True
        try:
            self._ray = ray
            self.contexts = {name: ray.put(c) for name, c in contexts.items()}
            self._remote = ray.remote(execute_job)
            yield
        finally:
            self.contexts = {}
            if started:
                ray.shutdown()
            if guard is not None:   # closing its pipe sweeps what shutdown left, then it exits
                guard.stdin.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    guard.wait(10)

    def run(self, jobs, tracker):
        ray = self._ray
        opts = dict(num_cpus=max(1, self.threads or 1), num_gpus=self.gpus_per_run, max_retries=self.retries,
                    retry_exceptions=False, runtime_env={"env_vars": worker_env(self.threads)})
        refs: dict[str, Any] = {}
        for j in jobs:   # dependencies first: their refs exist when a dependant is submitted
            deps = [refs[d] for d in j.deps if d in refs]
            refs[j.name] = self._remote.options(name=j.name[-60:], **opts).remote(
                j, str(self.root), self.contexts.get(j.domain), self.threads, *deps)
        by_ref = {ref: name for name, ref in refs.items()}
        jobs_by_name = {j.name: j for j in jobs}
        out: dict[str, dict] = {}
        try:
            while by_ref:
                ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=self.poll_s)
                tracker.poll(self.root, list(by_ref.values()))
                for r in ready:
                    name = by_ref.pop(r)
                    try:
                        oc = ray.get(r)
                    except Exception as e:   # the worker died more often than Ray retries, or a dependency did
                        job = jobs_by_name[name]
                        bad = [d for d in job.deps if d in out and out[d]["status"] not in ("done", "skipped")]
                        oc = ({"name": name, "status": "blocked", "message": f"dependency {bad[0]} is not done"}
                              if bad else {"name": name, "status": "failed",
                                           "message": f"worker died {self.retries + 1} time(s): {_crash_message(e)}"})
                    out[name] = oc
                    tracker.finished(jobs_by_name[name], oc)
        except KeyboardInterrupt:
            for r in by_ref:
                ray.cancel(r, force=True)
            raise
        return out

    def describe(self):
        if self.address:
            return f"the Ray cluster at {self.address}"
        n = self.workers or max(1, (os.cpu_count() or 1) // max(1, self.threads or 1))
        return f"Ray, {n} worker(s) × {self.threads or 1} thread(s)" + (
            f", {self.gpus_per_run:g} GPU per run" if self.gpus_per_run else "")


class _SubmititCall:
    """The callable submitit pickles: runs the job; on preemption/timeout it is resubmitted as is
    (``checkpoint``) and the job resumes from what it committed."""

    def __call__(self, job: Job, root: str, context, threads):
        return execute_job(job, root, context, threads)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(self, *args, **kwargs)


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self, partition: str | None = None, time_min: int = 60, gpus: int = 0, array_parallelism: int = 64,
                 retries: int = 2, local: bool = False, poll_s: float = 1.0):
        super().__init__()
        self.partition, self.time_min, self.gpus = partition, int(time_min), int(gpus)
        self.array_parallelism, self.retries, self.local, self.poll_s = int(array_parallelism), int(retries), local, poll_s

    def check(self):
        _require("submitit", "slurm")
        if not self.local and (shutil.which("sbatch") is None or shutil.which("srun") is None):
            raise UserError("--executor slurm: no Slurm here (sbatch/srun not found); run on a Slurm login node, "
                            "or pass --slurm-local to run the same job arrays on this machine")

    @contextlib.contextmanager
    def session(self, root, contexts, threads):
        self.check()
        submitit = _require("submitit", "slurm")
        self.root, self.contexts, self.threads = Path(root), contexts, threads
        folder = self.root / STUDY_DIR / "submitit"
        setup = [f"export {k}={shlex.quote(v)}" for k, v in sorted(worker_env(threads).items())]
        if self.local:
            ex = submitit.LocalExecutor(folder=folder / "%j")
            ex.update_parameters(timeout_min=self.time_min, gpus_per_node=self.gpus, setup=setup)
        else:
            ex = submitit.SlurmExecutor(folder=folder / "%j")
            ex.update_parameters(time=self.time_min, cpus_per_task=max(1, threads or 1), setup=setup,
                                 array_parallelism=self.array_parallelism, job_name="realistic-al",
                                 **({"partition": self.partition} if self.partition else {}),
                                 **({"gpus_per_node": self.gpus} if self.gpus else {}))
        self._ex = ex
        yield

    @staticmethod
    def _levels(jobs: list[Job]) -> list[list[Job]]:
        """Stages: a job's level is one more than its deepest dependency among the to-do jobs."""
        level: dict[str, int] = {}
        for j in jobs:   # dependencies first
            level[j.name] = 1 + max((level[d] for d in j.deps if d in level), default=-1)
        out: list[list[Job]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
        for j in jobs:
            out[level[j.name]].append(j)
        return out

    def _submit(self, stage: list[Job], after: list) -> list:
        dep = ":".join(sorted({str(s.job_id).split("_")[0] for s in after}))
        if not self.local:
            self._ex.update_parameters(dependency=f"afterany:{dep}" if dep else None)
        call = _SubmititCall()
        with self._ex.batch():   # one job array per stage
            subs = [self._ex.submit(call, j, str(self.root), self.contexts.get(j.domain), self.threads) for j in stage]
        return subs

    def run(self, jobs, tracker):
        stages = self._levels(jobs)
        out: dict[str, dict] = {}
        if self.local:   # no dependencies locally: stage after stage, at most ``array_parallelism`` at once
            limit = max(1, min(self.array_parallelism, os.cpu_count() or 1))
            for stage in stages:
                queue, running = list(stage), []
                while queue or running:
                    while queue and len(running) < limit:
                        job = queue.pop(0)
                        running += list(zip([job], self._submit([job], [])))
                    running = self._reap(running, tracker, out)
        else:            # all stages at once, chained with afterany; jobs check their inputs themselves
            pairs, prev = [], []
            for stage in stages:
                subs = self._submit(stage, prev)
                pairs += list(zip(stage, subs))
                prev = subs
            while pairs:
                pairs = self._reap(pairs, tracker, out)
        return out

    def _reap(self, pairs, tracker, out) -> list:
        """Collect the finished submissions of ``pairs`` (job, submission); wait a moment; return the rest."""
        still = []
        try:
            for job, sub in pairs:
                if not sub.done():
                    still.append((job, sub))
                    continue
                try:
                    oc = sub.result()
                except Exception as e:   # killed, preempted too often, node failure
                    oc = {"name": job.name, "status": "crashed", "message": _crash_message(e)}
                tracker.poll(self.root, [job.name])
                out[job.name] = oc
                tracker.finished(job, oc)
            if still:
                tracker.poll(self.root, [j.name for j, _ in still])
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            for _, sub in still or pairs:
                with contextlib.suppress(Exception):
                    sub.cancel()
            raise
        return still

    def describe(self):
        if self.local:
            n = max(1, min(self.array_parallelism, os.cpu_count() or 1))
            return f"submitit's local executor (stage after stage, {n} job(s) at once)"
        return f"Slurm via submitit (partition {self.partition or 'default'}, {self.time_min} min, " \
               f"{self.gpus} GPU(s), ≤ {self.array_parallelism} jobs per array at once)"


def make_executor(kind: str, *, workers: int | None = None, gpus_per_run: float = 0.0, ray_address: str | None = None,
                  retries: int = 2, slurm_partition: str | None = None, slurm_time: int = 60, slurm_gpus: int = 0,
                  slurm_array_parallelism: int = 64, slurm_local: bool = False) -> Executor:
    if kind == "serial":
        return SerialExecutor()
    if kind == "ray":
        return RayExecutor(workers, gpus_per_run, ray_address, retries)
    if kind == "slurm":
        return SlurmExecutor(slurm_partition, slurm_time, slurm_gpus, slurm_array_parallelism, retries, slurm_local)
    raise UserError(f"unknown executor {kind!r}; valid: {', '.join(EXECUTORS)}")
