"""Step functions of the expert blueprint raise_class_threshold (one function per step)."""
import numpy as np


def class_confidences(intent, windows, class_names, alert_threshold):
    pred, conf = windows["predicted"], windows["confidence"]
    classes = [intent["attack"]] if intent.get("attack") else [c for c in class_names[1:]]
    out = {}
    for c in classes:
        values = np.sort(conf[(pred == c) & (conf >= alert_threshold)])
        if values.size:
            out[c] = values.tolist()
    return {"confidences": out}


def choose_thresholds(confidences, intent, alert_threshold):
    chosen = {}
    for c, values in confidences.items():
        if intent.get("min_confidence") is not None:
            chosen[c] = float(intent["min_confidence"])
            continue
        x = np.asarray(values, dtype=float)
        best, best_t = -1.0, None
        for t in np.arange(alert_threshold + 0.01, 0.995, 0.01):
            low, high = x[x < t], x[x >= t]
            if low.size < 3 or high.size < 3:
                continue
            score = low.size * high.size * (high.mean() - low.mean()) ** 2
            if score > best and high.mean() - low.mean() >= 0.15:
                best, best_t = score, float(round(t, 2))
        if best_t is not None:
            chosen[c] = best_t
    return {"thresholds": chosen}


def emit_policy(thresholds, intent):
    entries = [{"attack": c, "min_confidence": t} for c, t in sorted(thresholds.items())]
    return {"policy": {"class_thresholds": entries, "expires_s": intent["expires_s"]}}
