"""Batch-vs-real scoring: same distribution scores as indistinguishable, a shift is caught and named.

All flows here are SYNTHETIC (tests.support.testing.toy_flows), not captured traffic.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llm_agents.synthesis.fidelity import feature_distances, score_batch
from llm_agents.window_frames import windows_frame
from tests.support.testing import toy_flows

CLASSES = {"benign": 30, "ssh_bruteforce": 30, "syn_scan": 10}


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    return windows_frame(toy_flows(CLASSES, seed=1))


def _as_synthetic(df: pd.DataFrame, label: str) -> pd.DataFrame:
    out = df[df["label"] == label].copy()
    out["provenance"] = "stat:test"
    return out


def test_same_distribution_is_indistinguishable(real: pd.DataFrame) -> None:
    other = _as_synthetic(windows_frame(toy_flows(CLASSES, seed=2)), "ssh_bruteforce")
    rep = score_batch(other, real, "ssh_bruteforce", seed=0)
    assert rep.n_real == 30 and rep.n_synthetic == 30
    assert abs(rep.auc - 0.5) < 0.2, rep.auc
    assert rep.mean_wasserstein < 0.15
    assert max(d.ks for d in rep.distances) < 0.35
    assert rep.copied_fraction == 0.0
    assert rep.tstr_class_f1 is not None and rep.tstr_class_f1 > 0.9


def test_shifted_sizes_are_caught_and_named(real: pd.DataFrame) -> None:
    shifted = _as_synthetic(windows_frame(toy_flows(CLASSES, seed=2)), "ssh_bruteforce")
    for col in ("bytes", "src2dst_bytes", "dst2src_bytes", "min_ps", "mean_ps", "max_ps", "stddev_ps"):
        shifted[col] = shifted[col] * 8
    rep = score_batch(shifted, real, "ssh_bruteforce", seed=0)
    assert rep.auc > 0.95
    worst = rep.worst(3)
    size_features = {"log_bytes", "log_fwd_bytes", "log_bwd_bytes", "log_min_ps", "log_mean_ps",
                     "log_max_ps", "log_bytes_per_packet", "log_stddev_ps"}
    assert worst[0].name in size_features and worst[0].direction == "too high"
    assert worst[0].synthetic[1] > 4 * worst[0].real[1]  # medians, in natural units (bytes)
    text = worst[0].describe()
    assert "real p10/median/p90" in text and "too high" in text


def test_wrong_class_fails_train_on_synthetic_test_on_real(real: pd.DataFrame) -> None:
    impostor = _as_synthetic(real, "syn_scan").assign(label="ssh_bruteforce")
    rep = score_batch(impostor, real, "ssh_bruteforce", seed=0)
    assert rep.tstr_class_f1 is not None and rep.tstr_class_f1 < 0.2


def test_copies_are_detected(real: pd.DataFrame) -> None:
    rep = score_batch(_as_synthetic(real, "syn_scan"), real, "syn_scan", seed=0)
    assert rep.copied_fraction == 1.0
    assert rep.mean_wasserstein == pytest.approx(0.0, abs=1e-9)


def test_feature_distance_direction_and_ranking() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (400, 3))
    b = np.c_[a[:, 0], a[:, 1] * 3, a[:, 2] - 2]
    d = {x.name: x for x in feature_distances(a, b, ("same", "wide", "low"))}
    assert d["same"].wasserstein == 0.0 and d["same"].direction == "close"
    assert d["wide"].direction == "too spread" and d["low"].direction == "too low"
    ranked = [x.name for x in feature_distances(a, b, ("same", "wide", "low"))]
    assert ranked[-1] == "same"


def test_empty_batch_scores_nothing(real: pd.DataFrame) -> None:
    rep = score_batch(real.iloc[0:0], real, "syn_scan")
    assert rep.n_synthetic == 0 and rep.distances == [] and np.isnan(rep.auc)
    assert rep.worst() == []
