"""Uncertainty measures (C2) and their aleatoric / epistemic labels (``uncertainty.md`` §5).

For sampling models: PE (predictive entropy, total), EE (expected entropy), MI (mutual
information).  For the softmax model only 1 − max-softmax (``msr``).  The label of EE and MI
depends on the prediction model — for TTD / ensemble / TTA EE is aleatoric (AU) and MI epistemic
(EU); for the SSN the variability variable Z makes ``MI = I[Y;Z|x]`` the **aleatoric** measure and
``EE = E_z H[Y|x,z]`` the **epistemic** one.  Maps are computed with ``core.uncertainty``.
"""
from __future__ import annotations

import torch

from core import uncertainty as cu

MEASURES = ("msr", "pe", "ee", "mi")
UTYPE = {
    "softmax": {"msr": "PU"},
    "ttd": {"pe": "PU", "ee": "AU", "mi": "EU"},
    "ensemble": {"pe": "PU", "ee": "AU", "mi": "EU"},
    "tta": {"pe": "PU", "ee": "AU", "mi": "EU"},
    "ssn": {"pe": "PU", "mi": "AU", "ee": "EU"},
}


def measures_for(model: str) -> list[str]:
    return list(UTYPE[model])


def measure_maps(probs: torch.Tensor, measures) -> dict:
    """``probs[B, M, C, *S]`` → {measure: map[B, *S]} (float32 tensors)."""
    out = {}
    want = set(measures)
    if want & {"pe", "ee", "mi"}:
        d = cu.decomposition(probs, sample_dim=1, class_dim=2)
        out.update({k: d[k].float() for k in ("pe", "ee", "mi") if k in want})
    if "msr" in want:
        out["msr"] = (1 - cu.max_softmax(probs, sample_dim=1, class_dim=2)).float()
    return out
