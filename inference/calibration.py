"""Temperature scaling and calibration measures, in numpy (no torch, so the edge can evaluate).

A network's max-softmax is usually over-confident. One scalar T, fitted on held-out logits
by minimising the negative log-likelihood of softmax(z / T), fixes most of that without
changing any prediction (Guo et al., 2017). The expected calibration error (ECE) then says
how far confidence is from accuracy: the bin-weighted mean of |accuracy - confidence|
over equal-width confidence bins.

    >>> t = fit_temperature(val_logits, val_y)
    >>> probs, _ = calibrate(test_logits, t)
    >>> expected_calibration_error(probs, test_y)     # 0.0 is perfect
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from inference.onnx_detector import calibrate, member_min_benign

T_MIN, T_MAX = 0.05, 20.0


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of integer labels y under softmax(logits / T)."""
    z = logits.astype(np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


def fit_temperature(logits: np.ndarray, y: np.ndarray, tol: float = 1e-4) -> float:
    """The T in [T_MIN, T_MAX] minimising validation NLL.

    NLL is convex in the inverse temperature 1/T, so a golden-section search over 1/T finds
    the optimum without gradients or torch. Returns 1.0 for an empty set.
    """
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return 1.0
    lo, hi = 1.0 / T_MAX, 1.0 / T_MIN
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(logits, y, 1 / a), nll(logits, y, 1 / b)
    while hi - lo > tol:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(logits, y, 1 / a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(logits, y, 1 / b)
    return float(2.0 / (lo + hi))


def reliability_bins(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> dict[str, list[Any]]:
    """Per equal-width confidence bin: edges, mean confidence, accuracy and count."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Right-closed bins, so a confidence of exactly 1.0 lands in the last bin.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    safe = np.maximum(count, 1)
    return {
        "lower": edges[:-1].tolist(), "upper": edges[1:].tolist(), "count": count.tolist(),
        "confidence": (np.bincount(idx, conf, n_bins) / safe).tolist(),
        "accuracy": (np.bincount(idx, correct.astype(float), n_bins) / safe).tolist(),
    }


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """ECE: sum over bins of (bin size / n) * |accuracy - mean confidence|."""
    if len(y) == 0:
        return 0.0
    b = reliability_bins(probs, y, n_bins)
    gaps = np.abs(np.array(b["accuracy"]) - np.array(b["confidence"]))
    return float(np.sum(np.array(b["count"]) * gaps) / len(y))


def energy_threshold(logits: np.ndarray, temperature: float, quantile: float = 0.995) -> float:
    """The OOD threshold: this quantile of in-distribution free energy (see onnx_detector)."""
    _, energy = calibrate(logits, temperature)
    return float(np.quantile(energy.astype(np.float64), quantile))


def member_benign_threshold(member_logits: np.ndarray, y: np.ndarray, temperature: float, benign: int,
                            floor: float, ood: float | None, share: float) -> tuple[float | None, int]:
    """The member-disagreement gate's tau (onnx_detector): the `share` quantile of the
    lowest member's p(benign) over the benign windows (y) the ensemble calls benign with
    nothing else making them uncertain (confidence >= `floor`, energy <= `ood`); so the
    gate defers about `share` of such calls on in-distribution data. (None, 0) when there
    are none. Also returns how many there were."""
    probs, energy = calibrate(member_logits.mean(axis=0), temperature)
    called = (y == benign) & (probs.argmax(axis=1) == benign) & (probs[:, benign] >= floor)
    if ood is not None:
        called &= energy <= ood
    if not called.any():
        return None, 0
    low = member_min_benign(member_logits[:, called], temperature, benign)
    return float(np.quantile(low.astype(np.float64), share)), int(called.sum())
