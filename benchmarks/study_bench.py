"""Study-layer benchmark (issue 9): one 4-run smoke grid, serial vs Ray with 2 workers × 1 thread.

The grid is the ``blobs`` example domain (2 methods × 2 seeds, one shared data job per seed, every
run retrains a torch MLP from scratch each cycle), sized so a run takes seconds.  Both variants run
in this process, one after the other, each into a fresh output folder, with 1 torch/BLAS thread per
job; the Ray time includes starting (and stopping) the local Ray instance.  The per-cycle numbers of
both must be identical (checked).  Prints the load (``uptime``) before and after, both wall times
and their ratio, and a relaunch of the finished Ray study (nothing to run).

    python benchmarks/study_bench.py [--epochs 800] [--hidden 512] [--workers 2] [--out /tmp/study_bench]

On a machine shared with other work the ratio moves with the load: compare it within one run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "(uptime not available)"


def grid(out: Path, args):
    from experiments.blobs import build_parser, domains
    argv = ["--out", str(out), "--preset", "laptop", "--seeds", "2", "--method", "random", "entropy",
            "--epochs", str(args.epochs), "--hidden", str(args.hidden), "--rounds", str(args.rounds)]
    return domains(build_parser().parse_args(argv), out)


def per_cycle(out: Path) -> dict:
    return {str(p.relative_to(out)): [json.loads(line)["metrics"] for line in p.open()]
            for p in sorted(out.rglob("cycles.jsonl"))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=800, help="Adam steps per training (default 800; the work per run)")
    p.add_argument("--hidden", type=int, default=512, help="MLP width (default 512)")
    p.add_argument("--rounds", type=int, default=4, help="queries per run (default 4: 5 cycles)")
    p.add_argument("--workers", type=int, default=2, help="Ray workers (default 2)")
    p.add_argument("--out", default=None, help="scratch folder (default: a temporary one, removed)")
    args = p.parse_args()
    from core.executors import RayExecutor, SerialExecutor
    from core.study import Study

    scratch = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="study_bench_"))
    if scratch.exists():
        shutil.rmtree(scratch)
    print(f"load at start: {uptime()}")
    times = {}
    for name, ex in (("serial", SerialExecutor()), ("ray", RayExecutor(workers=args.workers))):
        out = scratch / name
        t0 = time.perf_counter()
        res = Study(out, grid(out, args)).run(ex, threads=1)
        times[name] = time.perf_counter() - t0
        assert res.ok and len(res.ran) == 6, res.failed
        print(f"{name:>6}: {times[name]:6.1f} s  ({len(res.ran)} jobs: 2 data + 4 AL runs of {args.rounds + 1} cycles)")
    same = per_cycle(scratch / "serial") == per_cycle(scratch / "ray")
    t0 = time.perf_counter()
    with RayExecutor(workers=args.workers).session(scratch / "empty", {}, 1):   # start-up alone, for reference
        pass
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = Study(scratch / "ray", grid(scratch / "ray", args)).run(SerialExecutor(), threads=1)
    relaunch = time.perf_counter() - t0
    print(f"load at end:   {uptime()}")
    print(f"serial / ray ({args.workers} workers x 1 thread, Ray start-up included) = "
          f"{times['serial'] / times['ray']:.2f}x; identical per-cycle metrics: {same}")
    print(f"Ray start + stop alone: {startup:.1f} s (included in the Ray time above)")
    print(f"relaunch of the finished study: {len(res.ran)} jobs run, {relaunch:.1f} s")
    if not args.out:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
