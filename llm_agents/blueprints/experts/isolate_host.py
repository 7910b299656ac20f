"""Step functions of the expert blueprint isolate_host (one function per step)."""
import numpy as np


def select_hosts(intent, windows, class_names, alert_threshold):
    if intent["hosts"]:
        return {"hosts": list(intent["hosts"])}
    singles = [s for s in intent["sources"] if "/" not in s]
    if singles:
        return {"hosts": singles}
    pred, conf, key = windows["predicted"], windows["confidence"], windows["key"]
    flagged = (pred != class_names[0]) & (conf >= alert_threshold)
    if intent.get("attack"):
        flagged &= pred == intent["attack"]
    keys, inverse = np.unique(key, return_inverse=True)
    total = np.bincount(inverse, minlength=len(keys))
    hits = np.bincount(inverse, weights=flagged.astype(float), minlength=len(keys))
    return {"hosts": [str(k) for k in keys[(hits >= 2) & (hits >= 0.5 * total)]]}


def services_at_risk(hosts, flows):
    sel = np.isin(flows["dst_ip"], np.asarray(hosts, dtype=str))
    if not sel.any():
        return {"hosted_services": []}
    triples = np.stack([flows["dst_port"][sel], flows["protocol"][sel]], axis=1)
    ips = flows["dst_ip"][sel]
    seen = {}
    for ip, (port, proto) in zip(ips.tolist(), triples.tolist()):
        seen[(ip, port, proto)] = seen.get((ip, port, proto), 0) + 1
    top = sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    return {"hosted_services": [{"dst_ip": k[0], "dst_port": k[1], "protocol": k[2], "flows": n} for k, n in top]}


def emit_policy(hosts, intent):
    return {"policy": {"isolate_hosts": list(hosts), "expires_s": intent["expires_s"]}}
