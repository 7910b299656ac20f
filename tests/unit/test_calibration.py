"""Temperature scaling and ECE on inputs whose answers are known."""
from __future__ import annotations

import numpy as np
import pytest

from inference.calibration import (energy_threshold, expected_calibration_error, fit_temperature,
                                   nll, reliability_bins)
from inference.onnx_detector import calibrate


def _probs(conf: float, n: int) -> np.ndarray:
    """n two-class rows predicting class 0 with confidence conf."""
    return np.tile([conf, 1 - conf], (n, 1))


def test_ece_zero_when_confidence_equals_accuracy():
    y = np.array([0] * 8 + [1] * 2)  # 80% of the class-0 predictions are right
    assert expected_calibration_error(_probs(0.8, 10), y) == pytest.approx(0.0, abs=1e-12)


def test_ece_one_when_certain_and_always_wrong():
    assert expected_calibration_error(_probs(1.0, 5), np.ones(5, int)) == pytest.approx(1.0)


def test_ece_weights_bins_by_size():
    # 4 rows at 0.9 all right (gap 0.1), 6 rows at 0.6 half right (gap 0.1) -> 0.1;
    # then make the 0.6 bin all wrong (gap 0.6): 0.4 * 0.1 + 0.6 * 0.6 = 0.4.
    probs = np.vstack([_probs(0.9, 4), _probs(0.6, 6)])
    y = np.array([0] * 4 + [0, 0, 0, 1, 1, 1])
    assert expected_calibration_error(probs, y, n_bins=10) == pytest.approx(0.1)
    y_wrong = np.array([0] * 4 + [1] * 6)
    assert expected_calibration_error(probs, y_wrong, n_bins=10) == pytest.approx(0.4)


def test_reliability_bins_count_every_row_and_put_certainty_in_last_bin():
    probs = np.vstack([_probs(1.0, 3), _probs(0.55, 2)])
    b = reliability_bins(probs, np.zeros(5, int), n_bins=10)
    assert sum(b["count"]) == 5
    assert b["count"][-1] == 3 and b["count"][5] == 2
    assert b["accuracy"][-1] == 1.0 and b["confidence"][5] == pytest.approx(0.55)


def test_fit_temperature_recovers_overconfidence_and_lowers_nll():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, size=(4000, 5))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in p])  # labels drawn from softmax(z): T=1 is right
    over = 3.0 * z                                      # an over-confident network's logits
    t = fit_temperature(over, y)
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(over, y, t) < nll(over, y, 1.0)
    before = expected_calibration_error(calibrate(over, 1.0)[0], y)
    after = expected_calibration_error(calibrate(over, t)[0], y)
    assert after < before / 3


def test_fit_temperature_leaves_calibrated_logits_alone():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, size=(4000, 3))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    assert fit_temperature(z, y) == pytest.approx(1.0, rel=0.1)


def test_energy_threshold_is_the_quantile_of_free_energy():
    logits = np.random.default_rng(2).normal(size=(1000, 4)).astype(np.float32)
    thr = energy_threshold(logits, 1.5, quantile=0.9)
    _, energy = calibrate(logits, 1.5)
    assert np.mean(energy > thr) == pytest.approx(0.1, abs=0.002)
