"""Summarise finished (or partial) runs of any experiment: budget curves, AUBC table, PPM.

    python -m experiments.report runs/classification/fashion_mnist/low/supervised [--metric accuracy] [--out DIR]
    python -m experiments.report runs/segmentation/phantoms/low --scores 0     # + why the first query picked what it did

Every run directory (``config.json`` + ``state.json``) found below the given paths is one curve;
runs are grouped into settings by dataset and regime and into methods by ``method``.  ``--scores
CYCLE`` also plots, per run, the score distribution of that cycle's query (pool histogram and the
scores of the best picks, from the query summary stored with each cycle) to ``scores_cycleK.png``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from core import report
from core.errors import UserError
from core.store import clean_temp, exclusive, load_run
from experiments.common import Parser, main_guard, out_arg

PREFERRED = ("accuracy", "balanced_accuracy", "dice", "mean_dice")


def _setting(cfg: dict) -> str:
    reg = cfg.get("regime")
    reg = reg.get("name") if isinstance(reg, dict) else reg
    parts = [str(cfg.get(k)) for k in ("dataset", "paradigm") if cfg.get(k) is not None]
    return "/".join(parts[:1] + [str(reg)] + parts[1:])


def collect(paths: Sequence[str], metric: str | None) -> tuple[list[dict], str]:
    runs = []
    for p in paths:
        if not Path(p).exists():
            raise UserError(f"{p} does not exist")
        for cfg_path in sorted(Path(p).rglob("config.json")):
            try:
                cfg, records = load_run(cfg_path.parent)
            except UserError:
                if (cfg_path.parent / "state.json").exists():
                    raise  # a damaged run must not silently drop out of the table
                continue  # a config.json that is not a run's
            if not records or "method" not in cfg:
                continue
            if metric is None:  # the metric the run is scored by (balanced accuracy for roll-out data), else the first known
                scored_by = cfg.get("metric") or ("balanced_accuracy" if str(cfg.get("dataset", "")).startswith(
                    ("isic2019", "miotcd", "folder:")) else None)  # runs written before configs named their metric
                metric = scored_by if scored_by in records[0].get("metrics", {}) else None
                metric = metric or next((m for m in PREFERRED if m in records[0].get("metrics", {})), None)
                if metric is None:
                    raise UserError(f"no known metric in {cfg_path.parent}; pass --metric "
                                    f"(have: {', '.join(records[0].get('metrics', {}))})")
            if metric not in records[0].get("metrics", {}):
                raise UserError(f"metric {metric!r} not recorded in {cfg_path.parent}")
            runs.append({"method": cfg["method"], "seed": cfg.get("seed", 0), "setting": _setting(cfg),
                         "budgets": [r["budget"] for r in records],
                         "values": [r["metrics"][metric] for r in records]})
    if not runs:
        raise UserError(f"no runs with finished cycles under {', '.join(paths)}")
    return runs, metric


def score_panels(paths: Sequence[str], cycle: int) -> list[tuple[str, dict]]:
    """(label, query summary) of cycle ``cycle`` (−1: the last query) of every run below ``paths``."""
    panels = []
    for p in paths:
        for cfg_path in sorted(Path(p).rglob("config.json")):
            cfg, records = load_run(cfg_path.parent)
            queried = [r for r in records if r.get("query")]
            if "method" not in cfg or not queried:
                continue
            rec = queried[-1] if cycle == -1 else next((r for r in queried if r.get("cycle") == cycle), None)
            if rec is not None:
                panels.append((f"{cfg['method']} seed {cfg.get('seed', 0)} (cycle {rec['cycle']})", rec["query"]))
    return panels


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m experiments.report", description=__doc__)
    p.add_argument("paths", nargs="+", help="run directories or folders containing them")
    p.add_argument("--metric", default=None, help="metric to plot (default: accuracy / balanced_accuracy / dice)")
    p.add_argument("--out", type=out_arg, default=None,
                   help="where to write curves.png, table.md, ppm.png (default: first path)")
    p.add_argument("--scores", type=int, default=None, metavar="CYCLE",
                   help="also plot the score distribution of cycle CYCLE's query (0 = the first query, -1 = the "
                        "last) of every run to scores_cycleCYCLE.png")
    args = p.parse_args(argv)
    if args.scores is not None and args.scores < -1:
        p.error("--scores takes a cycle >= 0 or -1 (the last query)")
    runs, metric = collect(args.paths, args.metric)
    out = Path(args.out or args.paths[0])
    if args.out is None and not Path(args.paths[0]).is_dir():
        raise UserError(f"{args.paths[0]} is not a folder; pass --out DIR for the report")
    with exclusive(out / ".table.lock", f"the tables in {out}", wait=True):
        clean_temp(out)  # tables of a killed report
        report.plot_curves(runs, out / "curves.png", ylabel=metric)
        print(report.write_table(report.summary_rows(runs), out / "table.md", metric=metric))
        methods, seeds = {r["method"] for r in runs}, {r["seed"] for r in runs}
        if len(methods) >= 2 and len(seeds) >= 2:
            ppm = report.ppm_from_runs(runs)
            report.plot_ppm(ppm, out / "ppm.png")
            print(json.dumps({"ppm_methods": ppm.methods, "wins": ppm.wins.round(3).tolist(),
                              "mean_row": ppm.mean_row.round(3).tolist(), "max": ppm.max_value}))
            for note in ppm.notes:
                print(f"note: {note}")
    if args.scores is not None:
        panels = score_panels(args.paths, args.scores)
        if not panels:
            raise UserError(f"no run below {', '.join(args.paths)} stored a query summary for cycle {args.scores} "
                            "(runs written before query summaries were stored have none)")
        name = f"scores_cycle{'last' if args.scores == -1 else args.scores}.png"
        report.plot_score_distribution(panels, out / name, title=f"query scores, cycle {args.scores}")
        print(f"wrote {out / name} ({len(panels)} run(s))")
    return 0


if __name__ == "__main__":
    main_guard(main)
