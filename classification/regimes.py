"""Label regimes (spec §5, Table A.4): starting budget, query size, rounds, validation size."""
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
           val_split: int | None = None) -> Regime:
    """Table A.4 for datasets with a row in ``classification.datasets``; for the others the rule of
    :func:`class_count_regimes` from the class count and the validation split size."""
    if name not in REGIMES:
        raise UserError(f"unknown regime {name!r}; valid: {', '.join(REGIMES)}")
    rows = get(dataset).regimes
    if rows is not None:
        start, query, rounds, val = rows[name]
    elif n_classes is not None and val_split is not None:
        start, query, rounds, val = class_count_regimes(n_classes, val_split)[name]
    else:
        raise UserError(f"no label-regime table for dataset {dataset!r}")
    if paradigm == "fixmatch":  # Semi-SL: query size 3 × start, 4 rounds (final budget still 10 × start)
        query, rounds = 3 * start, 4
    return Regime(name, start, query, rounds, val)
