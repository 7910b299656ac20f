"""The feature schema: how flow records become the numbers the CNN sees.

Each flow becomes `FLOW_FEATURES` (vectorised over a batch). When a window closes,
`CONTEXT_FEATURES` are added from the flow's position in the window (gap to the previous
flow, whether the destination port or the peer changed) and the window's view (keyed by
source or by destination), and `HISTORY_FEATURES` from what the window's host did over the
last minutes (`inference.history`). A bundle stores the names, the schema version and its
normalisation statistics; a detector refuses a bundle whose schema hash differs from the
one this code computes.

    >>> raw = raw_matrix(records)            # [N, len(RAW_COLUMNS)] float64
    >>> f = flow_features(raw)               # [N, len(FLOW_FEATURES)] float32
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from contracts.records import NUMERIC_FIELDS, numeric_matrix
from inference.history import HISTORY_FEATURES

SCHEMA_VERSION = 4

RAW_COLUMNS: tuple[str, ...] = (
    "duration_ms", "packets", "bytes", "src2dst_packets", "dst2src_packets", "src2dst_bytes",
    "dst2src_bytes", "min_ps", "mean_ps", "stddev_ps", "max_ps", "mean_piat_ms", "stddev_piat_ms",
    "max_piat_ms", "syn_packets", "ack_packets", "psh_packets", "rst_packets", "fin_packets",
    "urg_packets", "src2dst_syn_packets", "dst2src_syn_packets", "dst2src_rst_packets",
    "protocol", "src_port", "dst_port", "first_seen_ms",
)
_C = {name: i for i, name in enumerate(RAW_COLUMNS)}

FLOW_FEATURES: tuple[str, ...] = (
    "log_duration_ms", "log_packets", "log_bytes", "log_fwd_packets", "log_bwd_packets",
    "log_fwd_bytes", "log_bwd_bytes", "bwd_packet_ratio", "log_min_ps", "log_mean_ps",
    "log_stddev_ps", "log_max_ps", "log_mean_piat_ms", "log_stddev_piat_ms", "log_max_piat_ms",
    "syn_ratio", "ack_ratio", "psh_ratio", "rst_ratio", "fin_ratio", "urg_ratio",
    "fwd_syn_ratio", "bwd_syn_ratio", "bwd_rst_ratio", "proto_tcp", "proto_udp", "proto_icmp",
    "dst_port_wellknown", "dst_port_registered", "src_port_wellknown", "log_bytes_per_packet",
    "tcp_no_syn",
)
# The peer is the flow's other end as seen from the window's key: the destination in the
# `src` view, the source in the `dst` view.
CONTEXT_FEATURES: tuple[str, ...] = ("log_gap_ms", "dst_port_changed", "peer_changed", "view_dst")
FEATURE_NAMES: tuple[str, ...] = FLOW_FEATURES + CONTEXT_FEATURES + HISTORY_FEATURES
N_FEATURES = len(FEATURE_NAMES)

_RAW_IN_NUMERIC = [NUMERIC_FIELDS.index(c) for c in RAW_COLUMNS]


def raw_matrix(records: Sequence[Any]) -> np.ndarray:
    """RAW_COLUMNS of FlowRecord objects: columns of their numeric fields, read at decode for
    a clean message (contracts.records.FlowRows), else read now in one C-speed pass."""
    if not records:
        return np.zeros((0, len(RAW_COLUMNS)))
    num = getattr(records, "numeric", None)  # contracts.records.FlowRows: already read at decode
    if num is None or len(num) != len(records):
        num = numeric_matrix(records)
    return num[:, _RAW_IN_NUMERIC]


def raw_matrix_from_frame(df: Any) -> np.ndarray:
    """The same matrix from a pandas DataFrame with FlowRecord columns."""
    return df.loc[:, list(RAW_COLUMNS)].to_numpy(dtype=np.float64, na_value=0.0)


def flow_features(raw: np.ndarray) -> np.ndarray:
    """Per-flow features, vectorised: log-scaled sizes and times, flag ratios, protocol."""
    c = lambda name: raw[:, _C[name]]  # noqa: E731
    pk = np.maximum(c("packets"), 1.0)
    lg = np.log1p
    proto, dport, sport = c("protocol"), c("dst_port"), c("src_port")
    cols = [
        lg(c("duration_ms")), lg(c("packets")), lg(c("bytes")), lg(c("src2dst_packets")),
        lg(c("dst2src_packets")), lg(c("src2dst_bytes")), lg(c("dst2src_bytes")),
        c("dst2src_packets") / pk, lg(c("min_ps")), lg(c("mean_ps")), lg(c("stddev_ps")),
        lg(c("max_ps")), lg(c("mean_piat_ms")), lg(c("stddev_piat_ms")), lg(c("max_piat_ms")),
        c("syn_packets") / pk, c("ack_packets") / pk, c("psh_packets") / pk, c("rst_packets") / pk,
        c("fin_packets") / pk, c("urg_packets") / pk, c("src2dst_syn_packets") / pk,
        c("dst2src_syn_packets") / pk, c("dst2src_rst_packets") / pk,
        proto == 6, proto == 17, (proto == 1) | (proto == 58),
        dport < 1024, (dport >= 1024) & (dport < 49152), sport < 1024,
        lg(c("bytes") / pk),
        # A TCP flow nobody opened with a SYN: a FIN, NULL or Xmas probe (or a flow seen
        # mid-way), whatever other flags the tool set.
        (proto == 6) & (c("syn_packets") == 0),
    ]
    return np.stack(cols, axis=1).astype(np.float32)


def failed_flags(raw: np.ndarray) -> np.ndarray:
    """Per flow: nobody answered (no packet back), or the answer was a reset, or a TCP SYN
    got no SYN back; the connections a scan or a flood leaves behind ([N] bool)."""
    c = lambda name: raw[:, _C[name]]  # noqa: E731
    no_synack = (c("protocol") == 6) & (c("src2dst_syn_packets") > 0) & (c("dst2src_syn_packets") == 0)
    return (c("dst2src_packets") == 0) | (c("dst2src_rst_packets") > 0) | no_synack


def context_features(first_seen_ms: np.ndarray, dst_port: np.ndarray, peer_ip: Sequence[str],
                     starts: np.ndarray | None = None, view_dst: bool = False) -> np.ndarray:
    """Features of each flow relative to the previous one in its window, and the view
    ([n, len(CONTEXT_FEATURES)]).

    With `starts`, the flows are several windows laid end to end, each starting at one
    of those row indices: the first flow of each window has no previous one (zeros), as
    when each window is computed alone."""
    n = len(first_seen_ms)
    out = np.zeros((n, len(CONTEXT_FEATURES)), dtype=np.float32)
    if n > 1:
        out[1:, 0] = np.log1p(np.maximum(np.diff(first_seen_ms), 0.0))
        out[1:, 1] = dst_port[1:] != dst_port[:-1]
        ips = np.asarray(peer_ip, dtype=object)
        out[1:, 2] = ips[1:] != ips[:-1]
        if starts is not None:
            out[starts, :3] = 0.0
    if view_dst:
        out[:, 3] = 1.0
    return out


def schema_sha256(names: Sequence[str] = FEATURE_NAMES, version: int = SCHEMA_VERSION) -> str:
    """Identity of the feature computation (not of the statistics): names plus version."""
    blob = json.dumps({"version": version, "names": list(names)}, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class FeatureSchema:
    """Names, version and normalisation statistics; stored in every model bundle."""

    names: tuple[str, ...] = FEATURE_NAMES
    version: int = SCHEMA_VERSION
    mean: tuple[float, ...] = field(default_factory=lambda: (0.0,) * N_FEATURES)
    std: tuple[float, ...] = field(default_factory=lambda: (1.0,) * N_FEATURES)

    @property
    def sha256(self) -> str:
        return schema_sha256(self.names, self.version)

    @classmethod
    def fit(cls, x: np.ndarray, mask: np.ndarray) -> "FeatureSchema":
        """Statistics over real (unpadded) positions of windows x [n, F, K] with mask [n, K]."""
        flat = x.transpose(0, 2, 1)[mask.astype(bool)]
        mean = flat.mean(axis=0)
        std = np.maximum(flat.std(axis=0), 1e-3)
        return cls(mean=tuple(map(float, mean)), std=tuple(map(float, std)))

    def normalise(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(x - mean) / std on real positions; padded positions stay zero. In place on a copy."""
        mean = np.asarray(self.mean, dtype=np.float32)[None, :, None]
        std = np.asarray(self.std, dtype=np.float32)[None, :, None]
        out = (x - mean) / std
        out *= mask[:, None, :]
        return out.astype(np.float32, copy=False)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "names": list(self.names), "mean": list(self.mean),
                "std": list(self.std), "sha256": self.sha256}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "FeatureSchema":
        return cls(names=tuple(d["names"]), version=int(d["version"]),
                   mean=tuple(map(float, d["mean"])), std=tuple(map(float, d["std"])))
