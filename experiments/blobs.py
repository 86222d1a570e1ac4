"""A minimal domain on the study layer: active learning on synthetic Gaussian blobs with a small MLP.

    python -m experiments.blobs --method random entropy --seeds 2 --preset smoke
    python -m experiments.blobs --method random entropy badge --seeds 3 --executor ray --workers 2

It is the smallest complete example of a domain (``core.study``): one shared stage per seed (the
data set, drawn once and read by every method) and one AL run per (method, seed) on
``core.loop`` / ``core.store``; outputs follow the contract of every domain::

    OUT/blobs/<setting>/data/seed<k>/data.npz          the seed's pool and test set
    OUT/blobs/<setting>/<method>/seed<k>/              run directory (config.json, cycles.jsonl, ...)
    OUT/blobs/<setting>/curves.png table.md table.csv ppm.png summary.json

Nothing here is from the thesis; the domain exists to exercise the study layer in tests and in
``benchmarks/study_bench.py`` (a torch MLP trained full-batch, so per-job thread counts matter),
and as the template for a new domain.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from classification import query as _classification_query  # noqa: F401  (registers the methods used here)
from core import query as Q
from core import report
from core.errors import UserError
from core.loop import ActiveLearningLoop
from core.pool import Pool
from core.query import Evidence
from core.store import RunStore, atomic_write, atomic_write_json
from core.study import Job, JobRun
from experiments.common import Parser, add_common_args, add_executor_args, choice, main_guard

METHODS = "classification"   # blobs are a (vector) classification problem: its registered query methods
PROVIDES = frozenset({"probs", "features", "labelled_features", "badge"})


@dataclass(frozen=True)
class BlobsConfig:
    n_pool: int = 400       # pool candidates
    n_test: int = 400
    dim: int = 8
    classes: int = 4
    spread: float = 0.6     # std of the class centres (unit-variance blobs around them)
    hidden: int = 32        # MLP width
    epochs: int = 60        # full-batch Adam steps per training
    start: int = 12         # starting budget = query size
    rounds: int = 3         # queries (cycles = rounds + 1)


PRESETS = {"smoke": BlobsConfig(),
           "laptop": BlobsConfig(n_pool=5000, n_test=2000, dim=32, classes=10, spread=0.35, hidden=256, epochs=200,
                                 start=50, rounds=5)}
PRESETS["thesis"] = PRESETS["laptop"]


# ============================================================================== jobs (run anywhere)
def make_data(context, run: JobRun) -> dict:
    """Shared stage: the seed's pool and test set."""
    cfg, seed = BlobsConfig(**run.config["blobs"]), int(run.config["seed"])
    rng = np.random.default_rng([seed, 0xB10B5])
    centres = rng.normal(0.0, cfg.spread, (cfg.classes, cfg.dim))
    n = cfg.n_pool + cfg.n_test
    y = np.arange(n) % cfg.classes
    rng.shuffle(y)
    x = (centres[y] + rng.normal(0.0, 1.0, (n, cfg.dim))).astype(np.float32)
    atomic_write(run.dir / "data.npz", lambda f: np.savez(f, x=x, y=y), binary=True)
    return {"n": n}


class _Mlp:
    """dim → hidden (ReLU) → classes, trained full-batch with Adam."""

    def __init__(self, cfg: BlobsConfig, seed: int):
        import torch
        g = torch.Generator().manual_seed(seed)
        self.w1 = (torch.randn(cfg.dim, cfg.hidden, generator=g) / cfg.dim ** 0.5).requires_grad_()
        self.b1 = torch.zeros(cfg.hidden, requires_grad=True)
        self.w2 = (torch.randn(cfg.hidden, cfg.classes, generator=g) / cfg.hidden ** 0.5).requires_grad_()
        self.b2 = torch.zeros(cfg.classes, requires_grad=True)

    def hidden(self, x):
        return (x @ self.w1 + self.b1).relu()

    def logits(self, x):
        return self.hidden(x) @ self.w2 + self.b2

    def fit(self, x, y, epochs: int) -> None:
        import torch
        opt = torch.optim.Adam([self.w1, self.b1, self.w2, self.b2], lr=1e-2)
        for _ in range(epochs):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(self.logits(x), y).backward()
            opt.step()


def al_run(context, run: JobRun) -> dict:
    """One (method, seed) AL run: retrain from scratch, evaluate, query, resumable from the store."""
    import torch
    cfg, seed, method = BlobsConfig(**run.config["blobs"]), int(run.config["seed"]), run.config["method"]
    qm = Q.get(METHODS, method)
    with np.load(next(iter(run.deps.values())) / "data.npz") as z:
        x_all, y_all = torch.from_numpy(z["x"]), torch.from_numpy(z["y"]).long()
    xp, yp = x_all[:cfg.n_pool], y_all[:cfg.n_pool]
    xt, yt = x_all[cfg.n_pool:], y_all[cfg.n_pool:]
    store = RunStore(run.dir, run.config, resume=True)
    if store.done:
        return {"final_accuracy": store.records[-1]["metrics"]["accuracy"]}
    pool = Pool(cfg.n_pool)
    if store.pool_state is None:
        pool.label(np.random.default_rng([seed, 0x57A27]).choice(cfg.n_pool, cfg.start, replace=False), 0)
    run.resumed(len(store.records))

    def train(pool, cycle):
        net = _Mlp(cfg, seed * 1009 + cycle)
        lab = torch.from_numpy(pool.labelled)
        net.fit(xp[lab], yp[lab], cfg.epochs)
        return net

    def evaluate(net, pool):
        with torch.no_grad():
            acc = float((net.logits(xt).argmax(1) == yt).float().mean())
        return {"accuracy": acc}

    def evidence(net, pool):
        unl = torch.from_numpy(pool.unlabelled)
        with torch.no_grad():
            h = net.hidden(xp[unl])
            probs = torch.softmax(h @ net.w2 + net.b2, 1)
        return Evidence({"probs": lambda: probs, "features": lambda: h,
                         "badge": lambda: (probs, h),
                         "labelled_features": lambda: net.hidden(xp[torch.from_numpy(pool.labelled)]).detach()})

    loop = ActiveLearningLoop(pool, train=train, evaluate=evaluate, evidence=evidence, query=qm,
                              query_sizes=[cfg.start] * cfg.rounds, store=store, seed=seed, on_cycle=run.on_cycle)
    records = loop.run()
    return {"final_accuracy": records[-1]["metrics"]["accuracy"]}


# ============================================================================== the domain (driver side)
class BlobsDomain:
    """Jobs of one blobs setting: data per seed, one AL run per (method, seed)."""

    def __init__(self, prefix: str, setting: str, cfg: BlobsConfig, methods: Sequence[str], seeds: Sequence[int],
                 root: Path):
        for m in methods:
            missing = set(Q.get(METHODS, m).needs) - PROVIDES
            if missing:
                raise UserError(f"method {m!r} needs evidence the blobs domain does not provide ({', '.join(sorted(missing))})")
        self.name = f"blobs/{setting}"
        self.prefix, self.setting, self.cfg = prefix, setting, cfg
        self.methods, self.seeds, self.root = list(methods), list(seeds), Path(root)

    def context(self):
        return None

    def run_name(self, method: str, seed: int) -> str:
        return f"{self.prefix}/{method}/seed{seed}"

    def jobs(self) -> list[Job]:
        out = []
        for s in self.seeds:
            out.append(Job(f"{self.prefix}/data/seed{s}", "data", make_data, {"blobs": asdict(self.cfg), "seed": s},
                           label=f"blobs/{self.setting} data seed{s}", outputs=("data.npz",)))
        for m in self.methods:
            for s in self.seeds:
                config = {"experiment": "blobs", "dataset": "blobs", "regime": {"name": self.setting}, "method": m, "seed": s,
                          "blobs": asdict(self.cfg)}
                out.append(Job(self.run_name(m, s), "run", al_run, config, deps=(f"{self.prefix}/data/seed{s}",),
                               units=self.cfg.rounds + 1, metric="accuracy", metric_label="acc",
                               label=f"blobs/{self.setting}/{m} seed{s}", outputs=("DONE",)))
        return out

    def finish(self, result) -> None:
        from core.store import load_run
        runs = []
        for m in self.methods:
            for s in self.seeds:
                _, records = load_run(self.root / self.run_name(m, s))
                runs.append({"method": m, "seed": s, "setting": f"blobs/{self.setting}",
                             "budgets": [r["budget"] for r in records],
                             "values": [r["metrics"]["accuracy"] for r in records]})
        out = self.root / self.prefix
        report.plot_curves(runs, out / "curves.png", ylabel="test accuracy")
        rows = report.summary_rows(runs)
        report.write_table(rows, out / "table.md", metric="accuracy")
        summary = {"setting": self.setting, "config": asdict(self.cfg), "rows": rows}
        if len(self.methods) >= 2 and len(self.seeds) >= 2:
            ppm = report.ppm_from_runs(runs)
            report.plot_ppm(ppm, out / "ppm.png")
            summary["ppm"] = {"methods": ppm.methods, "wins": ppm.wins.tolist()}
        atomic_write_json(out / "summary.json", summary)


# ============================================================================== CLI
def build_parser() -> Parser:
    p = Parser(prog="python -m experiments.blobs", description=__doc__.split("\n\n")[0],
               epilog=__doc__.split("\n\n", 1)[1])
    methods = Q.names(METHODS)
    p.add_argument("--method", nargs="+", type=choice(methods, "method"), default=["random", "entropy"], metavar="M",
                   help=f"query methods (default: random entropy): {', '.join(methods)}")
    p.add_argument("--setting", default=None, metavar="NAME", help="setting name, the folder below OUT/blobs "
                                                                   "(default: the preset's name)")
    for f, what in (("pool-size", "pool candidates"), ("epochs", "Adam steps per training"), ("hidden", "MLP width"),
                    ("rounds", "queries")):
        p.add_argument(f"--{f}", type=int, default=None, metavar="N", help=f"{what} (default: the preset's)")
    add_common_args(p, "runs/study")
    add_executor_args(p)
    return p


def domains(args: argparse.Namespace, root: Path) -> list[BlobsDomain]:
    cfg = PRESETS[args.preset]
    for flag, field in (("pool_size", "n_pool"), ("epochs", "epochs"), ("hidden", "hidden"), ("rounds", "rounds")):
        v = getattr(args, flag)
        if v is not None:
            if v < 1:
                raise UserError(f"--{flag.replace('_', '-')} must be >= 1")
            cfg = replace(cfg, **{field: v})
    if cfg.start * (cfg.rounds + 1) > cfg.n_pool:
        raise UserError(f"{cfg.rounds} rounds of {cfg.start} need a pool of {cfg.start * (cfg.rounds + 1)}, have {cfg.n_pool}")
    if args.seeds < 1:
        raise UserError("--seeds must be >= 1")
    setting = args.setting or args.preset
    if not setting.replace("-", "").replace("_", "").isalnum():
        raise UserError(f"--setting {setting!r}: use letters, digits, - and _ only")
    seeds = [args.seed_offset + k for k in range(args.seeds)]
    return [BlobsDomain(f"blobs/{setting}", setting, cfg, list(dict.fromkeys(args.method)), seeds, root)]


def main(argv: Sequence[str] | None = None) -> int:
    from experiments.study import run_domains
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    doms = domains(args, out)
    result = run_domains(doms, args, out)
    if not args.quiet:
        for d in doms:
            md = (out / d.prefix / "table.md")
            if md.exists():
                print(md.read_text(), end="")
        print(f"{len(result.ran)} job(s) ran, {len(result.skipped)} already done, in {result.seconds:.1f} s; "
              f"outputs in {out / 'blobs'}")
    return 0


if __name__ == "__main__":
    main_guard(main)
