"""Label regimes (spec §5, Table A.4): starting budget, query size, rounds, validation size.

The query size and the number of rounds can be set independently of the starting budget (the
Low-label query-size ablation of §5.4 / A.5.2: CIFAR-100 start 500 with query sizes 50 / 500 / 2000
over 21 / 10 / 3 rounds, ISIC-2019 start 40 with 10 / 40 / 160)::

    regime("cifar100", "low", query_size=50, rounds=21)   # budgets 500, 550, ..., 1500
"""
from __future__ import annotations

from dataclasses import dataclass

from core.errors import UserError

from .datasets import get

REGIMES = ("low", "medium", "high")


@dataclass(frozen=True)
class Regime:
    name: str
    start: int
    query: int
    rounds: int          # training/evaluation rounds including round 0
    val_size: int

    @property
    def query_sizes(self) -> list[int]:
        return [self.query] * (self.rounds - 1)

    @property
    def final_budget(self) -> int:
        return self.start + self.query * (self.rounds - 1)


def class_count_regimes(n_classes: int, val_split: int) -> dict:
    """Table A.4 rule for data without a table row (roll-out, folder data): start = query = 5C / 25C /
    100C, 10 rounds, validation 5 × start capped by the split (ISIC: 40/200/800, MIO: 55/275/1100)."""
    return {k: (m * n_classes, m * n_classes, 10, min(5 * m * n_classes, val_split))
            for k, m in (("low", 5), ("medium", 25), ("high", 100))}


def regime(dataset: str, name: str, paradigm: str = "supervised", n_classes: int | None = None,
           val_split: int | None = None, query_size: int | None = None, rounds: int | None = None) -> Regime:
    """Table A.4 for datasets with a row in ``classification.datasets``; for the others the rule of
    :func:`class_count_regimes` from the class count and the validation split size.  ``query_size`` /
    ``rounds`` replace the regime's (the starting budget stays); a new query size alone keeps the
    regime's final budget (as many whole queries as fit), a new number of rounds alone the query size."""
    if name not in REGIMES:
        raise UserError(f"unknown regime {name!r}; valid: {', '.join(REGIMES)}")
    rows = get(dataset).regimes
    if rows is not None:
        start, query, n_rounds, val = rows[name]
    elif n_classes is not None and val_split is not None:
        start, query, n_rounds, val = class_count_regimes(n_classes, val_split)[name]
    else:
        raise UserError(f"no label-regime table for dataset {dataset!r}")
    if paradigm == "fixmatch":  # Semi-SL: query size 3 × start, 4 rounds (final budget still 10 × start)
        query, n_rounds = 3 * start, 4
    base = Regime(name, start, query, n_rounds, val)
    if query_size is None and rounds is None:
        return base
    if query_size is not None and query_size < 1:
        raise UserError(f"--query-size must be >= 1, got {query_size}")
    if rounds is not None and rounds < 2:
        raise UserError(f"--rounds must be >= 2 (the starting round and at least one query), got {rounds}")
    q = query_size or query
    if rounds is None:
        rounds = 1 + (base.final_budget - start) // q
        if rounds < 2:
            raise UserError(f"a query size of {q} does not fit into the {name} regime's budget ({start} -> "
                            f"{base.final_budget}); set --rounds as well")
    return Regime(name, start, q, rounds, val)
