"""Synthetic material shared by the query tests (no dataset, no model)."""
import numpy as np


def box_volumes(rng: np.random.Generator, n_img: int, shape, origin, size: int, small_origin) -> list:
    """Label volumes: a ``size``³ class-1 box at a random origin in ``[origin)``, a 3³ class-2 box at a
    random origin in ``[small_origin)`` and a 2³ class-3 box in the middle of the class-1 box."""
    labels = []
    for _ in range(n_img):
        lab = np.zeros(shape, np.uint8)
        o = rng.integers(*origin, 3)
        lab[o[0]:o[0] + size, o[1]:o[1] + size, o[2]:o[2] + size] = 1
        p = rng.integers(*small_origin, 3)
        lab[p[0]:p[0] + 3, p[1]:p[1] + 3, p[2]:p[2] + 3] = 2
        c = o + size // 2 - 1
        lab[c[0]:c[0] + 2, c[1]:c[1] + 2, c[2]:c[2] + 2] = 3
        labels.append(lab)
    return labels
