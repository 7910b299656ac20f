"""Step functions of the expert blueprint allow_list_service (one function per step)."""
import numpy as np


def select_services(intent):
    if not intent["services"]:
        raise ValueError("the intent names no service to allow-list")
    return {"services": [dict(s) for s in intent["services"]]}


def alerts_on_services(services, flows, windows, class_names, alert_threshold):
    on = np.zeros(len(flows["dst_ip"]), dtype=bool)
    for s in services:
        m = (flows["dst_ip"] == s["ip"]) & (flows["dst_port"] == s["port"])
        if s["proto"] in ("tcp", "udp"):
            m &= flows["protocol"] == {"tcp": 6, "udp": 17}[s["proto"]]
        on |= m
    w = flows["window"]
    inwin = w >= 0
    n_win = len(windows["key"])
    total = np.bincount(w[inwin], minlength=n_win)
    hits = np.bincount(w[inwin], weights=on[inwin].astype(float), minlength=n_win)
    alerting = (windows["predicted"] != class_names[0]) & (windows["confidence"] >= alert_threshold)
    return {"windows_quieted": int((alerting & (total > 0) & (hits >= total)).sum())}


def emit_policy(services, intent):
    return {"policy": {"allow_services": list(services), "expires_s": intent["expires_s"]}}
