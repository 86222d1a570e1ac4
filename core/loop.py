"""The active-learning loop: retrain from scratch → evaluate → query → label → record, resumable.

The loop is domain-free.  A domain supplies four callables:

* ``train(pool, cycle) -> model``          fresh model fitted on the labelled set;
* ``evaluate(model, pool) -> dict``        test metrics (JSON-able values);
* ``evidence(model, pool) -> Evidence``    lazy evidence over ``pool.unlabelled`` (its
                                           ``candidates``; the loop sets them when the domain did not);
* ``query``: a ``core.query.QueryMethod``; its ``QueryResult`` (ids, scores, detail) is stored with
  the cycle as a bounded summary (``record["query"]``: best picks, pool score statistics and
  histogram, method detail such as β or ClaSP's quotas).

The evidence context holds ``cycle`` and ``beta`` (the run's β, default 1) plus whatever the
domain's ``context(cycle)`` adds.  Randomness: cycle k's query draws from :func:`cycle_rng` and the
domain's ``train`` is expected to seed itself from (seed, cycle), so a resumed run reproduces an
uninterrupted one exactly.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Sequence

import numpy as np

from . import seeds
from .errors import UserError
from .pool import Pool
from .query import Evidence, QueryMethod
from .store import RunStore


class SimulatedCrash(RuntimeError):
    """Raised by the fault-injection hook (env ``REALISTIC_AL_CRASH_AFTER_CYCLE``) in tests."""


def cycle_rng(seed: int, cycle: int) -> np.random.Generator:
    """The generator of cycle ``cycle``'s query (``core.seeds`` purpose ``query``)."""
    return seeds.rng(seed, "query", cycle)


class ActiveLearningLoop:
    def __init__(self, pool: Pool, *, train: Callable, evaluate: Callable, evidence: Callable,
                 query: QueryMethod, query_sizes: Sequence[int], store: RunStore, seed: int, beta: float = 1.0,
                 context: Callable[[int], dict] | None = None, progress: Callable[[str], None] | None = None,
                 on_cycle: Callable[[dict], None] | None = None):
        self.pool, self.train, self.evaluate, self.evidence = pool, train, evaluate, evidence
        self.query, self.query_sizes, self.store, self.seed = query, list(query_sizes), store, int(seed)
        self.beta = float(beta)
        self.context = context or (lambda cycle: {})
        self.progress = progress or (lambda msg: None)
        self.on_cycle = on_cycle or (lambda record: None)   # after each committed cycle (study progress)
        self.n_cycles = len(self.query_sizes) + 1

    def check_schedule(self) -> None:
        """Fail before any training when the schedule asks for more than the pool holds."""
        remaining = len(self.pool.unlabelled)
        for k, q in enumerate(self.query_sizes[len(self.store.records):], start=len(self.store.records)):
            if q > remaining:
                raise UserError(f"query {k + 1} asks for {q} candidates but only {remaining} would remain unlabelled")
            remaining -= q

    def run(self) -> list[dict]:
        """Run (or resume, or just return) the cycles; the store is closed when this returns or raises."""
        try:
            return self._run()
        finally:
            self.store.close()

    def _corrupt(self, what: str) -> UserError:
        return UserError(f"corrupt run directory: {self.store.dir / 'state.json'}: {what}; "
                         f"delete {self.store.dir} to start this run over")

    def _run(self) -> list[dict]:
        start = len(self.store.records)
        if start > self.n_cycles or (self.store.done and start != self.n_cycles):
            raise self._corrupt(f"{start} records{' marked done' if self.store.done else ''} but the schedule has "
                                f"{self.n_cycles} cycles")
        if self.store.done:
            return self.store.records
        if self.store.pool_state is not None:
            try:
                self.pool.load_state_dict(self.store.pool_state)
            except (KeyError, TypeError, ValueError, IndexError, UserError) as e:
                raise self._corrupt(f"pool state does not fit this pool ({e.__class__.__name__})") from None
        self.check_schedule()
        crash_after = os.environ.get("REALISTIC_AL_CRASH_AFTER_CYCLE")
        for cycle in range(start, self.n_cycles):
            budget = self.pool.n_labelled
            self.progress(f"cycle {cycle + 1}/{self.n_cycles}: training on {budget} labels")
            t0 = time.perf_counter()
            model = self.train(self.pool, cycle)
            t1 = time.perf_counter()
            metrics = self.evaluate(model, self.pool)
            t2 = time.perf_counter()
            record = {"cycle": cycle, "budget": budget, "metrics": metrics, "queried": [],
                      "timings": {"train_s": t1 - t0, "eval_s": t2 - t1, "query_s": 0.0}}
            if cycle < self.n_cycles - 1:
                n = self.query_sizes[cycle]
                self.progress(f"cycle {cycle + 1}/{self.n_cycles}: querying {n} with {self.query.name}")
                ev: Evidence = self.evidence(model, self.pool)
                if ev.candidates is None:
                    ev.candidates = self.pool.unlabelled
                ev.context.update({"cycle": cycle, "beta": self.beta, **self.context(cycle)})
                result = self.query.select(ev, n, cycle_rng(self.seed, cycle))
                self.pool.label(result.ids, cycle + 1)
                record["queried"] = result.ids.tolist()
                record["query"] = result.summary()
                record["timings"]["query_s"] = time.perf_counter() - t2
            self.store.commit(record, self.pool.state_dict())
            self.on_cycle(record)
            if crash_after is not None and cycle == int(crash_after):
                raise SimulatedCrash(f"simulated crash after cycle {cycle}")
        self.store.finish()
        return self.store.records
