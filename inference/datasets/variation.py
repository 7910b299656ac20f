"""Attack runs re-rendered as other tools, settings and links would have sent them.

The lab runs a few tools per attack class, each at the settings its seed drew. A detector
trained on them learns those tools: a ping sweep with fping's 98-byte probes looks benign
to a model that only saw nmap's 42-byte ones, a NULL scan looks like a SYN scan to one that
only saw FIN scans, a SYN burst nobody answers looks like a sweep. The attacker chooses all
of that. Here every attack run of the training flows gets copies with those choices
redrawn, at the flow level, so the windows, their context and the host history are built
from them by the edge's own code:

    rate      the run's flows start r times as far apart (log-uniform r from 1/4 to 10: a
              brute force with fewer threads, a slower scan), the host history sees it
    link      a longer round trip: each exchange of a flow (a packet answered) waits
              d ms more, so its duration and gaps grow (uniform d, one per copy)
    size      for probes and floods, every byte count and packet size scales by s
              (payload lengths, options); a brute force's exchange is fixed by its
              protocol and keeps its sizes
    trickle   for a slow DoS, each connection carries n times the trickled segments (and
              their acknowledgements), at the same pace, so it lasts n times as long: how
              many header lines or body chunks a connection gets before the server or the
              tool gives up is the tool's setting and the server's limit (only where
              the server just acknowledges: a slow read's counts are the server's answer)
    client    for a slow DoS, what the attacker sends scales by c: the length of each
              trickled header line or body chunk, the headers of the request that holds
              the connection, are the tool's settings; the server's answers keep theirs
              (again only where the server just acknowledges)
    replies   for probes and floods, a share of the flows lose their answers (a victim
              overloaded, a firewall dropping, a dark address)
    flags     TCP probes without a SYN carry another combination of FIN, PSH and URG
              (FIN, NULL, Xmas and the rest are one technique)

Each copy is a capture of its own (`capture` column), one run per capture, so windows never
mix two copies and no host history runs from one into the next. Benign flows are left as
they are (copies of them, over other links and sizes, made unknown floods look benign in
the open-world experiment); `benign_link_copies` makes copies of them over longer round
trips only (TrainConfig.benign_link_copies, off in the recipe: rule 17). Labels and carriers
(inference.datasets.lab.CARRIES) are kept; flow ids get a suffix, so every copy's windows
have ids of their own.

    >>> extra = run_variants(flows, copies=2, seed=0)
    >>> extra.groupby("capture").size()
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from inference.datasets.lab import RUN_NET

CAPTURE = "capture"
# Classes whose flows stay what they are when nobody answers: a probe or a flood is sent
# whether or not the target replies. A brute force or a slow DoS without answers is not one.
PROBE_CLASSES: tuple[str, ...] = ("syn_scan", "fin_scan", "udp_scan", "host_sweep", "syn_flood")
_FLAG_COMBOS = ((1, 0, 0), (0, 0, 0), (1, 1, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (0, 1, 0), (0, 0, 1))
_SIZE_COLUMNS = ("bytes", "src2dst_bytes", "dst2src_bytes", "min_ps", "mean_ps", "stddev_ps", "max_ps")
_TIME_COLUMNS = ("duration_ms", "mean_piat_ms", "stddev_piat_ms", "max_piat_ms")
_MAX_FRAME = 1514.0


@dataclass(frozen=True)
class Variation:
    """The ranges each copy's choices are drawn from (log-uniform for the factors)."""

    rate: tuple[float, float] = (0.25, 10.0)
    rtt_ms: tuple[float, float] = (0.0, 300.0)
    size: tuple[float, float] = (0.7, 2.5)
    no_reply_chance: float = 0.5          # chance a probe run loses answers at all
    no_reply_share: tuple[float, float] = (0.5, 1.0)
    probe_classes: tuple[str, ...] = PROBE_CLASSES
    # Classes whose packet sizes are the tool's free choice (probes and floods); the others
    # keep theirs. Empty: every class.
    shaped: tuple[str, ...] = PROBE_CLASSES
    # Classes whose client side is the attacker's choice while the server's answers are not
    # (slow DoS): the number of trickled segments a connection carries and their sizes.
    client_shaped: tuple[str, ...] = ("slow_http_dos",)
    # Fewer segments than the lab's tools send (down to 0.15) made short HTTP brute-force
    # connections over slow links look like a slow DoS (third held-out capture: HTTP brute
    # force 91% -> 26-44% right), so a connection only grows or keeps its count.
    trickle: tuple[float, float] = (0.8, 3.0)
    client_size: tuple[float, float] = (0.7, 8.0)
    # ... on the flows whose server only acknowledges (its packets at most this many bytes
    # on average): a slow read, where the server sends and the client's ACKs trickle, keeps
    # its counts and sizes.
    quiet_bytes: float = 100.0


def run_keys(df: Any, benign: str = "benign") -> np.ndarray:
    """Per flow, the attack run it belongs to ("" for benign): its label and, for runs from
    an address of their own (inference.datasets.lab.separate_attack_runs), that address;
    the spoofed and reflected runs of one label (no attacker address) form one run."""
    label = df["label"].astype(str).to_numpy()
    src = df["src_ip"].astype(str).to_numpy()
    net = ipaddress.ip_network(RUN_NET)
    own = np.array([_inside(a, net) for a in src])
    keys = np.where(own, np.char.add(np.char.add(label.astype(str), "@"), src.astype(str)),
                    np.char.add(label.astype(str), "@victim-side"))
    return np.where(label == benign, "", keys)


def _inside(addr: str, net: Any) -> bool:
    try:
        return ipaddress.ip_address(addr) in net
    except ValueError:
        return False


COPY_MARK = "~v"   # a copied flow's id: the real flow's id, this mark and the copy's number


def run_variants(df: Any, copies: int = 2, seed: int = 0, variation: Variation | None = None,
                 benign: str = "benign") -> Any:
    """`copies` re-rendered copies of every attack run in `df` (flows with `label`, in
    capture order, optionally a `capture` column); empty when there is no attack."""
    import pandas as pd

    v = variation or Variation()
    if copies < 1 or not len(df):
        return df.iloc[0:0].copy()
    rng = np.random.default_rng(seed)
    keys = run_keys(df, benign)
    base = df.get(CAPTURE, pd.Series("capture", index=df.index)).astype(str).to_numpy()
    parts = []
    groups = pd.Series(np.arange(len(df))).groupby([base, keys], sort=True)
    for (cap, key), idx in groups:
        if not key:
            continue                                  # benign
        run = df.iloc[idx.to_numpy()]
        for c in range(copies):
            out = _render(run, rng, v)
            out["flow_id"] = out["flow_id"].astype(str) + f"{COPY_MARK}{c}"
            out[CAPTURE] = f"variant-{c}:{cap}:{key}"
            parts.append(out)
    return pd.concat(parts, ignore_index=True) if parts else df.iloc[0:0].copy()


BENIGN_MARK = "~b"   # a benign link copy's flow id: the real flow's id, this mark and the copy's number


def benign_link_copies(df: Any, copies: int = 1, seed: int = 0, rtt_ms: Sequence[float] = (0.0, 300.0),
                       benign: str = "benign", foreign: str = "ndpi") -> Any:
    """`copies` copies of each capture's benign flows over longer round trips: each source
    host's answered exchanges wait d ms more (uniform d per host and copy, the attack copies'
    range), nothing else redrawn (not sizes, not pace). Attack runs already travel slow
    links in their copies; benign traffic did not, so slowness alone could read as an attack
    (page loads over a slow link called slow DoS). Foreign captures (`capture` starting with
    `foreign`) are left out: their links are already someone else's. Each copy is a capture
    of its own, with its own host history. A generator of its own ([seed, 2]), so the attack
    copies draw what they drew without it."""
    import pandas as pd

    if copies < 1 or not len(df):
        return df.iloc[0:0].copy()
    rng = np.random.default_rng([seed, 2])
    base = df.get(CAPTURE, pd.Series("capture", index=df.index)).astype(str)
    pick = (df["label"].astype(str) == benign).to_numpy() & ~base.str.startswith(foreign).to_numpy()
    parts = []
    for cap, flows in df[pick].groupby(base[pick].to_numpy(), sort=True):
        for c in range(copies):
            out = flows.copy()
            hosts = out["src_ip"].astype(str).to_numpy()
            for host, idx in pd.Series(np.arange(len(out))).groupby(hosts, sort=True):
                part = out.iloc[idx.to_numpy()].copy()
                _longer_round_trip(part, rng.uniform(*rtt_ms), rng)
                for col in ("duration_ms", "mean_piat_ms", "max_piat_ms"):
                    out.iloc[idx.to_numpy(), out.columns.get_loc(col)] = part[col].to_numpy()
            dur = out["duration_ms"].to_numpy(dtype=np.float64)
            out["last_seen_ms"] = (out["first_seen_ms"].to_numpy(dtype=np.float64) + dur).astype(np.int64)
            for col in flows.columns:
                if out[col].dtype != flows[col].dtype and np.issubdtype(flows[col].dtype, np.integer):
                    out[col] = np.round(out[col].to_numpy(dtype=np.float64)).astype(flows[col].dtype)
            out["flow_id"] = out["flow_id"].astype(str) + f"{BENIGN_MARK}{c}"
            out[CAPTURE] = f"benign-link-{c}:{cap}"
            parts.append(out)
    return pd.concat(parts, ignore_index=True) if parts else df.iloc[0:0].copy()


def _loguniform(rng: np.random.Generator, lo_hi: Sequence[float]) -> float:
    return float(np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]))))


def _render(run: Any, rng: np.random.Generator, v: Variation) -> Any:
    """One copy of one run with its choices redrawn (see the module docstring)."""
    out = run.copy()
    r, s = _loguniform(rng, v.rate), _loguniform(rng, v.size)
    rtt = rng.uniform(*v.rtt_ms)
    label = str(out["label"].iloc[0])
    if v.shaped and label not in v.shaped:
        s = 1.0
    first = out["first_seen_ms"].to_numpy(dtype=np.float64)
    start = first.min()
    _longer_round_trip(out, rtt, rng)
    for col in _SIZE_COLUMNS:
        out[col] = np.round(out[col].to_numpy(dtype=np.float64) * s)
    if label in v.client_shaped:
        quiet = _server_quiet(out, v.quiet_bytes)
        _trickle(out, _loguniform(rng, v.trickle), quiet)
        _scale_client(out, _loguniform(rng, v.client_size), quiet)
    if label in v.probe_classes and rng.random() < v.no_reply_chance:
        lost = rng.random(len(out)) < rng.uniform(*v.no_reply_share)
        _drop_replies(out, lost)
    _redraw_probe_flags(out, rng)
    new_first = np.round(start + (first - start) * r)
    out["first_seen_ms"] = new_first.astype(np.int64)
    out["last_seen_ms"] = (new_first + out["duration_ms"].to_numpy(dtype=np.float64)).astype(np.int64)
    _tidy_sizes(out)
    for col in run.columns:
        if out[col].dtype != run[col].dtype and np.issubdtype(run[col].dtype, np.integer):
            out[col] = np.round(out[col].to_numpy(dtype=np.float64)).astype(run[col].dtype)
    return out.sort_values("first_seen_ms", kind="stable").reset_index(drop=True)


def _longer_round_trip(out: Any, rtt: float, rng: np.random.Generator) -> None:
    """Each exchange (a packet in one direction answered by the other: at most the smaller
    direction's count) waits `rtt` ms more, +-10% per flow."""
    waits = np.minimum(out["src2dst_packets"].to_numpy(dtype=np.float64),
                       out["dst2src_packets"].to_numpy(dtype=np.float64))
    extra = waits * rtt * rng.uniform(0.9, 1.1, len(out))
    p = out["packets"].to_numpy(dtype=np.float64)
    dur = out["duration_ms"].to_numpy(dtype=np.float64) + extra
    out["duration_ms"] = dur
    out["mean_piat_ms"] = np.where(p > 1, dur / np.maximum(p - 1, 1), out["mean_piat_ms"].to_numpy(dtype=np.float64))
    out["max_piat_ms"] = np.where(waits > 0, out["max_piat_ms"].to_numpy(dtype=np.float64) + rtt, out["max_piat_ms"].to_numpy(dtype=np.float64))
    out["max_piat_ms"] = np.minimum(out["max_piat_ms"].to_numpy(dtype=np.float64), dur)


def _server_quiet(out: Any, most: float) -> np.ndarray:
    """Flows whose server sent at most `most` bytes a packet on average (acknowledgements,
    a short error at the end), or nothing."""
    back = out["dst2src_bytes"].to_numpy(dtype=np.float64)
    return back <= most * np.maximum(out["dst2src_packets"].to_numpy(dtype=np.float64), 1.0)


def _trickle(out: Any, n: float, on: np.ndarray) -> None:
    """Each connection in `on` carries `n` times its segments both ways (at least one the
    client sent; an answer only if it had one), at the same sizes and pace: bytes, ACK and
    PSH counts follow the packets, the duration follows the gaps; the handshake and the
    close (SYN, FIN, RST) stay as they were."""
    f64 = lambda c: out[c].to_numpy(dtype=np.float64)  # noqa: E731
    fwd, bwd, total = f64("src2dst_packets"), f64("dst2src_packets"), f64("packets")
    n = np.where(on, n, 1.0)
    new_fwd = np.maximum(np.round(fwd * n), np.minimum(fwd, 1.0))
    new_bwd = np.maximum(np.round(bwd * n), np.minimum(bwd, 1.0))
    new_total = new_fwd + new_bwd
    for col, was, now in (("src2dst_bytes", fwd, new_fwd), ("dst2src_bytes", bwd, new_bwd)):
        out[col] = np.round(f64(col) * now / np.maximum(was, 1.0))
    out["bytes"] = f64("src2dst_bytes") + f64("dst2src_bytes")
    grow = new_total / np.maximum(total, 1.0)
    for col in ("ack_packets", "psh_packets"):
        out[col] = np.minimum(np.round(f64(col) * grow), new_total)
    for col in ("syn_packets", "fin_packets", "rst_packets", "urg_packets"):
        out[col] = np.minimum(f64(col), new_total)
    for col, side in (("src2dst_syn_packets", new_fwd), ("dst2src_syn_packets", new_bwd),
                      ("dst2src_rst_packets", new_bwd)):
        out[col] = np.minimum(f64(col), side)
    out["src2dst_packets"], out["dst2src_packets"], out["packets"] = new_fwd, new_bwd, new_total
    gaps_before, gaps_after = np.maximum(total - 1, 0), np.maximum(new_total - 1, 0)
    dur = np.where(gaps_before > 0, f64("duration_ms") * gaps_after / np.maximum(gaps_before, 1), 0.0)
    out["duration_ms"] = dur
    one = new_total <= 1
    for col in ("mean_piat_ms", "stddev_piat_ms"):
        out[col] = np.where(one, 0.0, f64(col))
    out["max_piat_ms"] = np.where(one, 0.0, np.minimum(f64("max_piat_ms"), dur))


def _scale_client(out: Any, c: float, on: np.ndarray) -> None:
    """The client's bytes times `c` in the flows `on`, its segments at most a full Ethernet
    frame's payload; the largest packet follows the client's when theirs grows past it."""
    fwd = np.maximum(out["src2dst_packets"].to_numpy(dtype=np.float64), 1.0)
    before = out["src2dst_bytes"].to_numpy(dtype=np.float64)
    after = np.where(on, np.minimum(np.round(before * c), fwd * _MAX_FRAME), before)
    out["src2dst_bytes"] = after
    out["bytes"] = out["bytes"].to_numpy(dtype=np.float64) + after - before
    biggest = np.minimum(out["max_ps"].to_numpy(dtype=np.float64) * max(c, 1.0), _MAX_FRAME)
    out["max_ps"] = np.maximum(out["max_ps"].to_numpy(dtype=np.float64), np.where(after > before, biggest, 0.0))


def _drop_replies(out: Any, lost: np.ndarray) -> None:
    """The flows in `lost` as if nothing came back: the answer's packets, bytes and flags
    go; a flow of one packet lasts 0 ms."""
    d2s = out["dst2src_packets"].to_numpy(dtype=np.float64) * lost
    fwd = out["src2dst_packets"].to_numpy(dtype=np.float64)
    out["packets"] = out["packets"].to_numpy(dtype=np.float64) - d2s
    out["bytes"] = out["bytes"].to_numpy(dtype=np.float64) - out["dst2src_bytes"].to_numpy(dtype=np.float64) * lost
    for col in ("dst2src_packets", "dst2src_bytes", "dst2src_syn_packets", "dst2src_rst_packets"):
        out[col] = np.where(lost, 0, out[col].to_numpy(dtype=np.float64))
    gone = lost & (d2s > 0)
    syn = out["syn_packets"].to_numpy(dtype=np.float64)
    out["syn_packets"] = np.where(gone, out["src2dst_syn_packets"].to_numpy(dtype=np.float64), syn)
    # Answers carry the ACKs and resets of a probe; what the prober itself sent stays.
    for col in ("ack_packets", "rst_packets"):
        out[col] = np.where(gone, np.maximum(out[col].to_numpy(dtype=np.float64) - d2s, 0), out[col].to_numpy(dtype=np.float64))
    for col in ("psh_packets", "fin_packets", "urg_packets"):
        out[col] = np.where(gone, np.minimum(out[col].to_numpy(dtype=np.float64), fwd), out[col].to_numpy(dtype=np.float64))
    one = gone & (fwd <= 1)
    for col in _TIME_COLUMNS:
        out[col] = np.where(one, 0.0, out[col].to_numpy(dtype=np.float64))


def _redraw_probe_flags(out: Any, rng: np.random.Generator) -> None:
    """TCP flows the prober opened without a SYN get one other FIN/PSH/URG combination
    (the same for the whole run, as a tool's setting)."""
    nosyn = (out["protocol"].to_numpy() == 6) & (out["src2dst_syn_packets"].to_numpy() == 0)
    if nosyn.mean() < 0.8 or np.median(out["packets"].to_numpy()) > 3:
        return                                  # not a run of SYN-less probes
    fin, psh, urg = _FLAG_COMBOS[rng.integers(len(_FLAG_COMBOS))]
    fwd = out["src2dst_packets"].to_numpy(dtype=np.float64)
    for col, on in (("fin_packets", fin), ("psh_packets", psh), ("urg_packets", urg)):
        out[col] = np.where(nosyn, fwd * on, out[col].to_numpy(dtype=np.float64))


def _tidy_sizes(out: Any) -> None:
    """Packet-size statistics consistent with the counts: mean = bytes / packets, min <= mean
    <= max, no spread for one packet."""
    p = np.maximum(out["packets"].to_numpy(dtype=np.float64), 1.0)
    mean = out["bytes"].to_numpy(dtype=np.float64) / p
    one = p <= 1
    # Whole bytes: min rounded down and max up, so min <= mean <= max holds as integers too.
    lo = np.where(one, mean, np.minimum(out["min_ps"].to_numpy(dtype=np.float64), mean))
    hi = np.where(one, mean, np.maximum(out["max_ps"].to_numpy(dtype=np.float64), mean))
    out["mean_ps"] = mean
    out["min_ps"], out["max_ps"] = np.floor(lo), np.ceil(hi)
    out["stddev_ps"] = np.where(one, 0.0, out["stddev_ps"].to_numpy(dtype=np.float64))
