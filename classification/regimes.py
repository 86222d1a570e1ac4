"""Label regimes (spec §5, Table A.4): starting budget, query size, rounds, validation size."""
from __future__ import annotations

from dataclasses import dataclass

from core.errors import UserError

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


# Table A.4 exactly (CIFAR-10 medium: 1 250 as printed; the reference code used 2 500).
_TABLE = {
    "cifar10": {"low": (50, 50, 10, 250), "medium": (250, 250, 10, 1250), "high": (1000, 1000, 10, 5000)},
    "cifar100": {"low": (500, 500, 10, 2500), "medium": (1000, 1000, 10, 5000), "high": (5000, 5000, 5, 5000)},
    "cifar10_lt": {"low": (50, 50, 10, 250), "medium": (250, 250, 10, 1250), "high": (1000, 1000, 10, 5000)},
}
# Fashion-MNIST (10 balanced classes, 32×32 after padding) follows the CIFAR-10 rule 5C/25C/100C.
_TABLE["fashion_mnist"] = _TABLE["cifar10"]
_TABLE["fashion_mnist_lt"] = _TABLE["cifar10_lt"]


def regime(dataset: str, name: str, paradigm: str = "supervised", n_classes: int | None = None,
           val_split: int | None = None) -> Regime:
    """Table A.4 for the development datasets; for roll-out / folder data the same rule from the
    class count (5C / 25C / 100C, 10 rounds, validation 5 × start capped by the validation split)."""
    if name not in REGIMES:
        raise UserError(f"unknown regime {name!r}; valid: {', '.join(REGIMES)}")
    if dataset in _TABLE:
        start, query, rounds, val = _TABLE[dataset][name]
    elif n_classes is not None and val_split is not None:
        from .rollout import regime_table
        start, query, rounds, val = regime_table(n_classes, val_split)[name]
    else:
        raise UserError(f"no label-regime table for dataset {dataset!r}")
    if paradigm == "fixmatch":  # Semi-SL: query size 3 × start, 4 rounds (final budget still 10 × start)
        query, rounds = 3 * start, 4
    return Regime(name, start, query, rounds, val)
