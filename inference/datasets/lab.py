"""The labelled lab dataset shipped in `data/lab/`: real traffic from the traffic lab.

Flows metered from captures of real tools (nmap, hping3, slowhttptest, hydra) and benign
clients between network namespaces, stored as Parquet with FlowRecord columns plus
`label`. The training and evaluation sets come from separate lab runs (different seeds),
so evaluation measures generalisation to a capture the model never saw.

    >>> p = lab_paths()
    >>> train, test = load_lab("train"), load_lab("eval")
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from contracts.errors import SourceError

LAB_DIR = Path(__file__).resolve().parents[2] / "data" / "lab"
# The classes of the shipped training and evaluation sets (trafficlab.scenarios.TRAIN_LABELS:
# every lab scenario but the kinds held out of training on purpose).
LAB_CLASSES: tuple[str, ...] = (
    "benign", "syn_scan", "fin_scan", "udp_scan", "host_sweep", "syn_flood", "reflection",
    "slow_http_dos", "ssh_bruteforce", "http_bruteforce")


@dataclass(frozen=True)
class LabPaths:
    train: Path
    eval: Path


def lab_paths(root: str | Path | None = None) -> LabPaths:
    """The training and evaluation Parquet files under root (default: the repo's data/lab)."""
    base = Path(root) if root else LAB_DIR

    def one(split: str) -> Path:
        if (base / f"{split}.parquet").is_file():
            return base / f"{split}.parquet"
        found = sorted(base.glob(f"*{split}*.parquet"))
        if len(found) != 1:
            raise SourceError(f"expected one *{split}*.parquet in {base}, found "
                              f"{[p.name for p in found] or 'none'} (is the lab dataset there?)")
        return found[0]

    return LabPaths(train=one("train"), eval=one("eval"))


def extra_train_paths(root: str | Path | None = None) -> list[Path]:
    """More training generations beside train.parquet: train-<name>.parquet (other seeds,
    other link-condition draws), each a capture of its own."""
    base = Path(root) if root else LAB_DIR
    return sorted(base.glob("train-*.parquet"))


def load_lab(split: Literal["train", "eval"], root: str | Path | None = None,
             separate_runs: bool = False, path: str | Path | None = None,
             carriers: bool = False) -> Any:
    """The split (or the dataset at `path`) as a DataFrame (FlowRecord columns + `label`),
    in capture order.

    With `separate_runs`, every attack run comes from a host of its own (see
    `separate_attack_runs`), read from the spans in `<name>.labels.json` beside it, and the
    addresses as recorded stay beside them (RECORDED_SRC, RECORDED_DST: what
    inference.train's `recorded_attacks` windows). With `carriers`, a CARRIES column says
    in which views each attack flow carries its attack (`flow_carriers`), so training can
    leave out windows no detector can be right about."""
    import pandas as pd

    path = Path(path) if path else getattr(lab_paths(root), split)
    df = pd.read_parquet(path)
    if "label" not in df.columns:
        raise SourceError(f"{path}: no `label` column")
    df = continue_connections(df)   # captures labelled before the rule (2026-12-05) included
    if separate_runs or carriers:
        labels = path.with_name(path.name.replace(".parquet", ".labels.json"))
        spans = json.loads(labels.read_text()).get("spans", [])
        if separate_runs:
            recorded = df["src_ip"].astype(str).to_numpy(), df["dst_ip"].astype(str).to_numpy()
            df = separate_attack_runs(df, spans)
            df[RECORDED_SRC], df[RECORDED_DST] = recorded
        if carriers:
            df[CARRIES] = flow_carriers(df, span_principals(spans, separated=separate_runs))
    return df


# A capture read with `separate_runs`: each flow's addresses as the lab recorded them (the
# attacker keeping its address from one run to the next).
RECORDED_SRC, RECORDED_DST = "recorded_src_ip", "recorded_dst_ip"

# Per attack flow, the views in which it carries its attack: "s" (its source is a src-view
# principal of its label), "d" (its destination is a dst-view principal), both or neither.
# Benign flows get "sd". Read by inference.train.frame_windows.
CARRIES = "carries"


def flow_carriers(df: Any, principals: dict[str, set[tuple[str, str]]], benign: str = "benign") -> Any:
    """The CARRIES value of every flow of `df` (see `span_principals` for who carries)."""
    import numpy as np

    label = df["label"].astype(str).to_numpy()
    src, dst = df["src_ip"].astype(str).to_numpy(), df["dst_ip"].astype(str).to_numpy()
    s = np.zeros(len(df), dtype=bool)
    d = np.zeros(len(df), dtype=bool)
    for lab, keys in principals.items():
        at = label == lab
        s |= at & np.isin(src, [k for v, k in keys if v == "src"])
        d |= at & np.isin(dst, [k for v, k in keys if v == "dst"])
    ben = label == benign
    s |= ben
    d |= ben
    return np.where(s & d, "sd", np.where(s, "s", np.where(d, "d", "")))


# Addresses for attack runs given hosts of their own; inside the lab's 10.77.0.0/16 and
# outside the lab network proper (10.77.0.0/24), so they collide with no lab host.
RUN_NET = "10.77.128.0/17"


def run_hosts(spans: list[dict[str, Any]]) -> list[str | None]:
    """The address `separate_attack_runs` gives each span's run (None: left alone)."""
    import ipaddress

    net = ipaddress.ip_network(RUN_NET)
    out, i = [], 0
    for span in spans:
        if span.get("attacker_ip") and span.get("match", "attacker") == "attacker":
            out.append(str(net.network_address + 1 + i))
            i += 1
        else:
            out.append(None)
    return out


# How long a TCP connection may sit idle between two metered pieces of it and still be one
# connection (continue_connections). NFStream cuts a flow after 5 s idle (the lab's meter);
# a slowloris trickle over a lossy link waits 5-15 s between segments.
CONTINUATION_GAP_MS = 60_000
CONNECTION_COLUMNS = ("src_ip", "dst_ip", "src_port", "dst_port", "protocol", "syn_packets", "first_seen_ms",
                      "last_seen_ms")


def connection_heads(df: Any, max_gap_ms: float = CONTINUATION_GAP_MS) -> Any:
    """Per flow, the position (0..n-1) of the first metered piece of its TCP connection.

    The meter cuts a connection idle for longer than its idle timeout into several flows:
    the first carries the SYN, the rest are SYN-less pieces of the same 5-tuple. A SYN-less
    TCP flow whose 5-tuple had a piece that ended at most `max_gap_ms` before it began
    continues that connection; any other flow (a SYN, UDP, ICMP, a long gap) heads one."""
    import numpy as np
    import pandas as pd

    n = len(df)
    if not n:
        return np.zeros(0, dtype=np.int64)
    key = pd.Series(list(zip(df["src_ip"].astype(str), df["dst_ip"].astype(str), df["src_port"].to_numpy(),
                             df["dst_port"].to_numpy(), df["protocol"].to_numpy())))
    first = df["first_seen_ms"].to_numpy(dtype=np.float64)
    last = df["last_seen_ms"].to_numpy(dtype=np.float64)
    order = np.lexsort((np.arange(n), first))
    k = key.iloc[order].reset_index(drop=True)
    prev_last = pd.Series(last[order]).groupby(k).shift(1).to_numpy()
    synless = ((df["protocol"].to_numpy() == 6) & (df["syn_packets"].to_numpy() == 0))[order]
    cont = synless & ~np.isnan(prev_last) & (first[order] - prev_last <= max_gap_ms)
    head = np.where(cont, -1, order)            # a continuation takes its connection's head
    heads = pd.Series(head).replace(-1, np.nan).groupby(k).ffill().to_numpy()
    out = np.empty(n, dtype=np.int64)
    out[order] = heads.astype(np.int64)
    return out


def continue_connections(df: Any, max_gap_ms: float = CONTINUATION_GAP_MS) -> Any:
    """A copy of `df` whose SYN-less pieces of a connection carry the label of the piece that
    opened it (`connection_heads`): a span labels flows by time, so the idle-cut tail of a
    slow DoS's connection that outlives its run would otherwise take the next run's label,
    or benign."""
    out = df.copy()
    heads = connection_heads(df, max_gap_ms)
    out["label"] = out["label"].to_numpy()[heads]
    return out


def separate_attack_runs(df: Any, spans: list[dict[str, Any]]) -> Any:
    """Give each attack run's flows an attacker address of its own.

    The lab runs every scenario from one attacker address, one after the other, so that
    host's history (inference.history: the last 10 s to 5 min) would carry the previous
    attack into the next: a brute force would look like the scan before it. Training on
    that teaches the order of the lab's script. Here the flows a span labelled (its label,
    its attacker as either end, inside its time span) get the span's own address instead
    (`run_hosts`), as if each run came from a fresh host. Spans matched by victim or pair
    (spoofed sources, reflection) have no attacker address in their flows and are left
    alone. Returns a copy.
    """
    out = df.copy()
    src, dst = out["src_ip"].astype(str).to_numpy(), out["dst_ip"].astype(str).to_numpy()
    first, label = out["first_seen_ms"].to_numpy(), out["label"].astype(str).to_numpy()
    src_new, dst_new = src.copy(), dst.copy()
    for span, fresh in zip(spans, run_hosts(spans)):
        if fresh is None:
            continue
        ip, grace = span["attacker_ip"], 1000
        # The lab gives attacker spans a tail: over slow links a tool's last packets reach
        # the wire seconds after it exits.
        end = span["end_ms"] + max(grace, int(span.get("tail_ms", 0)))
        inside = (first >= span["start_ms"] - grace) & (first <= end) & (label == span["label"])
        src_new[inside & (src == ip)] = fresh
        dst_new[inside & (dst == ip)] = fresh
    out["src_ip"], out["dst_ip"] = src_new, dst_new
    return out


def span_periods(spans: list[dict[str, Any]], separated: bool = False,
                 grace_ms: float = 0.0) -> dict[tuple[str, str, str], list[tuple[float, float]]]:
    """Per (label, view, key) of `span_principals`, when its runs went on: the spans the
    label rule reads ([start - grace, end + grace], attacker and pair runs to the end of
    their tail). A victim is a principal of a spoofed flood while that flood runs; the same
    victim's windows while a one-source run of the label hits it carry no key of the attack."""
    out: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for span, fresh in zip(spans, run_hosts(spans)):
        tail = float(span.get("tail_ms") or 0) if span.get("match", "attacker") in ("attacker", "pair") else 0.0
        lo = float(span["start_ms"]) - grace_ms
        hi = float(span["end_ms"]) + max(grace_ms, tail)
        for view, key in _principals_of(span, fresh, separated):
            out.setdefault((span["label"], view, key), []).append((lo, hi))
    return out


def labels_principals(doc: dict[str, Any], separated: bool = False) -> tuple[
        dict[str, set[tuple[str, str]]], dict[tuple[str, str, str], list[tuple[float, float]]]]:
    """`span_principals` and `span_periods` of a lab labels document (its spans and grace)."""
    spans = doc.get("spans", [])
    return (span_principals(spans, separated=separated),
            span_periods(spans, separated=separated, grace_ms=float(doc.get("grace_ms", 0))))


def _principals_of(span: dict[str, Any], fresh: str | None, separated: bool) -> list[tuple[str, str]]:
    match = span.get("match", "attacker")
    if match == "attacker":
        return [("src", fresh if separated and fresh else span["attacker_ip"])]
    if match == "victim":
        return [("dst", span["victim_ip"])]
    return [("src", span["victim_ip"])] + [("dst", p) for p in span.get("peers", [])]


def span_principals(spans: list[dict[str, Any]], separated: bool = False) -> dict[str, set[tuple[str, str]]]:
    """Per attack label, the (view, key) pairs whose windows carry the attack: the source
    view keyed by the attacker for attacks from the attacker's own address; the
    destination view keyed by the victim for spoofed floods (sources are random); for
    reflection, whose flows start with a request spoofed as the victim (so they run victim
    -> reflector), the victim's source windows and each reflector's destination windows.
    With `separated`, attacker addresses are those `separate_attack_runs` gave."""
    out: dict[str, set[tuple[str, str]]] = {}
    for span, fresh in zip(spans, run_hosts(spans)):
        out.setdefault(span["label"], set()).update(_principals_of(span, fresh, separated))
    return out
