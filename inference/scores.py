"""Classification scores (confusion matrix, per-class precision/recall/F1, macro-F1) in numpy.

Shared by training (early stopping on validation macro-F1) and evaluation, and free of
scikit-learn and torch so an edge install can evaluate a bundle.

    >>> cm = confusion_matrix(y_true, y_pred, n_classes=6)
    >>> per_class(cm, class_names)["syn_scan"]["recall"], macro_f1(cm)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """cm[i, j] = windows of true class i predicted as j."""
    idx = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _prf(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm).astype(float)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over classes that occur (as truth or as prediction); absent classes are skipped."""
    _, _, f1 = _prf(cm)
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(f1[present].mean()) if present.any() else 0.0


def per_class(cm: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    precision, recall, f1 = _prf(cm)
    support = cm.sum(axis=1)
    return {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(class_names)}


def accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 0.0
