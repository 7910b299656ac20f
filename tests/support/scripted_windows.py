"""Made-up uncertain windows with known truth, for tests and benchmarks of the LLM agent.

Each class has a traffic profile that is physically valid (FlowRecord's own checks pass)
and distinct enough that neighbour checks can tell the classes apart. `slow_http_dos`
is the class the detector does not know: long, nearly idle HTTP connections.

    >>> s = synthetic_windows({"benign": 10, "dos": 10, "slow_http_dos": 6}, seed=1)
    >>> s.windows[0].window_id, s.truth[s.windows[0].window_id], s.features.shape
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from llm_agents.labeling.acceptance import window_vectors
from contracts.records import FlowRecord, UncertainWindow

DETECTOR_CLASSES = ("benign", "dos", "portscan", "bruteforce")
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@dataclass(frozen=True)
class SyntheticWindows:
    windows: list[UncertainWindow]
    features: np.ndarray          # acceptance.window_vectors(windows)
    truth: dict[str, str]         # window_id -> true class
    labels: list[str]             # truth in window order


def _benign(r: random.Random) -> dict[str, Any]:
    return dict(dst_port=r.choice([443, 443, 80]), packets=r.randint(12, 120), dur=r.uniform(80, 4000),
                ps=r.uniform(400, 1100), piat=r.uniform(5, 60), syn=1, fin=2, rst=0, psh=4,
                app="TLS", sni=r.choice(["www.example.org", "cdn.example.net", "mail.example.com"]),
                ua=BROWSER_UA)


def _dos(r: random.Random) -> dict[str, Any]:
    pk = r.randint(1, 3)
    return dict(dst_port=80, packets=pk, dur=r.uniform(0, 2), ps=r.uniform(54, 66), piat=r.uniform(0, 1),
                syn=pk, fin=0, rst=0, psh=0, app="HTTP", sni="", ua="")


def _portscan(r: random.Random) -> dict[str, Any]:
    pk = r.randint(1, 2)
    return dict(dst_port=r.randint(1, 65535), packets=pk, dur=r.uniform(0, 1), ps=r.uniform(40, 60),
                piat=r.uniform(0, 1), syn=1, fin=0, rst=pk - 1, psh=0, app="Unknown", sni="", ua="")


def _bruteforce(r: random.Random) -> dict[str, Any]:
    return dict(dst_port=22, packets=r.randint(18, 32), dur=r.uniform(1500, 4000), ps=r.uniform(110, 190),
                piat=r.uniform(60, 200), syn=1, fin=2, rst=0, psh=10, app="SSH", sni="", ua="")


def _slow_http_dos(r: random.Random) -> dict[str, Any]:
    return dict(dst_port=80, packets=r.randint(4, 10), dur=r.uniform(20_000, 90_000), ps=r.uniform(70, 120),
                piat=r.uniform(4000, 15_000), syn=1, fin=0, rst=0, psh=3, app="HTTP",
                sni="shop.example.com", ua="Mozilla/5.0 (compatible; slowhttptest)")


PROFILES: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "benign": _benign, "dos": _dos, "portscan": _portscan, "bruteforce": _bruteforce,
    "slow_http_dos": _slow_http_dos,
}


def _flow(r: random.Random, cls: str, wid: str, i: int, t_ms: int, key: str) -> FlowRecord:
    p = PROFILES[cls](r)
    pk, ps = p["packets"], p["ps"]
    fwd = max(1, (pk + 1) // 2)
    return FlowRecord(
        flow_id=f"{wid}-{i}", first_seen_ms=t_ms, last_seen_ms=t_ms + int(p["dur"]),
        src_ip=key, dst_ip=f"10.9.0.{r.randint(2, 250)}", src_port=r.randint(32768, 60999),
        dst_port=p["dst_port"], protocol=6, duration_ms=p["dur"], packets=pk, bytes=int(pk * ps),
        src2dst_packets=fwd, dst2src_packets=pk - fwd, src2dst_bytes=int(fwd * ps),
        dst2src_bytes=int((pk - fwd) * ps), min_ps=ps * 0.6, mean_ps=ps, stddev_ps=ps * 0.2,
        max_ps=ps * 1.4, mean_piat_ms=p["piat"], stddev_piat_ms=p["piat"] / 3, max_piat_ms=p["piat"] * 2,
        syn_packets=min(p["syn"], pk), ack_packets=max(0, pk - 1), psh_packets=min(p["psh"], pk),
        rst_packets=min(p["rst"], pk), fin_packets=min(p["fin"], pk), application_name=p["app"],
        requested_server_name=p["sni"], user_agent=p["ua"], label=cls)


def _probabilities(r: random.Random, cls: str, class_names: Sequence[str]) -> list[float]:
    """An unsure detector: the truth (or, for a class it lacks, benign) on top by a little."""
    top = cls if cls in class_names else class_names[0]
    second = r.choice([c for c in class_names if c != top]) if len(class_names) > 1 else top
    rest = [c for c in class_names if c not in (top, second)]
    probs = {top: 0.5, second: 0.32}
    for c in rest:
        probs[c] = 0.18 / len(rest)
    return [probs.get(c, 0.0) for c in class_names]


def synthetic_windows(counts: Mapping[str, int], *, seed: int = 0, k: int = 8, id_prefix: str = "w",
                      class_names: Sequence[str] = DETECTOR_CLASSES) -> SyntheticWindows:
    """`counts[c]` windows of each class c, K flows each, in a seeded shuffled order."""
    r = random.Random(seed)
    order = [c for c, n in counts.items() for _ in range(n)]
    r.shuffle(order)
    windows, truth = [], {}
    for n, cls in enumerate(order):
        wid, key = f"{id_prefix}{n:04d}", f"10.1.{n // 250}.{n % 250 + 1}"
        t0 = 1_700_000_000_000 + n * 60_000
        flows = [_flow(r, cls, wid, i, t0 + i * 500, key) for i in range(k)]
        probs = _probabilities(r, cls, list(class_names))
        best = int(np.argmax(probs))
        windows.append(UncertainWindow(
            window_id=wid, key=key, reason="low_confidence", flows=flows, predicted=class_names[best],
            probabilities=probs, class_names=list(class_names), confidence=probs[best], ood_score=0.0,
            model_version="synthetic"))
        truth[wid] = cls
    return SyntheticWindows(windows, window_vectors(windows), truth, [truth[w.window_id] for w in windows])


def with_user_agent(window: UncertainWindow, text: str, flow: int = 0) -> UncertainWindow:
    """A copy of `window` whose `flow`-th flow carries `text` as its user agent."""
    flows = list(window.flows)
    flows[flow] = flows[flow].model_copy(update={"user_agent": text})
    return window.model_copy(update={"flows": flows})
