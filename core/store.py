"""Run directories: one per (experiment, dataset, regime, method, seed).

Layout::

    RUN_DIR/config.json    resolved config + a ``realistic_al_run`` marker (written once)
    RUN_DIR/state.json     records of every finished cycle + the pool state after it (atomic)
    RUN_DIR/cycles.jsonl   the same records, one JSON line per cycle (derived view, atomic)
    RUN_DIR/DONE           written when the last cycle finished

Every write goes to a temporary file in the same directory and is renamed into place, so a crash
leaves either the previous or the next consistent state, never a half-written one.  ``state.json``
is the source of truth on resume.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from .errors import UserError

MARKER = "realistic_al_run"
_UMASK = os.umask(0)
os.umask(_UMASK)
FORMAT = 1


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so writers that infer the format from it work)
    for the block to write; renamed into place when the block succeeds, removed when it fails.
    For writers that take a path (``np.save``, ``torch.save``, ``savefig``, Lightning checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results should be readable like any file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
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
    it fails — a reader never sees a half-written folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp creates 0700
        if not path.exists():
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (a lock file, created if missing) for the block.

    A second holder — another process writing the same run directory, output table or study — is
    refused at once with a one-line ``UserError`` naming ``what``; the lock dies with its process
    (``flock``), so a killed writer never leaves a stale lock behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"corrupt run directory: cannot read {what} {path} ({e.__class__.__name__})") from None


class RunStore:
    """Open (or create) a run directory for ``config``.

    * new / empty directory → created, config written;
    * our run with the same config (older configs mapped on read) → resumed (``records`` / ``pool_state`` loaded);
    * our run with a different protocol config, a non-empty foreign directory, or corrupt files →
      ``UserError``; nothing is overwritten.
    ``resume=False`` refuses an existing run instead of continuing it.
    """

    def __init__(self, run_dir: Path, config: dict, resume: bool = True):
        self.dir = Path(run_dir)
        self.config = config
        self.records: list[dict] = []
        self.pool_state: dict | None = None
        self.extra: dict = {}
        cfg_path = self.dir / "config.json"
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"run directory {self.dir} is a file")
        if cfg_path.exists():
            old = _read_json(cfg_path, "config")
            if not isinstance(old, dict) or old.get(MARKER) != FORMAT:
                raise UserError(f"{self.dir} is not a realistic-al run directory (config.json lacks the marker); refusing to overwrite")
            old_cfg, new_cfg = _upgrade(old.get("config", {})), _upgrade(_roundtrip(config))
            keys = sorted(set(new_cfg) | set(old_cfg))
            diff = [k for k in keys if old_cfg.get(k) != new_cfg.get(k)]
            if diff:
                raise UserError(f"{self.dir} holds a run with a different config ({', '.join(diff[:4])}); use another --out or delete it")
            if not resume and (self.dir / "state.json").exists():
                raise UserError(f"{self.dir} already holds a run; pass --resume to continue it or use another --out")
            state_path = self.dir / "state.json"
            if state_path.exists():
                state = _read_json(state_path, "state")
                if not isinstance(state, dict) or "records" not in state or "pool" not in state:
                    raise UserError(f"corrupt run directory: {state_path} lacks records/pool")
                self.records, self.pool_state = state["records"], state["pool"]
                self.extra = state.get("extra", {})
        else:
            if self.dir.exists() and any(p for p in self.dir.iterdir() if not p.name.startswith(".")):
                raise UserError(f"{self.dir} exists, is not empty and is not a realistic-al run; refusing to write there")
            atomic_write_json(cfg_path, {MARKER: FORMAT, "config": config})

    @property
    def done(self) -> bool:
        return (self.dir / "DONE").exists()

    def commit(self, record: dict, pool_state: dict, extra: dict | None = None) -> None:
        """Append one finished cycle's record together with the pool state after it (atomic)."""
        self.records.append(_roundtrip(record))
        self.pool_state = _roundtrip(pool_state)
        if extra is not None:
            self.extra = _roundtrip(extra)
        atomic_write_json(self.dir / "state.json", {"records": self.records, "pool": self.pool_state, "extra": self.extra})
        atomic_write_text(self.dir / "cycles.jsonl",
                          "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records))

    def save_extra(self, extra: dict) -> None:
        self.extra = _roundtrip(extra)
        atomic_write_json(self.dir / "state.json", {"records": self.records, "pool": self.pool_state, "extra": self.extra})

    def finish(self) -> None:
        atomic_write_text(self.dir / "DONE", "")


def _roundtrip(obj):
    return json.loads(json.dumps(obj, default=_jsonable))


def load_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """(config, records) of a finished or partial run, for reports."""
    cfg = _read_json(Path(run_dir) / "config.json", "config")
    if not isinstance(cfg, dict) or cfg.get(MARKER) != FORMAT:
        raise UserError(f"{run_dir} is not a realistic-al run directory")
    state_path = Path(run_dir) / "state.json"
    records = _read_json(state_path, "state")["records"] if state_path.exists() else []
    return _upgrade(cfg["config"]), records


def _upgrade(config):
    """Configs of older run directories as written today (method names mapped on read)."""
    from .query import upgrade_config
    return upgrade_config(config)
