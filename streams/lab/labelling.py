"""Ground truth from how the traffic was made: who + time span + scenario.

While the lab runs, each attack run records a `Span`: its label, when the tool started
and ended (wall-clock ms, the same clock the capture stamps) and which flows are its
own. A flow whose first packet lies inside a span (plus a small grace for scheduling
skew) and that matches the span's rule gets the span's label; every other flow is
benign. There are three rules (`Span.match`):

    attacker  the attacker is one of the flow's endpoints (scans, sweeps, floods from
              the attacker's own address, brute force, slow HTTP). "Endpoint", not just
              source: NFStream starts a new flow after an active or idle timeout with
              whichever packet comes next, so the continuation of a long attack
              connection (slowloris) can come out oriented victim -> attacker.
    victim    the flow goes to `victim_ip` from an address that is none of `not_with`
              (spoofed-source floods: the sources are random; `not_with` lists the lab's
              own hosts and LAN groups, whose flows to the victim stay benign).
    pair      the flow is between `victim_ip` and one of `peers` (reflection: requests
              spoofed as the victim make the reflectors answer the victim; the attacker
              appears in no flow). `not_with` lists every other lab host and LAN group.

The spans are saved next to the dataset (`*.labels.json`, schema edgeloop.lab_labels/2)
so a replay of the pcap can be labelled the same way. Version 2 adds `match`,
`victim_ip`, `peers`, `not_with` and `variant` to each span and keeps every field of
version 1 (`attacker_ip` is always the address the tool ran from), so version-1 readers
still label attacker spans correctly:

    >>> spans = load_spans("data/lab/eval.labels.json")
    >>> df = apply_labels(meter_pcap("data/lab/eval.pcap"), spans)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from streams.errors import LabError

BENIGN = "benign"
GRACE_MS = 1000
LABELS_SCHEMA = "edgeloop.lab_labels/2"
READABLE_SCHEMAS = ("edgeloop.lab_labels/1", LABELS_SCHEMA)
MATCHES = ("attacker", "victim", "pair")


@dataclass(frozen=True)
class Span:
    label: str
    attacker_ip: str
    start_ms: int
    end_ms: int
    scenario: str = ""
    run: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    match: str = "attacker"
    victim_ip: str = ""
    peers: tuple[str, ...] = ()
    not_with: tuple[str, ...] = ()
    variant: str = ""

    def __post_init__(self) -> None:
        if self.match not in MATCHES:
            raise LabError(f"span match {self.match!r}: must be one of {MATCHES}")
        if self.match != "attacker" and not self.victim_ip:
            raise LabError(f"a {self.match!r} span needs victim_ip")
        if self.match == "pair" and not self.peers:
            raise LabError("a 'pair' span needs peers")
        object.__setattr__(self, "peers", tuple(self.peers))
        object.__setattr__(self, "not_with", tuple(self.not_with))

    def hits(self, src, dst, first, grace_ms: int = GRACE_MS):
        """Boolean mask over flow columns (numpy arrays of src_ip, dst_ip, first_seen_ms)."""
        import numpy as np

        inside = (first >= self.start_ms - grace_ms) & (first <= self.end_ms + grace_ms)
        if self.match == "attacker":
            return inside & ((src == self.attacker_ip) | (dst == self.attacker_ip))
        if self.match == "victim":
            return inside & (dst == self.victim_ip) & (src != self.victim_ip) \
                & ~np.isin(src, list(self.not_with))
        peers = list(self.peers)
        return inside & (((src == self.victim_ip) & np.isin(dst, peers))
                         | ((dst == self.victim_ip) & np.isin(src, peers)))


def _columns(df):
    return (df["src_ip"].astype(str).to_numpy(), df["dst_ip"].astype(str).to_numpy(),
            df["first_seen_ms"].to_numpy())


def apply_labels(df, spans: Iterable[Span], grace_ms: int = GRACE_MS):
    """Set `label` on a flow frame (FlowRecord columns) from the spans; returns the frame."""
    import numpy as np

    labels = np.full(len(df), BENIGN, dtype=object)
    cols = _columns(df)
    for span in spans:
        hit = span.hits(*cols, grace_ms=grace_ms)
        clash = hit & (labels != BENIGN) & (labels != span.label)
        if clash.any():
            raise LabError(f"{int(clash.sum())} flows fall in two spans with different labels "
                           f"({span.label} and another); spans must not overlap")
        labels[hit] = span.label
    df["label"] = labels
    return df


def span_counts(df, spans: Iterable[Span], grace_ms: int = GRACE_MS) -> list[int]:
    """How many flows each span labelled (same rule as apply_labels)."""
    cols = _columns(df)
    return [int(s.hits(*cols, grace_ms=grace_ms).sum()) for s in spans]


def save_spans(path: Path, spans: list[Span], **meta: Any) -> None:
    doc = {"schema": LABELS_SCHEMA, "rule": RULE, "grace_ms": GRACE_MS, **meta,
           "spans": [{**asdict(s), "peers": list(s.peers), "not_with": list(s.not_with)}
                     for s in spans]}
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def load_spans(path: str | Path) -> list[Span]:
    """Spans from a labels file of schema version 1 or 2."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read labels file {path}: {exc}") from exc
    if doc.get("schema") not in READABLE_SCHEMAS:
        raise LabError(f"{path}: schema {doc.get('schema')!r}, this code reads {READABLE_SCHEMAS}")
    known = set(Span.__dataclass_fields__)
    return [Span(**{k: v for k, v in s.items() if k in known}) for s in doc["spans"]]


RULE = ("label = the span's scenario for a flow whose first_seen_ms lies in [start_ms - "
        f"{GRACE_MS}, end_ms + {GRACE_MS}] and that matches the span: match=attacker, src_ip or "
        "dst_ip is attacker_ip; match=victim, dst_ip is victim_ip and src_ip is none of "
        "not_with (spoofed sources); match=pair, the flow is between victim_ip and one of peers "
        "(reflection); every other flow is benign")
