"""Twin datasets for the lab scenarios: recorded lab flows when there are any, else synthetic.

A scenario is one attack (syn_scan, fin_scan, syn_flood, slow_http_dos, ssh_bruteforce)
inside benign background traffic, with the roles the policy intents talk about: the
attacker, the victim server, the web and DNS services, and the noisy DNS-only clients
whose windows the detector tends to misread.

    >>> sc = synthetic_scenario("syn_scan", seed=1)     # deterministic for a seed
    >>> sc = lab_scenario(Path("data/lab/syn_scan.parquet"))
    >>> twin = sc.twin()

Detector outputs: a scenario carries per-window verdicts. Lab files without recorded
detections and all synthetic scenarios get them from `simulated_detector`, a seeded
stand-in with known error rates (it is NOT the CNN): attack windows are mostly caught
with high confidence, benign windows are sometimes flagged with low confidence, more
often those of clients that only talk to the noisy service. `Scenario.source` says
which of these a twin was built from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from contracts.policy_model import Service
from inference.features import RAW_COLUMNS
from inference.windowing import window_label, windows_from_frame
from llm_agents.twin.model import BENIGN_LABELS, DigitalTwin

if TYPE_CHECKING:
    from contracts.policy_model import PolicyProposal

SCENARIOS = ("syn_scan", "fin_scan", "syn_flood", "slow_http_dos", "ssh_bruteforce")
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a fixed origin keeps runs identical
NET = "10.9.0."
VICTIM, FILESERVER, ATTACKER = NET + "10", NET + "20", NET + "66"


@dataclass
class Scenario:
    name: str                       # the attack
    flows: pd.DataFrame
    detections: pd.DataFrame
    attacker: str
    victim: str
    web: Service
    dns: Service | None
    source: str                     # "synthetic" or "lab:<file>"; "+simulated-detector" when so
    notes: list[str] = field(default_factory=list)

    def twin(self, **kwargs: object) -> DigitalTwin:
        return DigitalTwin(self.flows, self.detections, name=f"{self.name}[{self.source}]", **kwargs)


def _flows(rng: np.random.Generator, n: int, src: list[str] | str, dst: str, port: np.ndarray | int,
           proto: int, start_ms: float, span_ms: float, packets: tuple[int, int],
           bytes_per_packet: tuple[float, float], dur_ms: tuple[float, float], label: str,
           flags: dict[str, str]) -> pd.DataFrame:
    pk = rng.integers(packets[0], packets[1] + 1, n)
    fwd = np.maximum(1, np.ceil(pk * 0.55).astype(np.int64))
    fwd = np.minimum(fwd, pk)
    first = (start_ms + np.sort(rng.uniform(0, span_ms, n))).astype(np.int64)
    dur = rng.uniform(dur_ms[0], dur_ms[1], n)
    byts = np.round(pk * rng.uniform(*bytes_per_packet, n)).astype(np.int64)
    srcs = np.asarray(src if isinstance(src, str) else rng.choice(src, n)).astype(str)
    df = pd.DataFrame({
        "first_seen_ms": first, "last_seen_ms": first + dur.astype(np.int64),
        "src_ip": np.broadcast_to(srcs, (n,)), "dst_ip": dst,
        "src_port": rng.integers(32768, 61000, n), "dst_port": np.broadcast_to(port, (n,)),
        "protocol": proto, "duration_ms": dur, "packets": pk, "bytes": byts,
        "src2dst_packets": fwd, "dst2src_packets": pk - fwd,
        "src2dst_bytes": (byts * fwd // pk), "dst2src_bytes": byts - (byts * fwd // pk),
        "label": label,
    })
    for flag, how in flags.items():
        df[flag] = pk if how == "all" else np.minimum(pk, 1 if how == "one" else 2)
    return df


def _background(rng: np.random.Generator, duration_ms: float, n: int) -> pd.DataFrame:
    clients = [f"{NET}{i}" for i in range(100, 140)]
    admins, dns_only = clients[:3], [f"{NET}{i}" for i in range(140, 150)]
    n_web, n_dns, n_ssh, n_file = int(n * 0.55), int(n * 0.2), int(n * 0.05), int(n * 0.08)
    web_flags = {"syn_packets": "one", "fin_packets": "two", "ack_packets": "all", "psh_packets": "two"}
    parts = [
        _flows(rng, n_web, clients, VICTIM, rng.choice([80, 443], n_web, p=[0.3, 0.7]), 6, 0, duration_ms,
               (8, 60), (300, 1200), (40, 3000), "benign", web_flags),
        _flows(rng, n_dns, clients, VICTIM, 53, 17, 0, duration_ms, (2, 2), (60, 140), (1, 30), "benign", {}),
        _flows(rng, n - n_web - n_dns - n_ssh - n_file, dns_only, VICTIM, 53, 17, 0, duration_ms, (2, 2),
               (60, 140), (1, 30), "benign", {}),
        _flows(rng, n_ssh, admins, VICTIM, 22, 6, 0, duration_ms, (20, 400), (80, 600), (2000, 60000),
               "benign", web_flags),
        _flows(rng, n_file, clients, FILESERVER, 445, 6, 0, duration_ms, (10, 200), (200, 1400),
               (100, 8000), "benign", web_flags),
        # The attacker host also resolves names like anyone else: collateral if it is cut off.
        _flows(rng, max(2, n // 250), ATTACKER, VICTIM, 53, 17, 0, duration_ms, (2, 2), (60, 140), (1, 30),
               "benign", {}),
    ]
    return pd.concat(parts, ignore_index=True)


def _attack(rng: np.random.Generator, name: str, at_ms: float) -> pd.DataFrame:
    if name in ("syn_scan", "fin_scan"):
        n = 1000
        flag = {"syn_scan": {"syn_packets": "one", "rst_packets": "one"},
                "fin_scan": {"fin_packets": "one", "rst_packets": "one"}}[name]
        return _flows(rng, n, ATTACKER, VICTIM, rng.permutation(np.arange(1, n + 1)), 6, at_ms, 10_000,
                      (1, 2), (40, 60), (0, 5), name, flag)
    if name == "syn_flood":
        return _flows(rng, 6000, ATTACKER, VICTIM, 80, 6, at_ms, 6_000, (1, 1), (54, 60), (0, 1), name,
                      {"syn_packets": "all"})
    if name == "slow_http_dos":
        return _flows(rng, 300, ATTACKER, VICTIM, 80, 6, at_ms, 20_000, (6, 12), (70, 120),
                      (60_000, 90_000), name, {"syn_packets": "one", "psh_packets": "two", "ack_packets": "all"})
    if name == "ssh_bruteforce":
        return _flows(rng, 400, ATTACKER, VICTIM, 22, 6, at_ms, 60_000, (18, 32), (110, 190),
                      (1500, 4000), name, {"syn_packets": "one", "fin_packets": "two", "psh_packets": "two",
                                           "ack_packets": "all"})
    raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")


def synthetic_scenario(name: str, *, seed: int = 0, n_benign: int = 3000,
                       duration_ms: float = 120_000) -> Scenario:
    """A deterministic synthetic twin dataset: one attack at 30 s inside benign traffic."""
    rng = np.random.default_rng([seed, SCENARIOS.index(name) if name in SCENARIOS else 99])
    df = pd.concat([_background(rng, duration_ms, n_benign), _attack(rng, name, 30_000)], ignore_index=True)
    flags = [c for c in df.columns if c.endswith("_packets") and df[c].isna().any()]
    df[flags] = df[flags].fillna(0).astype(np.int64)
    df["first_seen_ms"] += T0_MS
    df["last_seen_ms"] += T0_MS
    df = df.sort_values("first_seen_ms", kind="stable").reset_index(drop=True)
    df.insert(0, "flow_id", [f"{name}-{i:06d}" for i in range(len(df))])
    web, dns = Service(ip=VICTIM, port=80, proto="tcp"), Service(ip=VICTIM, port=53, proto="udp")
    det = simulated_detector(df, name, noisy=dns, seed=seed)
    return Scenario(name, df, det, ATTACKER, VICTIM, web, dns, "synthetic+simulated-detector",
                    ["synthetic traffic generated in code (llm_agents.experiments.twin_scenarios), not captured"])


def simulated_detector(flows: pd.DataFrame, attack: str, *, noisy: Service | None, seed: int = 0,
                       k: int = 8, seconds: float = 10.0) -> pd.DataFrame:
    """Per-window verdicts with known error rates, windows made exactly as the stream makes them.

    Attack windows: 93% predicted right at confidence 0.78-0.99, else benign. Benign windows
    whose flows all go to `noisy`: 35% flagged as `attack` at 0.50-0.72; other benign
    windows: 2% flagged at 0.50-0.72.
    """
    frame = flows.reindex(columns=list(dict.fromkeys([*flows.columns, *RAW_COLUMNS])), fill_value=0)
    windows = windows_from_frame(frame, k=k, seconds=seconds, key="src", label_column="label")
    n = len(windows)
    rng = np.random.default_rng([seed, 7])
    u, conf_hi, conf_lo = rng.random(n), rng.uniform(0.78, 0.99, n), rng.uniform(0.5, 0.72, n)
    on_noisy = np.zeros(len(flows), dtype=bool)
    if noisy is not None:
        on_noisy = ((flows["dst_ip"].astype(str) == noisy.ip) & (flows["dst_port"] == noisy.port)).to_numpy()
    lens = np.array([len(w.flow_ids) for w in windows], dtype=np.int64)
    pos = pd.Index(flows["flow_id"].astype(str)).get_indexer([f for w in windows for f in w.flow_ids])
    all_noisy = np.bincount(np.repeat(np.arange(n), lens), weights=on_noisy[pos], minlength=n) >= lens
    rows = []
    for i, w in enumerate(windows):
        truth = window_label([str(x).lower() if str(x).lower() not in BENIGN_LABELS else "benign"
                              for x in w.labels])
        if truth != "benign":
            pred, conf = (truth if u[i] < 0.93 else "benign"), conf_hi[i]
        elif u[i] < (0.35 if all_noisy[i] else 0.02):
            pred, conf = attack, conf_lo[i]
        else:
            pred, conf = "benign", conf_hi[i]
        rows.append({"window_id": w.window_id, "key": w.key, "flow_ids": list(w.flow_ids),
                     "predicted": pred, "confidence": round(float(conf), 4),
                     "first_seen_ms": w.first_seen_ms, "last_seen_ms": w.last_seen_ms})
    return pd.DataFrame(rows)


def lab_scenario(path: Path, *, detections: Path | None = None, seed: int = 0) -> Scenario:
    """A scenario from a labelled lab capture: roles are read off the labels and the traffic."""
    df = pd.read_parquet(path)
    labels = df["label"].fillna("").astype(str).str.lower()
    is_attack = ~labels.isin(BENIGN_LABELS)
    if not is_attack.any():
        raise ValueError(f"{path}: no attack-labelled flows")
    attack = labels[is_attack].value_counts().index[0]
    attacker = df.loc[is_attack, "src_ip"].astype(str).value_counts().index[0]
    victim = df.loc[is_attack, "dst_ip"].astype(str).value_counts().index[0]
    benign = df.loc[~is_attack]
    web, dns = _busiest(benign, 6, (80, 443, 8080)), _busiest(benign, 17, (53,))
    web = web or Service(ip=victim, port=80, proto="tcp")
    if "flow_id" not in df.columns:
        df = df.assign(flow_id=[f"{path.stem}-{i:06d}" for i in range(len(df))])
    if detections is not None:
        det, source = pd.read_parquet(detections), f"lab:{path.name}"
    else:
        det, source = simulated_detector(df, attack, noisy=dns, seed=seed), f"lab:{path.name}+simulated-detector"
    return Scenario(attack, df, det, attacker, victim, web, dns, source)


def _busiest(df: pd.DataFrame, proto: int, ports: tuple[int, ...]) -> Service | None:
    sel = df[(df["protocol"] == proto) & df["dst_port"].isin(ports)]
    if sel.empty:
        return None
    (ip, port), _ = next(iter(sel.groupby(["dst_ip", "dst_port"]).size().sort_values(ascending=False).items()))
    return Service(ip=str(ip), port=int(port), proto="tcp" if proto == 6 else "udp")


def load_scenarios(lab_dir: Path | None = Path("data/lab"), *, seed: int = 0) -> list[Scenario]:
    """Lab scenarios from `lab_dir/*.parquet` when there are any, else the synthetic ones."""
    files = sorted(lab_dir.glob("*.parquet")) if lab_dir is not None and lab_dir.is_dir() else []
    out = []
    for f in files:
        det = f.with_name(f.stem + ".detections.parquet")
        if f.name.endswith(".detections.parquet"):
            continue
        try:
            out.append(lab_scenario(f, detections=det if det.exists() else None, seed=seed))
        except (ValueError, KeyError):
            continue
    return out or [synthetic_scenario(name, seed=seed) for name in SCENARIOS]


def library_proposal(scenario: Scenario, source: str = ATTACKER, *, policy_id: str | None = None,
                     expires_s: int = 900, created_ms: int = T0_MS) -> PolicyProposal:
    """A block_source proposal from the expert library, its KPIs from the scenario's twin.

    The proposal a person would be asked to approve, made without the sandboxed loop: for
    tests and examples of the store, approval and enforcement.

        >>> p = library_proposal(synthetic_scenario("syn_scan", seed=3), "10.9.0.66")
    """
    from contracts.policy_model import Policy, PolicyProposal
    from llm_agents.blueprints import ExpertLibrary, code_sha256, intent_from_alert

    alert = {"alert_id": f"a-{source}", "key": source, "attack": scenario.name, "windows": 12,
             "max_confidence": 0.97, "src_ips": [source]}
    intent = intent_from_alert(alert, "block_source")
    expert = ExpertLibrary.load().get("block_source")
    policy = Policy(block_sources=[source], expires_s=expires_s)
    report = scenario.twin().evaluate(policy)
    extra = {"policy_id": policy_id} if policy_id else {}
    return PolicyProposal(intent=intent.model_dump(mode="json", by_alias=True),
                          blueprint=expert.instantiate(intent).dump(), code_sha256=code_sha256(expert.code),
                          policy=policy, kpis={**report.kpis, "truth": report.truth},
                          provenance="library:block_source", created_ms=created_ms, **extra)
