"""Synthesis without an LLM: the baselines beside it, and the offline-mode generator.

- `no_augmentation`: nothing added; the score every method must beat.
- `smote_windows`: SMOTE-style interpolation between a window and one of its nearest
  same-class neighbours, row by row (flow i with flow i), in the detector's feature space:
  log1p for counts, sizes and times, linear for ratios. Categorical fields (protocol,
  ports, destination changes) come whole from the nearer parent.
- `KDEWindowGenerator`: a smoothed bootstrap (kernel density resampling) of whole
  windows: pick a real window, jitter its sizes, times, counts and gaps in log space with a
  per-class bandwidth, a shared part per window plus a part per flow. `adapt` narrows or
  widens a group's bandwidth from a fidelity report: offline self-evolution.

Every generator repairs its numbers (`constraints.repair_flows`), gives the windows
synthetic identities, tags provenance ("smote", "stat:kde") and is deterministic from its
seed. Windows of a generated batch have the length of the real windows they came from.

    >>> gen = KDEWindowGenerator(real, "syn_scan", seed=1)
    >>> batch = gen.generate(20)                       # window frame, provenance "stat:kde"
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from llm_agents.synthesis.constraints import (DIRECTIONAL_FLAGS, FLAG_COLUMNS, check_flows,
                                    repair_flows)
from llm_agents.synthesis.fidelity import FeatureDistance
from llm_agents.window_frames import (SyntheticIdentity, gaps_and_dst_changes, window_starts,
                                      window_summary, window_tensors)

LOG_FIELDS = ("duration_ms", "src2dst_packets", "dst2src_packets", "src2dst_bytes",
              "dst2src_bytes", "min_ps", "max_ps", "stddev_ps", "stddev_piat_ms", "max_piat_ms",
              "gap_ms")
CATEGORICAL = ("protocol", "src_port", "dst_port", "new_dst")
# Which noise group moves which fields, and which detector features each group explains.
GROUPS = {
    "count": ("src2dst_packets", "dst2src_packets"),
    "size": ("src2dst_bpp", "dst2src_bpp", "min_ps", "max_ps", "stddev_ps"),
    "time": ("duration_ms", "stddev_piat_ms", "max_piat_ms"),
    "gap": ("gap_ms",),
}
FEATURE_GROUP = {
    **dict.fromkeys(("log_packets", "log_fwd_packets", "log_bwd_packets", "bwd_packet_ratio"), "count"),
    **dict.fromkeys(("log_bytes", "log_fwd_bytes", "log_bwd_bytes", "log_min_ps", "log_mean_ps",
                     "log_stddev_ps", "log_max_ps", "log_bytes_per_packet"), "size"),
    **dict.fromkeys(("log_duration_ms", "log_mean_piat_ms", "log_stddev_piat_ms",
                     "log_max_piat_ms"), "time"),
    "log_gap_ms": "gap",
}


def no_augmentation(real: pd.DataFrame, label: str, n_windows: int = 0, *,
                    seed: int = 0) -> pd.DataFrame:
    """The no-augmentation baseline: an empty batch with the frame's columns."""
    return real.iloc[0:0].copy()


def class_rows(real: pd.DataFrame, label: str) -> pd.DataFrame:
    """The real windows of `label`, with `gap_ms` and `new_dst` columns added."""
    rows = real[real["label"].astype(str) == label].reset_index(drop=True)
    gap, new_dst = gaps_and_dst_changes(rows)
    return rows.assign(gap_ms=gap, new_dst=new_dst)


def _numeric_fields() -> list[str]:
    return [*LOG_FIELDS, *FLAG_COLUMNS, *DIRECTIONAL_FLAGS, *CATEGORICAL]


def finish(rows: pd.DataFrame, window_index: np.ndarray, label: str, provenance: str,
           identity: SyntheticIdentity, seconds: float) -> pd.DataFrame:
    """Repair generated numbers, give them identities, and keep only windows that pass."""
    rows = repair_flows(rows.reset_index(drop=True))
    out = identity.assign(rows, window_index, rows["gap_ms"].to_numpy(),
                          rows["new_dst"].to_numpy(dtype=bool), label, provenance, seconds)
    out = out.drop(columns=["gap_ms", "new_dst", "src2dst_bpp", "dst2src_bpp"], errors="ignore")
    ok = check_flows(out).ok
    if not ok.all():  # repair covers every rule; this guards the guarantee, it should not fire
        bad = set(out.loc[~ok, "window_id"])
        out = out[~out["window_id"].isin(bad)].reset_index(drop=True)
    return out


def smote_windows(real: pd.DataFrame, label: str, n_windows: int, *, seed: int = 0,
                  k_neighbors: int = 5, k: int = 8, seconds: float = 10.0,
                  identity: SyntheticIdentity | None = None) -> pd.DataFrame:
    """`n_windows` SMOTE-style windows of `label` interpolated from the real ones in `real`.

    With a single real window there is nothing to interpolate: its copies come back.
    """
    rows = class_rows(real, label)
    if rows.empty or n_windows <= 0:
        return no_augmentation(real, label)
    identity = identity or SyntheticIdentity(f"smote-{label}-{seed}")
    rng = np.random.default_rng(seed)
    start, ordinal, pos = window_starts(rows)
    firsts = np.flatnonzero(start)
    lengths = np.bincount(ordinal)
    x, mask, _, _ = window_tensors(rows, k)
    s = window_summary(x, mask)
    s = (s - s.mean(0)) / np.maximum(s.std(0), 1e-6)
    dist = ((s[:, None, :] - s[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    neigh = np.argsort(dist, axis=1)[:, :max(1, min(k_neighbors, len(firsts) - 1))]
    fields = _numeric_fields()
    vals = rows[fields].to_numpy(dtype=np.float64)
    is_log = np.array([f in LOG_FIELDS for f in fields])
    is_cat = np.array([f in CATEGORICAL for f in fields])
    vals[:, is_log] = np.log1p(np.maximum(vals[:, is_log], 0.0))
    out_rows, out_w = [], []
    for j in range(n_windows):
        a = int(rng.integers(len(firsts)))
        b = int(neigh[a, rng.integers(neigh.shape[1])]) if len(firsts) > 1 else a
        lam = rng.random()
        va = vals[firsts[a]: firsts[a] + lengths[a]]
        vb = vals[firsts[b]: firsts[b] + lengths[b]]
        m = min(len(va), len(vb))
        new = va.copy()
        new[:m] = va[:m] + lam * (vb[:m] - va[:m])
        if lam >= 0.5:
            new[:m, is_cat] = vb[:m, is_cat]
        out_rows.append(new)
        out_w.append(np.full(len(new), j))
    gen = np.concatenate(out_rows)
    gen[:, is_log] = np.expm1(gen[:, is_log])
    frame = pd.DataFrame(gen, columns=fields)
    return finish(frame, np.concatenate(out_w), label, "smote", identity, seconds)


class KDEWindowGenerator:
    """Smoothed-bootstrap windows of one class, with bandwidths that feedback can adjust.

    `bandwidth` scales each group's noise in units of the class's own spread (the std of
    log1p values across its flows). `window_share` is the part of the noise shared by the
    flows of a window, so windows keep the uniformity real ones have (a scan's flows look
    alike) while still differing from each other.
    """

    name = "stat:kde"

    def __init__(self, real: pd.DataFrame, label: str, *, seed: int = 0, bandwidth: float = 0.5,
                 window_share: float = 0.7, seconds: float = 10.0,
                 identity: SyntheticIdentity | None = None) -> None:
        self.label, self.seconds, self.window_share = label, seconds, window_share
        self.rows = _with_bpp(class_rows(real, label))
        self.rng = np.random.default_rng(seed)
        self.identity = identity or SyntheticIdentity(f"kde-{label}-{seed}")
        self.bandwidth = dict.fromkeys(GROUPS, bandwidth)
        self._spread = {g: self._group_spread(f) for g, f in GROUPS.items()}
        if not self.rows.empty:
            start, ordinal, _ = window_starts(self.rows)
            self._firsts, self._lengths = np.flatnonzero(start), np.bincount(ordinal)

    def _group_spread(self, fields: tuple[str, ...]) -> float:
        if self.rows.empty:
            return 0.0
        logs = np.log1p(np.maximum(self.rows[list(fields)].to_numpy(dtype=np.float64), 0.0))
        return float(np.median(logs.std(axis=0)))

    def generate(self, n_windows: int) -> pd.DataFrame:
        """`n_windows` windows of the class (an empty frame if it has no real windows)."""
        if self.rows.empty or n_windows <= 0:
            return self.rows.iloc[0:0].drop(columns=["gap_ms", "new_dst", "src2dst_bpp",
                                                     "dst2src_bpp"])
        picks = self.rng.integers(len(self._firsts), size=n_windows)
        idx = np.concatenate([np.arange(self._firsts[p], self._firsts[p] + self._lengths[p])
                              for p in picks])
        win = np.repeat(np.arange(n_windows), self._lengths[picks])
        frame = self.rows.iloc[idx].reset_index(drop=True).copy()
        pk_old = np.maximum(frame["packets"].to_numpy(dtype=np.float64), 1.0)
        share = np.sqrt(self.window_share), np.sqrt(1.0 - self.window_share)
        for group, fields in GROUPS.items():
            h = self.bandwidth[group] * self._spread[group]
            z = (share[0] * self.rng.standard_normal(n_windows)[win]
                 + share[1] * self.rng.standard_normal(len(frame)))
            for f in fields:
                v = np.log1p(np.maximum(frame[f].to_numpy(dtype=np.float64), 0.0))
                frame[f] = np.expm1(np.maximum(v + h * z, 0.0))
        pk_new = np.round(frame["src2dst_packets"]) + np.round(frame["dst2src_packets"])
        for c in (*FLAG_COLUMNS, *DIRECTIONAL_FLAGS):  # flags keep their share of packets
            frame[c] = np.round(frame[c].to_numpy(dtype=np.float64) / pk_old * np.maximum(pk_new, 1))
        frame["src2dst_bytes"] = frame["src2dst_bpp"] * np.round(frame["src2dst_packets"])
        frame["dst2src_bytes"] = frame["dst2src_bpp"] * np.round(frame["dst2src_packets"])
        keep = [*_numeric_fields(), "ip_version"] if "ip_version" in frame else _numeric_fields()
        return finish(frame[keep], win, self.label, self.name, self.identity, self.seconds)

    def adapt(self, findings: Iterable[FeatureDistance]) -> dict[str, float]:
        """Feedback from a fidelity report: narrow a group whose synthetic values are off
        centre or too spread, widen one that is too narrow. Returns the new bandwidths."""
        for d in findings:
            group = FEATURE_GROUP.get(d.name)
            if group is None or d.direction == "close":
                continue
            factor = 1.5 if d.direction == "too narrow" else 0.5
            self.bandwidth[group] = float(np.clip(self.bandwidth[group] * factor, 0.02, 2.0))
        return dict(self.bandwidth)


def _with_bpp(rows: pd.DataFrame) -> pd.DataFrame:
    """Add bytes per packet in each direction (the class median where a direction is empty)."""
    out = rows.copy()
    for d in ("src2dst", "dst2src"):
        p = out[f"{d}_packets"].to_numpy(dtype=np.float64) if len(out) else np.zeros(0)
        b = out[f"{d}_bytes"].to_numpy(dtype=np.float64) if len(out) else np.zeros(0)
        bpp = np.where(p > 0, b / np.maximum(p, 1.0), np.nan)
        fill = np.nanmedian(bpp) if np.isfinite(bpp).any() else 60.0
        out[f"{d}_bpp"] = np.where(np.isfinite(bpp), bpp, fill)
    return out
