"""Per-round classification metrics from a confusion matrix (eqs. 2.4–2.6)."""
from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """``cm[t, p]`` counts samples of true class t predicted as p."""
    t, p = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy(y_true, y_pred) -> float:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    return float((t == p).mean()) if len(t) else float("nan")


def balanced_accuracy(y_true, y_pred, n_classes: int | None = None) -> float:
    """Mean recall over the classes present in ``y_true`` (absent classes have no recall)."""
    n = n_classes or int(max(np.max(y_true), np.max(y_pred))) + 1
    cm = confusion_matrix(y_true, y_pred, n)
    support = cm.sum(1)
    present = support > 0
    return float((np.diag(cm)[present] / support[present]).mean())


def macro_f1(y_true, y_pred, n_classes: int | None = None) -> float:
    """Mean over classes present in either vector of 2TP / (2TP + FP + FN)."""
    n = n_classes or int(max(np.max(y_true), np.max(y_pred))) + 1
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(float)
    denom = 2 * tp + (cm.sum(0) - tp) + (cm.sum(1) - tp)
    present = denom > 0
    return float((2 * tp[present] / denom[present]).mean())
