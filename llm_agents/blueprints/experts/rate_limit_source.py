"""Step functions of the expert blueprint rate_limit_source (one function per step)."""
import ipaddress
import math

import numpy as np


def select_sources(intent, windows, class_names, alert_threshold):
    if intent["sources"]:
        return {"sources": list(intent["sources"])}
    pred, conf, key = windows["predicted"], windows["confidence"], windows["key"]
    flagged = (pred != class_names[0]) & (conf >= alert_threshold)
    if intent.get("attack"):
        flagged &= pred == intent["attack"]
    keys, inverse = np.unique(key, return_inverse=True)
    total = np.bincount(inverse, minlength=len(keys))
    hits = np.bincount(inverse, weights=flagged.astype(float), minlength=len(keys))
    chosen = (hits >= 2) & (hits >= 0.5 * total)
    return {"sources": [str(k) for k in keys[chosen]]}


def measure_rate(sources, flows):
    nets = [ipaddress.ip_network(s, strict=False) for s in sources]
    uniq, inverse = np.unique(flows["src_ip"], return_inverse=True)
    inside = np.array([any(ipaddress.ip_address(u) in n for n in nets) for u in uniq], dtype=bool)
    sel = inside[inverse] if len(uniq) else np.zeros(0, dtype=bool)
    if not sel.any():
        return {"pps_median": 0.0, "pps_peak": 0.0}
    second = flows["first_seen_ms"][sel] // 1000
    _, per_second_inverse = np.unique(second, return_inverse=True)
    per_second = np.bincount(per_second_inverse, weights=flows["packets"][sel].astype(float))
    return {"pps_median": float(np.median(per_second)), "pps_peak": float(per_second.max())}


def choose_rate(intent, pps_median):
    if intent.get("rate_pps"):
        return {"rate": float(intent["rate_pps"])}
    return {"rate": float(max(1, math.floor(0.25 * pps_median)))}


def emit_policy(sources, rate, intent):
    entries = [{"sources": list(sources), "packets_per_s": rate}] if sources else []
    return {"policy": {"rate_limit_sources": entries, "expires_s": intent["expires_s"]}}
