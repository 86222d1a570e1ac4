"""Run a study file: grids of experiments of any domain as one job graph, on any executor.

    python -m experiments.study run STUDY.toml [--preset smoke] [--executor ray --workers 2] [--out DIR]
    python -m experiments.study status STUDY.toml|OUT      done / running / failed / pending per job
    python -m experiments.study report STUDY.toml|OUT      curves, tables, PPM (experiments.report)

A study file (TOML)::

    out = "runs/ch6"            # output root (default: runs/<file name>)
    preset = "laptop"           # thesis | laptop | smoke (the command line's --preset wins)
    seeds = 3                   # also: seed_offset, device
    [presets.smoke]             # keys that replace the ones above under --preset smoke (a smaller grid)
    seeds = 2
    [executor]                  # where the jobs run (the command line's flags win)
    kind = "ray"                # serial | ray | slurm; also workers, threads, gpus_per_run, ray_address,
    workers = 2                 # retries, slurm_partition, slurm_time, slurm_gpus,
                                # slurm_array_parallelism, slurm_local
    [[values]]                  # one experiment: the keys are the domain CLI's flags (--no-plots → no_plots)
    dataset = "toy2d"
    [[blobs]]
    method = ["random", "entropy"]
    grid = { setting = ["a", "b"], epochs = [30, 60] }   # one experiment per combination

Domains: ``classification`` (``experiments.cifar10``), ``segmentation`` (``experiments.segmentation``),
``values`` (``experiments.values``), ``blobs`` (``experiments.blobs``).  Every job of every experiment is content-keyed: rerunning
a study runs only what is not done, and a study whose jobs all finished runs nothing.  A bad key
or value is one line naming it (exit 2); failed jobs are listed at the end (exit 1) while the rest
of the study runs.  One study at a time per output root (a lock).
"""
from __future__ import annotations

import argparse
import importlib
import itertools
import tomllib
from pathlib import Path
from typing import Sequence

from core.errors import UserError
from core.study import Study, StudyFailed, StudyResult
from experiments.common import (Parser, Progress, add_executor_args, choice, executor_from_args, main_guard,
                                resolve_device)

DOMAINS = {"classification": "experiments.cifar10", "segmentation": "experiments.segmentation",
           "values": "experiments.values", "blobs": "experiments.blobs"}
TOP_KEYS = ("out", "preset", "seeds", "seed_offset", "device", "executor", "title", "presets")
PRESET_NAMES = ("thesis", "laptop", "smoke")
EXECUTOR_KEYS = {"kind": "executor", "workers": "workers", "threads": "threads", "gpus_per_run": "gpus_per_run",
                 "ray_address": "ray_address", "retries": "retries", "slurm_partition": "slurm_partition",
                 "slurm_time": "slurm_time", "slurm_gpus": "slurm_gpus",
                 "slurm_array_parallelism": "slurm_array_parallelism", "slurm_local": "slurm_local"}
NOT_IN_ENTRIES = {"out", "resume", "quiet", "help"} | set(EXECUTOR_KEYS.values()) | {"executor"}


# ============================================================================== running domains
def run_domains(domains: list, args: argparse.Namespace, out: Path, resume: bool | None = None,
                title: str | None = None, lock: str = "root", threads: int | None = 0) -> StudyResult:
    """The body of every CLI on the study layer: run ``domains`` below ``out`` with the executor
    of ``args`` (``add_executor_args``); failed jobs → ``StudyFailed`` (listed, exit 1).
    ``lock="jobs"``: other invocations may write other jobs of the same ``out`` at the same time
    (the classification and segmentation CLIs, one method each into one --out); ``threads``: per
    job (0: ``executor_from_args``' default)."""
    study = Study(out, domains, title, lock=lock)
    if not (args.resume if resume is None else resume):
        from core.study import JOB_DIR, _lock_held
        started = [j for j in study.plan() if not j.shared and (Path(out) / j.name / JOB_DIR / "job.json").exists()]
        busy = [j for j in started if any(_lock_held(Path(out) / j.name / JOB_DIR / f) for f in ("lock", "claim"))]
        if busy:   # the same run started by another process right now
            raise UserError(f"{Path(out) / busy[0].name} is being written by another process; wait for it to "
                            "finish or use another --out")
        if started:
            raise UserError(f"{Path(out) / started[0].name} already holds a run; pass --resume to continue "
                            "(finished jobs are kept) or use another --out")
    executor, default_threads = executor_from_args(args, resolve_device(getattr(args, "device", "cpu")))
    threads = default_threads if threads == 0 else threads
    with Progress(args.quiet) as pr:
        result = study.run(executor, progress=pr, threads=threads)
    if not result.ok:
        raise StudyFailed(result)
    return result


# ============================================================================== study files
class _Bad(Exception):
    pass


def _raising(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    def error(message):
        raise _Bad(message)
    parser.error = error
    return parser


def _flag(action: argparse.Action) -> str:
    return next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])


def _argv(table: dict, parser: argparse.ArgumentParser, where: str, keymap: dict | None = None,
          forbidden: set = frozenset()) -> list[str]:
    """TOML keys → command-line flags of ``parser``; unknown keys and wrong types are one line.
    ``keymap``: TOML key → argparse dest (default: every flag's dest, ``no_plots`` for ``--no-plots``)."""
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    if keymap is None:
        keymap = {d: d for d in actions if d not in forbidden}
    argv: list[str] = []
    for raw, value in table.items():
        key = raw.replace("-", "_")
        if key not in keymap:
            raise UserError(f"{where}: unknown key {raw!r} (valid: {', '.join(sorted(keymap))})")
        a = actions[keymap[key]]
        if isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                raise UserError(f"{where}.{raw}: must be true or false, got {value!r}")
            if value == isinstance(a, argparse._StoreTrueAction):
                argv.append(_flag(a))
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and a.nargs in (None, "?"):
            raise UserError(f"{where}.{raw}: takes one value, got a list")
        if not values or any(isinstance(v, (dict, list, bool)) for v in values):
            raise UserError(f"{where}.{raw}: must be a value or a list of values, got {value!r}")
        argv += [_flag(a)] + [str(v) for v in values]
    return argv


def _parse(parser, argv, where: str, keymap: dict | None = None) -> argparse.Namespace:
    """Parse with the domain's own parser; its one-line error names the study file's key."""
    try:
        return _raising(parser).parse_args(argv)
    except _Bad as e:
        msg = str(e)
        names = {d: k for k, d in (keymap or {}).items()}
        for a in parser._actions:
            if not a.option_strings:
                continue
            key = names.get(a.dest, a.dest)
            for form in ("/".join(a.option_strings), *a.option_strings):
                if msg.startswith(f"argument {form}: "):
                    raise UserError(f"{where}.{key}: {msg[len(f'argument {form}: '):]}") from None
            msg = msg.replace(_flag(a), key)
        msg = msg.replace("the following arguments are required: ", "missing key(s): ")
        raise UserError(f"{where}: {msg}") from None


def _expand(entry: dict, where: str) -> list[tuple[str, dict]]:
    grid = entry.get("grid")
    if grid is None:
        return [(where, entry)]
    if not isinstance(grid, dict) or not grid:
        raise UserError(f"{where}.grid: must be a table of key = [values]")
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise UserError(f"{where}.grid.{k}: must be a non-empty list")
        if k in entry:
            raise UserError(f"{where}.grid.{k}: also set outside the grid; set it in one place")
    base = {k: v for k, v in entry.items() if k != "grid"}
    keys = list(grid)
    return [(f"{where}({', '.join(f'{k}={v}' for k, v in zip(keys, combo))})", {**base, **dict(zip(keys, combo))})
            for combo in itertools.product(*(grid[k] for k in keys))]


def _read_toml(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"study file {path} does not exist")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e.__class__.__name__})") from None


def _with_preset(spec: dict, override: str | None, path: str) -> dict:
    """The file's ``[presets.<name>]`` table (of the preset in use) replaces those top-level keys: a
    thesis grid can name a smaller grid for ``--preset smoke`` (CI) or ``laptop``."""
    presets = spec.get("presets", {})
    if not isinstance(presets, dict) or not all(isinstance(v, dict) for v in presets.values()):
        raise UserError(f"{path}: presets must be tables ([presets.smoke], ...)")
    for name, table in presets.items():
        if name not in PRESET_NAMES:
            raise UserError(f"{path}: presets.{name}: unknown preset (valid: {', '.join(PRESET_NAMES)})")
        for key in table:
            if key in ("presets", "out", "preset") or key not in list(TOP_KEYS) + list(DOMAINS):
                raise UserError(f"{path}: presets.{name}: key {key!r} cannot be set per preset "
                                f"(valid: seeds, seed_offset, device, executor, title, {', '.join(DOMAINS)})")
    preset = override or spec.get("preset")
    chosen = presets.get(preset, {}) if isinstance(preset, str) else {}
    return {**{k: v for k, v in spec.items() if k != "presets"}, **chosen}


def load_study(path: str, overrides: argparse.Namespace | None = None) -> tuple[Study, argparse.Namespace, Path]:
    """(study, executor args, out) from a study file; every problem is one ``UserError`` line."""
    p = Path(path)
    spec = _read_toml(path)
    valid = list(TOP_KEYS) + list(DOMAINS)
    for key in spec:
        if key not in valid:
            raise UserError(f"{path}: unknown key {key!r} (valid: {', '.join(valid)})")
    ov = overrides or argparse.Namespace()
    spec = _with_preset(spec, getattr(ov, "preset", None), path)
    out = Path(getattr(ov, "out", None) or spec.get("out") or Path("runs") / p.stem)
    if not isinstance(spec.get("out", ""), str):
        raise UserError(f"{path}: out must be a string")
    top: list[str] = []
    for key in ("preset", "seeds", "seed_offset", "device"):
        value = getattr(ov, key, None) if getattr(ov, key, None) is not None else spec.get(key)
        if value is not None:
            if isinstance(value, (dict, list, bool)):
                raise UserError(f"{path}: {key} must be a single value, got {value!r}")
            top += [f"--{key.replace('_', '-')}", str(value)]
    # executor: the file's [executor] table, then the command line
    ex_parser = Parser(prog="executor", add_help=False)
    add_executor_args(ex_parser)
    ex_table = spec.get("executor", {})
    if not isinstance(ex_table, dict):
        raise UserError(f"{path}: executor must be a table ([executor])")
    ex_args = _parse(ex_parser, _argv(ex_table, ex_parser, f"{path}: executor", EXECUTOR_KEYS), f"{path}: executor",
                     EXECUTOR_KEYS)
    for dest in EXECUTOR_KEYS.values():
        v = getattr(ov, dest, None)
        if v is not None:
            setattr(ex_args, dest, v)
    ex_args.quiet = bool(getattr(ov, "quiet", False))
    ex_args.device = spec.get("device", "auto") if getattr(ov, "device", None) is None else ov.device
    domains = []
    for dname, module_name in DOMAINS.items():
        entries = spec.get(dname)
        if entries is None:
            continue
        entries = [entries] if isinstance(entries, dict) else entries
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise UserError(f"{path}: {dname} must be a table ([{dname}]) or tables ([[{dname}]])")
        module = importlib.import_module(module_name)
        for i, entry in enumerate(entries, 1):
            for where, combo in _expand(entry, f"{path}: {dname}[{i}]"):
                parser = module.build_parser()
                argv = ["--out", str(out)] + top + _argv(combo, parser, where, forbidden=NOT_IN_ENTRIES)
                argv += ["--resume"] + (["--quiet"] if ex_args.quiet else [])
                args = _parse(parser, argv, where)
                try:
                    domains += module.domains(args, out)
                except UserError as e:
                    raise UserError(f"{where}: {e}") from None
    if not domains:
        raise UserError(f"{path}: no experiments; add a [[{'|'.join(DOMAINS)}]] table")
    names = [d.name for d in domains]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise UserError(f"{path}: two experiments write {out / dup.split('/', 1)[-1]}; give them different settings")
    title = spec.get("title", p.stem)
    if not isinstance(title, str):
        raise UserError(f"{path}: title must be a string")
    return Study(out, domains, title), ex_args, out


# ============================================================================== commands
def cmd_run(args) -> int:
    study, ex_args, out = load_study(args.study, args)
    result = run_domains(study.domains, ex_args, out, resume=True, title=study.title)
    if not args.quiet:
        print(f"{study.title}: {len(result.ran)} job(s) ran, {len(result.skipped)} were already done "
              f"({len(result.jobs)} in all) in {result.seconds:.1f} s; outputs in {out}")
    return 0


def _root(target: str) -> Path:
    p = Path(target)
    if p.is_dir():
        return p
    if p.suffix == ".toml":
        out = _read_toml(target).get("out") or str(Path("runs") / p.stem)
        return Path(str(out))
    raise UserError(f"{target} is neither a study file (.toml) nor an output folder")


def cmd_status(args) -> int:
    from core.study import STATUSES, status
    root = Path(args.out) if args.out else _root(args.study)
    rows = status(root)
    kinds = list(dict.fromkeys(j["kind"] for j, _ in rows))   # stages in the order the domains declare them
    count = {(k, s): 0 for k in kinds for s in STATUSES}
    for j, st in rows:
        count[(j["kind"], st.status)] += 1
    tot = {s: sum(count[(k, s)] for k in kinds) for s in STATUSES}
    print(f"{root}: {len(rows)} job(s) — " + ", ".join(f"{tot[s]} {s}" for s in STATUSES))
    w = max([len("stage")] + [len(k) for k in kinds])
    print(f"{'stage':<{w}}  " + "  ".join(f"{s:>7}" for s in STATUSES))
    for k in kinds:
        print(f"{k:<{w}}  " + "  ".join(f"{count[(k, s)]:>7}" for s in STATUSES))
    for j, st in rows:
        if st.status in ("failed", "running") or (args.verbose and st.detail):
            print(f"{st.status}: {j.get('label') or j['name']}" + (f" — {st.detail}" if st.detail else ""))
        elif args.verbose:
            print(f"{st.status}: {j.get('label') or j['name']}")
    return 0


def cmd_report(args) -> int:
    from experiments import report
    root = Path(args.out) if args.out else _root(args.study)
    summaries = sorted(root.rglob("summary.md"))
    try:
        report.main([str(root)] + (["--out", args.report_dir] if args.report_dir else []))
    except UserError:
        if not summaries:
            raise
    for s in summaries:
        print(f"summary: {s}")
    return 0


def build_parser() -> Parser:
    p = Parser(prog="python -m experiments.study", description=__doc__.split("\n\n")[0],
               epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="command", metavar="run|status|report", required=True,
                           parser_class=Parser)
    r = sub.add_parser("run", help="run the jobs of a study file that are not done")
    r.add_argument("study", metavar="STUDY.toml")
    r.add_argument("--out", default=None, metavar="DIR", help="output root (default: the file's out)")
    r.add_argument("--preset", type=choice(("thesis", "laptop", "smoke"), "preset"), default=None,
                   help="override the file's preset (e.g. smoke for a quick check)")
    r.add_argument("--seeds", type=int, default=None, metavar="N", help="override the file's seeds")
    r.add_argument("--device", type=choice(("cpu", "cuda", "auto"), "device"), default=None)
    r.add_argument("--quiet", action="store_true", help="no progress output")
    add_executor_args(r)
    r.set_defaults(**{d: None for d in EXECUTOR_KEYS.values()})   # only what the command line sets overrides
    s = sub.add_parser("status", help="done / running / failed / pending per job, from the job directories")
    s.add_argument("study", metavar="STUDY.toml|OUT")
    s.add_argument("--out", default=None, metavar="DIR", help="output root (default: the file's out)")
    s.add_argument("-v", "--verbose", action="store_true", help="list every job")
    rep = sub.add_parser("report", help="curves, AUBC table and PPM of the study's AL runs (experiments.report)")
    rep.add_argument("study", metavar="STUDY.toml|OUT")
    rep.add_argument("--out", default=None, metavar="DIR", help="output root (default: the file's out)")
    rep.add_argument("--report-dir", default=None, metavar="DIR", help="where the report goes (default: OUT)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"run": cmd_run, "status": cmd_status, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main_guard(main)
