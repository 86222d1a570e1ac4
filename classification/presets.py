"""Presets: ``thesis`` keeps every thesis setting; ``laptop`` keeps the protocol (splits, label
regimes, retraining from scratch, HP defaults, upsampling) but shrinks the pool, the test set, the
network width and the number of epochs to fit a 2-core CPU; ``smoke`` is for tests."""
from __future__ import annotations

from dataclasses import dataclass, replace

from .training import TrainConfig


@dataclass(frozen=True)
class Preset:
    name: str
    pool_size: int | None     # stratified random subset of the train+pool split (None = all)
    test_size: int | None     # fixed stratified subset of the test split (None = all)
    max_rounds: int | None    # cap on training rounds (None = the regime's)
    train: TrainConfig


# Table A.7 (ST, CIFAR): 200 epochs, 10 warm-up, batch 1024, lr 0.1, wd 5e-3, RandAugmentMC.
_THESIS = TrainConfig(epochs=200, warmup_epochs=10, batch_size=1024, lr=0.1, weight_decay=5e-3,
                      augmentation="randaugment", min_train=5500, width=64, mc_samples=50)

PRESETS = {
    "thesis": Preset("thesis", None, None, None, _THESIS),
    "laptop": Preset("laptop", 10_000, 2_000, None,
                     replace(_THESIS, epochs=5, warmup_epochs=1, batch_size=128, width=16)),
    "smoke": Preset("smoke", 800, 300, 3,
                    replace(_THESIS, epochs=1, warmup_epochs=0, batch_size=64, width=4, min_train=128,
                            mc_samples=8, eval_batch_size=256)),
}


ROLLOUT_IMAGE_SIZE = {"thesis": 224, "laptop": 64, "smoke": 32}
