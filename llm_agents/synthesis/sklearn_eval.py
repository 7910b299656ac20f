"""A fast window classifier and the real-data evaluator the synthesizer's gate calls.

The synthesizer keeps a synthetic batch only if a model trained with it scores better on
real validation windows. Retraining plugs in the CNN; this module gives the fast stand-in
used by tests and the augmentation experiment: extremely randomised trees on
`window_summary` descriptors, deterministic from its seed.

    >>> evaluate = make_sklearn_evaluator(train_real, val_real)
    >>> evaluate.baseline                       # macro-F1 with the real training windows only
    >>> evaluate(pd.concat([train_real, synthetic]))   # macro-F1 on val_real
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from llm_agents.window_frames import window_summary, window_tensors


def _sklearn() -> Any:
    try:
        import sklearn  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("synthesis checks need scikit-learn: pip install 'edgeloop[agent]'") from exc
    return sklearn


def window_classifier(seed: int = 0, n_estimators: int = 100) -> Any:
    """Class-balanced extremely randomised trees: no tuning, and on a few hundred windows
    about twice as fast to fit as a random forest of the same size (~0.1 s for 100 trees)."""
    _sklearn()
    from sklearn.ensemble import ExtraTreesClassifier
    return ExtraTreesClassifier(n_estimators=n_estimators, class_weight="balanced",
                                random_state=seed, n_jobs=1)


def summaries(df: pd.DataFrame, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Window descriptors [n, 4F+1] and labels [n] of a window frame."""
    x, mask, labels, _ = window_tensors(df, k)
    return window_summary(x, mask), labels


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str] | None = None) -> float:
    from sklearn.metrics import f1_score
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


class SklearnEvaluator:
    """Macro-F1 on fixed real validation windows of trees trained on a given window frame.

    Validation descriptors are computed once. Classes absent from training still count
    (as F1 0) so that dropping a class can never look like an improvement.
    """

    def __init__(self, val_real: pd.DataFrame, *, k: int = 8, seed: int = 0,
                 n_estimators: int = 100) -> None:
        self.k, self.seed, self.n_estimators = k, seed, n_estimators
        self._xv, self._yv = summaries(val_real, k)
        self.classes = sorted(set(self._yv))
        self.calls = 0
        self.baseline: float | None = None

    def __call__(self, train: pd.DataFrame) -> float:
        self.calls += 1
        x, y = summaries(train, self.k)
        if len(set(y)) < 2:
            return 0.0
        clf = window_classifier(self.seed, self.n_estimators).fit(x, y)
        return macro_f1(self._yv, clf.predict(self._xv), self.classes)

    def report(self, train: pd.DataFrame) -> dict[str, float]:
        """Per-class F1 on the validation windows (for tables), plus `macro`."""
        from sklearn.metrics import f1_score
        x, y = summaries(train, self.k)
        clf = window_classifier(self.seed, self.n_estimators).fit(x, y)
        f1 = f1_score(self._yv, clf.predict(self._xv), labels=self.classes, average=None,
                      zero_division=0)
        out = {c: float(v) for c, v in zip(self.classes, f1)}
        out["macro"] = float(np.mean(f1))
        return out


def make_sklearn_evaluator(train_real: pd.DataFrame, val_real: pd.DataFrame, *, k: int = 8,
                           seed: int = 0, n_estimators: int = 100) -> SklearnEvaluator:
    """The gate's evaluator: `evaluate(augmented_train) -> macro-F1 on val_real`.

    `evaluate.baseline` is the score of `train_real` alone (no augmentation).
    """
    ev = SklearnEvaluator(val_real, k=k, seed=seed, n_estimators=n_estimators)
    ev.baseline = ev(train_real)
    ev.calls = 0
    return ev
