"""The labelled state of an AL experiment.

One integer per candidate, ``labelled_at`` (-1 = unlabelled, k = labelled in cycle k), over the
train+pool candidates, plus fixed validation and test index sets (ids in the same dataset space).
Candidates are samples in classification and 3D patches in segmentation.
"""
from __future__ import annotations

import numpy as np

from .errors import UserError


class Pool:
    def __init__(self, n_candidates: int, val_ids=(), test_ids=()):
        self.labelled_at = np.full(int(n_candidates), -1, dtype=np.int64)
        self.val_ids = np.asarray(val_ids, dtype=np.int64)
        self.test_ids = np.asarray(test_ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labelled_at)

    @property
    def labelled(self) -> np.ndarray:
        return np.flatnonzero(self.labelled_at >= 0)

    @property
    def unlabelled(self) -> np.ndarray:
        return np.flatnonzero(self.labelled_at < 0)

    @property
    def n_labelled(self) -> int:
        return int((self.labelled_at >= 0).sum())

    def labelled_in(self, cycle: int) -> np.ndarray:
        return np.flatnonzero(self.labelled_at == cycle)

    def label(self, ids, cycle: int) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if cycle < 0:
            raise ValueError("cycle must be >= 0")
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"duplicate ids in label request: {uniq[counts > 1][:5].tolist()}")
        bad = ids[(ids < 0) | (ids >= len(self))]
        if len(bad):
            raise ValueError(f"ids outside the pool (size {len(self)}): {bad[:5].tolist()}")
        again = ids[self.labelled_at[ids] >= 0]
        if len(again):
            raise ValueError(f"ids already labelled: {again[:5].tolist()}")
        self.labelled_at[ids] = cycle

    def state_dict(self) -> dict:
        return {"labelled_at": self.labelled_at.tolist(), "val_ids": self.val_ids.tolist(),
                "test_ids": self.test_ids.tolist()}

    def load_state_dict(self, state: dict) -> None:
        try:
            self.labelled_at = np.asarray(state["labelled_at"], dtype=np.int64)
            self.val_ids = np.asarray(state["val_ids"], dtype=np.int64)
            self.test_ids = np.asarray(state["test_ids"], dtype=np.int64)
        except (KeyError, TypeError) as e:
            raise UserError(f"corrupt pool state: {e}") from None
