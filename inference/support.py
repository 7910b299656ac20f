"""Per-protocol flow support: how big a single flow of each protocol was in training.

A CNN extrapolates: a window holding one ICMP flow of 1,300 echoes (`ping -f`, metered as
one flow) scored benign at 1.00, because nothing in training told it that no benign ICMP
flow ever carried more than a few dozen packets, and the energy score pooled over the
window did not see it either. The bundle records, per protocol (TCP, UDP, ICMP, other),
the largest value of each volume feature over the real flows of its training windows, plus
a margin; a window with a flow beyond that is out of distribution and goes to `uncertain`
(reason `ood`), whatever the network says. Protocols absent from training have no support
and are not checked.

    >>> sup = flow_support(x, mask, margin=math.log(2))      # at training, raw windows
    >>> beyond_support(x_new, mask_new, sup)                  # [n] bool, at scoring
"""
from __future__ import annotations

import numpy as np

from inference.features import FEATURE_NAMES

# Volume of one flow (log1p of packets and bytes): what a flood packed into one flow breaks.
SUPPORT_FEATURES: tuple[str, ...] = ("log_packets", "log_bytes")
PROTOCOLS: tuple[str, ...] = ("tcp", "udp", "icmp", "other")
_ONE_HOT = tuple(FEATURE_NAMES.index(f"proto_{p}") for p in PROTOCOLS[:3])


def protocol_of(x: np.ndarray) -> np.ndarray:
    """Per flow slot [n, K]: the index into PROTOCOLS of raw windows x [n, F, K]."""
    flags = np.stack([x[:, i, :] > 0.5 for i in _ONE_HOT])          # [3, n, K]
    return np.where(flags.any(0), flags.argmax(0), len(_ONE_HOT))


def flow_support(x: np.ndarray, mask: np.ndarray, margin: float) -> dict[str, dict[str, float]]:
    """Per protocol seen among the real flows of raw windows x [n, F, K] (mask [n, K]): each
    support feature's maximum plus `margin` (log space: log(2) is twice the packets)."""
    real = mask.astype(bool)
    proto = protocol_of(x)
    out: dict[str, dict[str, float]] = {}
    for p, name in enumerate(PROTOCOLS):
        on = real & (proto == p)
        if not on.any():
            continue
        out[name] = {f: round(float(x[:, FEATURE_NAMES.index(f), :][on].max()) + margin, 4)
                     for f in SUPPORT_FEATURES}
    return out


def beyond_support(x: np.ndarray, mask: np.ndarray, support: dict[str, dict[str, float]]) -> np.ndarray:
    """[n] bool: windows with a real flow beyond its protocol's support in any feature."""
    out = np.zeros(len(x), dtype=bool)
    if not support or not len(x):
        return out
    real = mask.astype(bool)
    proto = protocol_of(x)
    for p, name in enumerate(PROTOCOLS):
        limits = support.get(name)
        if not limits:
            continue
        on = real & (proto == p)
        for f, hi in limits.items():
            out |= (on & (x[:, FEATURE_NAMES.index(f), :] > hi)).any(axis=1)
    return out
