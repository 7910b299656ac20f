"""Step functions of the expert blueprint block_source (one function per step)."""
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


def spare_protected(sources, intent):
    keep = {s["ip"] for s in intent["services"]} | set(intent["hosts"])
    return {"block_list": sorted(set(sources) - keep)}


def emit_policy(block_list, intent):
    return {"policy": {"block_sources": list(block_list), "expires_s": intent["expires_s"]}}
