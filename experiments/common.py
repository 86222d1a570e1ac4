"""The CLI helper every experiment module uses, so flags mean the same everywhere.

* ``Parser`` — an ``argparse.ArgumentParser`` whose errors are one line (``error: ...``), exit 2;
* ``add_common_args`` — ``--seeds --seed-offset --out --preset --resume --device --quiet --threads --dry-run``;
* ``apply_threads`` — the CPU thread policy of ``core.threads`` for ``--threads`` (recorded by each run);
* ``positive_float`` / ``positive_int`` — argparse types for β, sizes and counts; ``print_dry_run``;
* ``main_guard`` — runs ``main`` and turns ``UserError`` into one line on stderr with exit 2
  (no traceback), Ctrl-C into exit 130 with a note that ``--resume`` continues the run;
* ``add_executor_args`` / ``executor_from_args`` — ``--executor serial|ray|slurm`` and its options;
* ``Progress`` — rich bars on a terminal, one plain line per finished unit elsewhere (silent with ``--quiet``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Sequence

from core import validate
from core.errors import UserError, disk_error

PRESETS = ("thesis", "laptop", "smoke")


class Parser(argparse.ArgumentParser):
    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*a, **kw)

    def error(self, message):  # one line, exit 2
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


def choice(valid: Sequence[str], what: str) -> Callable[[str], str]:
    """argparse ``type=`` that rejects unknown values with one line listing the valid ones."""
    valid = list(valid)

    def parse(value: str) -> str:
        if value not in valid:
            raise argparse.ArgumentTypeError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
        return value
    parse.__name__ = what
    return parse


def _checked(check: Callable, name: str) -> Callable[[str], object]:
    """argparse ``type=`` from a ``core.validate`` check: its ``UserError`` becomes the one-line
    ``error: argument --flag: ...`` (exit 2) before anything runs."""
    def parse(value: str):
        try:
            return check(value)
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = name
    return parse


def int_arg(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """Integer flag within bounds (``int_arg(1)``: a positive count, ``int_arg(0)``: non-negative)."""
    return _checked(lambda v: validate.integer(v, "value", minimum, maximum), "integer")


def float_arg(positive: bool = False) -> Callable[[str], float]:
    return _checked(lambda v: validate.number(v, "value", positive), "number")


seed_arg = _checked(lambda v: validate.seed(v, "seed"), "seed")
out_arg = _checked(lambda v: str(validate.output_dir(v, "folder")), "folder")
dir_arg = _checked(lambda v: str(validate.input_dir(v, "folder")), "folder")


def seed_list(first: int, n: int) -> list[int]:
    """The seeds ``first .. first + n - 1`` of ``--seed-offset`` / ``--seeds`` (all < 2**32)."""
    return validate.seed_range(first, n)


def add_common_args(p: argparse.ArgumentParser, default_out: str) -> None:
    g = p.add_argument_group("run control")
    g.add_argument("--seeds", type=int_arg(1), default=3, metavar="N",
                   help="number of repetitions (seeds S..S+N-1, S = --seed-offset); every random choice of a "
                        "run (splits where the experiment draws them, training, queries) follows its seed "
                        "(default: 3, as in the thesis)")
    g.add_argument("--seed-offset", type=seed_arg, default=0, metavar="S", help="first seed (default 0; seeds are < 2**32)")
    g.add_argument("--out", type=out_arg, default=default_out, metavar="DIR",
                   help=f"output root; one run directory per method and seed below it (default: {default_out})")
    g.add_argument("--preset", type=choice(PRESETS, "preset"), default="laptop",
                   help="thesis = every thesis setting (GPU cluster scale); laptop = same protocol, "
                        "smaller pool/test set/width/epochs for a 2-core CPU; smoke = tiny, for tests "
                        "(default: laptop)")
    g.add_argument("--resume", action="store_true",
                   help="continue runs found under --out (finished cycles are kept, same numbers as an "
                        "uninterrupted run); without it an existing run is never touched")
    g.add_argument("--device", type=choice(("cpu", "cuda", "auto"), "device"), default="auto",
                   help="cpu, cuda or auto (cuda when available; default)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_arg(p, g)
    g.add_argument("--dry-run", action="store_true",
                   help="print the fully resolved configuration (data, regime/budgets, hyper-parameters, model, "
                        "where the outputs would go) as JSON and exit without training or writing anything")


def add_threads_arg(p: argparse.ArgumentParser, group=None) -> None:
    """``--threads N`` (once per parser, whichever of ``add_common_args`` / ``add_executor_args`` comes first)."""
    if "--threads" in p._option_string_actions:
        return
    (group or p).add_argument(
        "--threads", type=int_arg(1, 1024), default=None, metavar="N",
        help="torch intra-op and BLAS threads per run (per job under every executor, so numbers match; "
             "recorded in each run's config). Default: $OMP_NUM_THREADS when set, else 1 on CPU — the cores "
             "are used by running runs side by side; on a shared 2-core machine 2 threads train several "
             "times slower than 1 — and torch's choice on CUDA")


def apply_threads(args: argparse.Namespace, device: str = "cpu") -> int:
    """Resolve ``--threads`` by the policy of ``core.threads`` and apply it to this process; returns
    the torch thread count in force (what the run records in its config)."""
    from core import threads
    return threads.apply(threads.resolve(getattr(args, "threads", None), device))


def positive_float(what: str) -> Callable[[str], float]:
    """argparse ``type=`` for a finite number > 0 (e.g. β): anything else is the one-line error."""
    return _checked(lambda v: validate.number(v, what, positive=True), what)


def positive_int(what: str, minimum: int = 1) -> Callable[[str], int]:
    """argparse ``type=`` for an integer ≥ ``minimum``."""
    return _checked(lambda v: validate.integer(v, what, minimum), what)


def print_dry_run(config: dict) -> int:
    """``--dry-run``: the resolved configuration as JSON on stdout; nothing is written."""
    import json
    print(json.dumps(config, indent=1, default=str, ensure_ascii=False))
    return 0


def _positive(kind: Callable, what: str, minimum: float = 1):
    def parse(value: str):
        try:
            v = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {value!r}") from None
        if not v >= minimum:
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {value}")
        return v
    parse.__name__ = what
    return parse


def add_executor_args(p: argparse.ArgumentParser) -> None:
    """``--executor serial|ray|slurm`` and its options: where the runs (jobs) of a command go."""
    from core.executors import EXECUTORS
    g = p.add_argument_group("execution (results do not depend on it)")
    g.add_argument("--executor", type=choice(EXECUTORS, "executor"), default=None,
                   help="serial: one job after the other in this process (default); ray: a local Ray instance "
                        "(--workers, --threads, --gpus-per-run) or a cluster (--ray-address); slurm: job arrays "
                        "per stage via submitit (--slurm-*). ray/slurm need pip install -e '.[cluster]'")
    g.add_argument("--workers", type=_positive(int, "--workers"), default=None, metavar="N",
                   help="concurrent jobs of a local Ray instance (default: CPU cores / --threads); --workers N > 1 "
                        "without --executor means --executor ray")
    add_threads_arg(p, g)
    g.add_argument("--gpus-per-run", type=_positive(float, "--gpus-per-run", 0), default=0.0, metavar="F",
                   help="ray: GPUs per job, fractions allowed (0.25 = four jobs share a GPU; default 0)")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="ray: join a running cluster (e.g. auto or ray://head:10001) instead of starting one")
    g.add_argument("--retries", type=_positive(int, "--retries", 0), default=2, metavar="N",
                   help="ray/slurm: rerun a job whose process died (killed, pre-empted, lost node) up to N times; "
                        "it resumes from its last committed cycle (default 2)")
    g.add_argument("--slurm-partition", default=None, metavar="P", help="slurm: partition (default: the cluster's)")
    g.add_argument("--slurm-time", type=_positive(int, "--slurm-time"), default=60, metavar="MIN",
                   help="slurm: time limit per job in minutes; a job that hits it is requeued and resumes (default 60)")
    g.add_argument("--slurm-gpus", type=_positive(int, "--slurm-gpus", 0), default=0, metavar="N",
                   help="slurm: GPUs per job (default 0)")
    g.add_argument("--slurm-array-parallelism", type=_positive(int, "--slurm-array-parallelism"), default=64,
                   metavar="N", help="slurm: at most N jobs of one array run at once (default 64)")
    g.add_argument("--slurm-local", action="store_true",
                   help="slurm: run the same job arrays through submitit's local executor on this machine "
                        "(no Slurm needed; for trying a study file)")


def executor_from_args(args: argparse.Namespace, device: str = "cpu"):
    """(executor, threads per job) from ``add_executor_args`` flags."""
    from core.executors import make_executor
    kind = args.executor or ("ray" if (args.workers or 1) > 1 else "serial")
    from core.threads import resolve
    threads = resolve(args.threads, device)
    ex = make_executor(kind, workers=args.workers, gpus_per_run=args.gpus_per_run, ray_address=args.ray_address,
                       retries=args.retries, slurm_partition=args.slurm_partition, slurm_time=args.slurm_time,
                       slurm_gpus=args.slurm_gpus, slurm_array_parallelism=args.slurm_array_parallelism,
                       slurm_local=args.slurm_local)
    return ex, threads


def resolve_device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is available; use --device cpu")
    return name


def main_guard(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    from core.study import StudyFailed
    try:
        code = main(argv)
    except StudyFailed as e:   # the rest of the study ran; list what did not, one line each
        sys.stderr.write("".join(f"{line}\n" for line in e.lines))
        sys.stderr.write(f"error: {len(e.lines)} job(s) failed; fix the cause and rerun the same command "
                         "(finished jobs are kept)\n")
        sys.exit(1)
    except UserError as e:
        _fail(e)
    except OSError as e:  # disk full, read-only or unreadable path met outside the atomic writers
        err = disk_error(e)
        if err is None:
            raise
        _fail(err)
    except MemoryError:
        _fail(UserError("out of memory: the requested sizes do not fit into this machine's memory; "
                        "choose smaller sizes or a smaller preset"))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; finished cycles are saved — rerun with --resume to continue\n")
        sys.exit(130)
    sys.exit(code or 0)


def _fail(e: UserError) -> None:
    msg = " ".join(str(e).split())  # one line, whatever the message held
    sys.stderr.write(f"error: {msg}\n")
    sys.exit(2)


class Progress:
    """Progress for every CLI: ``with Progress(quiet) as pr: t = pr.task("desc", total)``.

    On a terminal: rich bars.  Elsewhere (a log file, a cluster job) no bars but one plain line per
    finished unit, ``[12/40] cifar10/low/badge seed1 cycle 3/11 acc 0.612 (41 s)``: lines given to
    ``advance(..., line=...)``, and for tasks made with ``lines=True`` one per ``advance`` (with the
    task's description and the time since its previous line).  ``REALISTIC_AL_PROGRESS=bars|lines``
    overrides the detection; ``--quiet`` / ``REALISTIC_AL_QUIET=1`` silence both.
    """

    def __init__(self, quiet: bool = False, lines: bool | None = None):
        self.quiet = quiet or os.environ.get("REALISTIC_AL_QUIET") == "1"
        mode = os.environ.get("REALISTIC_AL_PROGRESS", "")
        if lines is None:
            lines = mode == "lines" or (mode != "bars" and not sys.stderr.isatty())
        self.lines = bool(lines) and not self.quiet
        self._p = None
        self._tasks: dict[int, dict] = {}

    def __enter__(self):
        if not self.quiet and not self.lines:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RP, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            self._p = RP(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
            self._p.__enter__()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)

    def task(self, description: str, total: int | None, lines: bool = False):
        """A bar; ``lines=True``: in line mode every ``advance`` of it prints a line."""
        if self.quiet:
            return None
        tid = self._p.add_task(description, total=total) if self._p is not None else len(self._tasks)
        self._tasks[tid] = {"desc": description, "total": total, "done": 0, "lines": lines, "t": time.perf_counter()}
        return tid

    def advance(self, task, n: int = 1, description: str | None = None, line: str | None = None):
        """Advance ``task`` by ``n``; ``line``: the text of the finished unit (printed in line mode)."""
        t = self._tasks.get(task) if task is not None else None
        if t is None:
            return
        t["done"] += n
        if description:
            t["desc"] = description
        if self._p is not None:
            self._p.update(task, advance=n, **({"description": description} if description else {}))
        elif self.lines and (line is not None or (t["lines"] and n > 0)):
            now = time.perf_counter()
            text = line if line is not None else f"{t['desc']} ({now - t['t']:.0f} s)"
            t["t"] = now
            total = f"/{t['total']}" if t["total"] is not None else ""
            print(f"[{t['done']}{total}] {text}", file=sys.stderr, flush=True)

    def grow(self, task, total: int):
        """Set a new total (work discovered on the way)."""
        t = self._tasks.get(task) if task is not None else None
        if t is None:
            return
        t["total"] = total
        if self._p is not None:
            self._p.update(task, total=total)

    def restart(self, task, total: int | None, description: str):
        """Reuse a bar for a new piece of work (shown again, count reset)."""
        t = self._tasks.get(task) if task is not None else None
        if t is None:
            return
        t.update(total=total, desc=description, done=0, t=time.perf_counter())
        if self._p is not None:
            self._p.reset(task, total=total, description=description, visible=True)

    def hide(self, task):
        if self._p is not None and task is not None:
            self._p.update(task, visible=False)

    def log(self, msg: str):
        if self._p is not None:
            self._p.console.log(msg)
        elif not self.quiet:
            print(msg, file=sys.stderr, flush=True)
