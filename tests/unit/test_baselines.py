"""Baselines and the offline generator: valid, windowable, tagged, deterministic.

All flows here are SYNTHETIC (tests.support.testing.toy_flows), not captured traffic.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from inference.windowing import stack_windows, windows_from_frame
from llm_agents.synthesis.baselines import KDEWindowGenerator, no_augmentation, smote_windows
from llm_agents.synthesis.constraints import check_flows
from llm_agents.synthesis.fidelity import FeatureDistance
from llm_agents.window_frames import (window_lengths, window_tensors, windows_frame)
from tests.support.testing import toy_flows


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    return windows_frame(toy_flows({"benign": 6, "syn_scan": 5, "ssh_bruteforce": 5}, seed=4))


def _windowable(batch: pd.DataFrame) -> None:
    """The stream's own windowing cuts a synthetic batch back into exactly its windows."""
    closed = windows_from_frame(batch)
    assert [w.window_id for w in closed] == list(dict.fromkeys(batch["window_id"]))
    x, mask = stack_windows(closed, 8)
    x2, mask2, _, _ = window_tensors(batch, 8)
    np.testing.assert_allclose(x, x2, rtol=1e-6)
    np.testing.assert_array_equal(mask, mask2)


def test_window_tensors_match_the_stream(real: pd.DataFrame) -> None:
    _windowable(real)
    assert set(real["provenance"]) == {"real"}


def test_no_augmentation_adds_nothing(real: pd.DataFrame) -> None:
    out = no_augmentation(real, "syn_scan", 10)
    assert out.empty and list(out.columns) == list(real.columns)


def test_smote_windows_are_valid_interpolations(real: pd.DataFrame) -> None:
    out = smote_windows(real, "ssh_bruteforce", 12, seed=7)
    assert out["window_id"].nunique() == 12
    assert set(out["provenance"]) == {"smote"} and set(out["label"]) == {"ssh_bruteforce"}
    assert check_flows(out).ok.all()
    _windowable(out)
    src = real[real["label"] == "ssh_bruteforce"]
    for col in ("src2dst_packets", "duration_ms"):  # interpolation stays inside the class's range
        assert src[col].min() - 1 <= out[col].min() and out[col].max() <= src[col].max() + 1
    assert set(window_lengths(out)) == {8}
    pd.testing.assert_frame_equal(out, smote_windows(real, "ssh_bruteforce", 12, seed=7))
    assert not out["bytes"].equals(smote_windows(real, "ssh_bruteforce", 12, seed=8)["bytes"])


def test_smote_with_one_window_copies_it(real: pd.DataFrame) -> None:
    one = real[real["window_id"] == real.loc[real["label"] == "syn_scan", "window_id"].iloc[0]]
    out = smote_windows(one, "syn_scan", 3, seed=0)
    assert out["window_id"].nunique() == 3 and check_flows(out).ok.all()


def test_kde_generator_is_valid_deterministic_and_tagged(real: pd.DataFrame) -> None:
    a = KDEWindowGenerator(real, "syn_scan", seed=3).generate(10)
    b = KDEWindowGenerator(real, "syn_scan", seed=3).generate(10)
    pd.testing.assert_frame_equal(a, b)
    assert a["window_id"].nunique() == 10 and set(a["provenance"]) == {"stat:kde"}
    assert check_flows(a).ok.all()
    _windowable(a)
    assert (a["src_ip"].str.startswith("198.18.")).all()  # RFC 2544 benchmarking addresses


def test_kde_adapt_narrows_and_widens_bandwidths(real: pd.DataFrame) -> None:
    gen = KDEWindowGenerator(real, "ssh_bruteforce", seed=0, bandwidth=0.4)
    bw = gen.adapt([FeatureDistance("log_bytes", 1.0, 0.5, (1, 2, 3), (1, 5, 9), "too spread"),
                    FeatureDistance("log_gap_ms", 0.5, 0.3, (1, 2, 3), (2, 2, 2), "too narrow"),
                    FeatureDistance("proto_tcp", 0.5, 0.3, (1, 1, 1), (0, 1, 1), "too low")])
    assert bw["size"] == pytest.approx(0.2) and bw["gap"] == pytest.approx(0.6)
    assert bw["time"] == pytest.approx(0.4) and bw["count"] == pytest.approx(0.4)


def test_unknown_class_gives_empty_batches(real: pd.DataFrame) -> None:
    assert smote_windows(real, "fin_scan", 5).empty
    assert KDEWindowGenerator(real, "fin_scan").generate(5).empty
