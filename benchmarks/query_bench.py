"""Query-cost benchmark (issue: shared AL core).

(a) BALD with 50 head-only MC-dropout samples vs one deterministic pass over a pool of images
    (ResNet-18, CIFAR stem, 32x32): the backbone runs once, only the head is sampled.
    Target: ratio <= 1.3x.
(b) BADGE selecting K = 1000 from N = 45 000, C = 10, D = 512: factorised k-means++ (distances from
    the two factors, O(N(C+D)) memory) vs the dense reference on the materialised N x (C*D) embedding.
    Targets: >= 5x faster; peak extra memory <= 2x the N x (C+D) input.  Both variants draw the same
    centres from the same seed (checked).

Each BADGE variant runs in a fresh subprocess so its peak memory (Linux VmHWM, reset via
/proc/self/clear_refs after the inputs exist) is its own.

    python benchmarks/query_bench.py [--pool 10000] [--width 64] [--n 45000] [--k 1000] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _hwm_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def badge_child(mode: str, n: int, c: int, d: int, k: int, seed: int, device: str = "cpu") -> None:
    import numpy as np
    import torch
    from core.selection import kmeanspp_badge
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, c, generator=g) * 3, 1)
    h = torch.randn(n, d, generator=g).relu_()
    input_bytes = (probs.numel() + h.numel()) * 4
    cuda = device == "cuda"
    if cuda:
        probs, h = probs.cuda(), h.cuda()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        ok = _reset_hwm()
        base = _hwm_kib()
    t = time.perf_counter()
    picks = kmeanspp_badge(probs, h, k, np.random.default_rng(seed), dense=(mode == "dense"))
    if cuda:
        torch.cuda.synchronize()
    secs = time.perf_counter() - t
    if cuda:
        extra = torch.cuda.max_memory_allocated() - base
    else:
        extra = (_hwm_kib() - base) * 1024 if ok else -1
    print(json.dumps({"mode": mode, "seconds": secs, "extra_bytes": extra, "input_bytes": input_bytes,
                      "picks_head": picks[:20].tolist(), "n_unique": len(set(picks.tolist()))}))


def run_badge(args) -> dict:
    out = {}
    for mode in ("factorised", "dense"):
        cmd = [sys.executable, __file__, "--_badge-child", mode, "--n", str(args.n), "--k", str(args.k),
               "--c", str(args.c), "--d", str(args.d), "--device", args.device]
        r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        if r.returncode != 0:
            raise SystemExit(f"{mode} BADGE failed: {r.stderr.strip().splitlines()[-1]}")
        out[mode] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"  BADGE {mode:10s}: {out[mode]['seconds']:.2f} s, peak extra {'GPU ' if args.device == 'cuda' else ''}memory "
              f"{out[mode]['extra_bytes'] / 2**20:.0f} MiB", flush=True)
    return out


def run_bald(args) -> tuple[float, float]:
    import torch
    from classification.model import ResNet18
    from classification.augment import normalise
    from core.uncertainty import mutual_information
    torch.manual_seed(0)
    net = ResNet18(10, width=args.width, dropout=0.5).to(args.device).eval()
    images = torch.randint(0, 256, (args.pool, 3, 32, 32), dtype=torch.uint8)
    bf16 = args.device == "cuda" or "avx512_bf16" in open("/proc/cpuinfo").read()

    def features(batch):
        with torch.autocast(device_type=args.device, dtype=torch.bfloat16, enabled=bf16):
            return net.features(normalise(batch.to(args.device), (0.5,) * 3, (0.25,) * 3)).float()

    @torch.no_grad()
    def deterministic():
        return torch.cat([torch.softmax(net.fc(features(images[a:a + 500])), 1).cpu()
                          for a in range(0, len(images), 500)])

    @torch.no_grad()
    def bald():
        mi = [mutual_information(net.mc_probs(features(images[a:a + 500]), 50)).cpu()
              for a in range(0, len(images), 500)]
        return torch.cat(mi)

    with torch.no_grad():  # warm-up (allocator, autocast caches)
        features(images[:500])
    times = {}
    for name, fn in (("deterministic", deterministic), ("bald", bald)):
        t = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - t
    return times["deterministic"], times["bald"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", type=int, default=10_000)
    p.add_argument("--width", type=int, default=64, help="ResNet-18 base width (64 = the thesis network)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=45_000)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--c", type=int, default=10)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--skip-bald", action="store_true")
    p.add_argument("--_badge-child", dest="child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return badge_child(args.child, args.n, args.c, args.d, args.k, 0, args.device)

    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    if not args.skip_bald:
        print(f"(a) BALD, 50 head-only MC samples, pool of {args.pool} images, ResNet-18 width {args.width}")
        det, bald = run_bald(args)
        ratio = bald / det
        print(f"  deterministic pass: {det:.2f} s ({args.pool / det:.0f} img/s); BALD: {bald:.2f} s")
        print(f"  BALD / deterministic = {ratio:.3f}x   (target <= 1.3x: {'PASS' if ratio <= 1.3 else 'FAIL'})")
    print(f"(b) BADGE k-means++ seeding: K={args.k} from N={args.n}, C={args.c}, D={args.d}")
    res = run_badge(args)
    f, d = res["factorised"], res["dense"]
    speed = d["seconds"] / f["seconds"]
    mem = f["extra_bytes"] / f["input_bytes"]
    same = f["picks_head"] == d["picks_head"]
    print(f"  dense / factorised time = {speed:.1f}x   (target >= 5x: {'PASS' if speed >= 5 else 'FAIL'})")
    print(f"  factorised peak extra memory = {f['extra_bytes'] / 2**20:.0f} MiB = {mem:.2f}x the N x (C+D) input "
          f"({f['input_bytes'] / 2**20:.0f} MiB)   (target <= 2x: {'PASS' if 0 <= mem <= 2 else 'FAIL'})")
    print(f"  dense reference peak extra memory = {d['extra_bytes'] / 2**20:.0f} MiB")
    print(f"  same first 20 centres from the same seed: {same}; unique picks: {f['n_unique']}")


if __name__ == "__main__":
    main()
