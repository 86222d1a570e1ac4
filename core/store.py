"""Run directories: one per (experiment, dataset, regime, method, seed).

Layout::

    RUN_DIR/config.json    resolved config + a ``realistic_al_run`` marker (written once)
    RUN_DIR/state.json     THE source of truth: records of every finished cycle, the pool state after
                           the last one, domain extras and the ``done`` flag (one atomic write per commit)
    RUN_DIR/cycles.jsonl   derived view: the same records, one JSON line per cycle
    RUN_DIR/DONE           derived marker: present exactly when ``state.json`` says ``done``
    RUN_DIR/.lock          held (``flock``) by the one process writing the run

Every write goes to a temporary file in the same directory and is renamed into place, so a crash
leaves either the previous or the next consistent file, never a half-written one.  A commit is one
atomic write of ``state.json``; the view and the marker are rewritten after it, and re-derived from
``state.json`` whenever a run is opened — to resume it (``RunStore``) or to report it
(``load_run``) — so a kill between two writes never leaves a view that contradicts the truth.
Temporary files of killed writes are removed when the run is next opened.

Fault injection (tests): every rename of ``atomic_path`` / ``atomic_write`` / ``atomic_dir`` (and
every other write that calls ``write_point``) is a named write point ``<file name>:pre`` (temporary file complete, not yet renamed)
/ ``<file name>:post`` (renamed).  ``REALISTIC_AL_KILL_AT=<name>:<phase>:<k>`` (the k-th occurrence of
that point in this process) or ``REALISTIC_AL_KILL_AT=#<n>`` (the n-th write point of any name) makes
the process SIGKILL itself there (``<dir>/<file>:<phase>:1`` names a file by its path's end; with
``REALISTIC_AL_KILL_ONCE=FLAG`` only the first process to get there dies, e.g. a worker but not its
retry); ``REALISTIC_AL_WRITE_LOG=FILE`` appends one line per write point.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from .errors import UserError, disk_error

MARKER = "realistic_al_run"
_UMASK = os.umask(0)
os.umask(_UMASK)
FORMAT = 1
LOCK = ".lock"
KILL_ENV = "REALISTIC_AL_KILL_AT"
LOG_ENV = "REALISTIC_AL_WRITE_LOG"
ONCE_ENV = "REALISTIC_AL_KILL_ONCE"

_points: dict[str, int] = {}
_n_points = 0


def write_point(path: Path, phase: str) -> None:
    """Fault-injection hook at a write point (see module doc); a no-op unless the test env is set."""
    kill, log = os.environ.get(KILL_ENV), os.environ.get(LOG_ENV)
    if not kill and not log:
        return
    global _n_points
    _n_points += 1
    name = f"{Path(path).name}:{phase}"
    _points[name] = _points.get(name, 0) + 1
    if log:
        with open(log, "a") as f:
            f.write(f"{_n_points}\t{name}\t{_points[name]}\t{path}\t{os.getpid()}\n")
    if kill and (kill == f"#{_n_points}" or kill == f"{name}:{_points[name]}" or _path_point(kill, path, phase)):
        once = os.environ.get(ONCE_ENV)
        if once:  # one kill across processes (e.g. the first worker that gets there, not its retry)
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGKILL)


def _path_point(spec: str, path: Path, phase: str) -> bool:
    """``<dir>/<file>:<phase>:<k>`` names one file by the end of its path (k = 1 only)."""
    target, _, rest = spec.rpartition(":")
    target, _, ph = target.rpartition(":")
    return "/" in target and rest == "1" and ph == phase and Path(path).as_posix().endswith("/" + target)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so writers that infer the format from it work)
    for the block to write; renamed into place when the block succeeds, removed when it fails.
    For writers that take a path (``np.save``, ``torch.save``, ``savefig``, Lightning checkpoints).
    A full disk or a read-only / unwritable folder is one ``UserError`` naming the path."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results should be readable like any file
        write_point(path, "pre")
        os.replace(tmp, path)
        tmp = None
        write_point(path, "post")
    except OSError as e:
        err = disk_error(e, path, "write")
        if err is None:
            raise
        raise err from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, fsync, rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb" if binary else "w") as f:
            write(f)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill in the block; renamed to ``path`` when the block
    succeeds (if another writer got there first, its folder is kept and ours dropped), removed when
    it fails — a reader never sees a half-written folder.  ``clean_temp`` removes the temporary
    folder a killed process left behind."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    except OSError as e:
        raise (disk_error(e, path.parent, "write") or e) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp creates 0700
        if not path.exists():
            write_point(path, "pre")
            os.replace(tmp, path)
            write_point(path, "post")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def clean_temp(folder: Path, recursive: bool = False, prefix: str = ".") -> int:
    """Remove temporary files (``.<stem>.*.tmp<suffix>`` of ``atomic_path``) and folders
    (``.<name>.tmp-*`` of ``atomic_dir``) of killed writes in ``folder`` (below it with
    ``recursive``) whose names start with ``prefix``.  Call only while holding the lock that guards
    those writes.  Returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for p in (folder.rglob(f"{prefix}*") if recursive else folder.glob(f"{prefix}*")):
        if not p.name.startswith("."):
            continue
        if p.is_file() and (p.name.endswith(".tmp") or ".tmp." in p.name):
            p.unlink(missing_ok=True)
            n += 1
        elif p.is_dir() and ".tmp-" in p.name:
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n


@contextlib.contextmanager
def undo_dirs(path: Path, *files: Path) -> Iterator[None]:
    """When the block fails and ``path`` did not exist before it, remove ``files`` and the folders
    created on the way to ``path`` (if they are empty again), so a refused input leaves nothing."""
    path = Path(path).absolute()
    new = []
    p = path
    while not p.exists():
        new.append(p)
        p = p.parent
    try:
        yield
    except BaseException:
        if new:
            for f in files:
                with contextlib.suppress(OSError):
                    Path(f).unlink()
            for d in new:  # deepest first
                with contextlib.suppress(OSError):
                    d.rmdir()
        raise


@contextlib.contextmanager
def exclusive(path: Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (a lock file, created if missing) for the block.

    A second holder — another process writing the same run directory, output table or study — is
    refused at once with a one-line ``UserError`` naming ``what`` (``wait=True``: it waits for the
    first to finish instead); the lock dies with its process (``flock``), so a killed writer never
    leaves a stale lock behind."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    except OSError as e:
        err = disk_error(e, path, "write")
        if err is None:
            raise
        raise err from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{what} is being written by another process (lock {path}); "
                            "wait for it to finish or use another --out") from None
        yield
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(o):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _read_json(path: Path, what: str):
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        err = disk_error(e, path, "read")
        raise (err or UserError(f"corrupt run directory: cannot read {what} {path} ({e.__class__.__name__})")) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"corrupt run directory: {what} {path} is not valid JSON ({e.__class__.__name__}); "
                        f"delete {Path(path).parent} to start this run over") from None


def _read_config(run_dir: Path) -> dict:
    cfg = _read_json(run_dir / "config.json", "config")
    if not isinstance(cfg, dict) or cfg.get(MARKER) != FORMAT or not isinstance(cfg.get("config"), dict):
        raise UserError(f"{run_dir} is not a realistic-al run directory (config.json lacks the marker); refusing to overwrite")
    return cfg


def _read_state(run_dir: Path) -> dict:
    """The validated truth of a run: ``{"records", "pool", "extra", "done"}`` (empty when no cycle
    finished yet).  Wrong types are one ``UserError`` naming the file and how to recover."""
    path = Path(run_dir) / "state.json"
    if not path.exists():
        return {"records": [], "pool": None, "extra": {}, "done": False}
    state = _read_json(path, "state")

    def bad(what):
        return UserError(f"corrupt run directory: {path}: {what}; delete {run_dir} to start this run over")
    if not isinstance(state, dict) or "records" not in state or "pool" not in state:
        raise bad("lacks records/pool")
    records, pool, extra = state["records"], state["pool"], state.get("extra", {})
    if not isinstance(records, list):
        raise bad(f"records is a {type(records).__name__}, not a list")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise bad(f"record {i} is a {type(r).__name__}, not an object")
        for key, typ in (("cycle", int), ("budget", (int, float)), ("metrics", dict), ("queried", list)):
            if key in r and (not isinstance(r[key], typ) or isinstance(r[key], bool)):
                raise bad(f"record {i}: {key!r} has the wrong type ({type(r[key]).__name__})")
        if "cycle" in r and r["cycle"] != i:
            raise bad(f"record {i} is labelled cycle {r['cycle']}")
    if not (pool is None or isinstance(pool, dict)) or (records and pool is None):
        raise bad("pool state missing or of the wrong type")
    if not isinstance(extra, dict):
        raise bad("extra is not an object")
    legacy_done = (Path(run_dir) / "DONE").exists() and bool(records)   # runs written before the flag existed
    done = state.get("done", legacy_done)
    if not isinstance(done, bool):
        raise bad("done is not true/false")
    return {"records": records, "pool": pool, "extra": extra, "done": done}


def _view_text(records: list) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)


def _repair(run_dir: Path, state: dict) -> list[str]:
    """Re-derive ``cycles.jsonl`` and ``DONE`` from the truth where they differ; returns what was fixed."""
    fixed = []
    view = Path(run_dir) / "cycles.jsonl"
    text = _view_text(state["records"])
    try:
        current = view.read_text() if view.exists() else None
    except (OSError, UnicodeDecodeError):
        current = None
    if current != text and (state["records"] or current is not None):
        atomic_write_text(view, text)
        fixed.append("cycles.jsonl")
    marker = Path(run_dir) / "DONE"
    if state["done"] and not marker.exists():
        atomic_write_text(marker, "")
        fixed.append("DONE")
    elif not state["done"] and marker.exists():
        marker.unlink()
        fixed.append("DONE (stale)")
    return fixed


class RunStore:
    """Open (or create) a run directory for ``config`` and hold its lock until ``close()`` (or the
    end of a ``with`` block, or the process).

    * new / empty directory → created, config written;
    * our run with the same config (older configs mapped on read) → resumed (``records`` / ``pool_state`` loaded; the
      view and the DONE marker repaired from ``state.json``; temp files of killed writes removed);
    * our run with a different protocol config, a non-empty foreign directory, or corrupt files →
      ``UserError``; nothing is overwritten;
    * a run another process is writing → ``UserError`` (one writer per run directory).
    ``resume=False`` refuses an existing run instead of continuing it.
    """

    def __init__(self, run_dir: Path, config: dict, resume: bool = True):
        self.dir = Path(run_dir)
        self.config = config
        self.records: list[dict] = []
        self.pool_state: dict | None = None
        self.extra: dict = {}
        self.repaired: list[str] = []
        self._done = False
        self._lock: contextlib.ExitStack | None = None
        self._check(resume)          # read-only: refusals come before anything is written
        lock = contextlib.ExitStack()
        lock.enter_context(exclusive(self.dir / LOCK, f"run directory {self.dir}"))
        self._lock = lock
        try:
            existing = self._check(resume)   # again, now that no other writer can interfere
            clean_temp(self.dir, recursive=True)
            if existing:
                state = _read_state(self.dir)
                self.records, self.pool_state, self.extra, self._done = (
                    state["records"], state["pool"], state["extra"], state["done"])
                self.repaired = _repair(self.dir, state)
            else:
                atomic_write_json(self.dir / "config.json", {MARKER: FORMAT, "config": self.config})
        except BaseException:
            self.close()
            raise

    def _check(self, resume: bool) -> bool:
        """Validate the directory against ``config``; True when it already holds this run."""
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"run directory {self.dir} is a file")
        if not (self.dir / "config.json").exists():
            if self.dir.exists() and any(p for p in self.dir.iterdir() if not p.name.startswith(".")):
                raise UserError(f"{self.dir} exists, is not empty and is not a realistic-al run; refusing to write there")
            return False
        old, new = _upgrade(_read_config(self.dir)["config"]), _upgrade(_roundtrip(self.config))
        diff = [k for k in sorted(set(new) | set(old)) if old.get(k) != new.get(k)]
        if diff:
            raise UserError(f"{self.dir} holds a run with a different config ({', '.join(diff[:4])}); use another --out or delete it")
        if not resume and (self.dir / "state.json").exists():
            raise UserError(f"{self.dir} already holds a run; pass --resume to continue it or use another --out")
        _read_state(self.dir)
        return True

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the run directory's lock (idempotent); the store cannot write afterwards."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def done(self) -> bool:
        return self._done

    # -- writes --------------------------------------------------------------------------------
    def _write_state(self) -> None:
        if self._lock is None:
            raise RuntimeError(f"run store {self.dir} is closed")
        atomic_write_json(self.dir / "state.json", {"records": self.records, "pool": self.pool_state,
                                                    "extra": self.extra, "done": self._done})

    def commit(self, record: dict, pool_state: dict, extra: dict | None = None) -> None:
        """Append one finished cycle's record together with the pool state after it: one atomic
        write of the truth, then the derived view."""
        self.records.append(_roundtrip(record))
        self.pool_state = _roundtrip(pool_state)
        if extra is not None:
            self.extra = _roundtrip(extra)
        self._write_state()
        atomic_write_text(self.dir / "cycles.jsonl", _view_text(self.records))

    def save_extra(self, extra: dict) -> None:
        self.extra = _roundtrip(extra)
        self._write_state()

    def finish(self) -> None:
        self._done = True
        self._write_state()
        atomic_write_text(self.dir / "DONE", "")


def _roundtrip(obj):
    return json.loads(json.dumps(obj, default=_jsonable))


def load_state(run_dir: Path) -> tuple[dict, dict]:
    """(config, validated state) of a run, for reports; the derived files are repaired from the
    truth when no other process is writing the run and the directory is writable."""
    run_dir = Path(run_dir)
    cfg = _read_config(run_dir)
    state = _read_state(run_dir)
    try:
        with exclusive(run_dir / LOCK, f"run directory {run_dir}"):
            _repair(run_dir, _read_state(run_dir))
    except (UserError, OSError):
        pass  # busy (its writer repairs it) or read-only: the records come from the truth anyway
    return _upgrade(cfg["config"]), state


def load_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """(config, records) of a finished or partial run, for reports (records from ``state.json``)."""
    cfg, state = load_state(run_dir)
    return cfg, state["records"]


def find_runs(root: Path, match: dict) -> list[tuple[Path, dict]]:
    """Every run directory below ``root`` (sorted) whose config agrees with ``match`` on all of its
    keys, as ``(run_dir, config)`` — the runs of one setting, whichever process wrote them, so a
    table rebuilt from them never forgets a method another process finished."""
    out = []
    want = _roundtrip(match)
    for cfg_path in sorted(Path(root).rglob("config.json")):
        try:
            cfg = _upgrade(_read_config(cfg_path.parent)["config"])
        except UserError:
            continue  # not a run directory (e.g. a dataset's own config.json)
        if all(cfg.get(k) == v for k, v in want.items()):
            out.append((cfg_path.parent, cfg))
    return out


def _upgrade(config):
    """Configs of older run directories as written today (method names mapped on read)."""
    from .query import upgrade_config
    return upgrade_config(config)
