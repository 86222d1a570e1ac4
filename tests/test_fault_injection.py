"""Fault injection: SIGKILL at the write points of every CLI, then ``--resume`` → the same records.

Every write of the store (and of the data caches and reports) is a named write point
(``core.store.write_point``); ``REALISTIC_AL_KILL_AT=#n`` makes the process SIGKILL itself at the
n-th one.  For each CLI an uninterrupted reference run logs its write points; then, for each chosen
point, a run is killed there and resumed with ``--resume``, and the run's records (metrics,
budgets, queried ids — timings aside), its derived view and DONE marker, its tables and the
absence of temporary files are compared with the reference.  Classification and the values
testbed are swept at every write point; segmentation at every distinct write point (each file of
the data preparation, the store and the report, and the last commit's state/view pair).

Runs are children forked from one warm process (``tests/_forkserver.py``) so a kill costs no
interpreter start-up; one test kills a plain ``python -m experiments.cifar10`` process too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from classification.data import DEBIAN_FMNIST

ROOT = Path(__file__).resolve().parents[1]
KILL, LOG = "REALISTIC_AL_KILL_AT", "REALISTIC_AL_WRITE_LOG"
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
HAVE_FMNIST = (DEBIAN_FMNIST / "train-labels-idx1-ubyte.gz").exists()
PARALLEL = 2
KILL_COUNTS: dict[str, int] = {}   # CLI → number of kill points swept (printed by each sweep; pytest -s shows it)


class ForkServer:
    def __init__(self):
        env = {**os.environ, **THREADS, "REALISTIC_AL_QUIET": "1", "PYTHONPATH": str(ROOT)}
        env.pop(KILL, None)
        env.pop(LOG, None)
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "_forkserver.py")], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert json.loads(self.proc.stdout.readline())["ready"]

    def request(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "fork server died"
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server():
    s = ForkServer()
    yield s
    s.close()


def _step(module, args, log, **env):
    return {"module": module, "args": [str(a) for a in args], "log": str(log), "env": {KILL: None, LOG: None, **env}}


def _points(log: Path) -> list[tuple[int, str, int]]:
    """(ordinal, 'name:phase', occurrence) of every write point of the reference run's process."""
    out = []
    for line in log.read_text().splitlines():
        n, name, k, _path, _pid = line.split("\t")
        out.append((int(n), name, int(k)))
    return out


# ----------------------------------------------------------------------------- what must be equal

def _strip(records):
    return [{k: v for k, v in r.items() if k != "timings"} for r in records]


def _run_dirs(out: Path) -> dict[str, Path]:
    return {str(p.parent.relative_to(out)): p.parent for p in sorted(out.rglob("config.json"))
            if "realistic_al_run" in p.read_text()}


def _temp_files(out: Path) -> list[str]:
    return [str(p.relative_to(out)) for p in out.rglob(".*")
            if p.name.endswith(".tmp") or ".tmp." in p.name or ".tmp-" in p.name]


def outcome(out: Path, tables: tuple[str, ...]) -> dict:
    """Everything a resumed run must reproduce: per run directory its records without timings, the
    view and marker derived from them; the report tables; no temporary files left behind."""
    res = {"runs": {}, "tables": {}, "temp": _temp_files(out)}
    for rel, d in _run_dirs(out).items():
        state = json.loads((d / "state.json").read_text())
        view = [json.loads(x) for x in (d / "cycles.jsonl").read_text().splitlines()] if state["records"] else []
        res["runs"][rel] = {"records": _strip(state["records"]), "done": state["done"],
                            "view_matches_truth": view == state["records"], "DONE": (d / "DONE").exists()}
    for pattern in tables:
        for p in sorted(out.rglob(pattern)):
            res["tables"][str(p.relative_to(out))] = p.read_text()
    return res


def sweep(server, tmp: Path, name: str, module: str, args, choose, tables, check=None):
    """Reference run, then kill at every chosen write point + resume; compare each with the reference."""
    ref_out = tmp / "ref"
    server.request({"warm": _step(module, [*args(tmp / "warm"), "--quiet"], tmp / "warm.log")})
    r = server.request({"jobs": [{"id": "ref", "steps": [
        _step(module, [*args(ref_out), "--quiet"], tmp / "ref.log", **{LOG: str(tmp / "ref.points")})]}]})
    assert r["ref"][0]["code"] == 0, (tmp / "ref.log").read_text()[-3000:]
    points = choose(_points(tmp / "ref.points"))
    ref = outcome(ref_out, tables)
    assert ref["runs"] and all(v["done"] and v["DONE"] and v["view_matches_truth"] for v in ref["runs"].values())
    assert not ref["temp"]
    jobs = []
    for n, point, k in points:
        out = tmp / f"k{n}"
        jobs.append({"id": f"{n}", "steps": [
            _step(module, [*args(out), "--quiet"], tmp / f"k{n}.kill.log", **{KILL: f"#{n}"}),
            _step(module, [*args(out), "--quiet", "--resume"], tmp / f"k{n}.resume.log")]})
    res = server.request({"jobs": jobs, "parallel": PARALLEL})
    failures = []
    for n, point, k in points:
        killed, resumed = res[f"{n}"]
        if killed["signal"] != 9:
            failures.append(f"#{n} {point}#{k}: not killed ({killed})")
            continue
        if resumed["code"] != 0:
            failures.append(f"#{n} {point}#{k}: resume exit {resumed['code']}: "
                            + (tmp / f"k{n}.resume.log").read_text()[-400:])
            continue
        got = outcome(tmp / f"k{n}", tables)
        if got != ref:
            diff = [k2 for k2 in ("runs", "tables", "temp") if got[k2] != ref[k2]]
            failures.append(f"#{n} {point}#{k}: differs in {diff}")
        elif check is not None:
            msg = check(tmp / f"k{n}", ref_out)
            if msg:
                failures.append(f"#{n} {point}#{k}: {msg}")
    KILL_COUNTS[name] = len(points)
    print(f"{name}: {len(points)} kill points swept, {len(failures)} differ")   # shown with pytest -s
    assert not failures, "\n".join(failures)
    return points


def every_point(points):
    return points


REPORT_FILES = ("curves.png", "table.md", "table.csv", "ppm.png", "queries.png", "summary.json")


def distinct_points(points):
    """Each distinct write point once (its last occurrence), plus the last cycle's commit — the
    state/view pair that once left a finished run one cycle short.  Of the report files (written
    one after the other after the store is done) only the moment before each rename and after the
    last one: a kill after one report file's rename is the moment before the next one's."""
    last = {}
    for n, name, k in points:
        last[name] = (n, name, k)
    chosen = {p for p in last.values() if not (p[1].split(":")[0] in REPORT_FILES and p[1].endswith(":post")
                                               and p[1] != f"{REPORT_FILES[-1]}:post")}
    commits = [p for p in points if p[1].startswith("state.json:")]
    chosen.update(commits[-4:-2])                   # the last commit's state write (the last two are finish())
    views = [p for p in points if p[1].startswith("cycles.jsonl:")]
    chosen.update(views[-2:])
    return sorted(chosen)


# ----------------------------------------------------------------------------------- the three CLIs

@pytest.mark.skipif(not HAVE_FMNIST, reason="needs Fashion-MNIST (Debian package dataset-fashion-mnist)")
def test_cifar10_kill_at_every_write_point_resumes_identically(server, tmp_path):
    cache = tmp_path / "cache"   # shared, so the warm-up's loaded Fashion-MNIST is reused by every child

    def args(out):
        return ["--preset", "smoke", "--seeds", "1", "--method", "entropy", "--out", out, "--cache-dir", cache]
    points = sweep(server, tmp_path, "experiments.cifar10", "experiments.cifar10", args, every_point,
                   ("table.md", "table.csv"))
    assert len(points) >= 20


def test_segmentation_kill_at_each_distinct_write_point_resumes_identically(server, tmp_path):
    def args(out):
        return ["--preset", "smoke", "--method", "random_fg33", "--ensemble", "1", "--no-full-data", "--out", out]
    points = sweep(server, tmp_path, "experiments.segmentation", "experiments.segmentation", args, distinct_points,
                   ("table.md", "table.csv"))
    names = {p[1].split(":")[0] for p in points}
    assert {"dataset.json", "manifest.json", "config.json", "state.json", "cycles.jsonl", "DONE", "table.md"} <= names


def test_values_kill_at_every_write_point_resumes_identically(server, tmp_path):
    def args(out):
        return ["--dataset", "toy2d", "--preset", "smoke", "--seeds", "1", "--workers", "1", "--models", "softmax",
                "--no-plots", "--out", out]

    def al_pieces(out, ref):
        same = lambda d: {p.parent.name: json.loads(p.read_text()) for p in (d / "toy2d_smoke").glob("seed*/al_*/al.json")}
        return None if same(out) == same(ref) and same(ref) else "AL query sets / Dice differ"
    points = sweep(server, tmp_path, "experiments.values", "experiments.values", args, every_point,
                   ("results.csv",), check=al_pieces)
    assert len(points) >= 20


# ----------------------------------------------------------------------- a plain process, workers, concurrency

def _cifar_args(out, cache, method="entropy"):
    return ["--preset", "smoke", "--seeds", "1", "--method", method, "--out", str(out), "--cache-dir", str(cache),
            "--quiet"]


@pytest.mark.skipif(not HAVE_FMNIST, reason="needs Fashion-MNIST (Debian package dataset-fashion-mnist)")
def test_plain_cli_process_killed_between_last_commit_and_view_resumes_complete(server, tmp_path):
    """The reported bug end to end: ``python -m experiments.cifar10`` SIGKILLed after the last cycle's
    state write, before its view; ``--resume`` must leave the view with every cycle."""
    cache = tmp_path / "cache"
    server.request({"warm": _step("experiments.cifar10", _cifar_args(tmp_path / "warm", cache), tmp_path / "w.log")})
    r = server.request({"jobs": [{"id": "ref", "steps": [
        _step("experiments.cifar10", _cifar_args(tmp_path / "ref", cache), tmp_path / "ref.log")]}]})
    assert r["ref"][0]["code"] == 0
    env = {**os.environ, **THREADS, "REALISTIC_AL_QUIET": "1", "PYTHONPATH": str(ROOT), KILL: "cycles.jsonl:pre:3"}
    p = subprocess.run([sys.executable, "-m", "experiments.cifar10", *_cifar_args(tmp_path / "cut", cache)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == -9, p.stderr
    run = next((tmp_path / "cut").rglob("state.json")).parent
    assert len(json.loads((run / "state.json").read_text())["records"]) == 3
    assert len((run / "cycles.jsonl").read_text().splitlines()) == 2 and not (run / "DONE").exists()
    r = server.request({"jobs": [{"id": "resume", "steps": [
        _step("experiments.cifar10", [*_cifar_args(tmp_path / "cut", cache), "--resume"], tmp_path / "res.log")]}]})
    assert r["resume"][0]["code"] == 0
    tables = ("table.md", "table.csv")
    assert outcome(tmp_path / "cut", tables) == outcome(tmp_path / "ref", tables)


def test_values_worker_killed_then_resume_reproduces(server, tmp_path):
    """SIGKILL of a worker process (the one writing seed0's det1 net, under ``--workers 2``): the
    driver survives and either recovers (the job is retried) or stops with one line; ``--resume``
    then gives the results of an uninterrupted run."""
    args = ["--dataset", "toy2d", "--preset", "smoke", "--seeds", "1", "--models", "softmax", "ensemble",
            "--tasks", "separation", "ood", "--no-plots", "--quiet"]
    flag = tmp_path / "killed.flag"
    r = server.request({"jobs": [
        {"id": "ref", "steps": [_step("experiments.values", [*args, "--workers", "1", "--out", tmp_path / "ref"],
                                      tmp_path / "ref.log")]},
        {"id": "cut", "steps": [
            _step("experiments.values", [*args, "--workers", "2", "--out", tmp_path / "cut"], tmp_path / "cut.log",
                  **{KILL: "net_det1/net.pt:post:1", "REALISTIC_AL_KILL_ONCE": str(flag)}),
            _step("experiments.values", [*args, "--workers", "1", "--out", tmp_path / "cut", "--resume"],
                  tmp_path / "res.log")]}], "parallel": 2, "timeout": 300})
    assert r["ref"][0]["code"] == 0
    killed, resumed = r["cut"]
    log = (tmp_path / "cut.log").read_text()
    assert not killed["timed_out"], "the run hung after its worker was killed"
    assert flag.exists(), "no process was killed"
    assert killed["signal"] == 0 and "Traceback" not in log, log   # the driver was not the one killed
    if killed["code"] != 0:
        assert log.strip().splitlines()[-1].startswith("error:"), log
    assert resumed["code"] == 0, (tmp_path / "res.log").read_text()
    res = lambda d: (d / "toy2d_smoke" / "results.csv").read_text()
    assert res(tmp_path / "cut") == res(tmp_path / "ref")


@pytest.mark.skipif(not HAVE_FMNIST, reason="needs Fashion-MNIST (Debian package dataset-fashion-mnist)")
def test_concurrent_writers_tables_keep_every_method_and_one_run_has_one_writer(server, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    server.request({"warm": _step("experiments.cifar10", _cifar_args(tmp_path / "warm", cache), tmp_path / "w.log")})
    # two different methods into one --out at the same time: the table lists both
    r = server.request({"jobs": [
        {"id": m, "steps": [_step("experiments.cifar10", _cifar_args(out, cache, m), tmp_path / f"{m}.log")]}
        for m in ("random", "entropy")], "parallel": 2})
    assert r["random"][0]["code"] == 0 and r["entropy"][0]["code"] == 0
    table = next(out.rglob("table.md")).read_text()
    assert "| random |" in table and "| entropy |" in table
    # the same run twice at the same time: one runs, the other is refused with one line
    r = server.request({"jobs": [
        {"id": f"{k}", "steps": [_step("experiments.cifar10", _cifar_args(tmp_path / "same", cache, "random"),
                                       tmp_path / f"same{k}.log")]} for k in range(2)], "parallel": 2})
    codes = sorted(r[k][0]["code"] for k in ("0", "1"))
    assert codes == [0, 2], codes
    refused = next((tmp_path / f"same{k}.log").read_text() for k in range(2) if r[f"{k}"][0]["code"] == 2)
    assert refused.count("\n") == 1 and refused.startswith("error: ") and "another process" in refused


def test_two_make_phantoms_into_one_folder(server, tmp_path):
    args = ["--out", str(tmp_path / "ph"), "--n", "4", "--size", "16", "--quiet"]
    r = server.request({"jobs": [{"id": f"{k}", "steps": [_step("experiments.make_phantoms", args,
                                                                tmp_path / f"p{k}.log")]} for k in range(2)],
                        "parallel": 2})
    assert [r[k][0]["code"] for k in ("0", "1")] == [0, 0], (tmp_path / "p0.log").read_text()
    assert len(list((tmp_path / "ph" / "imagesTr").iterdir())) == 4
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
