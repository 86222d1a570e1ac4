"""Domain-free checks of what a user hands in: numbers, seeds and paths.

Every check raises one ``UserError`` naming the input and what is wrong (the CLIs print it as one
``error:`` line, exit 2) and writes nothing, so a bad flag is refused before any work starts.  The
CLI helper (``experiments.common``) turns them into argparse types; data formats are checked where
each format is read.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

SEED_LIMIT = 2 ** 32      # numpy / torch seeds are unsigned 32-bit


def integer(value, what: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` (an int or its text) as an int within ``[minimum, maximum]``."""
    wanted = f"an integer >= {minimum}" if minimum is not None else "an integer"
    try:
        if isinstance(value, bool):
            raise ValueError
        v = value if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        raise UserError(f"{what} must be {wanted}, got {value!r}") from None
    if minimum is not None and v < minimum:
        raise UserError(f"{what} must be {wanted}, got {value!r}")
    if maximum is not None and v > maximum:
        raise UserError(f"{what} must be <= {maximum}, got {v}")
    return v


def number(value, what: str, positive: bool = False) -> float:
    """A finite float (``positive``: > 0)."""
    wanted = "a finite number > 0" if positive else "a finite number"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be {wanted}, got {value!r}") from None
    if v != v or v in (float("inf"), float("-inf")) or (positive and v <= 0):
        raise UserError(f"{what} must be {wanted}, got {value!r}")
    return v


def seed(value, what: str = "seed") -> int:
    return integer(value, what, 0, SEED_LIMIT - 1)


def seed_range(first: int, n: int, what: str = "--seed-offset") -> list[int]:
    """Seeds ``first .. first + n - 1``; every one must be a valid seed."""
    first, n = seed(first, what), integer(n, "--seeds", 1)
    if first + n - 1 >= SEED_LIMIT:
        raise UserError(f"{what} {first} with {n} seed(s) reaches seed {first + n - 1}; seeds must be < 2**32")
    return [first + k for k in range(n)]


def output_dir(path, what: str = "--out") -> Path:
    """A folder results can be written to: an existing writable folder, or one that can be created
    (its nearest existing ancestor is a writable folder).  Nothing is created here."""
    p = Path(path).expanduser()
    if str(path).strip() == "":
        raise UserError(f"{what} is empty")
    if p.exists():
        if not p.is_dir():
            raise UserError(f"{what} {p} is a file, not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise UserError(f"{what} {p} is not writable (read-only or permission denied)")
        return p
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{what} {p} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} {p} cannot be created: {parent} is not writable (read-only or permission denied)")
    return p


def input_dir(path, what: str) -> Path:
    """An existing, readable folder."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{what} {p} does not exist")
    if not p.is_dir():
        raise UserError(f"{what} {p} is a file, not a folder")
    if not os.access(p, os.R_OK | os.X_OK):
        raise UserError(f"{what} {p} is not readable (permission denied)")
    return p


def shape(dims, what: str, ndim: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """A data array's shape: no zero-length axis (and, with ``ndim``, one of those ranks)."""
    dims = tuple(int(d) for d in dims)
    if ndim is not None and len(dims) not in ndim:
        raise UserError(f"{what} has shape {dims}; expected {' or '.join(map(str, ndim))} dimensions")
    if any(d <= 0 for d in dims):
        raise UserError(f"{what} has shape {dims} with a zero-length axis")
    return dims


def finite(arr, what: str):
    """An array without NaN / Inf values (returned unchanged)."""
    import numpy as np
    a = np.asarray(arr)
    if a.dtype.kind in "fc" and not np.isfinite(a).all():
        n = int((~np.isfinite(a)).sum())
        raise UserError(f"{what} contains {n} NaN/Inf value(s)")
    return arr
