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
              connection (slowloris) can come out oriented victim -> attacker. An
              attacker span also has a tail (`tail_ms`, set by `with_tails`): over slow,
              lossy links a tool's last packets (FIN retransmissions, late replies) reach
              the wire seconds after it exited, and the attacker sends nothing of its
              own between runs, so such flows are still this run's, up to TAIL_MS or
              until the attacker's next run.
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

from contracts.errors import LabError

BENIGN = "benign"
GRACE_MS = 1000
TAIL_MS = 30_000
LABELS_SCHEMA = "edgeloop.lab_labels/2"
READABLE_SCHEMAS = ("edgeloop.lab_labels/1", LABELS_SCHEMA)
MATCHES = ("attacker", "victim", "pair")
TAILED = ("attacker", "pair")        # spans whose late packets are still theirs (with_tails)


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
    tail_ms: int = 0

    def __post_init__(self) -> None:
        if self.match not in MATCHES:
            raise LabError(f"span match {self.match!r}: must be one of {MATCHES}")
        if self.match != "attacker" and not self.victim_ip:
            raise LabError(f"a {self.match!r} span needs victim_ip")
        if self.match == "pair" and not self.peers:
            raise LabError("a 'pair' span needs peers")
        object.__setattr__(self, "peers", tuple(self.peers))
        object.__setattr__(self, "not_with", tuple(self.not_with))

    def hits(self, src, dst, first, grace_ms: int = GRACE_MS, part: str = "all"):
        """Boolean mask over flow columns (numpy arrays of src_ip, dst_ip, first_seen_ms).
        `part`: "core" (the run plus the grace), "tail" (after that, to the tail) or "all"."""
        import numpy as np

        core_end = self.end_ms + grace_ms
        tail_end = self.end_ms + max(grace_ms, self.tail_ms) if self.match in TAILED else core_end
        lo, hi = {"core": (self.start_ms - grace_ms, core_end), "tail": (core_end + 1, tail_end),
                  "all": (self.start_ms - grace_ms, tail_end)}[part]
        inside = (first >= lo) & (first <= hi)
        if self.match == "attacker":
            return inside & ((src == self.attacker_ip) | (dst == self.attacker_ip))
        if self.match == "victim":
            return inside & (dst == self.victim_ip) & (src != self.victim_ip) \
                & ~np.isin(src, list(self.not_with))
        peers = list(self.peers)
        return inside & (((src == self.victim_ip) & np.isin(dst, peers))
                         | ((dst == self.victim_ip) & np.isin(src, peers)))


def with_tails(spans: list[Span], tail_ms: int = TAIL_MS, grace_ms: int = GRACE_MS) -> list[Span]:
    """Give each attacker and pair span its tail: TAIL_MS after its end, cut short where the
    next span of the same kind and owner begins (minus the grace), never shorter than the grace.

    The owner of an attacker span is the attacker; of a pair span, the victim. A pair span
    needs a tail for the same reason: over slow, lossy links a reflector's last answers reach
    the victim seconds after the spoofer exited, and nothing else ever flows between the
    victim and a server (trafficlab/lan.py). A pair span's tail is cut only by a later run
    that reflects off every one of its peers: a reflector the next run does not use has no
    later run to claim its late answers (CI saw the victim's ICMP unreachable to such a
    reflector, 75 ms into the next run, labelled benign). The next run's own flows are still
    its own: `owners` gives a run's flows to it before any tail."""
    from dataclasses import replace

    def owner(s: Span) -> str:
        return s.attacker_ip if s.match == "attacker" else s.victim_ip

    def takes_over(o: Span, s: Span) -> bool:
        return o.match == s.match and owner(o) == owner(s) and o.start_ms > s.end_ms \
            and (s.match != "pair" or set(s.peers) <= set(o.peers))

    out = []
    for s in spans:
        if s.match not in TAILED:
            out.append(s)
            continue
        later = [o.start_ms for o in spans if takes_over(o, s)]
        room = (min(later) - grace_ms - s.end_ms - 1) if later else tail_ms
        out.append(replace(s, tail_ms=int(max(grace_ms, min(tail_ms, room)))))
    return out


def _columns(df):
    return (df["src_ip"].astype(str).to_numpy(), df["dst_ip"].astype(str).to_numpy(),
            df["first_seen_ms"].to_numpy())


def owners(df, spans: list[Span], grace_ms: int = GRACE_MS):
    """For each flow, the index of the span that labels it (-1: benign).

    A flow inside a span's run (plus the grace) belongs to it; two such spans with different
    labels are an error. A flow only inside tails goes to the latest span whose tail holds it
    (a late packet of one attacker's run can land in another's run: the run wins)."""
    import numpy as np

    owner = np.full(len(df), -1, dtype=np.int64)
    cols = _columns(df)
    for i, span in enumerate(spans):
        hit = span.hits(*cols, grace_ms=grace_ms, part="core")
        taken = owner[hit]
        other = taken[taken >= 0]
        if len(other) and any(spans[j].label != span.label for j in set(other.tolist())):
            raise LabError(f"flows fall in two spans with different labels ({span.label} and "
                           "another); spans must not overlap")
        owner[hit] = i
    core = owner >= 0
    for i, span in enumerate(spans):
        if span.match in TAILED and span.tail_ms > grace_ms:
            owner[span.hits(*cols, grace_ms=grace_ms, part="tail") & ~core] = i
    from inference.datasets.lab import CONNECTION_COLUMNS, connection_heads

    if len(df) and set(CONNECTION_COLUMNS) <= set(getattr(df, "columns", ())):
        owner = owner[connection_heads(df)]   # a connection's later pieces belong with its first
    return owner


def apply_labels(df, spans: Iterable[Span], grace_ms: int = GRACE_MS):
    """Set `label` on a flow frame (FlowRecord columns) from the spans; returns the frame."""
    import numpy as np

    spans = list(spans)
    owner = owners(df, spans, grace_ms)
    names = np.array([s.label for s in spans] + [BENIGN], dtype=object)
    df["label"] = names[owner]          # owner -1 picks the trailing BENIGN
    return df


def span_counts(df, spans: Iterable[Span], grace_ms: int = GRACE_MS) -> list[int]:
    """How many flows each span labelled (same rule as apply_labels)."""
    import numpy as np

    spans = list(spans)
    owner = owners(df, spans, grace_ms)
    return np.bincount(owner[owner >= 0], minlength=len(spans)).tolist() if spans else []


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
        f"{GRACE_MS}, end_ms + {GRACE_MS}] (for match=attacker and match=pair: end_ms + max({GRACE_MS}, tail_ms), "
        "the tail reaching at most to the same attacker's next run, or the same victim's next run off all the same peers) and that matches the span: "
        "match=attacker, src_ip or dst_ip is attacker_ip; match=victim, dst_ip is victim_ip and src_ip is none of "
        "not_with (spoofed sources); match=pair, the flow is between victim_ip and one of peers "
        "(reflection); every other flow is benign. A SYN-less TCP flow that continues a connection (the same "
        "5-tuple, at most 60 s after its previous piece ended: the meter cut it when it went idle) takes the "
        "label of the connection's first piece")
