"""The labelled state of an AL experiment.

One integer per candidate, ``labelled_at`` (-1 = unlabelled, k = labelled in cycle k), over the
train+pool candidates, plus fixed validation and test index sets (ids in the same dataset space).
Candidates are samples in classification and 3D patches in segmentation.
"""
from __future__ import annotations

import numpy as np

from .errors import UserError


def check_label_request(ids, cycle: int, size: int, is_labelled) -> np.ndarray:
    """Validate a label request against any pool representation; returns the ids as int64.

    ``is_labelled(ids) -> bool array`` says which ids are labelled already.  Refuses a negative
    cycle, duplicate ids, ids outside ``[0, size)`` and ids labelled before."""
    ids = np.asarray(ids, dtype=np.int64).ravel()
    if cycle < 0:
        raise ValueError("cycle must be >= 0")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"duplicate ids in label request: {uniq[counts > 1][:5].tolist()}")
    bad = ids[(ids < 0) | (ids >= size)]
    if len(bad):
        raise ValueError(f"ids outside the pool (size {size}): {bad[:5].tolist()}")
    again = ids[is_labelled(ids)]
    if len(again):
        raise ValueError(f"ids already labelled: {again[:5].tolist()}")
    return ids


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
        ids = check_label_request(ids, cycle, len(self), lambda i: self.labelled_at[i] >= 0)
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
