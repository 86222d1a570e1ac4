"""Hyperparameter selection before the AL loop (spec §9, Table A.4 grids; §14 item 17) with Optuna.

Once per AL experiment (dataset × regime × paradigm × seed): train on the **starting budget**, score on
the regime's **validation subset** (best-epoch validation metric: accuracy, balanced accuracy on
imbalanced/roll-out data), over the paradigm's grid:

* supervised: lr {0.1, 0.01} × wd {5e-3, 5e-4} × augmentation {randaugment, standard}      (8)
* selfsl:     lr {0.01, 0.001} × wd {5e-3, 5e-4} × augmentation {randaugment_weak, standard} (8)
* fixmatch:   lr {0.03, 0.3} × wd {5e-3, 5e-4}                                               (4)

The grid is evaluated exhaustively in a fixed order (each point enqueued as an Optuna trial with
fixed parameters, ask-and-tell; the study's sampler is never consulted).  The study lives in ``STUDY_DIR/study.journal``
(``optuna.storages.JournalStorage`` over a ``JournalFileBackend``): a killed tuning resumes without
repeating finished (complete or pruned) trials — trials left RUNNING by the killed process are
marked FAIL and their grid point is trained again.  Hopeless trials are pruned with a
``MedianPruner`` fed per epoch by ``PruningCallback`` (a Lightning callback reading the validation
metric that ``training.KeepBest`` records).  The selection is written atomically to
``STUDY_DIR/best.json`` and reused as is when present for the same study.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import asdict, is_dataclass, replace
from pathlib import Path
from typing import Callable

import lightning as L

from core.errors import UserError
from core.store import atomic_write_json

from .paradigms import PARADIGMS
from .training import KeepBest

SPACES: dict[str, dict[str, list]] = {name: p.space for name, p in PARADIGMS.items()}


def grid(space: dict[str, list]) -> list[dict]:
    """All grid points in a fixed order (keys sorted, values in the given order)."""
    keys = sorted(space)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(space[k] for k in keys))]


def apply_params(cfg, params: dict):
    """The training config with the tuned values (``lr``, ``weight_decay``, ``augmentation``)."""
    return replace(cfg, **params)


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


class PruningCallback(L.Callback):
    """Reports the epoch's validation metric (the last value of the run's ``KeepBest`` history) to the
    trial and stops training when the pruner says so.  Must come after ``KeepBest`` in the callbacks."""

    def __init__(self, trial):
        self.trial, self.pruned_at, self.reported = trial, None, 0

    def on_validation_epoch_end(self, trainer, module):
        if trainer.sanity_checking:
            return
        keep = next((c for c in trainer.callbacks if isinstance(c, KeepBest)), None)
        if keep is None or len(keep.history) <= self.reported:
            return
        step = len(keep.history) - 1
        self.reported = len(keep.history)
        value = keep.history[-1]
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), step)
        if self.trial.should_prune():
            self.pruned_at = step
            trainer.should_stop = True


def study_name(paradigm: str, base_cfg, space: dict, key: dict | None) -> str:
    cfg = asdict(base_cfg) if is_dataclass(base_cfg) else base_cfg
    blob = json.dumps({"paradigm": paradigm, "cfg": cfg, "space": space, "key": key or {}}, sort_keys=True, default=str)
    return f"{paradigm}-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"


def tune(paradigm: str, fit_fn: Callable, base_cfg, study_dir: str | Path, *, space: dict | None = None,
         key: dict | None = None, seed: int = 0, prune: bool = True, n_startup_trials: int = 2,
         n_warmup_steps: int | None = None, progress: Callable[[str], None] | None = None) -> tuple[dict, Path]:
    """Grid search of ``space`` (default ``SPACES[paradigm]``); returns (best params, path of best.json).

    ``fit_fn(cfg, callbacks) -> (net, info)`` trains one configuration (``paradigms.fit_fn``) and reports
    ``info["best_val"]``; ``key`` (dataset, regime, seed, labelled ids...) goes into the study name, so a
    changed setting never reuses old trials."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if paradigm not in SPACES:
        raise UserError(f"unknown paradigm {paradigm!r}; valid: {', '.join(SPACES)}")
    space = space or SPACES[paradigm]
    points = grid(space)
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    name = study_name(paradigm, base_cfg, space, key)
    best_path = study_dir / "best.json"
    if best_path.exists():
        try:
            saved = json.loads(best_path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            saved = {}
        if isinstance(saved, dict) and saved.get("study") == name and isinstance(saved.get("params"), dict):
            return dict(saved["params"]), best_path
    storage = JournalStorage(JournalFileBackend(str(study_dir / "study.journal")))
    epochs = int(getattr(base_cfg, "epochs", 4))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials,
                                          n_warmup_steps=n_warmup_steps if n_warmup_steps is not None else max(1, epochs // 4))
              if prune else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    # a killed process leaves its trial RUNNING: fail it, its grid point is trained again
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    finished = {_key(t.params) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    todo = [p for p in points if _key(p) not in finished]
    # grid order, one queued trial at a time: a resumed study runs its remaining points in the same
    # order (and so with the same pruning context) as an uninterrupted one
    for n, p in enumerate(todo):
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not any(t.system_attrs.get("fixed_params") == p for t in waiting):
            study.enqueue_trial(p)
        trial = study.ask()
        params = {k: trial.suggest_categorical(k, space[k]) for k in sorted(space)}
        cb = PruningCallback(trial) if prune else None
        if progress is not None:
            progress(f"tuning {paradigm}: trial {n + 1}/{len(todo)} ({', '.join(f'{k}={v}' for k, v in params.items())})")
        try:
            _, info = fit_fn(apply_params(base_cfg, params), [cb] if cb is not None else [])
        except Exception:
            study.tell(trial, state=TrialState.FAIL)
            raise
        value = info.get("best_val")
        if cb is not None and cb.pruned_at is not None:
            study.tell(trial, state=TrialState.PRUNED)
        elif value is None or not math.isfinite(float(value)):
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, float(value))
    return _select(study, points, name, paradigm, best_path, space), best_path


def _select(study, points: list[dict], name: str, paradigm: str, best_path: Path, space: dict) -> dict:
    from optuna.trial import TrialState
    results = {}
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            results[_key(t.params)] = (t.state.name.lower(), t.value, t.number)
    complete = [(i, p) for i, p in enumerate(points) if results.get(_key(p), ("",))[0] == "complete"]
    if not complete:
        raise UserError(f"HP tuning ({paradigm}) finished no trial; see {best_path.parent}")
    # best value; ties → the first grid point (deterministic)
    best_i, best = max(complete, key=lambda ip: (results[_key(ip[1])][1], -ip[0]))
    out = {"study": name, "paradigm": paradigm, "params": best, "value": results[_key(best)][1],
           "space": space, "journal": str(best_path.parent / "study.journal"),
           "trials": [{"params": p, "state": results.get(_key(p), ("missing", None, None))[0],
                       "value": results.get(_key(p), (None, None, None))[1]} for p in points]}
    atomic_write_json(best_path, out)
    return dict(best)
