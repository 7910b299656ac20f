"""Physical constraints on flow rows: what any real flow must satisfy, checked over a DataFrame.

Synthetic flows (from an LLM, an interpolation or a statistical model) are used for
training only if they could have been metered off a wire. `check_flows` tests every row
at once and says which rules each row broke; `repair_flows` is the other direction, for
generators that sample numbers freely and must then be made consistent.

    >>> rep = check_flows(df)                 # vectorised; plus FlowRecord validation
    >>> df[rep.ok]                            # rows that pass every rule
    >>> rep.counts()                          # {"bytes<20*packets": 3, ...}

The rules (sizes in bytes, times in ms, NFStream's bidirectional semantics):
- schema: the row validates as `contracts.records.FlowRecord`; numbers finite, counts
  whole and non-negative, ports 0..65535, protocol 0..255, packets >= 1;
- directions: src2dst + dst2src packets (and bytes) add up to the totals; a direction
  with no packets has no bytes;
- headers: every packet carries at least an IP header, `MIN_HEADER_BYTES` (20 for IPv4,
  40 for IPv6), so bytes >= 20 x packets in total and per direction, and min_ps >= 20;
- sizes: min_ps <= mean_ps <= max_ps <= `MAX_PACKET_BYTES`; min_ps x packets <= bytes <=
  max_ps x packets, and tighter, since the smallest and largest packets are both in the
  flow: (n-1) min_ps + max_ps <= bytes <= min_ps + (n-1) max_ps; mean_ps x packets =
  bytes; with two packets in opposite directions, each direction's bytes is one of
  min_ps and max_ps; one packet has one size;
- spreads: NFStream's standard deviations are sample ones (n - 1). Given n values with
  their minimum, maximum and mean fixed, the sample std lies between two bounds
  (`std_bounds`): for sizes, the low one puts every other packet at one common size and
  the high one sqrt(n/(n-1) (mean-min)(max-mean)); for the n-1 inter-arrival times,
  which lie in [0, max_piat], sqrt(m/(m-1) mean (max-mean)) and (max-mean) sqrt(m)/(m-1).
  With two packets the size std is exactly (max-min)/sqrt(2), with three the gap std is
  exactly (max_piat - mean_piat) sqrt(2). Every flow of the lab captures meets these;
- flags: each flag count <= packets; SYN/ACK/PSH/RST/FIN/URG only on TCP (protocol 6);
  directional SYN/RST counts fit their direction and their total;
- time: durations >= 0; last_seen >= first_seen and duration <= last_seen - first_seen;
  inter-arrival times: mean <= max <= duration, and the n-1 gaps add up to the duration
  (mean_piat x (n-1) = duration); one packet has no duration and no gaps, two packets
  one gap (max = mean = duration, std 0).
Equalities are checked with a small tolerance (1 byte or 1 ms plus 1%; 0.2% for spreads),
so numbers rounded to a few digits still pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import ValidationError

from contracts.records import FlowRecord
from llm_agents.window_frames import records

MIN_HEADER_BYTES = {4: 20, 6: 40}
# Largest "packet" a meter may report: offloaded (GRO/TSO) captures exceed the 65,535-byte
# IP limit, so the bound is the usual pcap snap length.
MAX_PACKET_BYTES = 262_144
FLAG_COLUMNS = ("syn_packets", "ack_packets", "psh_packets", "rst_packets", "fin_packets",
                "urg_packets")
DIRECTIONAL_FLAGS = ("src2dst_syn_packets", "dst2src_syn_packets", "dst2src_rst_packets")
COUNT_COLUMNS = ("packets", "bytes", "src2dst_packets", "dst2src_packets", "src2dst_bytes",
                 "dst2src_bytes", *FLAG_COLUMNS, *DIRECTIONAL_FLAGS)
FLOAT_COLUMNS = ("duration_ms", "min_ps", "mean_ps", "stddev_ps", "max_ps", "mean_piat_ms",
                 "stddev_piat_ms", "max_piat_ms")
INT_COLUMNS = (*COUNT_COLUMNS, "protocol", "src_port", "dst_port", "first_seen_ms",
               "last_seen_ms", "ip_version")
NUMERIC_COLUMNS = (*INT_COLUMNS, *FLOAT_COLUMNS)
REQUIRED = ("packets", "bytes", "protocol")
_DEFAULTS = {"ip_version": 4}


@dataclass
class ConstraintReport:
    """Which rows passed, and for each row the names of the rules it broke."""

    ok: np.ndarray
    reasons: list[tuple[str, ...]]
    by_rule: dict[str, int] = field(default_factory=dict)

    @property
    def n_bad(self) -> int:
        return int((~self.ok).sum())

    def counts(self) -> dict[str, int]:
        """Rows broken per rule, most frequent first."""
        return dict(sorted(self.by_rule.items(), key=lambda kv: (-kv[1], kv[0])))


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.full(len(df), float(_DEFAULTS.get(col, 0)))
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)


def size_std_bounds(n: np.ndarray, lo: np.ndarray, mean: np.ndarray,
                    hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest sample std of n >= 2 values with this min, mean and max."""
    n = np.maximum(n, 2.0)
    rest = (n * mean - lo - hi) / np.maximum(n - 2, 1)  # the others, all equal
    var_lo = ((lo - mean) ** 2 + (hi - mean) ** 2 + (n - 2) * (rest - mean) ** 2) / (n - 1)
    var_hi = n / (n - 1) * (mean - lo) * (hi - mean)
    return np.sqrt(np.clip(var_lo, 0, None)), np.sqrt(np.clip(var_hi, 0, None))


def gap_std_bounds(m: np.ndarray, mean: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest sample std of m >= 2 values in [0, hi] with this mean and max."""
    m = np.maximum(m, 2.0)
    lo = (hi - mean) * np.sqrt(m) / (m - 1)
    var_hi = m / (m - 1) * mean * (hi - mean)
    return np.clip(lo, 0, None), np.sqrt(np.clip(var_hi, 0, None))


def _rules(v: dict[str, np.ndarray], has_times: bool) -> dict[str, np.ndarray]:
    """Each rule's violation mask. NaN compares False, so NaN rows fail only `not_finite`."""
    pk, by = v["packets"], v["bytes"]
    p1, p2, b1, b2 = v["src2dst_packets"], v["dst2src_packets"], v["src2dst_bytes"], v["dst2src_bytes"]
    hdr = np.where(v["ip_version"] == 6, MIN_HEADER_BYTES[6], MIN_HEADER_BYTES[4])
    mn, mean, sd, mx = v["min_ps"], v["mean_ps"], v["stddev_ps"], v["max_ps"]
    dur, pmean, psd, pmax = v["duration_ms"], v["mean_piat_ms"], v["stddev_piat_ms"], v["max_piat_ms"]
    sized = mx > 0  # sizes metered (FlowRecord allows 0 = not metered)
    tol_b = pk + 0.01 * by
    ps_lo, ps_hi = size_std_bounds(pk, mn, mean, mx)
    pt_lo, pt_hi = gap_std_bounds(pk - 1, pmean, pmax)
    tol_sd, tol_pt = 0.002 * (1 + mx), 0.002 * (1 + pmax)
    flags = np.stack([v[c] for c in FLAG_COLUMNS])
    dflags = np.stack([v[c] for c in DIRECTIONAL_FLAGS])
    r = {
        "packets<1": pk < 1,
        "port_range": (v["src_port"] > 65535) | (v["dst_port"] > 65535),
        "protocol_range": v["protocol"] > 255,
        "ip_version": ~np.isin(v["ip_version"], (4, 6)),
        "direction_packets": (p1 + p2 != pk) & (p1 + p2 != 0),
        "direction_bytes": (b1 + b2 != by) & (b1 + b2 != 0),
        "bytes_without_packets": ((p1 == 0) & (b1 > 0)) | ((p2 == 0) & (b2 > 0)),
        "bytes<20*packets": (by < hdr * pk) | (b1 < hdr * p1) | (b2 < hdr * p2),
        "flag>packets": (flags > pk).any(axis=0),
        "tcp_flags_on_non_tcp": ((v["protocol"] != 6)
                                 & ((flags > 0).any(axis=0) | (dflags > 0).any(axis=0))),
        "syn_direction": ((v["src2dst_syn_packets"] > p1) | (v["dst2src_syn_packets"] > p2)
                          | (v["src2dst_syn_packets"] + v["dst2src_syn_packets"] > v["syn_packets"])),
        "rst_direction": ((v["dst2src_rst_packets"] > p2)
                          | (v["dst2src_rst_packets"] > v["rst_packets"])),
        "ps_order": sized & ~((mn <= mean + 1e-6) & (mean <= mx + 1e-6)),
        "ps<header": sized & (mn < hdr),
        "ps_too_large": mx > MAX_PACKET_BYTES,
        "bytes_outside_ps_range": sized & ((by < mn * pk - tol_b) | (by > mx * pk + tol_b)
                                           | (b1 < mn * p1 - tol_b) | (b1 > mx * p1 + tol_b)
                                           | (b2 < mn * p2 - tol_b) | (b2 > mx * p2 + tol_b)),
        "bytes_vs_ps_extremes": sized & (pk >= 2) & ((by < (pk - 1) * mn + mx - tol_b)
                                                     | (by > mn + (pk - 1) * mx + tol_b)),
        "mean_ps_mismatch": sized & (np.abs(mean * pk - by) > tol_b),
        "ps_spread": sized & (pk >= 2) & ((sd > ps_hi + tol_sd) | (sd < ps_lo - tol_sd)),
        "two_packet_sizes": sized & (pk == 2) & (p1 == 1) & (p2 == 1)
                            & (np.minimum(np.abs(b1 - mn), np.abs(b1 - mx)) > 0.5),
        "single_packet_sizes": sized & (pk == 1) & ((mx - mn > 1e-6) | (sd > 1e-6)),
        "piat_order": (pmean > pmax + 1e-6) | (psd > pmax + 1e-6),
        "piat_spread": (pk >= 3) & ((psd > pt_hi + tol_pt) | (psd < pt_lo - tol_pt)),
        "single_gap_piat": (pk == 2) & ((np.abs(pmax - dur) > 1.0 + 0.01 * dur) | (psd > tol_pt)),
        "piat>duration": pmax > dur + 1.0,
        "piat_sum_mismatch": (pk >= 2) & (np.abs(pmean * (pk - 1) - dur) > 1.0 + 0.01 * dur),
        "single_packet_time": (pk == 1) & ((dur > 1.0) | (pmax > 0) | (pmean > 0) | (psd > 0)),
    }
    if has_times:
        span = v["last_seen_ms"] - v["first_seen_ms"]
        r["time_order"] = span < 0
        r["duration>span"] = dur > span + 1.0
    return r


def check_flows(df: pd.DataFrame, *, schema: bool = True) -> ConstraintReport:
    """Check every row of `df` against the physical rules (module docstring).

    With `schema` each row is also validated as a FlowRecord (about 20 us a row); turn it
    off for numeric-only frames that have no addresses or ids yet.
    """
    n = len(df)
    masks: dict[str, np.ndarray] = {}
    for col in REQUIRED:
        if col not in df.columns:
            masks[f"missing:{col}"] = np.ones(n, dtype=bool)
    v = {c: _num(df, c) for c in NUMERIC_COLUMNS}
    for c in NUMERIC_COLUMNS:
        if c in df.columns:
            x = v[c]
            masks[f"not_finite:{c}"] = ~np.isfinite(x)
            masks[f"negative:{c}"] = x < 0
            if c in INT_COLUMNS:
                masks[f"not_integer:{c}"] = np.isfinite(x) & (x != np.round(x))
    has_times = "first_seen_ms" in df.columns and "last_seen_ms" in df.columns
    masks.update(_rules(v, has_times))
    if schema and n:
        masks["schema"] = _schema_failures(df)
    return _report(masks, n)


def _schema_failures(df: pd.DataFrame) -> np.ndarray:
    bad = np.zeros(len(df), dtype=bool)
    for i, rec in enumerate(records(df)):
        try:
            FlowRecord.model_validate(rec)
        except (ValidationError, ValueError, TypeError):
            bad[i] = True
    return bad


def _report(masks: dict[str, np.ndarray], n: int) -> ConstraintReport:
    reasons: list[list[str]] = [[] for _ in range(n)]
    by_rule: dict[str, int] = {}
    for name, m in masks.items():
        idx = np.flatnonzero(m)
        if len(idx):
            by_rule[name] = len(idx)
            for i in idx:
                reasons[i].append(name)
    ok = np.array([not r for r in reasons], dtype=bool)
    return ConstraintReport(ok=ok, reasons=[tuple(r) for r in reasons], by_rule=by_rule)


def repair_flows(df: pd.DataFrame) -> pd.DataFrame:
    """Make freely sampled numbers a physically consistent flow, changing as little as it can.

    Reads the directional packet and byte counts, min/max/stddev sizes, duration,
    inter-arrival times, flags and protocol; derives `packets`, `bytes`, `mean_ps` and
    `mean_piat_ms` from them; clamps the rest into their valid ranges (module docstring).
    The result passes `check_flows` (given valid ports and ids).
    """
    out = df.copy()
    g = lambda c: _num(out, c)  # noqa: E731
    ipv = np.where(g("ip_version") == 6, 6, 4)
    hdr = np.where(ipv == 6, MIN_HEADER_BYTES[6], MIN_HEADER_BYTES[4]).astype(np.float64)
    p1 = np.round(np.clip(np.nan_to_num(g("src2dst_packets")), 0, 1e9))
    p2 = np.round(np.clip(np.nan_to_num(g("dst2src_packets")), 0, 1e9))
    p1 = np.where(p1 + p2 == 0, 1.0, p1)
    pk = p1 + p2
    mn = np.round(np.clip(np.nan_to_num(g("min_ps"), nan=hdr[0]), hdr, MAX_PACKET_BYTES))
    mx = np.round(np.clip(np.nan_to_num(g("max_ps")), mn, MAX_PACKET_BYTES))
    raw1 = np.clip(np.nan_to_num(g("src2dst_bytes")), 0, None)
    raw2 = np.clip(np.nan_to_num(g("dst2src_bytes")), 0, None)
    lo = np.where(pk >= 2, (pk - 1) * mn + mx, mn)
    hi = np.where(pk >= 2, mn + (pk - 1) * mx, mn)
    total = np.round(np.clip(raw1 + raw2, lo, hi))
    single = pk == 1
    mx = np.where(single, total, mx)
    frac = np.where(raw1 + raw2 > 0, raw1 / np.maximum(raw1 + raw2, 1e-9), p1 / pk)
    lo1 = np.maximum(mn * p1, total - mx * p2)
    hi1 = np.minimum(mx * p1, total - mn * p2)
    b1 = np.clip(np.round(total * frac), lo1, hi1)
    pair = (pk == 2) & (p1 == 1) & (p2 == 1)  # one packet each way: each is min or max
    b1 = np.where(pair, np.where(np.abs(b1 - mn) <= np.abs(b1 - mx), mn, mx), b1)
    sd_lo, sd_hi = size_std_bounds(pk, mn, total / pk, mx)
    sd = np.clip(np.nan_to_num(g("stddev_ps")), sd_lo, sd_hi)
    out["src2dst_packets"], out["dst2src_packets"], out["packets"] = p1, p2, pk
    out["src2dst_bytes"], out["dst2src_bytes"], out["bytes"] = b1, total - b1, total
    out["min_ps"], out["max_ps"] = mn, mx
    out["mean_ps"] = total / pk
    out["stddev_ps"] = np.where(single, 0.0, sd)
    out["ip_version"] = ipv
    _repair_times(out, pk)
    _repair_flags(out, p1, p2, pk)
    for c in INT_COLUMNS:
        if c in out.columns and c not in ("first_seen_ms", "last_seen_ms"):
            out[c] = np.round(_num(out, c)).astype(np.int64)
    return out


def _repair_times(out: pd.DataFrame, pk: np.ndarray) -> None:
    dur = np.clip(np.nan_to_num(_num(out, "duration_ms")), 0, 1e12)
    dur = np.where(pk == 1, 0.0, dur)
    mean = dur / np.maximum(pk - 1, 1)
    mx = np.clip(np.nan_to_num(_num(out, "max_piat_ms")), mean, np.maximum(dur, mean))
    mx = np.where(pk == 2, dur, mx)
    sd_lo, sd_hi = gap_std_bounds(pk - 1, mean, mx)
    sd = np.clip(np.nan_to_num(_num(out, "stddev_piat_ms")), sd_lo, sd_hi)
    sd = np.where(pk <= 2, 0.0, sd)
    out["duration_ms"], out["mean_piat_ms"] = dur, mean
    out["max_piat_ms"], out["stddev_piat_ms"] = mx, sd


def _repair_flags(out: pd.DataFrame, p1: np.ndarray, p2: np.ndarray, pk: np.ndarray) -> None:
    tcp = np.round(np.nan_to_num(_num(out, "protocol"))) == 6
    f = {c: np.where(tcp, np.clip(np.round(np.nan_to_num(_num(out, c))), 0, pk), 0.0)
         for c in (*FLAG_COLUMNS, *DIRECTIONAL_FLAGS)}
    s1 = np.minimum(f["src2dst_syn_packets"], p1)
    s2 = np.minimum(f["dst2src_syn_packets"], p2)
    f["src2dst_syn_packets"], f["dst2src_syn_packets"] = s1, s2
    f["syn_packets"] = np.clip(f["syn_packets"], s1 + s2, pk)
    f["dst2src_rst_packets"] = np.minimum(f["dst2src_rst_packets"], np.minimum(p2, f["rst_packets"]))
    for c, val in f.items():
        out[c] = val
