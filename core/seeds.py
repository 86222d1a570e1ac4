"""One seed derivation for the whole framework: every random stream of a run comes from its seed and a
named purpose.

``rng(seed, "query", cycle)`` is ``numpy.random.default_rng`` of the seed sequence
``[seed, id("query"), cycle]``, where ``id`` is the CRC-32 of the purpose's name — stable across
runs, machines and versions, independent streams for different purposes or indices, and no magic
salts to keep apart.  ``derive(...)`` gives the same stream as one integer for libraries that take
an integer seed (``torch.manual_seed``, Lightning's ``seed_everything``, scikit-learn).

    from core import seeds
    picks = method.select(evidence, n, seeds.rng(seed, "query", cycle))
    L.seed_everything(seeds.derive(seed, "train", cycle))

Purposes in use: ``query`` (AL query of a cycle), ``split`` (train/validation split), ``pool``
(pool subset), ``val`` (labelled validation subset), ``start`` (starting budget), ``test``
(fixed test subset, seed 0), ``train`` (model training of a cycle), ``eval`` (MC-dropout at test
time), ``subsample`` (roll-out split caps), ``knn`` (SimCLR monitor split), ``simclr`` (pre-training),
``folds`` / ``regions`` (segmentation CV folds and patch sampling), ``phantom`` (phantom cases),
``ct`` (CT intensity sampling), ``brain`` (real-anatomy brain cases), ``nnunet`` (nnU-Net
training of a loop and fold), ``net`` / ``predict`` / ``al`` / ``toy`` / ``msd`` / ``shift`` /
``bootstrap`` / ``lidc`` / ``lidc-subsample`` / ``gta-cs`` / ``label-switch`` (uncertainty testbed).
"""
from __future__ import annotations

import zlib

import numpy as np

# Version of the derivation scheme; run configs and caches record it, so a run or cache made under
# another scheme is never resumed or reused as if its numbers were today's.
SEEDING = 2


def purpose_id(purpose: str) -> int:
    """Stable 32-bit id of a purpose name (CRC-32)."""
    if not isinstance(purpose, str) or not purpose:
        raise ValueError("a seed purpose is a non-empty string")
    return zlib.crc32(purpose.encode())


def sequence(seed: int, purpose: str, *ints: int) -> np.random.SeedSequence:
    """The seed sequence of (seed, purpose, indices); every entry must be a non-negative integer."""
    entropy = [int(seed), purpose_id(purpose), *(int(i) for i in ints)]
    if any(v < 0 for v in entropy):
        raise ValueError(f"seeds and indices must be >= 0, got {entropy}")
    return np.random.SeedSequence(entropy)


def rng(seed: int, purpose: str, *ints: int) -> np.random.Generator:
    """A numpy generator for one purpose of a run."""
    return np.random.default_rng(sequence(seed, purpose, *ints))


def derive(seed: int, purpose: str, *ints: int) -> int:
    """An integer seed in [0, 2³¹ − 1) for one purpose of a run (torch, Lightning, scikit-learn)."""
    return int(sequence(seed, purpose, *ints).generate_state(1, np.uint64)[0] % (2 ** 31 - 1))
