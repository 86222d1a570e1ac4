"""Studies: a grid of runs as a job graph, content-keyed, run serially, on Ray or on Slurm (architecture.md).

A *domain* (the values testbed, the ``blobs`` example; in phase B classification and segmentation)
declares its work as :class:`Job` s — shared per-seed stages (data, nets, pre-training, tuning) and
per-(setting, method, seed) AL runs on ``core.loop`` / ``core.store`` — with their dependencies.
A :class:`Study` runs the jobs of one or more domains with an executor from ``core.executors``::

    study = Study(out, [domain])
    result = study.run(SerialExecutor(threads=1), progress=pr)

Contract of a domain (:class:`Domain`): ``name``; ``jobs()`` → the job graph as far as it is known
(called again after every round, so a later stage whose job list depends on earlier results — the
values testbed's AL query sets — appears once those results exist); ``context()`` → shared
read-only inputs (picklable; sent once per worker pool, e.g. loaded data); ``finish(result)`` →
driver-side tables and figures once every job of the domain is done.

A job is a picklable description: ``fn(context, run)`` is a module-level function that writes the
job's outputs into ``run.dir`` and may resume from what an earlier, killed attempt left there
(``core.store.RunStore`` does so for AL runs).  Its *content key* hashes its kind, resolved config
and the keys of its dependencies, so a finished job is never recomputed and a changed config is
never mistaken for a finished one.  A dependency listed in ``unkeyed`` orders the job but stays out
of its key: its outputs only spare the job work it would do itself with the same result (the shared
round-0 model of the classification runs), so adding such a stage leaves finished jobs valid.
A ``shared`` job is a stage that other studies writing the same root (``lock="jobs"``) may need
too: it is not claimed up front (a study that finds it running waits for it, then skips it), and a
finished one is no "run already here" for a CLI started without ``--resume``.

Every job owns one directory ``OUT/<name>/``; the status of a job is derived from it alone::

    OUT/<name>/.job/job.json     name, kind, key, config, deps, attempt, host, pid  (written at start)
    OUT/<name>/.job/done.json    key, wall time, the job's small result            → done
    OUT/<name>/.job/failed.json  key, one-line message (+ traceback.txt for bugs)  → failed
    OUT/<name>/.job/lock         flock held while an attempt runs                  → running
    (none of these)                                                               → pending
    OUT/.study/plan.json         the job graph as last planned;  OUT/.study/lock   one study per OUT

Threads: every job runs with a fixed number of torch / BLAS threads (``threads``, default 1 on
CPU), so its numbers do not depend on the executor.  Fault injection for tests:
``REALISTIC_AL_KILL_JOB=<name suffix>@<cycle>`` SIGKILLs the process running that job after it
committed that cycle, on the job's first attempt only.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

from .errors import UserError
from .store import _jsonable, atomic_write_json, atomic_write_text, clean_temp, exclusive

JOB_DIR = ".job"
STUDY_DIR = ".study"
STATUSES = ("done", "running", "failed", "pending")
KILL_ENV = "REALISTIC_AL_KILL_JOB"


# ============================================================================== jobs
@dataclass(frozen=True)
class Job:
    """One unit of work.  ``name`` is its directory relative to the study root (``a/b/seed0``)."""
    name: str
    kind: str                                  # stage: "data", "train", "eval", "run", ...
    fn: Callable[[Any, "JobRun"], Any]         # module-level: fn(context, run) -> small JSON-able result
    config: dict                               # everything that defines the job's outputs
    deps: tuple = ()                           # names of jobs whose outputs it reads
    domain: str = ""                           # which domain (context) it belongs to
    units: int = 1                             # progress units: AL cycles for a run, else 1
    metric: str | None = None                  # record["metrics"] key shown in progress lines
    metric_label: str | None = None            # its short name ("acc")
    label: str | None = None                   # display name (default: from ``name``)
    outputs: tuple = ()                        # files (relative to its directory) a finished job must have
    key: str = ""                              # content key (filled in by the study)
    shared: bool = False                       # a stage other studies on the same root may need too (below)
    unkeyed: tuple = ()                        # deps that order the job but stay out of its key (below)

    @property
    def display(self) -> str:
        if self.label:
            return self.label
        parts = self.name.split("/")
        if len(parts) > 1 and parts[-1].startswith("seed"):
            return f"{'/'.join(parts[:-1])} {parts[-1]}"
        return self.name


def content_key(kind: str, config: dict, dep_keys: Iterable[str]) -> str:
    blob = json.dumps({"kind": kind, "config": config, "deps": sorted(dep_keys)}, sort_keys=True, default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Domain(Protocol):
    name: str

    def jobs(self) -> list[Job]: ...

    def context(self) -> Any: ...

    def finish(self, result: "StudyResult") -> None: ...


# ============================================================================== job directories
def _read(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
        return obj if isinstance(obj, dict) else None
    except (OSError, ValueError):
        return None


def _lock_held(path: Path) -> bool:
    """Is an flock on ``path`` held by some process of this host?  Read-only (``/proc/locks``);
    without /proc it answers False."""
    try:
        st = os.stat(path)
        locks = Path("/proc/locks").read_text()
    except OSError:
        return False
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(len(f) > 5 and f[1] == "FLOCK" and f[5] == want for f in (line.split() for line in locks.splitlines()))


@dataclass
class JobState:
    name: str
    status: str          # done / running / failed / pending
    detail: str = ""     # failure message, "interrupted at cycle k", "stale" ...
    key: str | None = None


def job_state(root: Path, name: str, key: str | None = None, outputs: Sequence[str] = ()) -> JobState:
    """Status of one job from its directory alone (``key``: the expected content key; ``outputs``:
    files a finished job has — a finished job whose output was deleted is pending again)."""
    d = Path(root) / name / JOB_DIR
    done = _read(d / "done.json")
    lost = [o for o in outputs if not (Path(root) / name / o).exists()]
    if done is not None and (key is None or done.get("key") == key) and not lost:
        return JobState(name, "done", "", done.get("key"))
    if _lock_held(d / "lock"):
        meta = _read(d / "job.json") or {}
        return JobState(name, "running", f"attempt {meta.get('attempt', '?')} on {meta.get('host', '?')} "
                                         f"pid {meta.get('pid', '?')}", meta.get("key"))
    if done is not None and lost:
        return JobState(name, "pending", f"finished, but {lost[0]} is missing: will rerun", done.get("key"))
    if done is not None:
        return JobState(name, "pending", f"stale: finished with another config (key {done.get('key')})", done.get("key"))
    failed = _read(d / "failed.json")
    if failed is not None and (key is None or failed.get("key") == key):
        return JobState(name, "failed", str(failed.get("message", "")), failed.get("key"))
    meta = _read(d / "job.json")
    if meta is not None and meta.get("host") not in (None, socket.gethostname()):
        # another node (Slurm): its lock is not visible from here
        return JobState(name, "running", f"started on {meta.get('host')} (attempt {meta.get('attempt', '?')}); "
                                         "its lock is not visible from this host", meta.get("key"))
    if meta is not None:
        prog = _read(d / "progress.json") or {}
        at = prog.get("events", [{}])[-1].get("cycle") if prog.get("events") else None
        return JobState(name, "pending", "interrupted" + (f" after cycle {at}" if at else ""), meta.get("key"))
    return JobState(name, "pending", "", None)


@dataclass
class JobRun:
    """What a job function gets besides the shared context: its directory, config, dependencies'
    directories, thread count, and progress hooks for AL cycles."""
    job: Job
    dir: Path
    deps: dict
    threads: int | None
    attempt: int
    sink: Callable[[dict], None] | None = None
    _events: list = field(default_factory=list)
    _t_last: float = field(default_factory=time.perf_counter)

    @property
    def config(self) -> dict:
        return self.job.config

    def _emit(self, event: dict) -> None:
        event = {"job": self.job.name, "seq": len(self._events), **event}
        self._events.append(event)
        # the file serves the driver polling jobs in other processes, and ``status`` (where a job stopped)
        atomic_write_json(self.dir / JOB_DIR / "progress.json", {"attempt": self.attempt, "events": self._events})
        if self.sink is not None:
            self.sink(event)

    def resumed(self, done_units: int) -> None:
        """Call once at start with the units (cycles) an earlier attempt already committed."""
        self._t_last = time.perf_counter()
        if done_units:
            self._emit({"type": "resumed", "units": int(done_units)})

    def on_cycle(self, record: dict) -> None:
        """``ActiveLearningLoop(on_cycle=...)`` hook: one progress event per committed cycle."""
        now = time.perf_counter()
        m = self.job.metric
        value = (record.get("metrics") or {}).get(m) if m else None
        self._emit({"type": "cycle", "cycle": int(record["cycle"]) + 1, "of": self.job.units,
                    "value": value if isinstance(value, (int, float)) else None, "seconds": now - self._t_last})
        self._t_last = now
        spec = os.environ.get(KILL_ENV, "")
        if "@" in spec and self.attempt == 1:
            suffix, at = spec.rsplit("@", 1)
            if self.job.name.endswith(suffix) and str(int(record["cycle"]) + 1) == at.strip():
                os.kill(os.getpid(), signal.SIGKILL)


def thread_limit(threads: int | None):
    """Run the block with ``threads`` torch intra-op and BLAS/OpenMP threads (None: unchanged);
    the policy lives in ``core.threads``."""
    from .threads import limited
    return limited(threads)


def execute_job(job: Job, root: str, context: Any, threads: int | None, *_deps_done,
                sink: Callable[[dict], None] | None = None) -> dict:
    """Run one job in this process (any executor calls this) and return its outcome
    ``{"name", "status": done|skipped|failed|blocked, "message", "seconds", "result"}``.

    A ``UserError`` or any other exception marks the job failed with a one-line message (bugs
    also leave ``traceback.txt``); the process survives either way, so the rest of the study
    goes on.  Extra positional arguments are ignored (Ray passes dependencies' outcomes there so
    that it starts a job only after them)."""
    root = Path(root)
    run_dir = root / job.name
    meta_dir = run_dir / JOB_DIR
    out = {"name": job.name, "status": "failed", "message": "", "seconds": 0.0, "result": None}
    t0 = time.perf_counter()
    try:
        meta_dir.mkdir(parents=True, exist_ok=True)
        with exclusive(meta_dir / "lock", f"job {job.name}", wait=job.shared):   # shared: wait for the other study
            clean_temp(run_dir)    # temp files of a killed attempt's writes
            clean_temp(meta_dir)
            done = _read(meta_dir / "done.json")
            if done is not None and done.get("key") == job.key and all((run_dir / o).exists() for o in job.outputs):
                return {**out, "status": "skipped", "result": done.get("result")}
            (meta_dir / "done.json").unlink(missing_ok=True)   # a lost output: the job runs again
            missing = [d for d in job.deps if not _dep_done(root, d)]
            if missing:
                return {**out, "status": "blocked", "message": f"dependency {missing[0]} is not done"}
            prev = _read(meta_dir / "job.json") or {}
            attempt = int(prev.get("attempt", 0)) + 1 if prev.get("key") == job.key else 1
            atomic_write_json(meta_dir / "job.json", {
                "name": job.name, "kind": job.kind, "key": job.key, "config": job.config, "deps": list(job.deps),
                "attempt": attempt, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
            for stale in ("failed.json", "traceback.txt", "progress.json"):
                (meta_dir / stale).unlink(missing_ok=True)
            run = JobRun(job, run_dir, {d: root / d for d in job.deps}, threads, attempt, sink)
            try:
                with thread_limit(threads):
                    result = job.fn(context, run)
            except _SIMULATED_CRASH:   # tests' in-process stand-in for a killed process: not a failure
                raise
            except UserError as e:
                return _fail(meta_dir, job, out, str(e).splitlines()[0] if str(e) else "error", t0)
            except Exception as e:  # a bug in a job must not take the study down: record it, go on
                atomic_write_text(meta_dir / "traceback.txt", traceback.format_exc())
                msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
                return _fail(meta_dir, job, out, f"{msg} (traceback in {meta_dir / 'traceback.txt'})", t0)
            seconds = time.perf_counter() - t0
            atomic_write_json(meta_dir / "done.json", {"key": job.key, "seconds": seconds, "result": result,
                                                       "finished": time.time()})
            return {**out, "status": "done", "seconds": seconds, "result": result}
    except UserError as e:  # the job's lock is held by another process
        return {**out, "status": "failed", "message": str(e)}


class _NoCrash(Exception):
    pass


try:
    from .loop import SimulatedCrash as _SIMULATED_CRASH
except ImportError:  # pragma: no cover
    _SIMULATED_CRASH = _NoCrash


def _fail(meta_dir: Path, job: Job, out: dict, message: str, t0: float) -> dict:
    atomic_write_json(meta_dir / "failed.json", {"key": job.key, "message": message, "finished": time.time()})
    return {**out, "status": "failed", "message": message, "seconds": time.perf_counter() - t0}


def _dep_done(root: Path, name: str) -> bool:
    return (root / name / JOB_DIR / "done.json").exists()


# ============================================================================== the study
@dataclass
class StudyResult:
    root: Path
    jobs: list                                   # every job of the final plan
    ran: list = field(default_factory=list)      # names run to completion in this invocation
    skipped: list = field(default_factory=list)  # already done before
    failed: list = field(default_factory=list)   # (name, message): failed, blocked or crashed
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def failure_lines(self) -> list[str]:
        return [f"failed: {name}: {msg}" for name, msg in self.failed]


class StudyFailed(Exception):
    """Some jobs failed; the rest ran.  ``lines``: one line per failed job."""

    def __init__(self, result: StudyResult):
        self.result = result
        self.lines = result.failure_lines()
        super().__init__(f"{len(self.lines)} job(s) failed")


class Reporter(Protocol):
    """What the study needs from a progress display (``experiments.common.Progress`` is one)."""

    def task(self, description: str, total: int | None, lines: bool = False): ...

    def advance(self, task, n: int = 1, description: str | None = None, line: str | None = None): ...

    def grow(self, task, total: int): ...

    def log(self, msg: str): ...


class _NoReporter:
    def task(self, description, total, lines=False):
        return None

    def advance(self, task, n=1, description=None, line=None):
        pass

    def grow(self, task, total):
        pass

    def log(self, msg):
        pass


class Study:
    """The jobs of ``domains`` below ``root``; ``run`` executes what is not done yet."""

    def __init__(self, root: Path, domains: Sequence[Domain], title: str | None = None, lock: str = "root"):
        if lock not in ("root", "jobs"):
            raise ValueError(f"lock must be 'root' or 'jobs', not {lock!r}")
        self.lock = lock   # root: one study per output root; jobs: studies whose to-do jobs differ may share it
        self.root = Path(root)
        self.domains = list(domains)
        self.title = title or ", ".join(d.name for d in self.domains)
        names = [d.name for d in self.domains]
        if len(set(names)) != len(names):
            raise ValueError(f"domain names must be unique in a study: {names}")

    # ------------------------------------------------------------------------ planning
    def plan(self) -> list[Job]:
        """Every domain's jobs with content keys, dependencies first; checks names and the graph."""
        from graphlib import CycleError, TopologicalSorter
        jobs: dict[str, Job] = {}
        for d in self.domains:
            for j in d.jobs():
                if j.name in jobs and (jobs[j.name].kind, jobs[j.name].config, jobs[j.name].deps) == (j.kind, j.config, j.deps):
                    continue   # a shared stage (e.g. one full-data reference for every regime): one job
                if j.name in jobs:
                    raise UserError(f"two jobs of this study write {self.root / j.name}; give the settings "
                                    "different names or outputs")
                jobs[j.name] = j if j.domain else _replace(j, domain=d.name)
        for j in jobs.values():
            for dep in j.deps:
                if dep not in jobs:
                    raise RuntimeError(f"job {j.name} depends on {dep}, which no domain declares")
        try:
            order = list(TopologicalSorter({n: j.deps for n, j in jobs.items()}).static_order())
        except CycleError as e:
            raise RuntimeError(f"the job graph has a cycle: {e.args[1]}") from None
        seen: set[str] = set()
        for n, j in jobs.items():   # keep the domains' own order where it lists dependencies first
            if not all(d in seen for d in j.deps):
                break
            seen.add(n)
        else:
            order = list(jobs)
        keyed: dict[str, Job] = {}
        for n in order:
            j = jobs[n]
            keyed[n] = _replace(j, key=content_key(j.kind, j.config, (keyed[d].key for d in j.deps if d not in j.unkeyed)))
        return list(keyed.values())

    def _write_plan(self, jobs: list[Job]) -> None:
        """``.study/plan.json``: this study's jobs, plus those of earlier studies on the same root
        (another dataset of the same CLI) whose directories still exist, so ``status`` shows all."""
        old = _read(self.root / STUDY_DIR / "plan.json") or {}
        mine = {j.name for j in jobs}
        kept = [j for j in old.get("jobs", []) if j.get("name") not in mine and (self.root / j["name"]).is_dir()]
        atomic_write_json(self.root / STUDY_DIR / "plan.json", {
            "title": self.title, "planned": time.time(),
            "domains": sorted(set(old.get("domains", [])) | {d.name for d in self.domains}),
            "jobs": kept + [{"name": j.name, "kind": j.kind, "key": j.key, "deps": list(j.deps), "units": j.units,
                             "domain": j.domain, "label": j.display, "outputs": list(j.outputs)} for j in jobs]})

    def _check_stale(self, jobs: list[Job]) -> None:
        for j in jobs:
            for f in ("done.json", "job.json"):
                meta = _read(self.root / j.name / JOB_DIR / f)
                if meta is not None and meta.get("key") not in (None, j.key):
                    raise UserError(f"{self.root / j.name} holds a job computed with a different configuration "
                                    f"(key {meta.get('key')}, now {j.key}); use another --out or delete that directory")

    # ------------------------------------------------------------------------ running
    def run(self, executor, progress: Reporter | None = None, threads: int | None = 1) -> StudyResult:
        """Run every job that is not done (a finished study runs nothing), then each domain's
        ``finish``.  Jobs that fail are listed in the result; the rest of the study goes on."""
        pr = progress or _NoReporter()
        t0 = time.perf_counter()
        executor.check()
        self.root.mkdir(parents=True, exist_ok=True)
        whole = self.lock == "root"
        with (exclusive(self.root / STUDY_DIR / "lock", f"study output {self.root}") if whole
              else contextlib.nullcontext()), contextlib.ExitStack() as claims:
            if whole:
                clean_temp(self.root / STUDY_DIR)   # e.g. the plan of a killed driver
            claimed: set[str] = set()
            result = StudyResult(self.root, [])
            contexts = {d.name: d.context() for d in self.domains}
            final: dict[str, tuple[str, str]] = {}    # name -> (status, message): not retried this invocation
            crashes: dict[str, int] = {}
            first = True
            tracker = _Tracker(pr)
            with executor.session(self.root, contexts, threads):
                while True:
                    jobs = self.plan()
                    self._check_stale(jobs)
                    if whole:
                        self._write_plan(jobs)
                    else:   # other studies may plan on this root at the same time: one plan write at a time
                        with exclusive(self.root / STUDY_DIR / "plan.lock", f"the plan of {self.root}", wait=True):
                            clean_temp(self.root / STUDY_DIR, prefix=".plan.")
                            self._write_plan(jobs)
                    result.jobs = jobs
                    states = {j.name: job_state(self.root, j.name, j.key, j.outputs) for j in jobs}
                    todo = [j for j in jobs if states[j.name].status != "done" and j.name not in final]
                    if not whole:   # lock="jobs": claim every job to run before running any (never interleaved)
                        for j in todo:
                            if j.name not in claimed and not j.shared:   # a shared stage: waited for instead
                                claims.enter_context(exclusive(self.root / j.name / JOB_DIR / "claim",
                                                               f"{self.root / j.name} (a job of another study)"))
                                claimed.add(j.name)
                    if first:
                        first = False
                        tracker.open(self.title, jobs, states)
                        result.skipped = [j.name for j in jobs if states[j.name].status == "done"]
                        if todo:
                            pr.log(f"{self.title}: {len(todo)} of {len(jobs)} job(s) to run on {executor.describe()}")
                    else:
                        tracker.extend(jobs, states)
                    if not todo:
                        break
                    outcomes = executor.run(todo, tracker)
                    for j in todo:
                        oc = outcomes.get(j.name) or {"status": "crashed", "message": "no outcome (lost)"}
                        st = oc["status"]
                        if st in ("done", "skipped"):
                            final[j.name] = ("done", "")
                            if st == "done":
                                result.ran.append(j.name)
                        elif st == "crashed" and not executor.retries_natively:
                            crashes[j.name] = crashes.get(j.name, 0) + 1
                            if crashes[j.name] > executor.retries:
                                final[j.name] = ("failed", f"crashed {crashes[j.name]} times; last: {oc['message']}")
                            else:
                                pr.log(f"{j.display}: {oc['message']}; retrying from its last committed state")
                        else:
                            final[j.name] = ("failed", oc.get("message") or st)
            result.failed = [(n, m) for n, (s, m) in final.items() if s == "failed"]
            bad_domains = {next(j.domain for j in result.jobs if j.name == n) for n, _ in result.failed}
            for d in self.domains:
                if d.name in bad_domains:
                    pr.log(f"{d.name}: not summarised, some of its jobs failed")
                    continue
                d.finish(result)
            result.seconds = time.perf_counter() - t0
            return result


def _replace(job: Job, **kw) -> Job:
    from dataclasses import replace
    return replace(job, **kw)


class _Tracker:
    """Turns job events into progress units and lines: ``[12/40] blobs/entropy seed1 cycle 3/5 acc 0.612 (4 s)``.

    Events come straight from the job (serial executor) or from the jobs' ``progress.json`` files,
    which executors running jobs elsewhere poll through :meth:`poll`."""

    def __init__(self, pr: Reporter):
        self.pr, self.task, self.jobs = pr, None, {}
        self.credited: dict[str, int] = {}
        self.seen: dict[str, tuple[int, int]] = {}   # job -> (attempt, events read)
        self.mtimes: dict[str, float] = {}
        self.root: Path | None = None
        self.total = 0

    def open(self, title: str, jobs: list[Job], states: dict) -> Any:
        self.total = sum(j.units for j in jobs)
        self.task = self.pr.task(title, self.total)
        self.extend(jobs, states, first=True)
        return self.task

    def extend(self, jobs: list[Job], states: dict, first: bool = False) -> None:
        new = [j for j in jobs if j.name not in self.jobs]
        for j in new:
            self.jobs[j.name] = j
        if not first and new:
            self.total += sum(j.units for j in new)
            self.pr.grow(self.task, self.total)
        done = sum(j.units for j in new if states[j.name].status == "done")
        for j in new:
            if states[j.name].status == "done":
                self.credited[j.name] = j.units
        if done:
            self.pr.advance(self.task, done)

    def _credit(self, job: Job, n: int, line: str | None = None) -> None:
        n = max(0, min(n, job.units - self.credited.get(job.name, 0)))
        self.credited[job.name] = self.credited.get(job.name, 0) + n
        if n or line:
            self.pr.advance(self.task, n, line=line)

    def event(self, ev: dict) -> None:
        job = self.jobs.get(ev.get("job"))
        if job is None:
            return
        if ev["type"] == "resumed":
            self._credit(job, int(ev["units"]) - self.credited.get(job.name, 0))
        elif ev["type"] == "cycle":
            val = ev.get("value")
            metric = f" {job.metric_label or job.metric} {val:.3f}" if val is not None and job.metric else ""
            self._credit(job, int(ev["cycle"]) - self.credited.get(job.name, 0),
                         f"{job.display} cycle {ev['cycle']}/{ev['of']}{metric} ({ev['seconds']:.0f} s)")

    def poll(self, root: Path, names: Iterable[str]) -> None:
        """Read new events of jobs running in other processes."""
        for name in names:
            path = root / name / JOB_DIR / "progress.json"
            try:
                mt = path.stat().st_mtime_ns
            except OSError:
                continue
            if self.mtimes.get(name) == mt:
                continue
            self.mtimes[name] = mt
            prog = _read(path) or {}
            events, attempt = prog.get("events", []), prog.get("attempt")
            seen_attempt, start = self.seen.get(name, (attempt, 0))
            if seen_attempt != attempt:   # a retry started the file afresh
                start = 0
            for ev in events[start:]:
                self.event(ev)
            self.seen[name] = (attempt, len(events))

    def finished(self, job: Job, oc: dict) -> None:
        st = oc["status"]
        if st in ("done", "skipped"):
            left = job.units - self.credited.get(job.name, 0)
            res = oc.get("result") if isinstance(oc.get("result"), dict) else {}
            val = res.get(job.metric) if job.metric else None   # a one-unit job's metric (e.g. a round-0 model's)
            metric = f" {job.metric_label or job.metric} {val:.3f}" if isinstance(val, (int, float)) else ""
            line = None if job.units > 1 else (f"{job.display} {'done' if st == 'done' else 'already done'}{metric} "
                                               f"({oc.get('seconds', 0):.0f} s)")
            self._credit(job, left, line)
        elif st == "crashed":
            self.pr.log(f"{job.display}: {oc.get('message')}")
        else:
            self.pr.advance(self.task, 0, line=f"{job.display} FAILED: {oc.get('message')}")


# ============================================================================== status from directories
def read_plan(root: Path) -> dict:
    plan = _read(Path(root) / STUDY_DIR / "plan.json")
    if plan is None:
        raise UserError(f"{root} holds no study (no {STUDY_DIR}/plan.json); run it first")
    return plan


def status(root: Path) -> list[tuple[dict, JobState]]:
    """(planned job, state) for every job of the study last run below ``root``."""
    plan = read_plan(root)
    return [(j, job_state(Path(root), j["name"], j["key"], j.get("outputs", ()))) for j in plan["jobs"]]
