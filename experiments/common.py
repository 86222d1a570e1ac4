"""The CLI helper every experiment module uses, so flags mean the same everywhere.

* ``Parser`` — an ``argparse.ArgumentParser`` whose errors are one line (``error: ...``), exit 2;
* ``add_common_args`` — ``--seeds --seed-offset --out --preset --resume --device --quiet``;
* ``main_guard`` — runs ``main`` and turns ``UserError`` into one line on stderr with exit 2
  (no traceback), Ctrl-C into exit 130 with a note that ``--resume`` continues the run;
* ``Progress`` — rich progress bars (silent with ``--quiet``).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from core.errors import UserError

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


def add_common_args(p: argparse.ArgumentParser, default_out: str) -> None:
    g = p.add_argument_group("run control")
    g.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="number of repetitions (seeds S..S+N-1, S = --seed-offset); every random choice of a "
                        "run (splits where the experiment draws them, training, queries) follows its seed "
                        "(default: 3, as in the thesis)")
    g.add_argument("--seed-offset", type=int, default=0, metavar="S", help="first seed (default 0)")
    g.add_argument("--out", default=default_out, metavar="DIR",
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


def resolve_device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is available; use --device cpu")
    return name


def main_guard(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    try:
        code = main(argv)
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; finished cycles are saved — rerun with --resume to continue\n")
        sys.exit(130)
    sys.exit(code or 0)


class Progress:
    """Thin wrapper over rich.progress: ``with Progress(quiet) as pr: t = pr.task("desc", total)``."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet or os.environ.get("REALISTIC_AL_QUIET") == "1"
        self._p = None

    def __enter__(self):
        if not self.quiet:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RP, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            self._p = RP(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
            self._p.__enter__()
        return self

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)

    def task(self, description: str, total: int | None):
        return None if self._p is None else self._p.add_task(description, total=total)

    def advance(self, task, n: int = 1, description: str | None = None):
        if self._p is not None and task is not None:
            self._p.update(task, advance=n, **({"description": description} if description else {}))

    def restart(self, task, total: int | None, description: str):
        """Reuse a bar for a new piece of work (shown again, count reset)."""
        if self._p is not None and task is not None:
            self._p.reset(task, total=total, description=description, visible=True)

    def hide(self, task):
        if self._p is not None and task is not None:
            self._p.update(task, visible=False)

    def log(self, msg: str):
        if self._p is not None:
            self._p.console.log(msg)
        elif not self.quiet:
            print(msg, file=sys.stderr)
