"""A fork server for the fault-injection tests: runs CLI ``main``s in forked children of one warm process.

Starting ``python -m experiments.X`` costs seconds of imports (torch, Lightning, MONAI) and data
loading per run; a kill-at-every-write-point sweep needs two runs per write point.  This process
imports the CLIs once (single-threaded, so forking is safe), then for every step of a job forks a
child that sets the step's environment (e.g. ``REALISTIC_AL_KILL_AT``), redirects its output to the
step's log and calls the CLI's ``main`` through ``experiments.common.main_guard`` — the same code
path as the command line.  A child killed by the write-point hook dies by a real SIGKILL.

Protocol: one JSON request per stdin line (or ``{"warm": step}``, see ``warm``) ``{"jobs": [{"id", "steps": [{"module", "args", "env",
"log"}]}], "parallel": P}``; one JSON line back ``{"id": [{"signal", "code", "seconds"}, ...]}``.
Steps of a job run one after the other, up to P jobs at a time.
"""
import importlib
import json
import os
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.chdir(ROOT)

import torch  # noqa: E402

torch.set_num_threads(1)
MODULES = ("experiments.cifar10", "experiments.segmentation", "experiments.values")
for m in MODULES:
    importlib.import_module(m)
import classification.experiment  # noqa: E402,F401
import segmentation.experiment  # noqa: E402,F401
import uncertainty.runner  # noqa: E402,F401
from experiments.common import main_guard  # noqa: E402


def _child(step: dict) -> None:
    os.setpgid(0, 0)  # its own process group: the server removes whatever it leaves behind (e.g. pool workers)
    for k, v in step.get("env", {}).items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    fd = os.open(step["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 0
    try:
        main_guard(importlib.import_module(step["module"]).main, step["args"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 — a traceback is a test failure, reported by the exit code
        import traceback
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _start(step: dict) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            _child(step)
        finally:
            os._exit(3)  # never return into the server loop
    return pid


def warm(step: dict) -> None:
    """Run a CLI once in this process (output discarded): its lazy imports, caches (e.g. a loaded
    dataset) and first-call kernels are then inherited by every forked child.  The write-point
    counters are reset afterwards, so children count from zero."""
    import io
    import contextlib
    import core.store
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main_guard(importlib.import_module(step["module"]).main, step["args"])
        except SystemExit:
            pass
    core.store._points.clear()
    core.store._n_points = 0


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def serve(request: dict) -> dict:
    if "warm" in request:
        warm(request["warm"])
        return {"warm": True}
    jobs = list(request["jobs"])
    parallel = max(1, int(request.get("parallel", 1)))
    results = {j["id"]: [] for j in jobs}
    timeout = float(request.get("timeout", 600))
    running = {}  # pid -> (job, step index, start time)
    while jobs or running:
        while jobs and len(running) < parallel:
            job = jobs.pop(0)
            running[_start(job["steps"][0])] = (job, 0, time.time())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:  # nothing finished yet: enforce the time limit, then poll again
            for p, (_job, _k, t0) in running.items():
                if time.time() - t0 > timeout:
                    _kill_group(p)
            time.sleep(0.02)
            continue
        job, k, t0 = running.pop(pid)
        _kill_group(pid)  # descendants left behind by the step (e.g. workers of a killed process)
        results[job["id"]].append({"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
                                   "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                                   "seconds": round(time.time() - t0, 2),
                                   "timed_out": time.time() - t0 > timeout})
        if k + 1 < len(job["steps"]):
            running[_start(job["steps"][k + 1])] = (job, k + 1, time.time())
    return results


if __name__ == "__main__":
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(serve(json.loads(line))), flush=True)
