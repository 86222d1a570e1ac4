"""Metrics shared by all domains (budget curves, PPM, per-round classification metrics, ...).

Each topic lives in its own module; everything is re-exported here so callers write
``from core import metrics; metrics.aubc(...)``.
"""
from .curves import PPM, aubc, final_value, pairwise_penalty_matrix  # noqa: F401
from .classification import accuracy, balanced_accuracy, confusion_matrix, macro_f1  # noqa: F401
from .uncertainty import ace, aurc, auroc, dice_matrix, eaurc, ged, ncc, optimal_aurc, platt_apply, platt_fit, rc_curve  # noqa: F401
from .fgeff import FGEffFit, fg_eff_curve, fg_eff_setting, fit_fg_eff, setting_anchor  # noqa: F401
