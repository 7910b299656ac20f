"""How far a synthetic batch is from real data: the synthesizer's quality checks.

Three views, after the Generative AI-in-the-loop paper's self-evolution step:
- per-feature distances on the detector's own features (`inference.features`, flow plus
  context features of every row): the Wasserstein distance of values standardised by
  the pooled spread, and the two-sample Kolmogorov-Smirnov statistic;
- the AUC of a real-versus-synthetic discriminator (cross-validated extremely randomised
  trees on window descriptors): 0.5 means it cannot tell them apart, 1.0 means it always can;
- train-on-synthetic/test-on-real (TSTR): a classifier that sees the class only through
  synthetic windows (other classes real), scored on real windows.

    >>> rep = score_batch(synth, real_train, "syn_scan", k=8)
    >>> rep.auc, rep.tstr_class_f1, [d.name for d in rep.worst(3)]

The worst features come with real and synthetic quantiles in natural units (ms, bytes,
packets, shares) so they can be written into the next prompt.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp, wasserstein_distance

from inference.features import FEATURE_NAMES
from llm_agents.synthesis.sklearn_eval import macro_f1, window_classifier
from llm_agents.window_frames import window_summary, window_tensors

# Standardising by at least this much keeps a near-constant feature (all flows TCP) from
# turning a tiny deviation into a huge distance. Features are log1p values or ratios.
MIN_SCALE = 0.05

# What each feature means, in the words and units a prompt can use.
FEATURE_MEANING: dict[str, tuple[str, str]] = {
    "log_duration_ms": ("duration_ms", "ms"), "log_packets": ("packets", "packets"),
    "log_bytes": ("bytes", "bytes"), "log_fwd_packets": ("src2dst_packets", "packets"),
    "log_bwd_packets": ("dst2src_packets", "packets"), "log_fwd_bytes": ("src2dst_bytes", "bytes"),
    "log_bwd_bytes": ("dst2src_bytes", "bytes"),
    "bwd_packet_ratio": ("dst2src_packets / packets", "ratio"),
    "log_min_ps": ("min_ps", "bytes"), "log_mean_ps": ("mean_ps", "bytes"),
    "log_stddev_ps": ("stddev_ps", "bytes"), "log_max_ps": ("max_ps", "bytes"),
    "log_mean_piat_ms": ("mean_piat_ms", "ms"), "log_stddev_piat_ms": ("stddev_piat_ms", "ms"),
    "log_max_piat_ms": ("max_piat_ms", "ms"), "syn_ratio": ("syn_packets / packets", "ratio"),
    "ack_ratio": ("ack_packets / packets", "ratio"), "psh_ratio": ("psh_packets / packets", "ratio"),
    "rst_ratio": ("rst_packets / packets", "ratio"), "fin_ratio": ("fin_packets / packets", "ratio"),
    "urg_ratio": ("urg_packets / packets", "ratio"),
    "fwd_syn_ratio": ("src2dst_syn_packets / packets", "ratio"),
    "bwd_syn_ratio": ("dst2src_syn_packets / packets", "ratio"),
    "bwd_rst_ratio": ("dst2src_rst_packets / packets", "ratio"),
    "proto_tcp": ("protocol == 6 (TCP)", "share of flows"),
    "proto_udp": ("protocol == 17 (UDP)", "share of flows"),
    "proto_icmp": ("protocol == 1 or 58 (ICMP)", "share of flows"),
    "dst_port_wellknown": ("dst_port < 1024", "share of flows"),
    "dst_port_registered": ("1024 <= dst_port < 49152", "share of flows"),
    "src_port_wellknown": ("src_port < 1024", "share of flows"),
    "log_bytes_per_packet": ("bytes / packets", "bytes"),
    "log_gap_ms": ("gap_ms (start after the previous flow in the window)", "ms"),
    "dst_port_changed": ("dst_port differs from the previous flow's", "share of flows"),
    "dst_ip_changed": ("new_dst (destination differs from the previous flow's)", "share of flows"),
}


@dataclass(frozen=True)
class FeatureDistance:
    """One feature's gap between real and synthetic rows (quantiles in natural units)."""

    name: str
    wasserstein: float
    ks: float
    real: tuple[float, float, float]    # p10, median, p90
    synthetic: tuple[float, float, float]
    direction: str  # "too high", "too low", "too spread", "too narrow", "close"

    def describe(self) -> str:
        what, unit = FEATURE_MEANING.get(self.name, (self.name, ""))
        r, s = (", ".join(_fmt(v) for v in q) for q in (self.real, self.synthetic))
        return (f"{what} [{unit}]: real p10/median/p90 = {r}; synthetic = {s} "
                f"({self.direction}; Wasserstein {self.wasserstein:.2f}, KS {self.ks:.2f})")


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"


@dataclass
class FidelityReport:
    """A synthetic batch of one class scored against real windows of that class."""

    label: str
    n_real: int
    n_synthetic: int
    distances: list[FeatureDistance] = field(default_factory=list)  # worst first
    auc: float = float("nan")
    tstr_macro_f1: float | None = None
    tstr_class_f1: float | None = None
    copied_fraction: float = 0.0  # synthetic windows identical to a real one (memorised)

    def worst(self, n: int = 3, min_distance: float = 0.05) -> list[FeatureDistance]:
        """The `n` features furthest from real, ignoring those closer than `min_distance`."""
        return [d for d in self.distances if d.wasserstein >= min_distance][:n]

    @property
    def mean_wasserstein(self) -> float:
        if not self.distances:
            return float("nan")
        return float(np.mean([d.wasserstein for d in self.distances]))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean_wasserstein"] = self.mean_wasserstein
        return d


def _natural(name: str, v: np.ndarray) -> np.ndarray:
    return np.expm1(v) if name.startswith("log_") else v


def feature_distances(real_rows: np.ndarray, synth_rows: np.ndarray,
                      names: tuple[str, ...] = FEATURE_NAMES) -> list[FeatureDistance]:
    """Per-feature distances between two row sets [n, F], worst (largest Wasserstein) first."""
    out = []
    for j, name in enumerate(names):
        a, b = real_rows[:, j].astype(np.float64), synth_rows[:, j].astype(np.float64)
        scale = max(float(np.concatenate([a, b]).std()), MIN_SCALE)
        w = wasserstein_distance(a / scale, b / scale)
        ks = float(ks_2samp(a, b).statistic)
        qa, qb = np.quantile(a, [0.1, 0.5, 0.9]), np.quantile(b, [0.1, 0.5, 0.9])
        out.append(FeatureDistance(name, float(w), ks, tuple(map(float, _natural(name, qa))),
                                   tuple(map(float, _natural(name, qb))), _direction(a, b, scale)))
    return sorted(out, key=lambda d: -d.wasserstein)


def _direction(a: np.ndarray, b: np.ndarray, scale: float) -> str:
    shift = (np.median(b) - np.median(a)) / scale
    spread_a = np.subtract(*np.quantile(a, [0.9, 0.1]))
    spread_b = np.subtract(*np.quantile(b, [0.9, 0.1]))
    if abs(shift) >= 0.25:
        return "too high" if shift > 0 else "too low"
    if spread_b > 1.5 * spread_a + 0.5 * MIN_SCALE:
        return "too spread"
    if spread_b < spread_a / 1.5 - 0.5 * MIN_SCALE:
        return "too narrow"
    return "close"


def discriminator_auc(real: np.ndarray, synth: np.ndarray, *, seed: int = 0, folds: int = 3,
                      n_estimators: int = 30) -> float:
    """Cross-validated ROC AUC of trees telling real [n, d] from synthetic [m, d] rows.

    NaN when either side has fewer than two rows.
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    if min(len(real), len(synth)) < 2:
        return float("nan")
    x = np.concatenate([real, synth])
    y = np.r_[np.zeros(len(real)), np.ones(len(synth))]
    cv = StratifiedKFold(n_splits=min(folds, len(real), len(synth)), shuffle=True, random_state=seed)
    p = cross_val_predict(window_classifier(seed, n_estimators), x, y, cv=cv, method="predict_proba")
    return float(roc_auc_score(y, p[:, 1]))


def copied_fraction(real: np.ndarray, synth: np.ndarray) -> float:
    """Share of synthetic windows whose descriptors equal a real window's (to 4 decimals).

    A copy scores perfectly on distances yet adds nothing; a cross-validated discriminator
    then reads an AUC below 0.5, because each copy sits on its original's opposite label.
    """
    if len(synth) == 0:
        return 0.0
    seen = {tuple(row) for row in np.round(real, 4)}
    return float(np.mean([tuple(row) in seen for row in np.round(synth, 4)]))


def tstr(synth_x: np.ndarray, label: str, real_x: np.ndarray, real_y: np.ndarray, *,
         seed: int = 0) -> tuple[float | None, float | None]:
    """Train on synthetic `label` windows plus half the real other-class windows; test on all
    real `label` windows plus the other half; both halves in turn. Returns (macro-F1, F1 of
    `label`), or (None, None) without real windows of `label` and of another class.
    """
    is_c = real_y == label
    others = np.flatnonzero(~is_c)
    if len(synth_x) == 0 or not is_c.any() or len(others) < 2:
        return None, None
    rng = np.random.default_rng(seed)
    half = rng.permutation(others)
    folds = (half[: len(half) // 2], half[len(half) // 2:])
    macros, class_f1s = [], []
    for train_idx, test_idx in (folds, folds[::-1]):
        xt = np.concatenate([synth_x, real_x[train_idx]])
        yt = np.r_[np.full(len(synth_x), label, dtype=object), real_y[train_idx]]
        test = np.r_[np.flatnonzero(is_c), test_idx]
        pred = window_classifier(seed, 30).fit(xt, yt.astype(str)).predict(real_x[test])
        classes = sorted(set(real_y[test]))
        macros.append(macro_f1(real_y[test], pred, classes))
        class_f1s.append(macro_f1(real_y[test], pred, [label]))
    return float(np.mean(macros)), float(np.mean(class_f1s))


def score_batch(synth: pd.DataFrame, real: pd.DataFrame, label: str, *, k: int = 8,
                seed: int = 0) -> FidelityReport:
    """Score synthetic windows of `label` against the real windows of `label` in `real`.

    `real` may hold every class: the others are used for TSTR only.
    """
    rx, rmask, ry, _ = window_tensors(real, k)
    sx, smask, _, _ = window_tensors(synth, k)
    is_c = ry == label
    rep = FidelityReport(label=label, n_real=int(is_c.sum()), n_synthetic=len(sx))
    if rep.n_real == 0 or rep.n_synthetic == 0:
        return rep
    real_rows = rx[is_c].transpose(0, 2, 1)[rmask[is_c].astype(bool)]
    synth_rows = sx.transpose(0, 2, 1)[smask.astype(bool)]
    rep.distances = feature_distances(real_rows, synth_rows)
    r_sum, s_sum = window_summary(rx, rmask), window_summary(sx, smask)
    rep.auc = discriminator_auc(r_sum[is_c], s_sum, seed=seed)
    rep.copied_fraction = copied_fraction(r_sum[is_c], s_sum)
    rep.tstr_macro_f1, rep.tstr_class_f1 = tstr(s_sum, label, r_sum, ry, seed=seed)
    return rep
