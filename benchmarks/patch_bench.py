"""All-window mean scoring (query-patch aggregation) against the hardware's limit and a loop reference.

    python benchmarks/patch_bench.py [--check] [--size 128] [--window 20] [--stride 1] [--positions 3000]

Scores every window of a ``size³`` uncertainty map with a ``window³`` box using
``segmentation.patches.box_mean`` (separable, O(voxels); on the CPU the numba-compiled cache-blocked
kernel: per output plane a running sum over whole planes along X, then on that plane, in cache, a
running sum over rows and window sums along each row by doubling) and compares, in the same run:

* one streaming pass over the map (``np.copyto`` into a preallocated buffer: every voxel read once
  and written once — the memory-bandwidth floor any all-window scoring must pay).
  Target: box_mean / streaming pass <= 5x.
* an explicit per-position loop (``box_mean_loop``).  The full loop over all (size − window + 1)³
  positions would take minutes, so it runs on a random subset of positions and its time is
  extrapolated linearly (stated in the output).  Target: loop / box_mean >= 500x; and the same
  result (max abs difference <= 1e-5).

Times are thread CPU seconds (``time.thread_time``), best of ``--repeats`` after one untimed call
(so other work on a shared machine does not bend the ratios; the first call's wall time, which
includes numba's one-off compilation or on-disk cache load, is printed too); wall medians are printed; 1 torch/BLAS thread unless
``--threads``.  Prints the load (``uptime``) before and after.  ``--check``: exit 1 when a target fails.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.study_bench import uptime  # noqa: E402
from segmentation.patches import box_mean, box_mean_loop  # noqa: E402


def timed(fn, repeats: int, sync=lambda: None) -> tuple[float, float, object]:
    """(best CPU seconds, median wall seconds, last result) of ``fn`` after one warm-up call."""
    fn()
    sync()
    cpu, wall, out = [], [], None
    for _ in range(repeats):
        c, w = time.thread_time(), time.perf_counter()
        out = fn()
        sync()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - w)
    return min(cpu), float(np.median(wall)), out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--positions", type=int, default=3000, help="loop-reference positions (extrapolated)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (default 1, the CPU policy)")
    p.add_argument("--device", default="cpu", help="cpu (numpy path) or cuda (torch path of box_mean; wall times)")
    a = p.parse_args(argv)
    from core import threads
    threads.apply(a.threads)
    print(f"load before: {uptime()}")

    rng = np.random.default_rng(a.seed)
    u = rng.random((a.size,) * 3, dtype=np.float32) * np.float32(np.log(4))   # entropy-like values
    k = (a.window,) * 3
    g = (a.size - a.window) // a.stride + 1
    n_pos = g ** 3

    if a.device == "cpu":
        buf = np.empty_like(u)
        stream = lambda: np.copyto(buf, u)  # noqa: E731
        run = lambda: box_mean(u, k, a.stride)  # noqa: E731
        sync = lambda: None  # noqa: E731
    else:
        import torch
        ut = torch.from_numpy(u).to(a.device)
        bt = torch.empty_like(ut)
        stream = lambda: bt.copy_(ut)  # noqa: E731
        run = lambda: box_mean(ut, k, a.stride)  # noqa: E731
        sync = lambda: torch.cuda.synchronize() if a.device.startswith("cuda") else None  # noqa: E731
    w0 = time.perf_counter()
    run()
    sync()
    w_first = time.perf_counter() - w0
    t_stream, w_stream, _ = timed(stream, a.repeats, sync)
    t_fast, w_fast, fast = timed(run, a.repeats, sync)
    if a.device != "cpu":   # device work: wall time is the measure
        t_stream, t_fast = w_stream, w_fast
    fast = fast if isinstance(fast, np.ndarray) else fast.cpu().numpy()

    pos = np.stack(np.unravel_index(rng.choice(n_pos, size=min(a.positions, n_pos), replace=False), (g, g, g)), 1)
    t0 = time.thread_time()
    ref = box_mean_loop(u, k, a.stride, positions=pos)
    t_loop_sub = time.thread_time() - t0
    t_loop = t_loop_sub / len(pos) * n_pos
    diff = float(np.abs(fast[tuple(pos.T)] - ref).max())

    r_stream = t_fast / t_stream
    r_loop = t_loop / t_fast
    checks = [(f"box_mean / one streaming pass = {r_stream:.1f}x", r_stream <= 5, "<= 5x"),
              (f"loop / box_mean = {r_loop:,.0f}x", r_loop >= 500, ">= 500x"),
              (f"max |box_mean − loop| on the checked positions = {diff:.2e}", diff <= 1e-5, "<= 1e-5")]
    print(f"map {a.size}³ = {a.size ** 3:,} voxels, window {a.window}³, stride {a.stride} → {n_pos:,} windows; "
          f"{threads.apply(None)} thread(s), device {a.device}")
    print(f"one streaming pass (copy of the map): {1e3 * t_stream:.2f} ms CPU best of {a.repeats} "
          f"(wall median {1e3 * w_stream:.2f} ms) = {2 * 4 * a.size ** 3 / t_stream / 1e9:.1f} GB/s read+write")
    print(f"box_mean: {1e3 * t_fast:.2f} ms CPU best of {a.repeats} (wall median {1e3 * w_fast:.2f} ms) = "
          f"{a.size ** 3 / t_fast / 1e6:.0f} M voxels/s")
    print(f"box_mean first call in this process: {w_first:.2f} s wall (untimed warm-up: numba compilation or "
          f"cache load on the CPU, kernel launch set-up on a GPU)")
    print(f"loop reference: {len(pos):,} random positions in {t_loop_sub:.2f} s → extrapolated to all "
          f"{n_pos:,} positions: {t_loop:.1f} s (EXTRAPOLATED, not run in full)")
    for text, ok, target in checks:
        print(f"  {text}   (target {target}) {'PASS' if ok else 'FAIL'}")
    print(f"load after: {uptime()}")
    print(f"{sum(ok for _, ok, _ in checks)}/{len(checks)} targets met")
    return 1 if a.check and not all(ok for _, ok, _ in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
