"""Train-seed spread of one AL loop: retrain the model of a finished segmentation run's loop on that
loop's annotation (read from the run's ``state.json``) with other training seeds and/or another length,
and print the test mean Dice of each.

    python benchmarks/seg_seed_spread.py RUN_DIR --cycle 3 [--train-seeds run 1 2] [--iterations 800 1600]

``RUN_DIR`` is one run's folder (``OUT/segmentation/DATASET/REGIME/METHOD/seedS``); its ``config.json``
gives the network plan, query setting and preset, its dataset is read from ``--data-dir`` (default: the
``data`` folder of the run's ``--out``; ``--dataset`` for a run on a dataset folder).  Train seed ``run`` is the run's own training seed (reproduces
the recorded Dice); an integer ``n`` is another one (initialisation key ``(seed, 7000 + n)``).  Results are appended to ``--log`` (JSON lines).
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
    p.add_argument("run_dir")
    p.add_argument("--cycle", type=int, required=True, help="loop index (0 = the starting budget)")
    p.add_argument("--train-seeds", nargs="+", default=["run", "1"], help="'run' (the run's own) or integers")
    p.add_argument("--iterations", type=int, nargs="+", help="training lengths (default: the run's)")
    p.add_argument("--data-dir", help="the run's --data-dir (default: OUT/data of the run)")
    p.add_argument("--dataset", help="the run's dataset folder when it was a path (default: found under --data-dir)")
    p.add_argument("--log", default="runs/seed_spread.jsonl")
    a = p.parse_args(argv)
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from segmentation.data import prepare
    from segmentation.experiment import SegmentationDomain
    from segmentation.plans import PRESETS, NetworkPlan, Preset, QuerySetting

    rd = Path(a.run_dir)
    cfg = json.loads((rd / "config.json").read_text())["config"]
    st = json.loads((rd / "state.json").read_text())
    out = rd.parents[4]                                   # OUT/segmentation/DATASET/REGIME/METHOD/seedS
    data_dir = Path(a.data_dir) if a.data_dir else out / "data"
    roots = [Path(a.dataset)] if a.dataset else [d for d in data_dir.iterdir() if (d / "dataset.json").is_file()]
    data = next(dd for dd in (prepare(r, data_dir / "cache", split_seed=cfg["split_seed"]) for r in roots)
                if dd.data_key == cfg["data_key"])
    pl = cfg["plan"]
    plan = NetworkPlan(tuple(pl["patch_size"]), pl["kernels"], pl["strides"], pl["filters"])
    qs = QuerySetting(**{k: tuple(v) if k in ("patch", "agg_stride") else v for k, v in cfg["query"].items()})
    fields = set(Preset.__dataclass_fields__)
    base = replace(PRESETS[cfg["preset"]["name"]], **{k: v for k, v in cfg["preset"].items() if k in fields})
    seed = int(cfg["seed"])
    dom = SegmentationDomain(data, qs, base, plan, seed=seed)
    pool = dom.new_pool()
    ids, cyc = np.asarray(st["pool"]["ids"]), np.asarray(st["pool"]["cycles"])
    for c in range(a.cycle + 1):
        pool.label(ids[cyc == c], c)
    labels = dom._partial_labels(pool)
    Path(a.log).parent.mkdir(parents=True, exist_ok=True)
    for L in a.iterations or [base.iterations]:
        dom.preset = replace(base, iterations=L)
        for ts in a.train_seeds:
            init = (seed,) if ts == "run" else (seed, 7000 + int(ts))
            t0, c0 = time.perf_counter(), time.process_time()
            model = dom.fit(labels, (seed, a.cycle), init_key=init)
            tw, tc = time.perf_counter() - t0, time.process_time() - c0
            res = dom.test_metrics(model)
            rec = {"run": str(rd), "cycle": a.cycle, "n_patches": pool.n_labelled, "iterations": L, "train_seed": ts,
                   "mean_dice": res["mean_dice"], "dice_per_class": res["dice_per_class"],
                   "train_wall_s": round(tw, 1), "train_cpu_s": round(tc, 1)}
            print(f"loop {a.cycle} ({pool.n_labelled} patches), {L} iterations, train seed {ts}: mean Dice "
                  f"{res['mean_dice']:.4f}  (train {tw:.0f}s wall, {tc:.0f}s CPU)", flush=True)
            with open(a.log, "a") as f:
                f.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
