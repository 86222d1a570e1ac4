"""The CPU thread policy of every CLI and every study job, in one place.

* :func:`resolve` — the thread count of a run: ``--threads N`` if given, else ``OMP_NUM_THREADS``
  when it is set, else 1 intra-op thread on CPU (the cores are used by running runs side by side —
  the study layer's workers — not by splitting one small network over OpenMP barriers: on a shared
  2-core machine 2 threads train several times *slower* than 1), else ``None`` (torch's own choice)
  on CUDA.
* :func:`apply` — set it for this process: torch intra-op threads and, through ``threadpoolctl``,
  the BLAS / OpenMP pools numpy and scipy use.  Returns the value to record in the run's config.
* :func:`limited` — a block with ``threads`` torch + BLAS threads, restored afterwards (one study job).
* :func:`small_products` — a block whose BLAS calls are small (mat-vecs of a greedy selection):
  one BLAS thread, whatever the run's setting (a 3000×512 mat-vec costs 0.55 ms with 1 OpenBLAS
  thread and 15.7 ms with 2 on a loaded 2-core machine).

Determinism: the same seed and the same thread count give the same numbers, always.  Different
thread counts may change the last bits of float reductions (see the README's "Threads" section for
what was measured), so the count is part of each run's config.
"""
from __future__ import annotations

import contextlib
import os

ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def from_env() -> int | None:
    """``OMP_NUM_THREADS`` as a positive int (None when unset or not a positive integer)."""
    raw = os.environ.get("OMP_NUM_THREADS", "").strip()
    try:
        n = int(raw)
    except ValueError:
        return None
    return n if n >= 1 else None


def resolve(requested: int | None, device: str = "cpu", cpu_default: int | None = 1) -> int | None:
    """Threads per run: ``requested`` (``--threads``) > ``OMP_NUM_THREADS`` > ``cpu_default`` on CPU
    (1) > None on CUDA (torch's choice; the work is on the device)."""
    if requested:
        return int(requested)
    env = from_env()
    if env:
        return env
    return cpu_default if device == "cpu" else None


def apply(threads: int | None) -> int:
    """Use ``threads`` torch intra-op and BLAS/OpenMP threads in this process from now on (None:
    leave torch's choice); returns the torch thread count now in force (what a run records)."""
    import torch
    if threads:
        torch.set_num_threads(int(threads))
        _pools(int(threads))
    return torch.get_num_threads()


def _pools(threads: int, user_api: str | None = None):
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=int(threads), user_api=user_api)


@contextlib.contextmanager
def limited(threads: int | None):
    """Run the block with ``threads`` torch intra-op and BLAS/OpenMP threads (None: unchanged);
    the previous settings come back afterwards."""
    if not threads:
        yield
        return
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        with _pools(int(threads)):
            yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def small_products():
    """One BLAS thread for the block (greedy selection's per-step mat-vecs): a thread barrier per
    product costs more than the product.  Enter it once around a loop, not per step (threadpoolctl
    inspects the loaded libraries on entry, ~1 ms)."""
    with _pools(1, user_api="blas"):
        yield
