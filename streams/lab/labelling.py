"""Ground truth from how the traffic was made: attacker address + time span + scenario.

While the lab runs, each attack run records a `Span` (its label, the attacker's address,
and when the tool started and ended, wall-clock ms, the same clock the capture stamps).
A flow gets a span's label when the attacker is one of its endpoints and the flow
started inside the span (plus a small grace for scheduling skew); every other flow is
benign. "Endpoint", not just source: NFStream starts a new flow after an active or idle
timeout with whichever packet comes next, so the continuation of a long attack
connection (slowloris) can come out oriented victim -> attacker.

The spans are saved next to the dataset (`*.labels.json`) so a replay of the pcap can be
labelled the same way:

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
LABELS_SCHEMA = "edgeloop.lab_labels/1"


@dataclass(frozen=True)
class Span:
    label: str
    attacker_ip: str
    start_ms: int
    end_ms: int
    scenario: str = ""
    run: int = 0
    params: dict[str, Any] = field(default_factory=dict)


def apply_labels(df, spans: Iterable[Span], grace_ms: int = GRACE_MS):
    """Set `label` on a flow frame (FlowRecord columns) from the spans; returns the frame."""
    import numpy as np

    labels = np.full(len(df), BENIGN, dtype=object)
    first = df["first_seen_ms"].to_numpy()
    src, dst = df["src_ip"].to_numpy(), df["dst_ip"].to_numpy()
    for span in spans:
        hit = ((src == span.attacker_ip) | (dst == span.attacker_ip)) \
            & (first >= span.start_ms - grace_ms) & (first <= span.end_ms + grace_ms)
        clash = hit & (labels != BENIGN) & (labels != span.label)
        if clash.any():
            raise LabError(f"{int(clash.sum())} flows fall in two spans with different labels "
                           f"({span.label} and another); spans of one attacker must not overlap")
        labels[hit] = span.label
    df["label"] = labels
    return df


def span_counts(df, spans: Iterable[Span], grace_ms: int = GRACE_MS) -> list[int]:
    """How many flows each span labelled (same rule as apply_labels)."""
    first = df["first_seen_ms"].to_numpy()
    src, dst = df["src_ip"].to_numpy(), df["dst_ip"].to_numpy()
    return [int((((src == s.attacker_ip) | (dst == s.attacker_ip))
                 & (first >= s.start_ms - grace_ms) & (first <= s.end_ms + grace_ms)).sum())
            for s in spans]


def save_spans(path: Path, spans: list[Span], **meta: Any) -> None:
    doc = {"schema": LABELS_SCHEMA, "rule": RULE, "grace_ms": GRACE_MS, **meta,
           "spans": [asdict(s) for s in spans]}
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")


def load_spans(path: str | Path) -> list[Span]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read labels file {path}: {exc}") from exc
    if doc.get("schema") != LABELS_SCHEMA:
        raise LabError(f"{path}: schema {doc.get('schema')!r}, this code reads {LABELS_SCHEMA!r}")
    return [Span(**s) for s in doc["spans"]]


RULE = ("label = the span's scenario for a flow whose src_ip or dst_ip is the span's attacker "
        f"address and whose first_seen_ms lies in [start_ms - {GRACE_MS}, end_ms + {GRACE_MS}]; "
        "every other flow is benign")
