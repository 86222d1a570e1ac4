"""Learning curve that sets the laptop preset's training length: test Dice vs. training iterations on
the full (densely annotated) train+pool data of the real brain dataset (segmentation.realdata).

    python benchmarks/seg_learning_curve.py [--lengths 100 200 400 800 1600] [--ensemble 1] [--out runs/learning_curve]

Each length is a separate training from scratch with the laptop preset's network, batch, optimiser,
poly schedule and nnU-Net augmentation (the schedule depends on the length, so snapshots of one long
run would not measure the same thing).  Writes ``curve.json`` (lengths, mean Dice, per-class Dice,
train seconds) and ``curve.png``; prints one line per length and the shortest length within
``--tolerance`` (default 0.02) of the best mean Dice — the laptop preset's choice.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[100, 200, 400, 800, 1600])
    p.add_argument("--ensemble", type=int, default=1, help="models per length (default 1: one model on all data)")
    p.add_argument("--lateral", action="store_true", help="ten left/right classes instead of five")
    p.add_argument("--tolerance", type=float, default=0.02)
    p.add_argument("--out", default="runs/learning_curve")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patch-voxels", type=int, help="network-patch voxel budget (default: the laptop preset's)")
    a = p.parse_args(argv)
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from core.store import atomic_write_json
    from segmentation.data import prepare
    from segmentation.experiment import SegmentationDomain
    from segmentation.plans import PRESETS, match_setting, plan_network, query_setting
    from segmentation.realdata import write_brain_dataset

    out = Path(a.out)
    root = write_brain_dataset(out / "data" / ("brain-lr" if a.lateral else "brain"), lateral=a.lateral)
    data = prepare(root, out / "data" / "cache")
    base = replace(PRESETS["laptop"], ensemble=a.ensemble)
    if a.patch_voxels:
        base = replace(base, patch_voxels=a.patch_voxels)
    plan = plan_network(data.fingerprint()["median_shape"], data.spacing, base)
    qs = query_setting(match_setting(data.name), "low", data.n_classes, data.lcc_bbox)
    rows = []
    for L in a.lengths:
        preset = replace(base, iterations=L)
        dom = SegmentationDomain(data, qs, preset, plan, seed=a.seed)
        t0, c0 = time.perf_counter(), time.process_time()
        model = dom.train_full(key=(a.seed, 9999))
        t_train, c_train = time.perf_counter() - t0, time.process_time() - c0
        res = dom.test_metrics(model)
        rows.append({"iterations": L, "mean_dice": res["mean_dice"], "dice_per_class": res["dice_per_class"],
                     "train_s": t_train, "train_cpu_s": c_train, "ensemble": a.ensemble,
                     "patch": list(plan.patch_size)})
        print(f"{L:6d} iterations: mean Dice {res['mean_dice']:.4f}  per class "
              f"{[round(v, 3) if v is not None else None for v in res['dice_per_class']]}  train {t_train:.0f}s wall, "
              f"{c_train:.0f}s CPU ({1000 * c_train / L:.0f} ms CPU/iteration)", flush=True)
        atomic_write_json(out / "curve.json", {"dataset": data.name, "classes": data.class_names[1:],
                                               "plan": plan.to_dict(), "rows": rows})
    best = max(r["mean_dice"] for r in rows)
    choice = min(r["iterations"] for r in rows if r["mean_dice"] >= best - a.tolerance)
    print(f"best mean Dice {best:.4f}; shortest length within {a.tolerance}: {choice} iterations")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["iterations"] for r in rows], [r["mean_dice"] for r in rows], "o-")
    ax.axvline(choice, ls="--", c="gray")
    ax.set_xscale("log")
    ax.set_xlabel("training iterations (batch %d)" % base.batch_size)
    ax.set_ylabel("test mean Dice (full data)")
    ax.set_title(f"{data.name}: laptop learning curve")
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=100)
    atomic_write_json(out / "curve.json", {"dataset": data.name, "classes": data.class_names[1:], "plan": plan.to_dict(),
                                           "rows": rows, "best": best, "choice": choice, "tolerance": a.tolerance})
    return 0


if __name__ == "__main__":
    sys.exit(main())
